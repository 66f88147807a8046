"""The pre-commit hook's light install: a build setting drops the pipeline's dependencies, the rest stays whole.

build_backend/curator_backend.py is setuptools plus `--config-settings=curator-deps=validate`, the
option .pre-commit-hooks.yaml passes to pre-commit's `pip install .`. tests/test_precommit_hook.py
runs the real hook in such an install.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata as md
import json
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "build_backend"))
import curator_backend  # noqa: E402

METADATA = """Metadata-Version: 2.4
Name: curator
Requires-Dist: polars>=1.30
Requires-Dist: pydantic<3,>=2.7
Requires-Dist: click>=8.1
Requires-Dist: PyYAML>=6
Requires-Dist: tree-sitter>=0.23
Requires-Dist: torch>=2.3; extra == "train"
Provides-Extra: train

Description text that mentions Requires-Dist: polars
"""


def test_light_metadata_keeps_the_named_base_requirements_and_every_extra():
    light = curator_backend.light_metadata(METADATA, {"pydantic", "click", "pyyaml"})
    assert light == METADATA.replace("Requires-Dist: polars>=1.30\n", "").replace("Requires-Dist: tree-sitter>=0.23\n", "")


def test_an_unknown_value_of_the_setting_is_an_error():
    with pytest.raises(ValueError, match="^--config-settings curator-deps=all: the only value is 'validate'$"):
        curator_backend._keep({"curator-deps": "all"})


def test_setuptools_never_sees_the_setting():
    assert curator_backend._theirs({"curator-deps": "validate"}) is None
    assert curator_backend._theirs({"curator-deps": "validate", "--build-option": "x"}) == {"--build-option": "x"}


def _wheel(tmp_path: Path, *settings: str) -> tuple[list[str], zipfile.ZipFile]:
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "__pycache__", "out", "tests", "bench"))
    out = tmp_path / "wheel"
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), *settings, str(src)]
    subprocess.run(cmd, check=True, capture_output=True)
    [path] = out.glob("curator-*.whl")
    wheel = zipfile.ZipFile(path)
    metadata = wheel.read(next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    return [line.split(": ", 1)[1] for line in metadata.splitlines() if line.startswith("Requires-Dist:") and "extra ==" not in line], wheel


def test_the_plain_wheel_requires_the_whole_pipeline(tmp_path):
    requires, _ = _wheel(tmp_path)
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert len(requires) == len(declared)
    assert "polars>=1.30" in requires and "mistral-common>=1.5" in requires


def test_the_hook_wheel_requires_the_validator_only_and_its_record_matches(tmp_path):
    requires, wheel = _wheel(tmp_path, "--config-settings=curator-deps=validate")
    assert requires == ["pydantic<3,>=2.7", "click>=8.1", "pyyaml>=6"]
    name = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    digest = base64.urlsafe_b64encode(hashlib.sha256(wheel.read(name)).digest()).rstrip(b"=").decode()
    record = wheel.read(name.replace("METADATA", "RECORD")).decode().splitlines()
    assert f"{name},sha256={digest},{len(wheel.read(name))}" in record


def _closure(names: list[str]) -> set[str]:
    """The distributions `names` install: themselves and their base requirements, recursively."""
    seen: set[str] = set()
    todo = [curator_backend.normalise(n) for n in names]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for req in md.requires(name) or []:
            if "extra ==" not in req:
                todo.append(curator_backend.normalise(re.match(r"[A-Za-z0-9._-]+", req).group()))
    return seen


def test_validate_imports_nothing_the_light_install_lacks(tmp_path):
    # every reader and check the hook can reach (modules of the interpreter's start, as setuptools' .pth, aside): .jsonl, .json, .gz, an Alpaca record converted, secrets
    (tmp_path / "a.jsonl").write_text('{"instruction": "Say hi", "output": "Hi"}\n{"messages": []}\n')
    (tmp_path / "b.json").write_text('[{"messages": [{"role": "user", "content": "x"}]}]')
    code = (
        "import sys, json\nbefore = set(sys.modules)\nfrom curator.cli import main\n"
        f"sys.argv = ['curate', 'validate', '--secrets', {str(tmp_path / 'a.jsonl')!r}, {str(tmp_path / 'b.json')!r}]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in set(sys.modules) - before} - set(sys.stdlib_module_names))), file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    modules = json.loads(proc.stderr.splitlines()[-1])
    owners = md.packages_distributions()
    imported = {curator_backend.normalise(d) for m in modules for d in owners.get(m, []) if d != "curator"}
    light = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["curator"]["validate-dependencies"]
    assert imported, modules  # pydantic and click at least: the check would pass vacuously otherwise
    assert imported <= _closure(light), sorted(imported - _closure(light))


def test_a_command_that_needs_a_missing_package_says_what_to_install(tmp_path):
    # sys.modules[name] = None makes `import name` fail as it does where the package is not installed
    code = (
        "import sys\nsys.modules['polars'] = None\nfrom curator.cli import main\n"
        f"sys.argv = ['curate', 'run', {str(tmp_path)!r}, {str(tmp_path / 'out')!r}]\nmain()\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr == (
        "error: curate run needs polars, which this install of curator lacks (a light install, as the pre-commit "
        "hook's, runs `curate validate` only): pip install curator\n"
    )
