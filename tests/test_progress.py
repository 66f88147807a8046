"""Progress bars advance by records, in batches, not by files or stages: a large file moves its bar."""

from __future__ import annotations

import io
from contextlib import contextmanager

import polars as pl
import rich
from polars.testing import assert_frame_equal

from curator.config import CurateConfig
from curator.pipeline import read_lines
from curator.stages import quality
from curator.stages.base import Progress, StageContext
from tests.conftest import chat, write_lines
from tests.test_quality import CLEAN, frame


class FakeProgress:
    """Records each task's description, total and the advances made in it."""

    def __init__(self) -> None:
        self.tasks: list[tuple[str, int | None, list[int]]] = []

    @contextmanager
    def task(self, description: str, total: int | None = None):
        advances: list[int] = []
        self.tasks.append((description, total, advances))
        yield advances.append


def test_the_read_bar_advances_by_record_batches_across_files(tmp_path):
    good = chat(("user", "hi"), ("assistant", "hello"))
    files = [write_lines(tmp_path / "a.jsonl", [good] * 1_500), write_lines(tmp_path / "b.jsonl", [good] * 700)]
    progress = FakeProgress()
    lines = list(read_lines(files, CurateConfig(), progress))
    assert len(lines) == 2_200
    assert progress.tasks == [("read + validate", None, [1_000, 1_000, 200])]


def test_the_read_bar_moves_while_a_file_is_read(tmp_path):
    path = write_lines(tmp_path / "a.jsonl", [chat(("user", "hi"), ("assistant", "hello"))] * 5)
    progress = FakeProgress()
    seen = [len(progress.tasks[0][2]) for _ in read_lines([path], CurateConfig(), progress, batch=2)]
    # the second advance comes after the fourth record is handed on, not when the file ends
    assert seen == [0, 0, 1, 1, 2]
    assert progress.tasks[0][2] == [2, 2, 1]


def test_the_quality_bar_advances_by_row_batches_with_the_same_result(monkeypatch):
    answers = [CLEAN, "As an AI language model, I think Paris is lovely.", "Here:\n```python\nprint(1)", CLEAN, "Paris is the capital of France and"]
    df = frame(*[[("user", "Tell me about Paris, please."), ("assistant", a)] for a in answers])
    whole = quality.run(df, StageContext(config=CurateConfig()))
    monkeypatch.setattr(quality, "BATCH_ROWS", 2)
    progress = FakeProgress()
    batched = quality.run(df, StageContext(config=CurateConfig(), progress=progress))
    assert progress.tasks == [("quality", 5, [2, 2, 1])]
    assert_frame_equal(batched, whole)
    assert whole["quality_score"].to_list() == [1.0, 0.6, 0.5, 1.0, 0.5]  # rows differ: a batch mix-up would show


def test_a_bar_without_a_total_ends_with_its_count_as_total():
    out = io.StringIO()
    rich.reconfigure(file=out, width=100, force_terminal=False)
    try:
        with Progress(True).task("read + validate") as advance:
            advance(1_000)
            advance(234)
    finally:
        rich.reconfigure()
    assert "1234/1234" in out.getvalue()


def test_the_near_duplicate_bar_advances_by_records_after_each_step():
    from curator.stages import dedup_minhash

    rows = [[("user", f"Question number {i} about the weather in a city far away."),
             ("assistant", f"Answer {i}: it is sunny and warm there for most of the year, with some rain.")]
            for i in range(3)]
    progress = FakeProgress()
    df = frame(*rows).with_row_index("row").with_columns(
        ref=pl.format("f:{}", pl.col("row")), content_hash=pl.format("h{}", pl.col("row")))
    dedup_minhash.run(df, StageContext(config=CurateConfig(), progress=progress))
    assert progress.tasks == [("near duplicates", 4 * 3, [3, 3, 3, 3])]
