"""Training data: curated chat JSONL -> token ids, next-token targets, packed rows, tensors.

Tokens and loss masks come from `curator.tokenize_chat.ChatTokenizer`, the module the token-budget stage
uses (DESIGN.md principle 4): the length the report shows is the length the trainer sees, and the loss falls
on the assistant tokens and their end-of-sequence token only (`EncodedChat.trained`). A record's top-level
`tools` and its assistant turns' `tool_calls` (the OpenAI list, as train.jsonl holds them) go to the same
encoder, which renders them (curator/tokenize_chat.py): the calls are trained, the tools are context.

Packing (on by default) puts several examples into one row of up to `context_length` tokens. Each example
keeps its own position ids (0, 1, 2, ... from its first token), and the row carries no 2D attention mask:
transformers then derives a block-diagonal causal mask from the position ids (masking_utils
`find_packed_sequence_indices` for sdpa / eager / flex attention; flash-attention turns the same position ids
into varlen `cu_seqlens`; `sdpa_segments` splits the row where they restart, finetune.attention), so no token
attends across an example boundary. Flash-attention derives the
`cu_seqlens` only for a batch of ONE row, so for it a micro-batch of several rows is flattened into one
(`flatten_rows`, TRL's padding-free layout) before the forward pass. Padding at the end of a row is one
more "example" whose targets are all ignored. This is the position-id packing of TRL's
`DataCollatorWithFlattening` and axolotl's multipack, without their cross-contamination caveats.

Targets are shifted inside each example (target[t] = label[t + 1], and -100 at an example's last token), so
the loss never asks one example's last token to predict the next example's first token.
"""

from __future__ import annotations

import bisect
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, NamedTuple, Sequence

from curator.errors import CurateError

if TYPE_CHECKING:
    import torch

IGNORE_INDEX = -100  # the ignore_index of torch.nn.functional.cross_entropy and of transformers' losses


@dataclass
class SplitRecord:
    """One line of train.jsonl / val.jsonl, with where it came from."""

    messages: list[dict]
    ref: str  # "val.jsonl:12"
    id: str | None = None
    tools: list | None = None  # the record's tool definitions (TRL's format), rendered in its first user turn


@dataclass
class Example:
    """A tokenized conversation: ids, per-token labels (-100 where untrained) and its source line."""

    ids: list[int]
    labels: list[int]
    ref: str

    @property
    def n_trained(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE_INDEX)

    def targets(self) -> list[int]:
        """Next-token targets: what position t must predict; -100 past the end of the example."""
        return self.labels[1:] + [IGNORE_INDEX]


@dataclass
class EncodeReport:
    """What became of each record: used, or skipped with the reason (logged, never silent)."""

    n_records: int = 0
    n_examples: int = 0
    skipped_over_context: list[str] = field(default_factory=list)
    skipped_no_trained_tokens: list[str] = field(default_factory=list)


def read_chat_jsonl(path: str | Path) -> list[SplitRecord]:
    """Read a split written by `curate run`; errors name the file, the line and the field."""
    path = Path(path)
    records: list[SplitRecord] = []
    try:
        handle = path.open(encoding="utf-8")
    except OSError as exc:
        raise CurateError(f"{path}: cannot read: {exc.strerror}") from exc
    with handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise CurateError(f"{path}:{line_no}: not valid JSON: {exc.msg}") from exc
            messages = obj.get("messages") if isinstance(obj, dict) else None
            if not isinstance(messages, list) or not messages:
                raise CurateError(f"{path}:{line_no}: messages: expected a non-empty list")
            for i, msg in enumerate(messages):
                if not isinstance(msg, dict) or not isinstance(msg.get("role"), str):
                    raise CurateError(f"{path}:{line_no}: messages[{i}].role: expected a string")
            tools = obj.get("tools")
            if tools is not None and not isinstance(tools, list):
                raise CurateError(f"{path}:{line_no}: tools: expected a list")
            records.append(SplitRecord(messages=messages, ref=f"{path.name}:{line_no}", id=obj.get("id"), tools=tools))
    return records


def labels_for(ids: Sequence[int], trained: Sequence[bool]) -> list[int]:
    """Label = the token id where the shared mask trains it, else -100."""
    if len(ids) != len(trained):
        raise ValueError(f"ids and trained mask differ in length: {len(ids)} != {len(trained)}")
    return [tok if keep else IGNORE_INDEX for tok, keep in zip(ids, trained)]


def example_labels(enc) -> list[int]:
    """The labels the trainer uses for an EncodedChat: its ids where trained, -100 elsewhere."""
    labels = labels_for(enc.ids, enc.trained)
    # The first token of an example can never be predicted (nothing precedes it inside the example).
    if labels and labels[0] != IGNORE_INDEX:
        labels[0] = IGNORE_INDEX
    return labels


def encode_chat_records(records: Sequence[SplitRecord], tokenizer) -> list:
    """The EncodedChat of each record (messages and tools), in one batched call."""
    return tokenizer.encode_batch([r.messages for r in records], [r.tools for r in records])


def encode_records(records: Sequence[SplitRecord], tokenizer, context_length: int) -> tuple[list[Example], EncodeReport]:
    """Tokenize with the shared ChatTokenizer (one batch call); skip what cannot train, and say so."""
    report = EncodeReport(n_records=len(records))
    encoded = encode_chat_records(records, tokenizer)
    examples: list[Example] = []
    for record, enc in zip(records, encoded):
        if len(enc.ids) > context_length:
            report.skipped_over_context.append(record.ref)
            continue
        example = Example(ids=list(enc.ids), labels=example_labels(enc), ref=record.ref)
        if example.n_trained == 0:
            report.skipped_no_trained_tokens.append(record.ref)
            continue
        examples.append(example)
    report.n_examples = len(examples)
    return examples, report


def pack_best_fit(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Best-fit decreasing bin packing of example lengths into rows of `capacity` tokens.

    Returns rows as lists of example indices. Deterministic: ties break on the example index. BFD wastes at
    most ~22% over the optimum in the worst case (Johnson 1973) and a few percent on real length mixes; it is
    what axolotl's multipack sampler approximates. O(n log n) with a sorted list of remaining capacities.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    rows: list[list[int]] = []
    free: list[tuple[int, int]] = []  # sorted (remaining capacity, row index)
    for i in order:
        need = lengths[i]
        if need > capacity:
            raise ValueError(f"example {i} has {need} tokens, over the row capacity {capacity}")
        pos = bisect.bisect_left(free, (need, -1))
        if pos < len(free):
            remaining, row = free.pop(pos)
            rows[row].append(i)
            remaining -= need
        else:
            row = len(rows)
            rows.append([i])
            remaining = capacity - need
        if remaining > 0:
            bisect.insort(free, (remaining, row))
    return rows


def make_rows(examples: Sequence[Example], context_length: int, packing: bool) -> list[list[int]]:
    """Rows of example indices: packed rows, or one example per row when packing is off."""
    if packing:
        return pack_best_fit([len(e.ids) for e in examples], context_length)
    return [[i] for i in range(len(examples))]


def epoch_micro_batches(rows: Sequence[Sequence[int]], micro_batch_rows: int, seed: int, epoch: int) -> list[list[list[int]]]:
    """The micro-batches of one epoch: rows shuffled by (seed, epoch), then grouped. Same inputs, same order."""
    order = list(range(len(rows)))
    random.Random(f"{seed}:{epoch}").shuffle(order)
    shuffled = [list(rows[i]) for i in order]
    return [shuffled[i : i + micro_batch_rows] for i in range(0, len(shuffled), micro_batch_rows)]


def collate(
    examples: Sequence[Example], rows: Sequence[Sequence[int]], pad_id: int, pad_to_multiple: int = 8
) -> dict[str, "torch.Tensor"]:
    """Tensors for one micro-batch: input_ids, position_ids, targets (B, L), and n_target_tokens.

    L is the longest row rounded up to `pad_to_multiple`. Padding gets its own position ids from 0 so the
    packed-sequence mask treats it as a separate sequence; its targets are -100.
    """
    import torch

    lengths = [sum(len(examples[i].ids) for i in row) for row in rows]
    width = max(lengths)
    width = -(-width // pad_to_multiple) * pad_to_multiple
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    position_ids = torch.zeros((len(rows), width), dtype=torch.long)
    targets = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    seq_lens: list[list[int]] = []
    for b, row in enumerate(rows):
        start = 0
        lens = []
        for i in row:
            ex = examples[i]
            n = len(ex.ids)
            input_ids[b, start : start + n] = torch.tensor(ex.ids)
            position_ids[b, start : start + n] = torch.arange(n)
            targets[b, start : start + n] = torch.tensor(ex.targets())
            start += n
            lens.append(n)
        if start < width:
            position_ids[b, start:] = torch.arange(width - start)
            lens.append(width - start)
        seq_lens.append(lens)
    return {
        "input_ids": input_ids,
        "position_ids": position_ids,
        "targets": targets,
        "n_target_tokens": int((targets != IGNORE_INDEX).sum()),
        "n_real_tokens": sum(lengths),
        "seq_lens": seq_lens,
    }


def flatten_rows(batch: dict) -> dict:
    """The micro-batch as ONE row: rows concatenated, each example keeping its own position ids from 0.

    Same tokens, positions and targets in row-major order, so the hidden states of the flat row, reshaped to
    (B, L), are those of the B rows wherever attention is confined per example.
    """
    flat = dict(batch)
    for key in ("input_ids", "position_ids", "targets"):
        if key in batch:
            flat[key] = batch[key].reshape(1, -1)
    if "seq_lens" in batch:
        flat["seq_lens"] = [[n for lens in batch["seq_lens"] for n in lens]]
    return flat


class PromptReference(NamedTuple):
    """A generation prompt and its reference answer, for BLEU and the comparison sheet."""

    ids: list[int]  # the prompt's token ids: the conversation up to where `turn`'s training target starts
    reference: str  # the text `turn` trains the model to write (content, then its tool calls as in training)
    turn: int  # index in the record's messages of that assistant turn: messages[:turn] is the prompt


def prompt_and_reference(record: SplitRecord, tokenizer) -> PromptReference | None:
    """The last TRAINED assistant turn as the reference, and the conversation before it as the prompt.

    An assistant turn with weight 0 after it is left out of both: its text is not what the model is taught to
    write, and the prompt is cut where the reference turn's training target starts (the shared mask), so
    generation starts exactly where training's target did. None when no assistant turn is trained and has text.
    """
    from curator.tokenize_chat import _assistant_text  # the text training puts in an assistant turn

    last = None
    for i, msg in enumerate(record.messages):
        if msg.get("role") == "assistant" and msg.get("weight") != 0 and _assistant_text(msg).strip():
            last = i
    if last is None:
        return None
    enc = tokenizer.encode(record.messages[: last + 1], record.tools)
    trained = list(enc.trained)
    if not any(trained):
        return None
    end = len(trained)
    while end > 0 and not trained[end - 1]:
        end -= 1
    start = end
    while start > 0 and trained[start - 1]:
        start -= 1
    return PromptReference(list(enc.ids[:start]), _assistant_text(record.messages[last]), last)


def sample_indices(n: int, k: int, seed: int) -> list[int]:
    """A fixed, seeded sample of k indices out of n, in ascending order (the same on every evaluation)."""
    k = min(k, n)
    return sorted(random.Random(f"sample:{seed}").sample(range(n), k))


def iter_chunks(items: Sequence, size: int) -> Iterable[Sequence]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
