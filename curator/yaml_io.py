"""YAML as config and rule files are read: duplicate keys refused, errors one line with the line number.

Light on purpose (yaml only): `curate train`'s config reads through it without pulling polars.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from curator.errors import CurateError

__all__ = ["DuplicateKeyError", "UniqueKeyLoader", "load_yaml", "parse_value", "yaml_key_lines", "yaml_problem"]


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A mapping that names the same key twice (YAML requires keys to be unique)."""


class UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses duplicate mapping keys instead of keeping the last one silently:
    `seed: 1` and `seed: 2` in one file is a mistake, not an override."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` merges are meant to be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # unhashable key: the base class reports it
                continue
            if first is not None:
                raise DuplicateKeyError(
                    None, None, f"duplicate key {key!r} (first on line {first})", key_node.start_mark
                )
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def yaml_problem(exc: yaml.YAMLError) -> tuple[int | None, str]:
    """The 1-based line (when known) and a one-line description of a YAML error."""
    mark = getattr(exc, "problem_mark", None)
    line = mark.line + 1 if mark is not None else None
    if isinstance(exc, DuplicateKeyError):
        return line, str(exc.problem)
    problem = getattr(exc, "problem", None) or (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return line, f"not valid YAML: {problem}"


def load_yaml(text: str, source: str | Path) -> Any:
    """Parse YAML (config and rule files) with UniqueKeyLoader; errors are one line naming `source`
    and the line: `curate.yaml:3: not valid YAML: ...`, `curate.yaml:2: duplicate key 'seed' ...`."""
    try:
        return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        line, problem = yaml_problem(exc)
        raise CurateError(f"{source}:{line}: {problem}" if line else f"{source}: {problem}") from exc


def yaml_key_lines(text: str) -> dict[tuple[str, ...], int]:
    """1-based line of every key (and sequence item, by str(index)) of a YAML document, by its path:
    {("tokens",): 2, ("tokens", "policy"): 3, ("rules", "0"): 5, ...}; empty when it does not parse."""
    lines: dict[tuple[str, ...], int] = {}
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return lines

    def walk(node: yaml.Node | None, path: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                here = (*path, str(key.value))
                lines.setdefault(here, key.start_mark.line + 1)
                walk(value, here)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                here = (*path, str(i))
                lines.setdefault(here, item.start_mark.line + 1)
                walk(item, here)

    walk(root, ())
    return lines


def parse_value(text: str, label: str = "override") -> Any:
    """A `-s key=value` value as YAML (`null`, `0.8`, `true`, `[a, b]`, `reject`); errors are one line naming `label`."""
    try:
        return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise CurateError(f"{label}: {yaml_problem(exc)[1]}") from exc
