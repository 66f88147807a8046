"""setuptools' build backend, plus one config setting that builds the light install of the pre-commit hook.

`pip install curator` installs the whole tool. The hook (`.pre-commit-hooks.yaml`) needs only
`curate validate`, which imports pydantic, click and pyyaml; pre-commit always runs
`pip install . <additional_dependencies>` in the hook's repository and has no way to choose extras,
so the hook passes `--config-settings=curator-deps=validate` as its one "additional dependency"
and this backend then writes a wheel whose base requirements are only those named in
`[tool.curator] validate-dependencies` (versions stay those of `[project] dependencies`).
Why not an extra: a light base with a `[pipeline]` extra would make plain `pip install curator` a
validator only, and PEP 771 default extras are not in pip yet.
"""

from __future__ import annotations

import base64
import hashlib
import re
import tomllib
import zipfile
from pathlib import Path

from setuptools import build_meta as _setuptools
from setuptools.build_meta import build_sdist, get_requires_for_build_sdist  # noqa: F401  (the PEP 517 hooks)

SETTING = "curator-deps"
LIGHT = "validate"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def get_requires_for_build_wheel(config_settings=None):
    return _setuptools.get_requires_for_build_wheel(_theirs(config_settings))


def get_requires_for_build_editable(config_settings=None):
    return _setuptools.get_requires_for_build_editable(_theirs(config_settings))


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    name = _setuptools.prepare_metadata_for_build_wheel(metadata_directory, _theirs(config_settings))
    _rewrite_metadata_file(Path(metadata_directory) / name / "METADATA", config_settings)
    return name


def prepare_metadata_for_build_editable(metadata_directory, config_settings=None):
    name = _setuptools.prepare_metadata_for_build_editable(metadata_directory, _theirs(config_settings))
    _rewrite_metadata_file(Path(metadata_directory) / name / "METADATA", config_settings)
    return name


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    name = _setuptools.build_wheel(wheel_directory, _theirs(config_settings), metadata_directory)
    _rewrite_wheel(Path(wheel_directory) / name, config_settings)
    return name


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    name = _setuptools.build_editable(wheel_directory, _theirs(config_settings), metadata_directory)
    _rewrite_wheel(Path(wheel_directory) / name, config_settings)
    return name


def _theirs(config_settings: dict | None) -> dict | None:
    """The settings without ours: setuptools reads the others as its own options."""
    if not config_settings:
        return config_settings
    return {k: v for k, v in config_settings.items() if k != SETTING} or None


def _keep(config_settings: dict | None) -> set[str] | None:
    """The base requirements to keep (normalised names), or None to keep them all."""
    value = (config_settings or {}).get(SETTING)
    if value is None:
        return None
    if value != LIGHT:
        raise ValueError(f"--config-settings {SETTING}={value}: the only value is {LIGHT!r}")
    pyproject = tomllib.loads(Path("pyproject.toml").read_text(encoding="utf-8"))
    return {normalise(n) for n in pyproject["tool"]["curator"]["validate-dependencies"]}


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def light_metadata(text: str, keep: set[str]) -> str:
    """METADATA with the base `Requires-Dist` lines not in `keep` taken out; extras' lines stay."""
    lines = []
    for line in text.splitlines(keepends=True):
        if line.startswith("Requires-Dist:") and "extra ==" not in line:
            requirement = line.split(":", 1)[1].strip()
            if normalise(_NAME.match(requirement).group()) not in keep:
                continue
        lines.append(line)
    return "".join(lines)


def _rewrite_metadata_file(path: Path, config_settings: dict | None) -> None:
    keep = _keep(config_settings)
    if keep is not None:
        path.write_text(light_metadata(path.read_text(encoding="utf-8"), keep), encoding="utf-8")


def _rewrite_wheel(wheel: Path, config_settings: dict | None) -> None:
    """Rewrite METADATA inside `wheel` and its line in RECORD (a wheel installer checks the hash)."""
    keep = _keep(config_settings)
    if keep is None:
        return
    with zipfile.ZipFile(wheel) as old:
        entries = [(info, old.read(info)) for info in old.infolist()]
    metadata_name = next(info.filename for info, _ in entries if info.filename.endswith(".dist-info/METADATA"))
    record_name = metadata_name.rsplit("/", 1)[0] + "/RECORD"
    metadata = light_metadata(dict((i.filename, d) for i, d in entries)[metadata_name].decode("utf-8"), keep).encode("utf-8")
    digest = base64.urlsafe_b64encode(hashlib.sha256(metadata).digest()).rstrip(b"=").decode("ascii")
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as new:
        for info, data in entries:
            if info.filename == metadata_name:
                data = metadata
            elif info.filename == record_name:
                data = _record(data.decode("utf-8"), metadata_name, f"sha256={digest}", len(metadata)).encode("utf-8")
            new.writestr(info, data)


def _record(text: str, name: str, digest: str, size: int) -> str:
    return "".join(
        f"{name},{digest},{size}\n" if line.split(",", 1)[0] == name else line + "\n" for line in text.splitlines()
    )
