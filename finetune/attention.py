"""Attention over packed rows at the cost of the examples in them, and what each implementation computes.

A packed row of 8,192 tokens holds about 33 examples. SDPA given the block-diagonal mask transformers derives
from the position ids computes every score of the row and masks most of them away (an explicit mask also rules
out the kernels' causal skipping). Three implementations compute only within examples:

- `flash_attention_2` (flash-attn installed, bf16 / fp16): varlen kernels over the `cu_seqlens` transformers
  derives from the position ids; the micro-batch runs as one flattened row (finetune.modeling.hidden_states).
- `flex_attention` (torch's, compiled by transformers): a BlockMask of causal AND same-example; only the
  128 x 128 blocks holding an allowed pair are computed.
- `sdpa_segments` (registered here): SDPA with `is_causal` on each example segment of each row, the segments
  found where the position ids restart. Runs wherever SDPA does, in any dtype.

`auto` picks them in that order on CUDA (finetune.modeling.resolve_attn_implementation). The counting
functions at the end give the attention pairs each one computes for given rows (bench/attention_cost.py).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

import torch

SDPA_SEGMENTS = "sdpa_segments"
FLEX_BLOCK = 128  # torch's _DEFAULT_SPARSE_BLOCK_SIZE, the block size transformers' flex masks are built with


def flex_attention_runs(device: torch.device) -> bool:
    """True where transformers' flex_attention can train: CUDA with triton (its compiled kernels are triton;
    on CPU torch has no flex backward)."""
    if device.type != "cuda":
        return False
    return importlib.util.find_spec("torch.nn.attention.flex_attention") is not None and (
        importlib.util.find_spec("triton") is not None
    )


def segment_bounds(position_ids: torch.Tensor) -> list[list[tuple[int, int]]]:
    """(start, end) of each segment of each row: a segment starts where the position ids do not go on by one
    (transformers' rule in masking_utils.find_packed_sequence_indices), so padding is a segment of its own."""
    pos = position_ids.detach().cpu()
    rows = []
    for row in pos.tolist():
        starts = [0] + [t for t in range(1, len(row)) if row[t] != row[t - 1] + 1]
        rows.append(list(zip(starts, starts[1:] + [len(row)])))
    return rows


def _window_mask(n: int, window: int, device: torch.device) -> torch.Tensor:
    """Causal sliding-window mask of one segment: key k is seen from query q when q - window < k <= q."""
    q = torch.arange(n, device=device)[:, None]
    k = torch.arange(n, device=device)[None, :]
    return (k <= q) & (k > q - window)


@torch.compiler.disable  # a loop over data-dependent segments: run eagerly inside a compiled decoder layer
def sdpa_segments_attention(
    module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
    attention_mask: torch.Tensor | None, position_ids: torch.Tensor | None = None,
    sliding_window: int | None = None, **kwargs,
) -> tuple[torch.Tensor, None]:
    """transformers' SDPA run on each example segment of each row; query/key/value (B, heads, L, head_dim).

    Only a packed forward (no mask, no cache: query as long as key) is split; anything else (generation with
    padding or a cache) is passed to transformers' SDPA with the mask `sdpa_segments_mask` built for it.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    whole = attention_mask is None and position_ids is not None and query.shape[2] == key.shape[2]
    if not whole:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    rows = []
    for b, bounds in enumerate(segment_bounds(position_ids.expand(query.shape[0], -1))):
        parts = []
        for s, e in bounds:
            mask = None
            if sliding_window is not None and e - s > sliding_window:
                mask = _window_mask(e - s, sliding_window, query.device)
            out, _ = sdpa_attention_forward(
                module, query[b : b + 1, :, s:e], key[b : b + 1, :, s:e], value[b : b + 1, :, s:e], mask, **kwargs
            )
            parts.append(out)
        rows.append(torch.cat(parts, dim=1))
    return torch.cat(rows, dim=0), None


def sdpa_segments_mask(
    batch_size: int, q_length: int, kv_length: int, q_offset: int = 0, kv_offset: int = 0,
    attention_mask: torch.Tensor | None = None, **kwargs,
):
    """No mask for a packed forward (the segments come from the position ids); transformers' SDPA mask else."""
    from transformers.masking_utils import sdpa_mask

    unpadded = attention_mask is None or bool(attention_mask[:, -kv_length:].all())
    if unpadded and q_length == kv_length and q_offset == 0 and kv_offset == 0:
        return None
    return sdpa_mask(
        batch_size=batch_size, q_length=q_length, kv_length=kv_length, q_offset=q_offset, kv_offset=kv_offset,
        attention_mask=attention_mask, **kwargs,
    )


def register_sdpa_segments() -> None:
    """Make `sdpa_segments` an attn_implementation transformers loads and dispatches (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    AttentionInterface.register(SDPA_SEGMENTS, sdpa_segments_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(SDPA_SEGMENTS, sdpa_segments_mask)


# What each implementation computes for packed rows: counts of (query, key) pairs, per attention head and layer.


def causal_pairs(n: int) -> int:
    """Pairs of causal attention within one sequence of n tokens."""
    return n * (n + 1) // 2


def rows_segments(seq_lens: Sequence[Sequence[int]], width: int) -> list[list[int]]:
    """Each row's segment lengths with the padding to `width` as one more segment, as the collator lays it."""
    out = []
    for lens in seq_lens:
        pad = width - sum(lens)
        out.append(list(lens) + ([pad] if pad > 0 else []))
    return out


def pairs_needed(seq_lens: Sequence[Sequence[int]]) -> int:
    """Causal pairs within each example: all that packed == unpacked needs."""
    return sum(causal_pairs(n) for lens in seq_lens for n in lens)


def pairs_sdpa_full_mask(n_rows: int, width: int) -> int:
    """SDPA with transformers' 4D block-diagonal mask: every score of every row, masked after."""
    return n_rows * width * width


def pairs_per_segment(seq_lens: Sequence[Sequence[int]], width: int) -> int:
    """Causal pairs of every segment, padding included: SDPA per segment (`is_causal`) and varlen flash."""
    return sum(causal_pairs(n) for lens in rows_segments(seq_lens, width) for n in lens)


def flex_blocks(segments: Sequence[int], block: int = FLEX_BLOCK) -> int:
    """Blocks (q block, kv block) of one row holding at least one pair that is causal and within a segment: the
    blocks flex_attention computes under a causal + document BlockMask of `block` x `block`."""
    doc = torch.repeat_interleave(torch.arange(len(segments)), torch.tensor(list(segments)))
    width = int(doc.numel())
    n_blocks = -(-width // block)
    first_of_doc = torch.zeros(len(segments), dtype=torch.long)
    first_of_doc[1:] = torch.cumsum(torch.tensor(list(segments)), 0)[:-1]
    start = first_of_doc[doc]  # first position of each token's segment
    count = 0
    for qb in range(n_blocks):
        q0, q1 = qb * block, min((qb + 1) * block, width)
        # keys a query block reaches: from the earliest segment start among its queries to its last query
        lo, hi = int(start[q0:q1].min()), q1 - 1
        count += hi // block - lo // block + 1
    return count


def pairs_flex(seq_lens: Sequence[Sequence[int]], width: int, block: int = FLEX_BLOCK) -> int:
    """Pairs flex_attention computes: its blocks times block x block."""
    return sum(flex_blocks(segs, block) for segs in rows_segments(seq_lens, width)) * block * block
