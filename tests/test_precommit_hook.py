"""The `curate-validate` hook, run by the real pre-commit tool against a throwaway git repository.

`pre-commit try-repo` installs this project into a fresh virtual environment (pip install of the
repository, as a user's pre-commit would) and runs the hook from .pre-commit-hooks.yaml. That is
slow (a venv and a pip install, about a minute), so the test makes one try-repo run over all files.

try-repo only sees committed and tracked-modified files of a repository, so the test first
snapshots the working tree (tracked and untracked, minus .gitignore'd paths) into a temporary
repository with one commit: what is tested is the code as it is on disk.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="pre-commit needs git")


def _git_env() -> dict[str, str]:
    # When pytest itself runs inside a git hook, GIT_DIR/GIT_INDEX_FILE point at the outer repository.
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.com", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.com")
    return env


def _git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, env=_git_env(), capture_output=True, text=True, check=True).stdout


def _working_tree_files() -> list[str]:
    try:
        out = _git("ls-files", "-z", "--cached", "--others", "--exclude-standard", cwd=ROOT)
    except subprocess.CalledProcessError:  # not a git checkout (an unpacked sdist): take the tree as it is
        skip = {".git", ".venv", "__pycache__", ".pytest_cache", "build", "dist", "out"}
        return [
            p.relative_to(ROOT).as_posix()
            for p in ROOT.rglob("*")
            if p.is_file() and not skip.intersection(p.relative_to(ROOT).parts) and "egg-info" not in p.as_posix()
        ]
    return [name for name in out.split("\0") if name]


def _snapshot(dest: Path) -> str:
    """Copy the working tree into a new git repository at `dest`; return its commit."""
    for name in _working_tree_files():
        src = ROOT / name
        if src.is_file():  # a tracked file deleted on disk is listed but gone
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    _git("init", "-q", cwd=dest)
    _git("add", "-A", cwd=dest)
    _git("commit", "-q", "--no-verify", "-m", "snapshot", cwd=dest)
    return _git("rev-parse", "HEAD", cwd=dest).strip()


GOOD = [
    {"messages": [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "Hi."}]},
    {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "4"},
        ],
        "meta": {"source": "test"},
    },
]


def test_precommit_hook_fails_on_the_bad_file_only(tmp_path):
    if not (ROOT / ".pre-commit-hooks.yaml").is_file():
        pytest.fail(".pre-commit-hooks.yaml is missing")
    hook_repo = tmp_path / "hook-repo"
    hook_repo.mkdir()
    rev = _snapshot(hook_repo)

    data = tmp_path / "dataset"
    data.mkdir()
    lines = [json.dumps(r) for r in GOOD]
    (data / "good.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with gzip.open(data / "good.jsonl.gz", "wt", encoding="utf-8") as fh:
        fh.write(lines[0] + "\n")
    bad_role = {"messages": [{"role": "user", "content": "Hi"}, {"role": "bot", "content": "Hello"}]}
    (data / "bad.jsonl").write_text(lines[0] + "\n" + json.dumps(bad_role) + "\n" + '{"messages": [\n', encoding="utf-8")
    # Not a dataset file: the hook's `files` pattern must keep it away from curate (it is not JSON).
    (data / "notes.txt").write_text("not json\n", encoding="utf-8")
    _git("init", "-q", cwd=data)
    _git("add", "-A", cwd=data)

    env = _git_env()
    env["PRE_COMMIT_HOME"] = str(tmp_path / "pre-commit-home")
    env["PRE_COMMIT_COLOR"] = "never"
    files = ["good.jsonl", "good.jsonl.gz", "bad.jsonl", "notes.txt"]
    cmd = [sys.executable, "-m", "pre_commit", "try-repo", str(hook_repo), "curate-validate", "--ref", rev, "--files", *files]
    proc = subprocess.run(cmd, cwd=data, env=env, capture_output=True, text=True, timeout=1200)
    output = proc.stdout + proc.stderr

    assert proc.returncode == 1, output
    assert re.search(r"^curate validate.*\.{3,}Failed$", output, re.M), output
    assert "- hook id: curate-validate\n- exit code: 1" in output, output
    problem_lines = [line for line in output.splitlines() if re.match(r"^\S+:\d+: ", line)]
    assert problem_lines[0] == (
        "bad.jsonl:2: messages[1].role: Input should be 'system', 'user', 'assistant' or 'tool' [schema.bad_role]"
    ), output
    assert problem_lines[1].startswith("bad.jsonl:3: ") and problem_lines[1].endswith(" [io.bad_json]"), output
    assert len(problem_lines) == 2, output  # nothing about good.jsonl, good.jsonl.gz or notes.txt
    # 2 + 1 good records and 3 lines of bad.jsonl were read: the good files were checked, and passed.
    assert re.search(r"^6 records checked: 2 errors, 0 warnings", output, re.M), output
