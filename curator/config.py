"""CurateConfig: every default of a run, in one place.

Loaded from YAML or TOML (`--config`), then dotted overrides (`-s tokens.policy=truncate`).
Each stage owns its sub-config (the `Config` class in its module); unknown keys and bad values
are one-line errors that name the override (`-s tokens.policy=trunc: ...`), or the file, the key
and its line. Duplicate YAML keys are refused. The resolved config is written to manifest.json.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, create_model, field_validator

from curator.errors import CurateError
from curator.yaml_io import load_yaml, parse_value, yaml_key_lines
from curator.stage_configs import select_problem
from curator.stages.registry import SKIPPABLE, STAGES


class InputConfig(BaseModel):
    """How RAW is read."""

    model_config = ConfigDict(extra="forbid")
    format: Literal["auto", "chat", "alpaca", "sharegpt", "gpteacher"] = Field(
        "auto", description="auto (detected per record) | chat | alpaca | sharegpt | gpteacher"
    )
    format_by_file: dict[str, Literal["auto", "chat", "alpaca", "sharegpt", "gpteacher"]] = Field(
        default_factory=dict,
        description="shape per file glob, matched against the end of each input path ({'legacy/*.json': alpaca} "
        "matches raw/legacy/a.json); the first match wins; other files use `format`",
    )
    repairs: list[Literal["role_alias", "leading_assistant", "merge_turns"]] = Field(
        ["role_alias", "leading_assistant", "merge_turns"],
        description="repairs of ShareGPT captures, each noted on the row as a repair.* warning: role_alias "
        "(chatgpt/bing/bard speak as the assistant), leading_assistant (turns before the first user turn "
        "dropped, FastChat's rule), merge_turns (consecutive turns of one speaker joined); [] for none",
    )
    max_line_bytes: int = Field(
        4_000_000,
        ge=1024,
        description="lines longer than this many bytes are rejected (io.line_too_long) without parsing; "
        "4 MB is hundreds of times an 8K-token example; at least 1,024 (a smaller limit rejects nearly every line)",
    )


class OutputConfig(BaseModel):
    """What OUT holds beyond the split."""

    model_config = ConfigDict(extra="forbid")
    rejects_raw: bool | Literal["redacted"] = Field(
        True,
        description="true: rejects.jsonl keeps each rejected line as it was read (it may hold secrets: treat "
        "it as sensitive) | redacted: secrets redacted in it, as in every other output | false: no raw line",
    )


class GateConfig(BaseModel):
    """Dataset-level gates; `curate run` exits 3 when one fails, unless --no-gate."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = Field(True, description="false: report failed gates but exit 0, like --no-gate")
    min_examples: int | None = Field(10_000, description="kept set must hold at least this many examples")


# The input size at which `engine.name: auto` picks the stream engine: below it, the whole frame fits
# comfortably in memory on a laptop (see docs/scaling.md for memory per record).
AUTO_STREAM_BYTES = 1_000_000_000
# The input size from which local and stream start worker processes for their row stages (about 5,000 records of
# the bench corpus; a worker takes a second or two to start, a record 0.3 ms per core).
POOL_MIN_BYTES = 5_000_000
# More processes than this is a typo, not a machine: each one is a Python process with the stages' libraries.
MAX_WORKERS = 256


class EngineConfig(BaseModel):
    """How `curate run` executes the stages; the outputs are the same bytes whichever engine runs."""

    model_config = ConfigDict(extra="forbid")
    name: Literal["auto", "local", "stream", "ray"] = Field(
        "auto",
        description="local: every record in memory at once | stream: batches of batch_rows records kept as "
        "Parquet shards in OUT's staging folder, global stages on a narrow frame | ray: stream's shards, each "
        "row stage run on them in parallel as Ray tasks (the `ray` extra) | auto: stream when the input is at "
        "least auto_stream_bytes, else local",
    )
    batch_rows: int = Field(50_000, ge=1, description="records per shard under the stream and ray engines")
    ray_address: str | None = Field(
        None,
        description="the Ray cluster the ray engine runs on (e.g. ray://head:10001 or head:6379); unset: "
        "RAY_ADDRESS, else a local Ray with this machine's CPUs",
    )
    auto_stream_bytes: int = Field(
        AUTO_STREAM_BYTES,
        ge=0,
        description="input size (bytes on disk, .gz counted 4 times) from which auto picks stream",
    )
    workers: int | None = Field(
        None,
        ge=1,
        le=MAX_WORKERS,
        description="processes that run the row stages under local (each on a slice of the records) and stream "
        "(each on whole shards); unset: the CPUs this process may use; 1: in this process",
    )
    pool_min_bytes: int = Field(
        POOL_MIN_BYTES,
        ge=0,
        description="input size (as auto_stream_bytes counts it) from which local and stream run their row "
        "stages in `workers` processes; below it, starting them costs more than they save",
    )


class _Settings(BaseModel):
    """The run-wide settings; CurateConfig adds one section per stage (curator/stages/registry.py)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    seed: int = Field(0, description="one seed for every random choice of the run")
    skip_stages: list[str] = Field(
        default_factory=list,
        description="stages not to run (their columns and gates are then absent), e.g. [dedup_minhash]; "
        "validate, normalize and split always run",
    )
    input: InputConfig = InputConfig()

    @field_validator("skip_stages")
    @classmethod
    def _known_stages(cls, value: list[str]) -> list[str]:
        for name in value:
            if name not in SKIPPABLE:
                raise ValueError(f"unknown or required stage {name!r}; stages that can be skipped: {', '.join(SKIPPABLE)}")
        return value

    @field_validator("select", check_fields=False)
    @classmethod
    def _select_needs_quality(cls, value: Any, info: ValidationInfo) -> Any:
        # Only when select is given: with the default target a run smaller than it never ranks, and
        # one that does fails at select with the same message.
        problem = select_problem(info.data.get("skip_stages") or [], value)
        if problem is not None:
            raise ValueError(problem)
        return value

    def resolved(self) -> dict[str, Any]:
        """The config as plain data, as written to manifest.json. The engine section is left out: it
        changes how the run executes, not what it writes (manifest.json records it under `engine`)."""
        return json.loads(self.model_dump_json(by_alias=True, exclude={"engine"}))


def _stage_section(stage) -> tuple[Any, Any]:
    # `validate` would shadow BaseModel.validate: that field is `validate_`, read and written as `validate`
    alias = stage.name if stage.name == "validate" else None
    return (stage.config, Field(default_factory=stage.config, alias=alias))


# One section per stage, in the order the stages run, then what OUT holds and the gates.
CurateConfig = create_model(
    "CurateConfig",
    __base__=_Settings,
    __doc__="Every setting of `curate run`: run-wide keys, one section per stage, outputs and gates.",
    **{(f"{s.name}_" if s.name == "validate" else s.name): _stage_section(s) for s in STAGES},
    output=(OutputConfig, OutputConfig()),
    gates=(GateConfig, GateConfig()),
    engine=(EngineConfig, EngineConfig()),
)


def set_dotted(data: dict, dotted: str, value: Any) -> None:
    """Set `data[a][b][c] = value` for `dotted` = "a.b.c", creating sections on the way."""
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise CurateError(f"override {dotted}: {key} is not a section")
    node[keys[-1]] = value


def _read_file(path: Path) -> tuple[dict[str, Any], dict[tuple[str, ...], int]]:
    """The mapping in a YAML or TOML config file and the line of each key in it."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CurateError(f"{path}: cannot read config: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise CurateError(f"{path}: cannot read config: not UTF-8 (byte {exc.start})") from exc
    if path.suffix.lower() == ".toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            message = str(exc).strip().splitlines()[0]
            at = re.search(r"\s*\(at line (\d+), column \d+\)$", message)
            where = f"{path}:{at.group(1)}" if at else str(path)
            raise CurateError(f"{where}: not valid TOML: {message}") from exc
        lines = _toml_key_lines(text)
    else:
        data = load_yaml(text, path)
        lines = yaml_key_lines(text)
    if data is None:  # an empty file, or one with every line commented out
        data = {}
    if not isinstance(data, dict):
        raise CurateError(f"{path}: a config file holds a mapping of sections, got {type(data).__name__}")
    return data, lines


def _toml_key_lines(text: str) -> dict[tuple[str, ...], int]:
    """Line of each `key = ...` under its `[table]`: enough to point at a bad value (a line-based scan,
    not a TOML parser: keys inside multi-line strings or inline tables are not seen)."""
    lines: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] = ()
    for number, line in enumerate(text.splitlines(), 1):
        header = re.match(r"\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$", line)
        if header:
            table = tuple(part.strip().strip("\"'") for part in header.group(1).split("."))
            lines.setdefault(table, number)
            continue
        key = re.match(r"\s*([A-Za-z0-9_.\-\"' ]+?)\s*=", line)
        if key:
            lines.setdefault((*table, *(part.strip().strip("\"'") for part in key.group(1).split("."))), number)
    return lines


def _empty_sections(data: dict[str, Any], model: type[BaseModel]) -> None:
    """A section whose keys are all commented out (`tokens:` alone) is null in YAML: read it as {}."""
    for name, field in model.model_fields.items():
        key = field.alias or name
        section = field.annotation if isinstance(field.annotation, type) else None
        if section is None or not issubclass(section, BaseModel) or key not in data:
            continue
        if data[key] is None:
            data[key] = {}
        if isinstance(data[key], dict):
            _empty_sections(data[key], section)


def _blame(loc: tuple, applied: list[tuple[tuple[str, ...], str]]) -> tuple[str, bool] | None:
    """The override (its label, and whether it set exactly the failing key) that an error at `loc`
    comes from: the last one whose key path and `loc` agree as far as both go."""
    path = tuple(str(p) for p in loc)
    for keys, label in reversed(applied):
        n = min(len(keys), len(path))
        if n and keys[:n] == path[:n]:
            return label, keys == path
    return None


def _allowed_keys(loc: tuple, root: Any = None) -> list[str]:
    """The keys of the section at `loc` of `root` (a pydantic model class; default CurateConfig)."""
    model: Any = CurateConfig if root is None else root
    for part in loc:
        field = next((f for n, f in model.model_fields.items() if (f.alias or n) == part), None)
        model = field.annotation if field is not None else None
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return []
    return [f.alias or n for n, f in model.model_fields.items()]


def _line_of(loc: tuple, lines: dict[tuple[str, ...], int]) -> int | None:
    """The line of the deepest key of `loc` the file names."""
    path = tuple(str(p) for p in loc)
    for n in range(len(path), 0, -1):
        if path[:n] in lines:
            return lines[path[:n]]
    return None


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    values: dict[str, Any] | None = None,
) -> CurateConfig:
    """Read a YAML/TOML config file (optional) and apply `key.sub=value` overrides.

    `overrides` are `-s` strings whose values are YAML (`null`, `0.8`, `[a, b]`); `values` maps
    dotted keys to values taken as they are (`--rules`, `--model`, `--format`: paths may hold
    " #" or brackets). Errors are one line naming the override, or the file, key and line.
    """
    data: dict[str, Any] = {}
    lines: dict[tuple[str, ...], int] = {}
    source = "config overrides"
    if path is not None:
        path = Path(path)
        source = str(path)
        data, lines = _read_file(path)
        _empty_sections(data, CurateConfig)
    applied: list[tuple[tuple[str, ...], str]] = []  # key path, and how the user wrote it
    for item in overrides:
        if "=" not in item:
            raise CurateError(f"override {item!r}: expected key.sub=value")
        key, value = item.split("=", 1)
        key = key.strip()
        label = f"-s {item}"
        set_dotted(data, key, parse_value(value, label))  # YAML scalars: null, 0.8, true, [a, b], reject
        applied.append((tuple(key.split(".")), label))
    for key, value in (values or {}).items():
        set_dotted(data, key, value)
        applied.append((tuple(key.split(".")), f"{key}={value}"))
    try:
        return CurateConfig.model_validate(data)
    except ValidationError as exc:
        raise CurateError(_describe(exc, source, lines, applied)) from exc


def _describe(
    exc: ValidationError, source: str, lines: dict[tuple[str, ...], int], applied: list[tuple[tuple[str, ...], str]]
) -> str:
    """One line for the first error: `-s key=value: message` when an override set the failing key,
    else `file: key: message (line N)`."""
    errors = exc.errors()
    first = errors[0]
    where = ".".join(str(p) for p in first["loc"])
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "string_pattern_mismatch":
        msg += f" (got {first['input']!r})"
    allowed = _allowed_keys(first["loc"][:-1]) if first["type"] == "extra_forbidden" else []
    if allowed:
        msg += f"; allowed: {', '.join(allowed)}"
    blamed = _blame(first["loc"], applied)
    if blamed is not None:
        label, exact = blamed
        return f"{label}: {msg}" if exact else f"{label}: {where}: {msg}"
    notes = []
    line = _line_of(first["loc"], lines)
    if line is not None:
        notes.append(f"line {line}")
    if len(errors) > 1:
        notes.append(f"{len(errors)} errors in config")
    note = f" ({'; '.join(notes)})" if notes else ""
    return f"{source}: {where}: {msg}{note}"


def commented_yaml(config: CurateConfig) -> str:
    """`config` as YAML with every key's description above it and each stage's section headed by what
    the stage does: a config file to start from, documented where it is edited."""
    import yaml

    from curator.stages.registry import BY_NAME

    def scalar(value: Any) -> str:
        return yaml.safe_dump(value, default_flow_style=True, width=10**9, allow_unicode=True).strip().removesuffix("\n...")

    def section(model: BaseModel, indent: str) -> list[str]:
        lines: list[str] = []
        for name, field in type(model).model_fields.items():
            key = field.alias or name
            value = getattr(model, name)
            if field.description:
                lines.append(f"{indent}# {field.description}")
            if isinstance(value, BaseModel):
                lines.append(f"{indent}{key}:")
                lines.extend(section(value, indent + "  "))
            else:
                lines.append(f"{indent}{key}: {scalar(value)}")
        return lines

    out: list[str] = []
    for name, field in type(config).model_fields.items():
        key = field.alias or name
        value = getattr(config, name)
        if not isinstance(value, BaseModel):
            out += [f"# {field.description}", f"{key}: {scalar(value)}"]
            continue
        stage = BY_NAME.get(key)
        head = f"stage {key} ({stage.kind}): {stage.doc}" if stage else (type(value).__doc__ or "").strip().split("\n")[0]
        out += ["", f"# {head}", f"{key}:"]
        out.extend(section(value, "  "))
    return "\n".join(out).lstrip("\n") + "\n"

