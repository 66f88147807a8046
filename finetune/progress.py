"""Progress bars of training and its evaluations and generations, on stderr (stdout stays for what a user pipes on).

One rich live display holds a bar per kind of work: `train` (optimizer steps, tokens/s and loss), `eval`
(val batches), `bleu` (prompts generated for BLEU) and `compare` (answers of the comparison sheet, base and
fine-tuned). A later evaluation restarts its bar, so the display stays a few lines however long the run.
Under several processes only rank 0 shows it, and the eval and generation bars count rank 0's own share.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

UNITS = {"train": "steps", "eval": "batches", "bleu": "prompts", "compare": "answers"}


class RunProgress:
    """Bars on stderr, drawn while the object is entered; silent when not `enabled` (--quiet, rank > 0)."""

    def __init__(self, enabled: bool = True):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self._bars = Progress(
            TextColumn("{task.description:<7}"), BarColumn(bar_width=20), MofNCompleteColumn(), TextColumn("{task.fields[unit]}"),
            TextColumn("{task.fields[detail]}"), TimeElapsedColumn(), TimeRemainingColumn(), disable=not enabled,
            console=Console(stderr=True),
        )
        self._tasks: dict[str, int] = {}

    def __enter__(self) -> "RunProgress":
        self._bars.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._bars.__exit__(*exc)

    def _bar(self, description: str, total: int, completed: int = 0):
        task = self._tasks.get(description)
        fields = {"unit": UNITS.get(description, ""), "detail": ""}
        if task is None:
            task = self._bars.add_task(description, total=total, completed=completed, **fields)
            self._tasks[description] = task
        else:  # the same work again (the next evaluation): its bar starts over (reset replaces the fields)
            self._bars.reset(task, total=total, completed=completed, **fields)
        return task

    def start_training(self, total_steps: int, done: int) -> None:
        self._bar("train", total_steps, done)

    def step_done(self, step: int, tokens_per_s: float, loss: float) -> None:
        self._bars.update(self._tasks["train"], completed=step, detail=f"{tokens_per_s:>8,.0f} tok/s  loss {loss:.4f}")

    @contextmanager
    def task(self, description: str, total: int) -> Iterator[Callable[[int], None]]:
        """A bar for `total` items of `description`; yields `advance(n)`."""
        task = self._bar(description, total)
        yield lambda n=1: self._bars.advance(task, n)
