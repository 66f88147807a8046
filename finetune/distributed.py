"""Training on several processes (`torchrun`, `accelerate launch`): who is who, and what crosses processes.

A launcher starts one process per device and sets RANK, LOCAL_RANK and WORLD_SIZE (and MASTER_ADDR / PORT);
`join_process_group` joins them with nccl on CUDA and gloo on CPU. Each process holds the whole model and
trains on its share of every optimizer step's micro-batches (finetune.train.step_batches deals them out
round-robin), so N processes at accumulation A take the same steps as one process at accumulation N x A.

Gradients are summed by hand over the trainable (LoRA) parameters, one flat all-reduce per optimizer step
(`sum_gradients`), not by wrapping the model in DistributedDataParallel, because:
- the loss is computed from the decoder's hidden states (finetune.modeling.loss_sum calls the decoder and
  `lm_head` directly), so DDP's forward, which arms its gradient hooks, would never run;
- each micro-batch's loss is divided by the trained tokens of the whole global step, so gradients must be
  SUMMED across processes; DDP averages them;
- LoRA gradients are small (about 40M floats for Mistral-7B at rank 16), so overlapping their all-reduce with
  backward, DDP's gain, is worth little, and no `no_sync` bookkeeping is needed for accumulation.

Evaluation and generation are shared out the same way (`map_shared`): each process runs its share of the
batches and every process gets every result, in the order one process would have produced them, so every
process takes the same early-stopping decisions. Files are written by rank 0 only (train.py).

`launched_ranks` reads the launcher's environment without importing torch (the CLI asks it before the heavy
imports).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

from curator.errors import CurateError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Ranks:
    """This process's place among the processes of a run; the default is a run on one process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """The process that writes files and shows progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


SINGLE = Ranks()


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise CurateError(f"{name}={value!r}: expected an integer (set by torchrun / accelerate launch)") from None


def launched_ranks() -> Ranks:
    """The ranks a launcher set in the environment (WORLD_SIZE, RANK, LOCAL_RANK); one process when unset."""
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    if world < 1 or not 0 <= rank < world:
        raise CurateError(f"RANK={rank} and WORLD_SIZE={world}: expected 0 <= RANK < WORLD_SIZE")
    return Ranks(rank=rank, world_size=world, local_rank=_env_int("LOCAL_RANK", rank))


def current_ranks() -> Ranks:
    """The ranks of the process group already joined (by a launcher's library or a test), else the environment's."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        local = _env_int("LOCAL_RANK", dist.get_rank())
        return Ranks(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local)
    return launched_ranks()


def rank_device(setting: str, ranks: Ranks) -> "torch.device":
    """The device this process trains on: under a launcher, `auto` and `cuda` mean cuda:LOCAL_RANK."""
    import torch

    from finetune.modeling import resolve_device

    device = resolve_device(setting)
    if not ranks.distributed or device.type != "cuda":
        return device
    if setting not in ("auto", "cuda"):
        raise CurateError(
            f"device: {setting} names one GPU, but each of the {ranks.world_size} launched processes trains on "
            "its own (cuda:LOCAL_RANK); set device: auto"
        )
    if ranks.local_rank >= torch.cuda.device_count():
        raise CurateError(
            f"LOCAL_RANK {ranks.local_rank}: only {torch.cuda.device_count()} GPU(s) visible; launch at most that "
            "many processes per node"
        )
    return torch.device("cuda", ranks.local_rank)


def join_process_group(ranks: Ranks, device: "torch.device") -> bool:
    """Join the launcher's process group: nccl on CUDA, gloo on CPU. True when this call created it (and
    `leave_process_group` should end it); False for one process, or a group someone else joined already."""
    import torch
    import torch.distributed as dist

    if not ranks.distributed:
        return False
    if device.type == "cuda":
        torch.cuda.set_device(device)  # nccl's collectives and all_gather_object use the current device
    if dist.is_initialized():
        return False
    if device.type == "cuda":
        dist.init_process_group("nccl", device_id=device)
    else:
        dist.init_process_group("gloo")
    return True


def leave_process_group(created: bool) -> None:
    import torch.distributed as dist

    if created and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ranks: Ranks) -> None:
    if ranks.distributed:
        import torch.distributed as dist

        dist.barrier()


def sum_counts(values: Sequence[int], ranks: Ranks, device: "torch.device") -> list[int]:
    """Integers summed over every process (the trained tokens of a step, say); as given on one process."""
    return [int(v) for v in _summed(values, "int64", ranks, device)]


def sum_gradients(params: Sequence["torch.Tensor"], ranks: Ranks) -> None:
    """Every process's gradients of `params` replaced by their sum over processes: one flat all-reduce per
    dtype. A parameter without a gradient (a process that had no micro-batch this step) counts as zero."""
    if not ranks.distributed:
        return
    import torch
    import torch.distributed as dist

    groups: dict[tuple, list] = {}
    for p in params:
        groups.setdefault((p.dtype, p.device), []).append(p)
    for group in groups.values():
        flat = torch.cat([
            (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in group
        ])
        dist.all_reduce(flat)
        offset = 0
        for p in group:
            n = p.numel()
            p.grad = flat[offset : offset + n].view_as(p).clone()
            offset += n


def broadcast_from_main(params: Sequence["torch.Tensor"], ranks: Ranks) -> None:
    """Rank 0's values of `params` on every process: all start from the very same adapter."""
    if not ranks.distributed:
        return
    import torch
    import torch.distributed as dist

    with torch.no_grad():
        for p in params:
            dist.broadcast(p.data, src=0)


def gather(value, ranks: Ranks) -> list:
    """Every process's `value` (picklable), in rank order; [value] on one process."""
    if not ranks.distributed:
        return [value]
    import torch.distributed as dist

    out: list = [None] * ranks.world_size
    dist.all_gather_object(out, value)
    return out


def map_shared(fn: Callable[[list], list], items: Sequence, chunk: int, ranks: Ranks) -> list:
    """`fn` over this process's share of `items`, and every result on every process, in item order.

    Items are dealt out in whole chunks of `chunk`, round-robin, so each batch a process forms from its share
    is a batch one process would have formed (only the last chunk is short, and it stays last); `fn` takes a
    list of items and returns one result per item.
    """
    starts = range(0, len(items), chunk)
    mine = [i for start in starts[ranks.rank :: ranks.world_size] for i in range(start, min(start + chunk, len(items)))]
    results = fn([items[i] for i in mine])
    if not ranks.distributed:
        return list(results)
    out: list = [None] * len(items)
    for pairs in gather(list(zip(mine, results)), ranks):
        for i, result in pairs:
            out[i] = result
    return out


def share_size(n_items: int, chunk: int, ranks: Ranks) -> int:
    """How many of `n_items` items this process gets from `map_shared` with chunks of `chunk`."""
    starts = range(0, n_items, chunk)
    return sum(min(start + chunk, n_items) - start for start in starts[ranks.rank :: ranks.world_size])


def sum_floats(values: Sequence[float], ranks: Ranks, device: "torch.device") -> list[float]:
    """Floats summed over every process in float64, the same value on each; as given on one process."""
    return [float(v) for v in _summed(values, "float64", ranks, device)]


def _summed(values: Sequence, dtype: str, ranks: Ranks, device: "torch.device") -> list:
    """`values` all-reduced (summed) as one tensor of `dtype`; as given on one process."""
    if not ranks.distributed:
        return list(values)
    import torch
    import torch.distributed as dist

    total = torch.tensor(list(values), dtype=getattr(torch, dtype), device=device)
    dist.all_reduce(total)
    return total.tolist()
