"""`curate inspect OUT`: records of a curated folder as the trainer sees them, trained tokens marked.

Each record of OUT/train.jsonl, then OUT/val.jsonl, is read and tokenized by the trainer's own code
(`finetune.data.read_chat_jsonl`, `encode_chat_records`, `example_labels`) with the tokenizer profile
OUT's manifest.json recorded (config.tokens: model, tokenizer_path, context_length), so what is shown is
what `curate train` trains and what OUT/chat_template.jinja renders. Nothing here imports torch.

Text output: a header per record, then the rendered text (special tokens such as <s> and </s> shown)
with each trained span in green when stdout is a terminal, else between ⟦ and ⟧. JSON output: one line
per record, `{"id", "input_ids", "labels", "text"}`, labels -100 where not trained.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from curator.errors import CurateError

SPLITS = ("train.jsonl", "val.jsonl")
OPEN, CLOSE = "⟦", "⟧"  # around trained text when the output is not a terminal
GREEN, RESET = "\x1b[32m", "\x1b[0m"


@dataclass
class Inspected:
    """One record as the trainer sees it."""

    ref: str  # "train.jsonl:3"
    id: str | None
    input_ids: list[int]
    labels: list[int]  # -100 where not trained
    spans: list[tuple[str, bool]]  # the rendered text in pieces, each trained or not

    @property
    def text(self) -> str:
        return "".join(text for text, _ in self.spans)

    def to_json(self) -> str:
        return json.dumps(
            {"id": self.id, "input_ids": self.input_ids, "labels": self.labels, "text": self.text}, ensure_ascii=False
        )

    def marked(self, color: bool) -> str:
        """The text with its trained spans in green (color) or between ⟦ ⟧."""
        start, end = (GREEN, RESET) if color else (OPEN, CLOSE)
        return "".join(f"{start}{text}{end}" if trained else text for text, trained in self.spans)


def tokenizer_of(out: Path):
    """The ChatTokenizer of the profile OUT's manifest.json recorded (config.tokens)."""
    from curator.tokenize_chat import ChatTokenizer

    path = out / "manifest.json"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CurateError(f"{path}: missing (expected the OUT folder of `curate run`)") from None
    except json.JSONDecodeError as exc:
        raise CurateError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}") from None
    tokens = ((manifest.get("config") if isinstance(manifest, dict) else None) or {}).get("tokens") or {}
    if not tokens.get("model"):
        raise CurateError(f"{path}: config.tokens.model: missing (the tokens stage settings of the run)")
    return ChatTokenizer.load(
        tokens["model"], tokenizer_path=tokens.get("tokenizer_path"), context_length=tokens.get("context_length")
    )


def _spans(tok, ids: list[int], trained: list[bool]) -> list[tuple[str, bool]]:
    """The decoded text cut where training starts and stops; each cut decodes a prefix of the ids, so
    a piece keeps the spaces a decoder drops at the start of a text."""
    cuts = [0] + [k for k in range(1, len(ids)) if trained[k] != trained[k - 1]] + [len(ids)]
    spans: list[tuple[str, bool]] = []
    done = ""
    for a, b in zip(cuts, cuts[1:]):
        text = tok.tokenizer.decode(ids[:b], skip_special_tokens=False)
        spans.append((text[len(done):], trained[a]))
        done = text
    return spans


def inspect_folder(out: Path, record_id: str | None = None, n: int = 3) -> Iterator[Inspected]:
    """The first `n` records of OUT (train, then val), or the one whose id is `record_id`."""
    from finetune.data import encode_chat_records, example_labels, read_chat_jsonl

    out = Path(out)
    if not out.is_dir():
        raise CurateError(f"{out}: not a folder (expected the OUT folder of `curate run`)")
    tok = tokenizer_of(out)
    left = n
    for name in SPLITS:
        path = out / name
        if not path.is_file():
            raise CurateError(f"{path}: missing (expected the OUT folder of `curate run`)")
        records = read_chat_jsonl(path)
        records = [r for r in records if r.id == record_id] if record_id is not None else records[:left]
        for record, enc in zip(records, encode_chat_records(records, tok)):
            yield Inspected(record.ref, record.id, list(enc.ids), example_labels(enc), _spans(tok, enc.ids, enc.trained))
            if record_id is not None:
                return
        left -= len(records)
        if record_id is None and left <= 0:
            return
    if record_id is not None:
        raise CurateError(f"{out}: no record with id {record_id!r} in {' or '.join(SPLITS)}")


def header(item: Inspected) -> str:
    n_trained = sum(1 for x in item.labels if x != -100)
    return f"── {item.ref} id={item.id} ({len(item.input_ids):,} tokens, {n_trained:,} trained)"
