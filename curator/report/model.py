"""The shape of report.json, as pydantic models: the one source of `schemas/report.schema.json`.

Bump SCHEMA_VERSION (curator.report.build) when a field is renamed or removed; adding an optional
section does not need a bump. Regenerate the checked-in schema with

    python -m curator.report.model > schemas/report.schema.json

Free-form parts (the resolved config, stage summaries, the cost estimate) are whatever the
pipeline wrote into manifest.json and are typed as plain objects.
"""

from __future__ import annotations

import json
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from curator.report.build import SCHEMA_VERSION


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Counts(_M):
    read: int
    kept: int
    rejected: int
    train: int
    val: int
    consistent_with_manifest: bool = Field(description="manifest.json counts equal the annotations' counts")


class Gate(_M):
    name: str
    passed: bool
    value: Optional[float] = Field(description="rounded to 6 places; null when undefined (a rate of no example)")
    threshold: Optional[float] = Field(description="rounded to 6 places")
    margin: Optional[float] = Field(
        description="distance to the threshold, rounded to 6 places: positive when passed, negative when missed "
        "(0, never -0, when the miss is below the rounding)")
    message: str


class GateFamily(_M):
    family: str
    what: str


class Gates(_M):
    all_passed: bool
    n_failed: int
    items: list[Gate]
    not_measured: list[GateFamily] = Field(description="gate families the report always lists that this run did not evaluate")


class FunnelStep(_M):
    step: str
    count: int
    removed: Optional[int]
    share_of_read: float


class Turn(_M):
    role: Optional[str]
    text: str
    highlight: bool
    field: Optional[str]
    marks: Optional[list[list[int]]] = Field(
        None, description="[start, end) character spans of `text` to mark: the offending span, or the words "
        "that differ from the other copy; absent with highlight true: the whole turn")


class DuplicateOf(_M):
    ref: str = Field(description="the record this one duplicates (the copy kept for it)")
    jaccard: Optional[float] = Field(description="verified Jaccard of the two (near duplicates)")
    turns: list[Turn] = Field(description="its turns, the words that differ from the sample marked")


class RejectSample(_M):
    ref: str
    detail: str
    highlight: Optional[str] = Field(description="path of the offending field, e.g. messages[1].role")
    turns: list[Turn]
    duplicate_of: Optional[DuplicateOf] = Field(None, description="dup.exact and dup.near samples")


class Reason(_M):
    code: str
    stage: str
    count: int = Field(description="rows carrying this reason")
    first_reason: int = Field(description="rows whose first reason is this one")
    share_of_read: float
    samples: list[RejectSample]


class Rejects(_M):
    rows_rejected: int
    items: list[Reason]


class WarningCount(_M):
    code: str = Field(description="e.g. repair.leading_assistant, schema.extra_field, io.bom")
    count: int = Field(description="rows with this warning")
    kept: int = Field(description="of them, rows kept")


class Warnings(_M):
    rows_with_warnings: int
    items: list[WarningCount]


class Histogram(_M):
    edges: list[float]
    kept: list[int]
    rejected: list[int]
    overflow_kept: Optional[int] = None
    overflow_rejected: Optional[int] = None


class Rule(_M):
    rule: str
    action: Optional[str]
    hits: int
    hit_rate: float
    kept_hits: int


class Quality(_M):
    measured: bool
    scored_rows: Optional[int] = None
    kept_high_quality_rate: Optional[float] = Field(None, description="null when no example was kept (n/a)")
    high_quality_threshold: Optional[float] = None
    kept_mean_score: Optional[float] = None
    histogram: Optional[Histogram] = None
    rules: Optional[list[Rule]] = None


class Example(_M):
    ref: str
    text: str = Field(description="a short excerpt: the first prompt, or the code block's turn from its fence")


class Share(_M):
    key: str
    count: int
    share: float
    examples: Optional[list[Example]] = Field(None, description="the first few kept examples (languages)")


class Natural(_M):
    measured: bool
    items: Optional[list[Share]] = None


class Code(_M):
    measured: bool
    examples_with_code: Optional[int] = Field(
        None, description="kept examples with at least one programming-language block (the diversity gate's "
        "denominator; data and markup blocks alone do not count)")
    share_with_code: Optional[float] = Field(None, description="examples_with_code / kept examples")
    items: Optional[list[Share]] = Field(
        None, description="programming languages, as the diversity gate counts them: examples per language and "
        "their share of examples_with_code")
    other_items: Optional[list[Share]] = Field(
        None, description="data and markup languages (json, html, css, yaml ...) also seen, not counted by the "
        "gate: examples per language and their share of all kept examples")


class Languages(_M):
    natural: Natural
    code: Code


class TokenStats(_M):
    examples: int
    total: int
    trained: Optional[int]
    mean: Optional[float]
    p50: Optional[int]
    p90: Optional[int]
    p99: Optional[int]
    max: Optional[int]


class Tokens(_M):
    measured: bool
    budget: Optional[int] = None
    kept: Optional[TokenStats] = None
    train: Optional[TokenStats] = None
    val: Optional[TokenStats] = None
    over_budget_rows: Optional[int] = Field(None, description="rows over the budget after the policy")
    histogram: Optional[Histogram] = None
    policy: Optional[str] = Field(None, description="tokens.policy: reject | truncate | report")
    over_budget: Optional[int] = Field(None, description="rows over the context before the policy (tokens stage)")
    truncated_examples: Optional[int] = Field(None, description="rows the truncate policy cut to fit")
    truncated_turns: Optional[int] = Field(None, description="messages the truncate policy dropped, in all")
    kept_truncated: Optional[int] = Field(None, description="kept examples that were truncated")


class Member(_M):
    ref: str
    kept: bool
    split: Optional[str]
    jaccard: Optional[float]
    prompt: Optional[str] = None
    answer: Optional[str] = None


class Pair(_M):
    removed: str = Field(description="ref of a removed near duplicate")
    kept: Optional[str] = Field(description="ref of the copy it was removed for")
    jaccard: Optional[float] = Field(description="verified Jaccard of the two")
    kept_turns: list[Turn]
    removed_turns: list[Turn] = Field(description="turns of both, the words that differ marked on each side")


class Cluster(_M):
    id: str
    size: int
    members: list[Member]
    pairs: Optional[list[Pair]] = Field(
        None, description="near-duplicate clusters: each shown removed member beside its kept copy")
    min_jaccard: Optional[float] = Field(
        None, description="near-duplicate clusters: the lowest Jaccard of a removed member to the kept copy"
    )


class Duplicates(_M):
    exact_rejected: int
    near_rejected: int
    prompt_conflicts: Optional[int] = Field(description="records in a prompt-conflict group (same prompt, other answer)")
    prompt_conflict_groups: Optional[int] = None
    exact_groups: Optional[int]
    largest_exact: list[Cluster]
    near_measured: bool
    near_clusters: Optional[int]
    largest_near: list[Cluster]
    near_min_jaccard: Optional[float] = Field(
        None, description="the lowest Jaccard of any removed near duplicate to the copy kept for it"
    )
    exact_disabled: bool = Field(
        False, description="dedup_exact ran with enabled: false: no exact duplicate was looked for"
    )
    near_disabled: bool = Field(
        False, description="dedup_minhash ran with enabled: false: no near duplicate or prompt conflict was looked for"
    )


class SplitLang(_M):
    key: str
    train: int
    val: int


class Split(_M):
    measured: bool
    train: Optional[int] = None
    val: Optional[int] = None
    val_share: Optional[float] = None
    content_hash_in_both: Optional[int] = None
    near_clusters_in_both: Optional[int] = None
    by_lang: Optional[list[SplitLang]] = None


class Source(_M):
    source_file: str
    read: int
    kept: int
    rejected: int
    train: int
    val: int
    kept_share: float


class Cost(_M):
    measured: bool
    estimate: Any = Field(None, description="the tokens stage's estimate for the final kept set (cost_kept)")
    note: Optional[str] = Field(None, description="why no estimate is shown, when one exists for other rows")


class CountChange(_M):
    name: str
    previous: Optional[float]
    current: Optional[float]
    delta: Optional[float]


class GateChange(_M):
    name: str
    previous_passed: Optional[bool]
    current_passed: Optional[bool]
    previous_value: Optional[float]
    current_value: Optional[float]
    delta: Optional[float]


class KeyChange(_M):
    key: str
    previous: float
    current: float
    delta: float


class RecordRef(_M):
    ref: str
    content_hash: str


class Records(_M):
    measured: bool
    added: int
    removed: int
    unchanged: int
    moved_split: int
    added_samples: list[RecordRef]
    removed_samples: list[RecordRef]


class ValueChange(_M):
    key: str
    previous: Any
    current: Any


class Compare(_M):
    previous: str
    counts: list[CountChange]
    gates: list[GateChange]
    figures: list[CountChange]
    reasons: list[KeyChange]
    natural_languages: list[KeyChange]
    code_languages: list[KeyChange]
    records: Records
    config_changes: list[ValueChange]
    version_changes: list[ValueChange]


class Advice(_M):
    subject: str = Field(description="the reject code or gate name")
    kind: Literal["reject", "gate"]
    rows: Optional[int] = Field(description="rows rejected with this code; null for a gate")
    why: str
    do: str = Field(description="what to do, with the exact option or command")


class Report(_M):
    """report.json of one run of `curate run`."""

    model_config = ConfigDict(extra="forbid", title="curator report.json")

    schema_version: Literal[SCHEMA_VERSION]  # type: ignore[valid-type]
    counts: Counts
    gates: Gates
    funnel: list[FunnelStep]
    rejects: Rejects
    warnings: Warnings
    quality: Quality
    languages: Languages
    tokens: Tokens
    duplicates: Duplicates
    split: Split
    sources: list[Source]
    cost: Cost
    summaries: dict[str, Any]
    config: dict[str, Any]
    versions: dict[str, Any]
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    not_measured: list[str]
    advice: list[Advice] = Field(
        default_factory=list,
        description="why each failed gate and each reject code over 1% of the rows read happens, and what to do")
    compare: Optional[Compare] = None


def json_schema() -> dict:
    schema = Report.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


def schema_text() -> str:
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    print(schema_text(), end="")
