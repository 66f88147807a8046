"""What each stage reports about its work: the typed shape of manifest.json's `summaries[stage]`.

A stage fills `ctx.summaries[NAME]` with plain data; before the manifest is written the pipeline
checks each against the model its registry entry names (`registry.check_summaries`), so a key a
stage writes is a key declared here, and the report reads declared keys (`registry.read_summary`),
never a guessed one. Every field is optional (older run folders, disabled stages write
`{"enabled": false}`), but no undeclared key passes.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class _Summary(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DedupExactSummary(_Summary):
    exact_duplicates: int | None = None
    enabled: bool | None = None


class SecretsSummary(_Summary):
    kinds: dict[str, dict[str, Any]] | None = None  # kind -> {"action", "rows"}
    rows: int | None = None
    rows_with_findings: int | None = None


class LanguageSummary(_Summary):
    lang: dict[str, int] | None = None
    user_lang: dict[str, int] | None = None
    assistant_lang: dict[str, int] | None = None
    und_reasons: dict[str, int] | None = None
    distinct_samples_by_decision: dict[str, int] | None = None


class CodeLanguageSummary(_Summary):
    examples: int | None = None
    has_code: int | None = None
    code_examples: int | None = None
    examples_per_language: dict[str, int] | None = None
    blocks: int | None = None
    blocks_per_language: dict[str, int] | None = None
    blocks_decided_by: dict[str, int] | None = None
    label_mismatch_blocks: int | None = None
    unknown_language_blocks: int | None = None
    kept_language_shares: dict[str, float] | None = None


class TokensSummary(_Summary):
    model: str | None = None
    chat_format: str | None = None
    context_length: int | None = None  # the budget every example was checked against
    policy: str | None = None
    examples: int | None = None
    tokens_seen: int | None = None
    tokens_trained: int | None = None
    max_tokens: int | None = None  # the longest example seen, not the budget
    p50_tokens: int | None = None
    p99_tokens: int | None = None
    rejected_over_budget: int | None = None
    rejected_no_trainable: int | None = None
    rejected_template_error: int | None = None
    truncated_turns: int | None = None
    over_budget: int | None = None
    truncated_examples: int | None = None
    kept_examples: int | None = None
    kept_tokens_seen: int | None = None
    kept_tokens_trained: int | None = None
    cost: dict[str, Any] | None = None  # the training cost estimate of every example the stage saw
    cost_kept: dict[str, Any] | None = None  # ... of the kept set, added when the gates are evaluated


class QualitySummary(_Summary):
    rows: int | None = None
    high_quality: int | None = None
    high_quality_threshold: float | None = None
    high_quality_rate: float | None = None
    mean_score: float | None = None
    rules: list[dict[str, Any]] | None = None  # per rule: rule, signal, turns, action, weight, thresholds, hits, rate
    score_histogram: dict[str, list[float]] | None = None  # {"edges", "counts"}
    skipped_rules: dict[str, str] | None = None  # rule -> why it did not run


class DedupMinhashSummary(_Summary):
    enabled: bool | None = None
    records: int | None = None
    clusters: int | None = None
    records_in_clusters: int | None = None
    near_duplicates_rejected: int | None = None
    largest_cluster: int | None = None
    cluster_sizes: dict[str, int] | None = None
    min_jaccard_to_kept: float | None = None
    kept_apart_from_chains: int | None = None
    prompt_conflict_groups: int | None = None
    prompt_conflict_records: int | None = None
    prompt_conflict_rejected: int | None = None
    prompt_conflict_policy: str | None = None
    same_answer_groups: int | None = None
    same_answer_records: int | None = None
    answer_check_dropped_pairs: int | None = None
    short_records: int | None = None
    records_without_shingles: int | None = None
    shared_system_prompts_dropped: int | None = None
    lsh: dict[str, dict[str, int]] | None = None  # view -> {"signed", "candidate_pairs", "verified_pairs"}


class SelectSummary(_Summary):
    target: int | None = None
    available: int | None = None
    kept: int | None = None
    rejected: int | None = None
    strata: list[dict[str, Any]] | None = None  # {"stratum", "available", "kept"}


class SplitSummary(_Summary):
    train: int | None = None
    val: int | None = None
    val_fraction: float | None = None
