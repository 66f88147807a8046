"""Dataset gates: pass/fail checks on the kept set, reported with their margin."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Gate:
    """One gate's verdict. `value` and `threshold` are in the same unit."""

    name: str  # stable id, e.g. "quality.high_quality_rate", "size.min_examples"
    passed: bool
    value: float | None  # None when there is nothing to measure (no kept example)
    threshold: float
    message: str  # one line a person reads, saying by how much it passed or missed

    def to_dict(self) -> dict:
        return asdict(self)
