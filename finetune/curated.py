"""The input of `curate train`: a folder written by a passing `curate run`.

The trainer trusts the split only when manifest.json (read through curator.manifest.Manifest) says every gate
passed and the split files on disk are the ones the manifest hashed (sha256 in `outputs`); otherwise it
refuses, unless `--force`. This keeps a half-edited or failing split from being trained on by accident.

The manifest's tokenization part says how the data was tokenized and budgeted: the tokenizer profile (and
folder), the chat template and the context length. The trainer uses them unless told otherwise, and refuses a
`--model` of another family, or a context longer than the one the data was checked against (`settings_for`).
No torch here: the checks run before the heavy imports.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from curator.errors import CurateError
from curator.manifest import MANIFEST_FILE, Manifest, Tokenization, read_manifest

if TYPE_CHECKING:
    from finetune.config import TrainConfig

SPLIT_FILES = ("train.jsonl", "val.jsonl")
DEFAULT_TOKENIZER = "mistral-7b-instruct-v0.2"
DEFAULT_CONTEXT_LENGTH = 8192  # without a manifest to say otherwise: Mistral-7B-Instruct-v0.2's context


@dataclass
class CuratedFolder:
    path: Path
    manifest: Manifest | None  # None when manifest.json is missing or not a valid one (see problems)
    problems: list[str]  # why it is not a passing run; empty when it is

    @property
    def train(self) -> Path:
        return self.path / "train.jsonl"

    @property
    def val(self) -> Path:
        return self.path / "val.jsonl"

    @property
    def tokenization(self) -> Tokenization | None:
        return self.manifest.tokenization if self.manifest is not None else None


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
    try:
        manifest = read_manifest(path)
    except CurateError as exc:
        return CuratedFolder(path, None, [str(exc)])
    problems: list[str] = []
    for gate in manifest.gates:
        if not gate.passed:
            problems.append(f"gate {gate.name} failed: {gate.message}".rstrip(": "))
    for name in SPLIT_FILES:
        expected = manifest.outputs.get(name)
        if expected is None:
            problems.append(f"{path / MANIFEST_FILE}: outputs.{name}: missing")
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


def settings_for(config: TrainConfig, folder: CuratedFolder, base_model_type: str | None) -> TrainConfig:
    """The train config with the tokenizer and context the data was curated with, where it leaves them unset.

    Refused in one line: a tokenizer other than the curation's, a base model of another family than the
    tokenizer profile's (`base_model_type`: config.json's model_type, None when unknown), and a context longer
    than the budget the data was checked against (a shorter one is fine: longer examples are skipped, counted).
    """
    tokenization = folder.tokenization
    if tokenization is None:  # no valid manifest (--force) or no tokens stage: the defaults
        return config.model_copy(update={
            "tokenizer": config.tokenizer or DEFAULT_TOKENIZER,
            "context_length": config.context_length or DEFAULT_CONTEXT_LENGTH,
        })
    manifest_path = folder.path / MANIFEST_FILE
    tokenizer, tokenizer_path = tokenization.tokenizer_arguments()
    if config.tokenizer is not None and config.tokenizer != tokenizer:
        raise CurateError(
            f"tokenizer {config.tokenizer}: differs from {tokenizer}, the tokenizer {manifest_path} says the data "
            "was budgeted with; leave tokenizer unset, or curate again with this one"
        )
    _check_model_family(config.model, base_model_type, tokenization, manifest_path)
    context_length = _context_length(config.context_length, tokenization, manifest_path)
    return config.model_copy(update={
        "tokenizer": tokenizer, "tokenizer_path": config.tokenizer_path or tokenizer_path,
        "context_length": context_length,
    })


def _check_model_family(model: str, model_type: str | None, tokenization: Tokenization, manifest_path: Path) -> None:
    from curator.model_profiles import PROFILES

    profile = PROFILES.get(tokenization.model)
    expected = profile.model_type if profile is not None else None
    if expected is not None and model_type is not None and model_type != expected:
        raise CurateError(
            f"--model {model}: a {model_type} model, but {manifest_path} says the data was curated for "
            f"{tokenization.model} (a {expected} model); train a {expected} model, or curate again with --model for this one"
        )


def _context_length(wanted: int | None, tokenization: Tokenization, manifest_path: Path) -> int:
    if wanted is None:
        return tokenization.context_length
    if wanted > tokenization.context_length:
        raise CurateError(
            f"context_length {wanted}: larger than {tokenization.context_length}, the context {manifest_path} says the "
            f"data was checked against ({tokenization.model}, policy {tokenization.policy}); use at most "
            f"{tokenization.context_length}, or curate again with a larger tokens.context_length"
        )
    return wanted
