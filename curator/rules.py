"""Quality rules as data: the rule-file model, its loader, and the compiler to Polars expressions.

A rule file (rules/default.yaml, or the file given with `--rules`) is YAML:

    version: 1
    rules:
      - id: repeated_lines              # stable; a reject becomes reason `quality.<id>`
        description: >                  # what it catches, why, and where the threshold comes from
          ...
        signal: dup_line_frac           # one of curator.signals.SIGNALS
        turns: assistant                # assistant | user | system | all
        max_dup_line_frac: 0.3          # thresholds are min_<signal> / max_<signal>; null disables
        weight: 0.5                     # how much a firing lowers the score, in [0, 1]
        action: score                   # score | flag | reject

A rule *fires* on a row when its signal is below `min_<signal>` or above `max_<signal>`
(a null signal never fires). The score of a row is the product of `1 - weight` over the fired
`score` and `reject` rules, so it stays in [0, 1] and each rule lowers it independently of the
others; `flag` rules only record the reason. Every fired rule is listed in `quality_flags`.

Errors name the file, the line, the rule and the key.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from curator import columns as C
from curator.errors import CurateError
from curator.yaml_io import load_yaml, yaml_key_lines
from curator.signals import SIGNALS, TURN_SCOPES, Scope
from curator.stage_configs import DEFAULT_RULES

# The package source tree: rules/default.yaml sits beside curator/ in the repository.
SOURCE_ROOT = Path(__file__).resolve().parents[1]
PACKAGED_RULES = Path(__file__).resolve().parent / "data" / "rules"

FLAG = pl.Struct({"rule": pl.Utf8, "value": pl.Float64, "action": pl.Utf8})


class Rule(BaseModel):
    """One rule of a rule file."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="stable id; rejects become quality.<id>")
    description: str = Field(min_length=1, description="what the rule catches, why, and its source")
    signal: str = Field(description="the measured signal, one of curator.signals.SIGNALS")
    turns: Literal["assistant", "user", "system", "all"] = Field("assistant", description="turns measured")
    weight: float = Field(ge=0.0, le=1.0, description="score factor 1 - weight when the rule fires")
    action: Literal["score", "flag", "reject"] = Field("score", description="score | flag | reject")
    min: float | None = Field(None, description="fires when the signal is below (written min_<signal>)")
    max: float | None = Field(None, description="fires when the signal is above (written max_<signal>)")

    @model_validator(mode="before")
    @classmethod
    def _thresholds(cls, data: Any) -> Any:
        """Map `min_<signal>` / `max_<signal>` keys onto `min` / `max`, refusing any other."""
        if not isinstance(data, dict):
            raise ValueError(f"a rule is a mapping of keys, got {type(data).__name__}")
        data = dict(data)
        signal = data.get("signal")
        if not isinstance(signal, str) or signal not in SIGNALS:
            raise _KeyError("signal", f"unknown signal {signal!r}; known: {', '.join(sorted(SIGNALS))}")
        for bare in ("min", "max"):
            if bare in data:
                raise _KeyError(bare, f"write thresholds as {bare}_{signal}")
        for key in [k for k in data if isinstance(k, str) and k.startswith(("min_", "max_"))]:
            bound, name = key.split("_", 1)
            if name != signal:
                raise _KeyError(key, f"threshold keys of signal {signal} are min_{signal} and max_{signal}")
            data[bound] = data.pop(key)
        return data

    @model_validator(mode="after")
    def _turns_supported(self) -> "Rule":
        allowed = SIGNALS[self.signal].turns
        if self.turns not in allowed:
            raise _KeyError("turns", f"signal {self.signal} is measured on {', '.join(allowed)} only")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise _KeyError(f"min_{self.signal}", f"min_{self.signal} {self.min} is above max_{self.signal} {self.max}")
        return self

    @property
    def enabled(self) -> bool:
        """A rule with both thresholds null is disabled."""
        return self.min is not None or self.max is not None

    def fired(self, value: pl.Expr) -> pl.Expr:
        """True where `value` crosses a threshold; false on null."""
        hit = pl.lit(False)
        if self.min is not None:
            hit = hit | (value < self.min)
        if self.max is not None:
            hit = hit | (value > self.max)
        return hit.fill_null(False)

    def threshold_text(self) -> str:
        parts = []
        if self.min is not None:
            parts.append(f"min_{self.signal}={self.min:g}")
        if self.max is not None:
            parts.append(f"max_{self.signal}={self.max:g}")
        return ", ".join(parts)


class _KeyError(ValueError):
    """A rule error tied to one key, so the loader can name it."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


class RuleFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = Field(1, description="rule-file format version")
    rules: list[Rule] = Field(min_length=1, description="the rules, evaluated in order")


@dataclass(frozen=True)
class RuleSet:
    """A loaded rule file."""

    path: Path
    sha256: str
    rules: tuple[Rule, ...]

    @property
    def enabled(self) -> tuple[Rule, ...]:
        return tuple(r for r in self.rules if r.enabled)

    def needs(self) -> set[str]:
        """Columns of earlier stages the enabled rules read."""
        return {c for r in self.enabled for c in SIGNALS[r.signal].needs}


def resolve_rules_path(path: str | Path) -> Path:
    """An absolute path as given; a relative one from the working directory when the file is
    there, else from the package source tree (where rules/default.yaml lives)."""
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p
    in_tree = SOURCE_ROOT / p
    if in_tree.exists():
        return in_tree
    # An installed (non-editable) package has no source tree: rules/ ships inside it as
    # curator/data/rules (a link to rules/ in the repository, copied into the wheel).
    if p.parts[:1] == ("rules",):
        packaged = PACKAGED_RULES / Path(*p.parts[1:])
        if packaged.exists():
            return packaged
    raise CurateError(f"{path}: rule file not found (looked in {Path.cwd()} and {SOURCE_ROOT})")


def _line_map(text: str) -> tuple[dict[int, int], dict[tuple[int, str], int], dict[str, int]]:
    """1-based line of each rule (by index), of each key of each rule, and of each top-level key."""
    rule_lines: dict[int, int] = {}
    key_lines: dict[tuple[int, str], int] = {}
    top_lines: dict[str, int] = {}
    for path, line in yaml_key_lines(text).items():
        if len(path) == 1:
            top_lines[path[0]] = line
        elif path[0] == "rules" and path[1].isdigit():
            if len(path) == 2:
                rule_lines[int(path[1])] = line
            elif len(path) == 3:
                key_lines[(int(path[1]), path[2])] = line
    return rule_lines, key_lines, top_lines


def load_rules(path: str | Path = DEFAULT_RULES) -> RuleSet:
    """Read and validate a rule file; errors name the file, line, rule and key."""
    resolved = resolve_rules_path(path)
    try:
        raw = resolved.read_bytes()
    except OSError as exc:
        raise CurateError(f"{resolved}: cannot read rule file: {exc.strerror}") from exc
    text = raw.decode("utf-8", errors="replace")
    data = load_yaml(text, resolved)
    if not isinstance(data, dict):
        got = "an empty file" if data is None else type(data).__name__
        raise CurateError(f"{resolved}: a rule file is a mapping with a `rules` list, got {got}")
    rule_lines, key_lines, top_lines = _line_map(text)
    raw_rules = data.get("rules")
    if isinstance(raw_rules, list):
        seen: dict[str, int] = {}
        for i, item in enumerate(raw_rules):
            rid = item.get("id") if isinstance(item, dict) else None
            if isinstance(rid, str):
                if rid in seen:
                    line = key_lines.get((i, "id"), rule_lines.get(i))
                    raise CurateError(
                        f"{resolved}:{line}: rule {rid}: key id: duplicate id (first defined as rule #{seen[rid] + 1})"
                    )
                seen[rid] = i
    try:
        model = RuleFile.model_validate(data)
    except ValidationError as exc:
        raise CurateError(_describe(resolved, data, exc, rule_lines, key_lines, top_lines)) from exc
    return RuleSet(path=resolved, sha256=hashlib.sha256(raw).hexdigest(), rules=tuple(model.rules))


def _describe(
    path: Path, data: dict, exc: ValidationError, rule_lines: dict, key_lines: dict, top_lines: dict | None = None
) -> str:
    err = exc.errors()[0]
    loc = list(err["loc"])
    more = f" ({len(exc.errors())} errors in the file)" if len(exc.errors()) > 1 else ""
    if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
        i = loc[1]
        item = data["rules"][i] if isinstance(data.get("rules"), list) else None
        rid = item.get("id") if isinstance(item, dict) else None
        name = f"rule {rid}" if isinstance(rid, str) else f"rule #{i + 1}"
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, _KeyError):
            key, msg = cause.key, cause.message
        else:
            key = str(loc[2]) if len(loc) > 2 else None
            if key in ("min", "max") and isinstance(item, dict):
                key = f"{key}_{item.get('signal')}"
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown key; allowed: id, description, signal, turns, weight, action, min_<signal>, max_<signal>"
            elif err["type"] == "missing":
                msg = "required key is missing"
        line = key_lines.get((i, key)) if key else None
        line = line or rule_lines.get(i)
        where = f"{path}:{line}" if line else str(path)
        return f"{where}: {name}: key {key}: {msg}{more}" if key else f"{where}: {name}: {msg}{more}"
    key = ".".join(str(p) for p in loc) or "(top level)"
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown key; allowed: version, rules"
    line = (top_lines or {}).get(str(loc[0])) if loc else None
    where = f"{path}:{line}" if line else str(path)
    return f"{where}: key {key}: {msg}{more}"


# --- compiling ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CompiledRules:
    """What the quality stage evaluates: helper columns, then one value column per rule."""

    scope: Scope
    values: dict[str, pl.Expr]  # value column -> Float64 signal expression over the helper columns
    rules: tuple[Rule, ...]

    def value_col(self, rule: Rule) -> str:
        """Rules on the same signal and turns share one value column."""
        return f"__value_{rule.signal}__{rule.turns}"

    def fired_col(self, rule: Rule) -> str:
        return f"__fired_{rule.id}"

    def fired_exprs(self) -> list[pl.Expr]:
        return [r.fired(pl.col(self.value_col(r))).alias(self.fired_col(r)) for r in self.rules]

    def score_expr(self) -> pl.Expr:
        """Product of (1 - weight) over the fired score/reject rules, in [0, 1].

        Rounded to 9 places: 0.8 * 0.7 is 0.5599999999999999 in floating point, which a threshold
        of 0.56 would class as below it.
        """
        score = pl.lit(1.0, dtype=pl.Float64)
        for r in self.rules:
            if r.action != "flag" and r.weight > 0:
                score = score * pl.when(pl.col(self.fired_col(r))).then(1.0 - r.weight).otherwise(1.0)
        return score.clip(0.0, 1.0).round(9)

    def flags(self, frame: pl.DataFrame) -> pl.Series:
        """List of {rule, value, action} for every fired rule, in rule order: one per row of `frame`, which
        holds the fired and value columns.

        Built long (the rows each rule fired on, grouped by row): a list of one when/then struct per rule
        costs Polars about 100x more (2 s against 0.02 s for 50k rows and 25 rules)."""
        n = frame.height
        if not self.rules:
            return pl.Series(C.QUALITY_FLAGS, [[]] * n, dtype=pl.List(FLAG))
        row = pl.int_range(pl.len(), dtype=pl.UInt32).alias("_row")
        fired = pl.concat(
            frame.lazy()
            .select(
                row,
                pl.lit(k, dtype=pl.UInt32).alias("_rule"),
                pl.col(self.fired_col(r)).alias("_fired"),
                pl.struct(
                    pl.lit(r.id).alias("rule"),
                    pl.col(self.value_col(r)).alias("value"),
                    pl.lit(r.action).alias("action"),
                ).alias(C.QUALITY_FLAGS),
            )
            .filter(pl.col("_fired"))
            for k, r in enumerate(self.rules)
        )
        per_row = fired.sort("_row", "_rule").group_by("_row", maintain_order=True).agg(C.QUALITY_FLAGS)
        return (
            pl.LazyFrame({"_row": pl.int_range(n, dtype=pl.UInt32, eager=True)})
            .join(per_row, on="_row", how="left", maintain_order="left")
            .select(pl.col(C.QUALITY_FLAGS).fill_null(pl.lit([], dtype=pl.List(FLAG))).cast(pl.List(FLAG)))
            .collect()
            .to_series()
        )


def compile_rules(rules: RuleSet | tuple[Rule, ...] | list[Rule]) -> CompiledRules:
    """Turn the enabled rules into expressions; each signal is built once per (signal, turns)."""
    selected = rules.enabled if isinstance(rules, RuleSet) else tuple(r for r in rules if r.enabled)
    scope = Scope()
    values: dict[str, pl.Expr] = {}
    compiled = CompiledRules(scope=scope, values=values, rules=selected)
    for r in selected:
        col = compiled.value_col(r)
        if col not in values:
            values[col] = SIGNALS[r.signal].build(scope, r.turns).cast(pl.Float64)
    return compiled


__all__ = [
    "DEFAULT_RULES",
    "FLAG",
    "TURN_SCOPES",
    "CompiledRules",
    "Rule",
    "RuleFile",
    "RuleSet",
    "compile_rules",
    "load_rules",
    "resolve_rules_path",
]
