"""YAML as config and rule files are read: duplicate keys and alias bombs refused, errors one line with the line number.

Light on purpose (yaml only): `curate train`'s config reads through it without pulling polars.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from curator.errors import CurateError

__all__ = ["AliasBombError", "DuplicateKeyError", "UniqueKeyLoader", "load_yaml", "parse_value", "yaml_key_lines", "yaml_problem"]


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
    if isinstance(exc, AliasBombError):
        return line, str(exc)
    problem = getattr(exc, "problem", None) or (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return line, f"not valid YAML: {problem}"


# Aliases let a few hundred bytes stand for billions of nodes ("billion laughs"): the loader builds
# them as shared references, but validating, walking or printing the data expands every one. A
# document may name the same node again through aliases as long as the whole stays this small.
MAX_EXPANDED_NODES = 100_000


class AliasBombError(yaml.YAMLError):
    """A YAML document whose aliases expand past MAX_EXPANDED_NODES, or that holds itself."""


def expanded_size(root: yaml.Node) -> int:
    """How many nodes `root` is when every alias is expanded (without expanding them); raises
    AliasBombError past MAX_EXPANDED_NODES or on an alias to a node that holds it."""
    size: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            total = 1 + sum(size[id(child)] for child in _children(node))
            if total > MAX_EXPANDED_NODES:
                raise AliasBombError(f"aliases expand the document past {MAX_EXPANDED_NODES:,} nodes; refused")
            size[key] = total
        elif key not in size:
            if key in on_path:
                raise AliasBombError("an alias refers to a node that holds it; refused")
            on_path.add(key)
            stack.append((node, True))
            stack.extend((child, False) for child in _children(node) if id(child) not in size)
    return size[id(root)]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _load(text: str) -> Any:
    """yaml.load with UniqueKeyLoader, refusing documents whose aliases expand too far."""
    loader = UniqueKeyLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        expanded_size(node)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def load_yaml(text: str, source: str | Path) -> Any:
    """Parse YAML (config and rule files) with UniqueKeyLoader; errors are one line naming `source`
    and the line: `curate.yaml:3: not valid YAML: ...`, `curate.yaml:2: duplicate key 'seed' ...`,
    `curate.yaml: aliases expand the document past 100,000 nodes; refused`."""
    try:
        return _load(text)
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
    seen: set[int] = set()

    def walk(node: yaml.Node | None, path: tuple[str, ...]) -> None:
        # A node reached again through an alias is not walked again: its lines are those of its anchor.
        if id(node) in seen:
            return
        seen.add(id(node))
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
        return _load(text)
    except yaml.YAMLError as exc:
        raise CurateError(f"{label}: {yaml_problem(exc)[1]}") from exc
