"""Every stage's settings: the `Config` model of each stage, in the order the stages run.

These models are the sections of CurateConfig (curator/config.py). They live apart from the stage
implementations so that reading a config, `curate config` and the trainer's config import pydantic
only, not polars, tree-sitter or the tokenizer. Each stage module exposes its model as `Config`.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, model_validator

# The quality stage's rule file: relative paths are read from the working directory, else from the
# package source tree (curator/rules.py).
DEFAULT_RULES = "rules/default.yaml"

Action = Literal["reject", "redact", "flag"]

# Thresholds of code-language detection. curator/code_langs.py's DetectSettings and
# curator/code_blocks.py's UnfencedSettings hold the same defaults (a test pins them equal): those
# modules import tree-sitter, which reading a config must not.
_DETECT = {
    "clean_max_error": 0.0,
    "cue_weight": 0.35,
    "detect_max_error": 0.5,
    "strong_cues": 2.0,
    "mismatch_min_error": 0.3,
    "max_candidates": 3,
    "fallback": True,
    "max_lines": 200,
    "unfenced_max_error": 0.1,
    "unfenced_min_cues": 2.0,
    "unfenced_cued_max_error": 0.3,
    "unfenced_strong_cues": 6.0,
}
_UNFENCED = {"min_lines": 2, "min_lines_introduced": 1, "min_code_share": 0.5}


class ValidateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    extra_fields: str = Field(
        "warn",
        description="unknown top-level or message fields: warn (kept under meta._extra) | reject (schema.extra_field)",
        pattern="^(warn|reject)$",
    )


class NormalizeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    unicode_form: Literal["NFC", "NFKC", "NFD", "NFKD"] | None = Field(
        "NFC", description="NFC | NFKC | NFD | NFKD (upper case) | null (leave as is)"
    )
    remove_hidden_controls: bool = Field(
        True,
        description="remove bidi embedding/override/isolate controls and Unicode tag characters (emoji flags "
        "kept); each row changed gets the warning normalize.hidden_controls",
    )
    strip_trailing_whitespace: bool = Field(
        True,
        description="strip spaces/tabs at prose line ends and the end of a turn (fenced code and Markdown hard "
        "line breaks are kept)",
    )


class DedupExactConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = Field(True, description="reject exact duplicates of the normalised conversation")


class SecretsPolicy(BaseModel):
    """What to do with each kind: reject (drop the example, reason secrets.<kind>), redact
    (replace each match by [REDACTED:<kind>] and keep the example) or flag (keep it as is)."""

    model_config = ConfigDict(extra="forbid")

    aws_access_key: Action = Field("redact", description="AWS access key ids (AKIA..., ASIA...)")
    aws_secret_key: Action = Field("redact", description="AWS secret access keys next to their name")
    github_token: Action = Field("redact", description="GitHub tokens (ghp_, gho_, ghu_, ghs_, ghr_, github_pat_)")
    openai_key: Action = Field("redact", description="OpenAI API keys (sk-...)")
    slack_token: Action = Field("redact", description="Slack tokens (xoxb-, xoxp-, ...) and webhook URLs")
    private_key: Action = Field(
        "reject", description="PEM/OpenSSH private key blocks; rejected because the key is usually the whole answer"
    )
    jwt: Action = Field("redact", description="JSON Web Tokens")
    email: Action = Field("redact", description="e-mail addresses outside the reserved documentation domains")
    phone: Action = Field("redact", description="formatted phone numbers")


class SecretsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    policy: SecretsPolicy = Field(default_factory=SecretsPolicy, description="action per kind: reject | redact | flag")
    ignore_email_domains: list[Annotated[str, Field(pattern=r"^\.?[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.?$")]] = Field(
        ["example.com", "example.net", "example.org", "example", "test", "invalid", "localhost"],
        description="domains (and their subdomains) whose addresses are not personal data: the names "
        "RFC 2606 and RFC 6761 reserve for documentation and testing; plain domain names (a domain covers "
        "its subdomains, so no wildcards)",
    )


class LanguageConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_sample_chars: int = Field(1000, ge=50, description="prose handed to langdetect per role, in characters")
    min_letters: int = Field(
        20, ge=0, description="fewer letters of prose than this (Han, Kana, Hangul weighted): und (too_short)"
    )
    cjk_letter_weight: float = Field(
        2.5, gt=0, description="a Han, Kana or Hangul character counts as this many letters (no spaces between words)"
    )
    script_min_share: float = Field(
        0.5, ge=0, le=1,
        description="Han, Kana and Hangul (weighted) at least this share of the letters: zh/ja/ko by script",
    )
    kana_min_share: float = Field(
        0.1, ge=0, le=1, description="script path: Kana at least this share of Han and Kana: ja (else zh)"
    )
    min_confidence: float = Field(
        0.5, ge=0, le=1, description="langdetect probability below this: und (low_confidence)"
    )
    workers: int = Field(2, ge=0, description="processes for langdetect (0 or 1: in this process)")
    pool_min_samples: int = Field(
        600, ge=1, description="fewer samples than this for langdetect: no pool (starting one costs ~1 s)"
    )
    fast_path: bool = Field(True, description="decide obvious English without langdetect (see module docstring)")
    fast_min_words: int = Field(5, ge=1, description="fast path: at least this many words")
    fast_min_share: float = Field(0.25, ge=0, le=1, description="fast path: share of frequent English words")
    fast_max_foreign: float = Field(
        0.05, ge=0, le=1,
        description="fast path: fewer than this share of the words (or under two) in FOREIGN_COMMON_WORDS",
    )
    fast_max_non_ascii: float = Field(
        0.01, ge=0, le=1, description="fast path: at most this share of the letters outside ASCII (0: none)"
    )


class CodeLanguageConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_languages: int | None = Field(
        5, description="diversity gate: the kept set holds at least this many programming languages (null: no gate)"
    )
    min_share: float = Field(
        0.02, ge=0, le=1, description="a language counts toward the gate when in at least this share of code examples"
    )
    label_mismatch: str = Field(
        "flag", pattern="^(flag|reject)$", description="a contradicted fence label: flag (column only) | reject"
    )
    clean_max_error: float = Field(
        _DETECT["clean_max_error"], ge=0, le=1, description="parse-error fraction at or below which a parse is clean"
    )
    cue_weight: float = Field(
        _DETECT["cue_weight"], ge=0, description="error-fraction points the best-cued language may trail the best parse"
    )
    detect_max_error: float = Field(
        _DETECT["detect_max_error"], ge=0, le=1, description="an unlabelled block parsing worse than this is unknown..."
    )
    strong_cues: float = Field(_DETECT["strong_cues"], ge=0, description="...unless its language's cue score is this high")
    mismatch_min_error: float = Field(
        _DETECT["mismatch_min_error"], ge=0, le=1, description="a label is contradicted only above this error fraction"
    )
    max_candidates: int = Field(_DETECT["max_candidates"], ge=1, description="grammars tried first, by cue score")
    fallback: bool = Field(_DETECT["fallback"], description="try grammars on cue-less blocks shaped like C-family code")
    max_lines: int = Field(_DETECT["max_lines"], ge=1, description="detection reads at most this many lines of a block")
    workers: int = Field(
        1, ge=0, description="processes classifying blocks (0 or 1: in this process; on 2 cores a pool saves ~10% "
        "wall time for ~45% more CPU, bench/RESULTS.md)"
    )
    pool_min_blocks: int = Field(
        1500, ge=1, description="fewer distinct blocks than this: no pool (starting one costs ~1 s)"
    )
    unfenced: bool = Field(
        True, description="also find code outside fences: whole-answer code, indented code, code after a colon line"
    )
    unfenced_roles: list[str] = Field(
        ["user", "assistant"], description="turns searched for unfenced code (system prompts and tool output are not)"
    )
    unfenced_min_lines: int = Field(
        _UNFENCED["min_lines"], ge=1, description="code lines a span amid prose needs"
    )
    unfenced_min_lines_introduced: int = Field(
        _UNFENCED["min_lines_introduced"], ge=1,
        description="code lines a span needs when it is the whole text or follows a line ending in ':'",
    )
    unfenced_min_code_share: float = Field(
        _UNFENCED["min_code_share"], ge=0, le=1, description="code lines / (code + prose lines) of a span"
    )
    unfenced_max_error: float = Field(
        _DETECT["unfenced_max_error"], ge=0, le=1, description="an unfenced span's grammar fails on at most this share"
    )
    unfenced_min_cues: float = Field(
        _DETECT["unfenced_min_cues"], ge=0, description="cue score bash/ruby/php/sql need outside fences"
    )
    unfenced_cued_max_error: float = Field(
        _DETECT["unfenced_cued_max_error"], ge=0, le=1,
        description="error share allowed outside fences when the language's cues score unfenced_strong_cues",
    )
    unfenced_strong_cues: float = Field(_DETECT["unfenced_strong_cues"], ge=0, description="see unfenced_cued_max_error")

    def unfenced_settings(self):
        """These thresholds as code_blocks.UnfencedSettings."""
        from curator.code_blocks import UnfencedSettings

        return UnfencedSettings(
            min_lines=self.unfenced_min_lines,
            min_lines_introduced=self.unfenced_min_lines_introduced,
            min_code_share=self.unfenced_min_code_share,
        )

    def settings(self):
        """These thresholds as code_langs.DetectSettings."""
        from curator.code_langs import DetectSettings

        return DetectSettings(
            clean_max_error=self.clean_max_error,
            cue_weight=self.cue_weight,
            detect_max_error=self.detect_max_error,
            strong_cues=self.strong_cues,
            mismatch_min_error=self.mismatch_min_error,
            max_candidates=self.max_candidates,
            fallback=self.fallback,
            max_lines=self.max_lines,
            unfenced_max_error=self.unfenced_max_error,
            unfenced_min_cues=self.unfenced_min_cues,
            unfenced_cued_max_error=self.unfenced_cued_max_error,
            unfenced_strong_cues=self.unfenced_strong_cues,
        )


class TokensConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field(
        "mistral-7b-instruct-v0.2",
        description="model profile (mistral-7b-instruct-v0.2 | codellama-13b-instruct | phi-3-mini-4k-instruct, "
        "see curator/model_profiles.py) or a path to a Hugging Face tokenizer folder with a chat template",
    )
    tokenizer_path: str | None = Field(
        None, description="folder with the tokenizer of a profile that is not built in (all but Mistral)"
    )
    context_length: int | None = Field(
        None, ge=1, description="tokens per example; null uses the profile's (8,192 for Mistral-7B-Instruct-v0.2)"
    )
    policy: Literal["reject", "truncate", "report"] = Field(
        "reject", description="examples over the context: reject | truncate (drop earliest exchanges) | report"
    )
    batch_size: int = Field(
        8192, ge=1, description="conversations per batched tokenizer call (one progress step; bounds memory)"
    )
    epochs: int = Field(3, ge=1, description="epochs of the cost estimate (3: the model-selection guide's recipe)")
    prices_file: str | None = Field(
        None, description="GPU options, prices and throughput model (YAML); null = curator/data/gpu_prices.yaml"
    )
    throughput: dict[str, PositiveFloat] | None = Field(
        None, description="training tokens/s by GPU option name; overrides the FLOPs-based default of that option"
    )
    mfu: float | None = Field(
        None, gt=0, le=1, description="model FLOPs utilisation of the default throughput; null = the prices file's"
    )
    n_params: float | None = Field(
        None, gt=0, description="model parameters for the default throughput; null = the profile's"
    )


class QualityConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rules: str = Field(
        DEFAULT_RULES,
        description="rule file (YAML); a relative path is read from the working directory, else from the "
        "package source tree, where rules/default.yaml lives; `--rules` sets it",
    )
    high_quality_threshold: float = Field(
        0.7,
        ge=0.0,
        le=1.0,
        description="high_quality = quality_score >= this; 0.7 means one rule of weight above 0.3 (or two "
        "of 0.17) takes an example out of the high-quality set, while a single minor rule does not",
    )
    min_high_quality_rate: float | None = Field(
        0.60,
        ge=0.0,
        le=1.0,
        description="gate: share of the kept set that must be high quality (60% by default, the share the fine-tuning recipe asks for); null disables",
    )


class DedupMinhashConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="find near-duplicates; false passes rows through with null columns")
    threshold: float = Field(
        0.8,
        gt=0.0,
        le=1.0,
        description="exact Jaccard of the shingle sets at or above which two records are near-duplicates; 0.8 is "
        "the threshold of datatrove's and text-dedup's MinHash dedup defaults and of Lee et al. 2022",
    )
    ngram: int = Field(5, ge=1, description="word n-gram size (5, as datatrove and text-dedup)")
    num_perm: int = Field(128, ge=2, description="MinHash permutations (datasketch's default, 128)")
    seed: int = Field(
        1, ge=0, le=2**32 - 1, description="seed of the MinHash permutations (datasketch's default, 1; 0 to 2**32 - 1)"
    )
    min_recall_at_threshold: float = Field(
        0.99,
        gt=0.0,
        lt=1.0,
        description="LSH bands/rows are chosen so that a pair exactly at the threshold becomes a candidate "
        "with at least this probability",
    )
    roles: list[Literal["system", "user", "assistant", "tool"]] = Field(
        ["system", "user", "assistant"], min_length=1, description="turns whose text is shingled"
    )
    system_prompt: Literal["drop_shared", "keep", "drop"] = Field(
        "drop_shared",
        description="drop_shared: a system prompt found in at least shared_system_min_records records is left "
        "out of the shingles (otherwise all records sharing it look alike); keep; drop: all system prompts out",
    )
    shared_system_min_records: int = Field(
        2, ge=2, description="a system prompt in this many records counts as shared (it is no longer specific)"
    )
    short_record_words: int | None = Field(
        None,
        ge=1,
        description="records with fewer tokens are compared with short_ngram-grams; null: 2*ngram/(1-threshold)-1 "
        "(49 for 5-grams at 0.8), the length below which one changed word already breaks the threshold",
    )
    short_ngram: int = Field(2, ge=1, description="n-gram size for short records (bigrams keep word order)")
    prompt_conflict: Literal["keep_all", "keep_best", "reject"] = Field(
        "keep_all",
        description="records with near-identical user turns but different answers: keep_all flags them, "
        "keep_best keeps the best of each group, reject rejects every member (dup.prompt_conflict)",
    )
    prompt_threshold: float = Field(
        0.9, gt=0.0, le=1.0, description="exact Jaccard of the user-turn shingles for 'near-identical prompts'"
    )
    prompt_ngram: int = Field(2, ge=1, description="n-gram size of the user-turn shingles (prompts are short)")
    answer_threshold: float = Field(
        0.3,
        gt=0.0,
        le=1.0,
        description="a near-duplicate edge also needs this exact Jaccard between the two records' assistant turns "
        "(short_ngram-grams when the shorter answer has fewer than short_record_words tokens), so a long shared "
        "prompt cannot make different answers near-duplicates (the prompt view then finds a prompt conflict); also "
        "what 'the same answer' means in a same-prompt group. 0.3: every planted near-duplicate of "
        "bench/dedup_bench.py at J >= 0.8 keeps its edge (answer Jaccard 0.33 and up; 13 of 1,344 are below 0.5), "
        "while answers that differ share far less (the corpus's pairs at J >= 0.8: none between 0.12 and 0.5; "
        "python and javascript solutions of one exercism exercise: 0.079)",
    )
    workers: int = Field(
        2, ge=1, description="threads shingling, signing and verifying near-duplicates (chunks of the column under "
        "local; a shard's signatures under stream; ray's tasks sign on one thread each); the reference box has 2 cores",
    )

    @model_validator(mode="after")
    def _short_below_ngram(self) -> "DedupMinhashConfig":
        if self.short_ngram > self.ngram:
            raise ValueError(f"short_ngram ({self.short_ngram}) must not exceed ngram ({self.ngram})")
        return self

    @model_validator(mode="after")
    def _bands_exist(self) -> "DedupMinhashConfig":
        # Checked at config load, not when the stage runs after every earlier stage.
        from curator.lsh_params import band_options

        for key, threshold in (("threshold", self.threshold), ("prompt_threshold", self.prompt_threshold)):
            if not band_options(threshold, self.num_perm, self.min_recall_at_threshold):
                raise ValueError(
                    f"dedup_minhash.num_perm={self.num_perm} leaves no LSH bands with recall "
                    f"{self.min_recall_at_threshold} at {key} {threshold}; raise dedup_minhash.num_perm or lower "
                    f"dedup_minhash.min_recall_at_threshold"
                )
        return self

    def short_words(self) -> int:
        if self.short_record_words is not None:
            return self.short_record_words
        if self.threshold >= 1:
            return 1
        # Exact decimals: in floats 2*5 / (1 - 0.8) is 50.000000000000014, whose ceiling is 51, not 50.
        t = Fraction(str(self.threshold))
        return max(1, math.ceil(Fraction(2 * self.ngram) / (1 - t)) - 1)


class SelectConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    target: int | None = Field(
        50_000,
        ge=1,
        description="keep at most this many examples (50,000 by default: the recipe's ideal size); null keeps all",
    )


def select_problem(skip_stages: list[str], config: SelectConfig) -> str | None:
    """Why select cannot run with these settings, or None: a target ranks by `quality_score`, which a skipped
    quality stage never writes. CurateConfig checks it (SelectConfig alone cannot see skip_stages),
    so that such a run stops at config load instead of after every other stage."""
    skipped = set(skip_stages)
    if config.target is None or "select" in skipped or "quality" not in skipped:
        return None
    return (
        f"select.target={config.target} ranks examples by quality_score, which the skipped stage quality "
        "writes; remove quality from skip_stages, set select.target to null, or skip select too"
    )


class SplitConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    val_fraction: float = Field(0.1, ge=0.0, le=1.0, description="share of examples assigned to val (90/10 by default)")
