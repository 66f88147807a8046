"""The input of `curate train`: a folder written by a passing `curate run`.

The trainer trusts the split only when manifest.json says every gate passed and the split files on disk are
the ones the manifest hashed (sha256 in `outputs`); otherwise it refuses, unless `--force`. This keeps a
half-edited or failing split from being trained on by accident. No torch here: the check runs before the
heavy imports.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from curator.errors import CurateError

SPLIT_FILES = ("train.jsonl", "val.jsonl")
DEFAULT_TOKENIZER = "mistral-7b-instruct-v0.2"


@dataclass
class CuratedFolder:
    path: Path
    manifest: dict
    problems: list[str]  # why it is not a passing run; empty when it is

    @property
    def train(self) -> Path:
        return self.path / "train.jsonl"

    @property
    def val(self) -> Path:
        return self.path / "val.jsonl"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def inspect_curated_folder(path: str | Path) -> CuratedFolder:
    """Read OUT/manifest.json and list every reason the folder is not a passing, untouched run."""
    path = Path(path)
    if not path.is_dir():
        raise CurateError(f"{path}: not a folder (expected the OUT folder of `curate run`)")
    for name in SPLIT_FILES:
        if not (path / name).is_file():
            raise CurateError(f"{path / name}: missing (expected the OUT folder of `curate run`)")
    manifest_path = path / "manifest.json"
    problems: list[str] = []
    manifest: dict = {}
    if not manifest_path.is_file():
        problems.append(f"{manifest_path}: missing")
        return CuratedFolder(path, manifest, problems)
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        problems.append(f"{manifest_path}:{exc.lineno}: not valid JSON: {exc.msg}")
        return CuratedFolder(path, {}, problems)
    if not isinstance(manifest, dict):
        problems.append(f"{manifest_path}: expected a JSON object")
        return CuratedFolder(path, {}, problems)
    gates = manifest.get("gates")
    if not isinstance(gates, list):
        problems.append(f"{manifest_path}: gates: missing")
    else:
        for gate in gates:
            if not (isinstance(gate, dict) and gate.get("passed") is True):
                name = gate.get("name", "?") if isinstance(gate, dict) else "?"
                message = gate.get("message", "") if isinstance(gate, dict) else ""
                problems.append(f"gate {name} failed: {message}".rstrip(": "))
    outputs = manifest.get("outputs")
    if not isinstance(outputs, dict):
        problems.append(f"{manifest_path}: outputs: missing")
    else:
        for name in SPLIT_FILES:
            expected = outputs.get(name)
            if expected is None:
                problems.append(f"{manifest_path}: outputs.{name}: missing")
            elif sha256_file(path / name) != expected:
                problems.append(f"{path / name}: sha256 differs from manifest.json outputs.{name} (edited after the run?)")
    return CuratedFolder(path, manifest, problems)


def open_curated_folder(path: str | Path, force: bool = False) -> CuratedFolder:
    """The folder, or a CurateError naming the first problem (and how many more) unless `force`."""
    folder = inspect_curated_folder(path)
    if folder.problems and not force:
        more = f" (+{len(folder.problems) - 1} more)" if len(folder.problems) > 1 else ""
        raise CurateError(
            f"{folder.path}: not from a passing `curate run`: {folder.problems[0]}{more}; use --force to train anyway"
        )
    return folder


def tokenizer_from_manifest(manifest: dict) -> str | None:
    """The tokenizer the curation run counted tokens with (its resolved config), if recorded."""
    tokens = (manifest.get("config") or {}).get("tokens") or {}
    for key in ("model", "tokenizer", "profile"):
        value = tokens.get(key)
        if isinstance(value, str) and value:
            return value
    return None
