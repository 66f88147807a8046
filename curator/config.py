"""CurateConfig: every default of a run, in one place.

Loaded from YAML or TOML (`--config`), then dotted overrides (`-s tokens.policy=truncate`).
Each stage owns its sub-config (the `Config` class in its module); unknown keys are errors
that name the file and the key. The resolved config is written to manifest.json.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from curator.errors import CurateError
from curator.stages import (  # aliased: the fields below are named after the stages
    code_language as _code_language,
    dedup_exact as _dedup_exact,
    dedup_minhash as _dedup_minhash,
    language as _language,
    normalize as _normalize,
    quality as _quality,
    secrets as _secrets,
    select as _select,
    split as _split,
    tokens as _tokens,
    validate as _validate,
)


class InputConfig(BaseModel):
    """How RAW is read."""

    model_config = ConfigDict(extra="forbid")
    format: str = Field("auto", description="auto | chat | alpaca | sharegpt | gpteacher")
    max_line_bytes: int = Field(
        4_000_000,
        description="lines longer than this many bytes are rejected (io.line_too_long) without parsing; "
        "4 MB is hundreds of times an 8K-token example",
    )


class GateConfig(BaseModel):
    """Dataset-level gates; `curate run` exits 3 when one fails, unless --no-gate."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = Field(True, description="false: report failed gates but exit 0, like --no-gate")
    min_examples: int | None = Field(10_000, description="kept set must hold at least this many examples")


class CurateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seed: int = Field(0, description="one seed for every random choice of the run")
    skip_stages: list[str] = Field(
        default_factory=list,
        description="stages not to run (their columns and gates are then absent), e.g. [dedup_minhash]; "
        "validate, normalize and split always run",
    )
    input: InputConfig = InputConfig()
    validate_: _validate.Config = Field(default_factory=_validate.Config, alias="validate")
    normalize: _normalize.Config = Field(default_factory=_normalize.Config)
    dedup_exact: _dedup_exact.Config = Field(default_factory=_dedup_exact.Config)
    secrets: _secrets.Config = Field(default_factory=_secrets.Config)
    language: _language.Config = Field(default_factory=_language.Config)
    code_language: _code_language.Config = Field(default_factory=_code_language.Config)
    tokens: _tokens.Config = Field(default_factory=_tokens.Config)
    quality: _quality.Config = Field(default_factory=_quality.Config)
    dedup_minhash: _dedup_minhash.Config = Field(default_factory=_dedup_minhash.Config)
    select: _select.Config = Field(default_factory=_select.Config)
    split: _split.Config = Field(default_factory=_split.Config)
    gates: GateConfig = GateConfig()

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @field_validator("skip_stages")
    @classmethod
    def _known_stages(cls, value: list[str]) -> list[str]:
        allowed = ("dedup_exact", "secrets", "language", "code_language", "tokens", "quality", "dedup_minhash", "select")
        for name in value:
            if name not in allowed:
                raise ValueError(f"unknown or required stage {name!r}; stages that can be skipped: {', '.join(allowed)}")
        return value

    def resolved(self) -> dict[str, Any]:
        """The config as plain data, as written to manifest.json."""
        return json.loads(self.model_dump_json(by_alias=True))


def _parse_value(text: str) -> Any:
    """Dotted override values are YAML scalars: `null`, `0.8`, `true`, `[a, b]`, `reject`."""
    return yaml.safe_load(text)


def set_dotted(data: dict, dotted: str, value: Any) -> None:
    """Set `data[a][b][c] = value` for `dotted` = "a.b.c", creating sections on the way."""
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise CurateError(f"override {dotted}: {key} is not a section")
    node[keys[-1]] = value


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> CurateConfig:
    """Read a YAML/TOML config file (optional) and apply `key.sub=value` overrides."""
    data: dict[str, Any] = {}
    source = "config overrides"
    if path is not None:
        path = Path(path)
        source = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise CurateError(f"{path}: cannot read config: {exc.strerror}") from exc
        try:
            if path.suffix == ".toml":
                data = tomllib.loads(text)
            else:
                data = yaml.safe_load(text) or {}
        except (yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
            raise CurateError(f"{path}: not valid {'TOML' if path.suffix == '.toml' else 'YAML'}: {exc}") from exc
        if not isinstance(data, dict):
            raise CurateError(f"{path}: a config file holds a mapping of sections, got {type(data).__name__}")
    for item in overrides:
        if "=" not in item:
            raise CurateError(f"override {item!r}: expected key.sub=value")
        key, value = item.split("=", 1)
        set_dotted(data, key.strip(), _parse_value(value))
    try:
        return CurateConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise CurateError(f"{source}: {where}: {first['msg']} ({len(exc.errors())} error(s) in config)") from exc
