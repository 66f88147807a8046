"""The pre-commit hook's environment: what a user's `pre-commit install-hooks` costs for `curate-validate`.

    python bench/hook_env.py [--root DIR] [--repeat 2] [--no-pip-cache]

Snapshots the working tree of --root (default: this checkout) into a temporary git repository with
one commit, points a throwaway dataset repository's .pre-commit-config.yaml at it, and runs
`pre-commit install-hooks` with a fresh PRE_COMMIT_HOME each time. Prints one table: install
seconds, the size of the hook's virtual environment (du), the size of all of PRE_COMMIT_HOME (the
environment plus pre-commit's clone of the repository) and the packages installed. The pip cache
is the user's (warm after the first repeat) unless --no-pip-cache. Then it runs the hook once on a
small file, so a broken light environment shows here rather than in a user's commit.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOOD_LINE = '{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}\n'


def git_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@example.com", GIT_COMMITTER_NAME="b", GIT_COMMITTER_EMAIL="b@example.com")
    return env


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, env=git_env(), capture_output=True, text=True, check=True).stdout


def snapshot(root: Path, dest: Path) -> str:
    """Copy the working tree of `root` (tracked and untracked, minus ignored) into a new repository."""
    names = git("ls-files", "-z", "--cached", "--others", "--exclude-standard", cwd=root).split("\0")
    for name in filter(None, names):
        if (root / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / name, dest / name)
    git("init", "-q", cwd=dest)
    git("add", "-A", cwd=dest)
    git("commit", "-q", "--no-verify", "-m", "snapshot", cwd=dest)
    return git("rev-parse", "HEAD", cwd=dest).strip()


def dataset_repo(dest: Path, hook_repo: Path, rev: str) -> None:
    dest.mkdir()
    config = f"repos:\n  - repo: {hook_repo}\n    rev: {rev}\n    hooks:\n      - id: curate-validate\n"
    (dest / ".pre-commit-config.yaml").write_text(config, encoding="utf-8")
    (dest / "train.jsonl").write_text(GOOD_LINE, encoding="utf-8")
    git("init", "-q", cwd=dest)
    git("add", "-A", cwd=dest)


def du_mb(path: Path) -> float:
    out = subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True, check=True).stdout
    return int(out.split()[0]) / 1024


def measure(data: Path, home: Path, no_pip_cache: bool) -> dict:
    env = git_env() | {"PRE_COMMIT_HOME": str(home), "PRE_COMMIT_COLOR": "never"}
    if no_pip_cache:
        env["PIP_NO_CACHE_DIR"] = "1"
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pre_commit", "install-hooks"], cwd=data, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"install-hooks failed:\n{proc.stdout}{proc.stderr}")
    [venv] = list(home.glob("repo*/py_env-*"))
    pip = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True)
    packages = [line.split("==")[0] for line in pip.stdout.split() if line and not line.startswith("pip==")]
    hook = subprocess.run([sys.executable, "-m", "pre_commit", "run", "--all-files"], cwd=data, env=env, capture_output=True, text=True)
    return {"seconds": seconds, "env_mb": du_mb(venv), "home_mb": du_mb(home), "packages": packages, "hook_rc": hook.returncode, "hook_out": hook.stdout + hook.stderr}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="The checkout whose hook is measured.")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--no-pip-cache", action="store_true", help="Download every package (PIP_NO_CACHE_DIR=1).")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hook-env-") as tmp:
        tmp_path = Path(tmp)
        hook_repo = tmp_path / "hook-repo"
        hook_repo.mkdir()
        rev = snapshot(args.root.resolve(), hook_repo)
        dataset_repo(tmp_path / "data", hook_repo, rev)
        print(f"machine: {platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()}; root {args.root}")
        print("| run | install s | hook env MB | PRE_COMMIT_HOME MB | packages | hook on a good file |")
        print("|---|---:|---:|---:|---:|---|")
        for i in range(args.repeat):
            result = measure(tmp_path / "data", tmp_path / f"home{i}", args.no_pip_cache)
            verdict = "passed" if result["hook_rc"] == 0 else f"exit {result['hook_rc']}"
            print(f"| {i + 1} | {result['seconds']:.1f} | {result['env_mb']:.0f} | {result['home_mb']:.0f} | {len(result['packages'])} | {verdict} |")
        print("packages:", " ".join(sorted(result["packages"], key=str.lower)))
        if result["hook_rc"]:
            print(result["hook_out"])


if __name__ == "__main__":
    main()
