"""The `curate-validate` hook, run by the real pre-commit tool against a throwaway git repository.

`pre-commit try-repo` installs this project into a fresh virtual environment (pip install of the
repository with the hook's build setting, as a user's pre-commit would: the validator's dependencies
only) and runs the hook from .pre-commit-hooks.yaml. That takes a venv and a pip install (about
10 s), so the test makes one try-repo run over all files. pre-commit shuffles the files and hands
them out four or more to a process, so the test passes four dataset files (one process, one
summary line) and compares each file's lines in order.

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


# built at run time, so that no secret scanner flags this file
PRIVATE_KEY = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7\n-----END RSA PRIVATE KEY-----"
OPENAI_KEY = "sk-" + "A" * 10 + "b" * 10 + "T3BlbkFJ" + "c" * 20
ROLE = "Input should be 'system', 'user', 'assistant' or 'tool' [schema.bad_role]"


def _dataset(data: Path) -> list[str]:
    """The files of a dataset repository (what the hook finds in each is in the test); the names to pass."""
    lines = [json.dumps(r) for r in GOOD]
    (data / "good.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with gzip.open(data / "good.jsonl.gz", "wt", encoding="utf-8") as fh:
        fh.write(lines[0] + "\n")
    bad_role = {"messages": [{"role": "user", "content": "Hi"}, {"role": "bot", "content": "Hello"}]}
    alpaca = {"instruction": "Say hi.", "input": "", "output": "Hi."}
    leaked = {"messages": [{"role": "user", "content": "My key: " + OPENAI_KEY}, {"role": "assistant", "content": "Rotate it."}]}
    bad = [lines[0], json.dumps(bad_role), json.dumps(alpaca), json.dumps(leaked), '{"messages": [']
    (data / "bad.jsonl").write_text("\n".join(bad) + "\n", encoding="utf-8")
    # a pretty-printed .json array (12 lines a record): the hook names the line a record starts on
    key_record = {"messages": [{"role": "user", "content": "Store this."}, {"role": "assistant", "content": PRIVATE_KEY}]}
    (data / "pretty.JSON").write_text(json.dumps([GOOD[0], bad_role, key_record], indent=2) + "\n", encoding="utf-8")
    # Not a dataset file: the hook's `files` pattern must keep it away from curate (it is not JSON).
    (data / "notes.txt").write_text("not json\n", encoding="utf-8")
    return ["good.jsonl", "good.jsonl.gz", "bad.jsonl", "pretty.JSON", "notes.txt"]


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory) -> tuple[Path, str]:
    if not (ROOT / ".pre-commit-hooks.yaml").is_file():
        pytest.fail(".pre-commit-hooks.yaml is missing")
    hook_repo = tmp_path_factory.mktemp("hook-repo")
    return hook_repo, _snapshot(hook_repo)


def _pre_commit_env(home: Path) -> dict[str, str]:
    return _git_env() | {"PRE_COMMIT_HOME": str(home), "PRE_COMMIT_COLOR": "never"}


def test_precommit_hook_fails_on_bad_lines_and_secrets_only(snapshot, tmp_path):
    hook_repo, rev = snapshot

    data = tmp_path / "dataset"
    data.mkdir()
    files = _dataset(data)
    _git("init", "-q", cwd=data)
    _git("add", "-A", cwd=data)

    env = _pre_commit_env(tmp_path / "pre-commit-home")
    cmd = [sys.executable, "-m", "pre_commit", "try-repo", str(hook_repo), "curate-validate", "--ref", rev, "--files", *files]
    proc = subprocess.run(cmd, cwd=data, env=env, capture_output=True, text=True, timeout=1200)
    output = proc.stdout + proc.stderr

    assert proc.returncode == 1, output
    assert re.search(r"^curate validate.*\.{3,}Failed$", output, re.M), output
    assert "- hook id: curate-validate\n- exit code: 1" in output, output
    by_file: dict[str, list[str]] = {}
    for line in output.splitlines():
        if m := re.match(r"^(?:warning: )?([^:\s]+):\d+: ", line):
            by_file.setdefault(m.group(1), []).append(line)
    assert by_file == {
        "bad.jsonl": [
            f"bad.jsonl:2: messages[1].role: {ROLE}",
            "warning: bad.jsonl:3: alpaca record in a file whose first record (line 1) is chat [format.mixed_shapes]",
            "bad.jsonl:4: messages[0].content: openai_key [secrets.openai_key]",
            "bad.jsonl:5: invalid JSON: Expecting value: line 1 column 15 (char 14) [io.bad_json]",
        ],
        "pretty.JSON": [
            f"pretty.JSON:14: messages[1].role: {ROLE}",
            "pretty.JSON:26: messages[1].content: private_key [secrets.private_key]",
        ],
    }, output  # nothing about good.jsonl, good.jsonl.gz or notes.txt
    assert OPENAI_KEY not in output and "MIIEowIBAAKCAQEA7" not in output, output
    # 2 + 1 good records, 5 lines of bad.jsonl and 3 records of pretty.JSON: the good files were checked, and passed
    assert re.findall(r"^\d+ records checked: .*$", output, re.M) == ["11 records checked: 5 errors, 1 warnings"], output


def test_the_hook_installs_the_validator_without_the_pipeline(snapshot, tmp_path):
    # try-repo's environment is gone when it returns: install-hooks keeps it under PRE_COMMIT_HOME
    hook_repo, rev = snapshot
    data = tmp_path / "dataset"
    data.mkdir()
    hooks = f"repos:\n  - repo: {hook_repo}\n    rev: {rev}\n    hooks:\n      - id: curate-validate\n"
    (data / ".pre-commit-config.yaml").write_text(hooks, encoding="utf-8")
    _git("init", "-q", cwd=data)
    home = tmp_path / "pre-commit-home"
    cmd = [sys.executable, "-m", "pre_commit", "install-hooks"]
    proc = subprocess.run(cmd, cwd=data, env=_pre_commit_env(home), capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [site] = home.glob("repo*/py_env-*/lib/python*/site-packages")
    installed = {p.name.split("-")[0].lower() for p in site.glob("*.dist-info")}
    assert {"curator", "pydantic", "click", "pyyaml"} <= installed, installed
    assert not installed & {"polars", "numpy", "tree_sitter", "mistral_common", "tokenizers", "datasketch", "rich"}, installed
