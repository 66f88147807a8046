"""Shared fixtures: paths to the real data and small helpers to write input files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
CHAT_DATA = SHARED / "data" / "chat"
NATIVE_DATA = SHARED / "data" / "native"
SAMPLES = ROOT / "data_samples"

# Stages beyond the foundation; pipeline tests that check accounting skip them for speed.
HEAVY_STAGES = "[secrets,language,code_language,tokens,quality,dedup_minhash,select]"


def write_lines(path: Path, lines: list) -> Path:
    """Write records (dicts are JSON-encoded, str/bytes written as they are) one per line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    chunks = []
    for line in lines:
        if isinstance(line, bytes):
            chunks.append(line)
        elif isinstance(line, str):
            chunks.append(line.encode("utf-8"))
        else:
            chunks.append(json.dumps(line, ensure_ascii=False).encode("utf-8"))
    path.write_bytes(b"\n".join(chunks) + b"\n")
    return path


def chat(*turns: tuple[str, str], **extra) -> dict:
    record = {"messages": [{"role": r, "content": c} for r, c in turns]}
    record.update(extra)
    return record


@pytest.fixture
def real_data() -> Path:
    if not CHAT_DATA.is_dir():
        pytest.skip("../shared/data/chat is not available")
    return CHAT_DATA


def messages_frame(conversations: list[list[tuple[str, str]]]):
    """A stage-input frame (messages + empty reject lists) from [(role, content), ...] per row."""
    import polars as pl

    from curator import columns as C

    rows = [
        [{"role": r, "content": c, "weight": None, "tool_calls": None, "tool_call_id": None} for r, c in conv]
        for conv in conversations
    ]
    return pl.DataFrame(
        {C.MESSAGES: rows, C.REJECT_REASONS: [[]] * len(rows), C.REJECT_DETAILS: [[]] * len(rows)},
        schema={C.MESSAGES: pl.List(C.MESSAGE), C.REJECT_REASONS: pl.List(pl.Utf8), C.REJECT_DETAILS: pl.List(pl.Utf8)},
    )
