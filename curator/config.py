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
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from curator.errors import CurateError
from curator.stages import (
    code_language,
    dedup_exact,
    dedup_minhash,
    language,
    normalize,
    quality,
    secrets,
    select,
    split,
    tokens,
    validate,
)


class InputConfig(BaseModel):
    """How RAW is read."""

    model_config = ConfigDict(extra="forbid")
    format: str = Field("auto", description="auto | chat | alpaca | sharegpt | gpteacher")
    max_line_bytes: int = Field(
        50_000_000, description="lines longer than this are rejected (io.line_too_long) without parsing"
    )


class GateConfig(BaseModel):
    """Dataset-level gates; `curate run` exits 3 when one fails, unless --no-gate."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    min_examples: int | None = Field(10_000, description="kept set must hold at least this many examples")


class CurateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seed: int = Field(0, description="one seed for every random choice of the run")
    input: InputConfig = InputConfig()
    validate_: validate.Config = Field(default_factory=validate.Config, alias="validate")
    normalize: normalize.Config = Field(default_factory=normalize.Config)
    dedup_exact: dedup_exact.Config = Field(default_factory=dedup_exact.Config)
    secrets: secrets.Config = Field(default_factory=secrets.Config)
    language: language.Config = Field(default_factory=language.Config)
    code_language: code_language.Config = Field(default_factory=code_language.Config)
    tokens: tokens.Config = Field(default_factory=tokens.Config)
    quality: quality.Config = Field(default_factory=quality.Config)
    dedup_minhash: dedup_minhash.Config = Field(default_factory=dedup_minhash.Config)
    select: select.Config = Field(default_factory=select.Config)
    split: split.Config = Field(default_factory=split.Config)
    gates: GateConfig = GateConfig()

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    def resolved(self) -> dict[str, Any]:
        """The config as plain data, as written to manifest.json."""
        return json.loads(self.model_dump_json(by_alias=True))


def _parse_value(text: str) -> Any:
    """Dotted override values are YAML scalars: `null`, `0.8`, `true`, `[a, b]`, `reject`."""
    return yaml.safe_load(text)


def _set_dotted(data: dict, dotted: str, value: Any) -> None:
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
    source = "defaults"
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
        _set_dotted(data, key.strip(), _parse_value(value))
    try:
        return CurateConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise CurateError(f"{source}: {where}: {first['msg']} ({len(exc.errors())} error(s) in config)") from exc
