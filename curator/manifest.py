"""OUT/manifest.json of `curate run` as a versioned pydantic model: what the trainer and the reports read.

The pipeline writes it through `Manifest.to_json` (indent 2, sorted keys, one newline at the end); the
trainer reads it through `read_manifest`, which refuses a manifest of another version or shape in one line
naming the file and the field. Most parts stay plain JSON objects owned by the stage that writes them
(config, summaries, the other stages' metadata); the part the trainer depends on is typed: `Tokenization`,
the tokens stage's record of how the data was tokenized and budgeted (manifest["stages"]["tokens"]).

Version 2 added `policy` to the tokens part; a version 1 manifest is refused by `read_manifest` (run
`curate run` again). Import cost: pydantic only, no polars and no stage, since `curate train` reads the
manifest before anything heavy.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from curator.errors import CurateError

MANIFEST_VERSION = 2
MANIFEST_FILE = "manifest.json"


class Tokenization(BaseModel):
    """How the tokens stage counted and budgeted the data: the trainer must tokenize the same way to see
    the lengths the budget checked. Provenance keys (tokenizer file and sha256, library versions) ride along."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(description="the tokenizer profile's name (curator/model_profiles.py), or a tokenizer folder's name")
    chat_format: str = Field(description="the chat template id: mistral-v1 | llama-2 | phi-3 | hf-template")
    context_length: int = Field(ge=1, description="the token budget every kept example was checked against")
    policy: Literal["reject", "truncate", "report"] = Field(description="what the budget did with longer examples")
    tokenizer_path: str | None = Field(None, description="the tokenizer folder, for every profile but Mistral's")
    chat_template: str | None = Field(None, description="the file in OUT holding the chat template, if any")

    def tokenizer_arguments(self) -> tuple[str, str | None]:
        """(model, tokenizer_path) for ChatTokenizer.load: a tokenizer folder is its own profile."""
        if self.chat_format == "hf-template" and self.tokenizer_path:
            return self.tokenizer_path, None
        return self.model, self.tokenizer_path


class Stages(BaseModel):
    """Per-stage metadata (manifest["stages"]): typed for the tokens stage, plain objects for the others."""

    model_config = ConfigDict(extra="allow")

    tokens: Tokenization | None = None  # absent when the tokens stage was skipped


class GateResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    passed: bool
    value: int | float | None  # int | float: a value is written back as it was read (260 stays 260)
    threshold: int | float | None
    message: str


class SkippedInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str
    why: str


class Manifest(BaseModel):
    """OUT/manifest.json: resolved config, versions, sha256 of every input and output, counts, gates,
    per-stage metadata and summaries."""

    model_config = ConfigDict(extra="forbid")

    manifest_version: int
    config: dict[str, Any]
    # the engine that ran the stages: name, why it was chosen, batch_rows, shards, the processes that ran the
    # row stages here (outputs do not depend on it)
    engine: dict[str, Any] | None = None
    versions: dict[str, str]
    inputs: dict[str, str | None]  # display path -> sha256 of the bytes the run read (null: the file could not be read)
    inputs_skipped: list[SkippedInput]
    outputs: dict[str, str]  # file in OUT -> sha256
    counts: dict[str, int]
    funnel: list[dict[str, Any]]
    gates: list[GateResult]
    stages: Stages
    summaries: dict[str, Any]

    @property
    def tokenization(self) -> Tokenization | None:
        return self.stages.tokens

    def to_json(self) -> str:
        """The file's text: the fields as they were given (nothing added), indent 2, sorted keys."""
        return json.dumps(self.model_dump(exclude_unset=True), indent=2, sort_keys=True) + "\n"


def _where(error: dict) -> str:
    return ".".join(str(part) for part in error["loc"]) or "(top level)"


def parse_manifest(text: str, path: Path) -> Manifest:
    """Validate manifest text; any problem is one line naming `path` and the field."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CurateError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}") from None
    if not isinstance(data, dict):
        raise CurateError(f"{path}: expected a JSON object, got {type(data).__name__}")
    version = data.get("manifest_version")
    if version != MANIFEST_VERSION:
        found = "missing" if version is None else repr(version)
        raise CurateError(
            f"{path}: manifest_version: {found}, expected {MANIFEST_VERSION} (written by another curator version; "
            "run `curate run` again)"
        )
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise CurateError(f"{path}: {_where(first)}: {first['msg']}{more}") from None


def read_manifest(out_dir: str | Path) -> Manifest:
    """OUT/manifest.json, validated; a missing, unreadable, old or malformed file is a one-line CurateError."""
    path = Path(out_dir) / MANIFEST_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CurateError(f"{path}: missing") from None
    except UnicodeDecodeError:
        raise CurateError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise CurateError(f"{path}: cannot be read: {exc.strerror}") from None
    return parse_manifest(text, path)
