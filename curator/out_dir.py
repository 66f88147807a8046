"""OUT, the output folder of `curate run`: one writer at a time, and never half a run.

Beside OUT (a folder that can be renamed):

    .OUT.lock      flock held by the run writing OUT (it holds that run's pid); removed when it ends
    .OUT.tmp-PID   the new run being written; after the exchange, the old run being deleted
    .OUT.old-PID   the old run, only where two names cannot be exchanged atomically

A mount point cannot be renamed, so the same happens inside it, file by file:

    OUT/.curate.lock          the lock
    OUT/.curate.tmp-PID       the new run being written
    OUT/.curate.ready-PID     the new run, complete; the old run is being deleted (manifest.json first)
    OUT/.curate.moving-PID    the old run is gone; the new files are being moved in (manifest.json last)

A run killed at any moment leaves these names behind; the next run into OUT takes the lock and
then finishes or removes them before anything else (`clean_leftovers`). Where the file system has
no flock, runs go unlocked and only leftovers whose pid is no longer alive are touched.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import re
import shutil
import signal
import sys
from pathlib import Path

from curator.errors import CurateError

try:
    import fcntl
except ImportError:  # not a Unix: runs are not locked, leftovers are judged by pid alone
    fcntl = None  # type: ignore[assignment]

KILL_AT = "CURATE_TEST_KILL_AT"
MOUNT_LOCK = ".curate.lock"
_MOUNT_STAGING = re.compile(r"\.curate\.(tmp|ready|moving)-(\d+)")
# errors of a file system that has no flock: the run goes on unlocked rather than not at all
_NO_LOCKING = {errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL}


def checkpoint(step: str) -> None:
    """Test hook: CURATE_TEST_KILL_AT=step kills the process here, as `kill -9` or the OOM killer would."""
    if os.environ.get(KILL_AT) == step:
        os.kill(os.getpid(), signal.SIGKILL)


def is_mount_point(out: Path) -> bool:
    return os.path.ismount(out)


def why_not_curate_output(folder: Path) -> str | None:
    """None when `folder` holds a run of `curate run` (its manifest.json has a manifest_version), else why not."""
    try:
        manifest = json.loads((folder / "manifest.json").read_bytes())
    except FileNotFoundError:
        return "no manifest.json"
    except (OSError, ValueError):
        return "its manifest.json is not readable JSON"
    version = manifest.get("manifest_version") if isinstance(manifest, dict) else None
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        return "its manifest.json has no curate manifest_version"
    return None


def is_curate_output(folder: Path) -> bool:
    return why_not_curate_output(folder) is None


# --- the lock ------------------------------------------------------------------------------------


def lock_path(out: Path) -> Path:
    return out / MOUNT_LOCK if is_mount_point(out) else out.parent / f".{out.name}.lock"


class OutLock:
    """An exclusive flock on OUT's lock file for the whole run. The kernel drops it when the process
    ends, however it ends, so a killed run never blocks the next one."""

    def __init__(self, out: Path):
        self.out = out
        self.path = lock_path(out)
        self.fd: int | None = None
        self.held = False

    def __enter__(self) -> OutLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while self.fd is None:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by child processes
            try:
                self.held = _try_flock(fd)
            except BlockingIOError:
                os.close(fd)
                pid = _pid_in(self.path)
                who = f"another curate run (pid {pid})" if pid else "another curate run"
                raise CurateError(f"{self.out}: {who} is writing it") from None
            except BaseException:
                os.close(fd)
                raise
            # the run before may have removed the file between our open and our lock: lock the one in place
            if self.held and not _is_same_file(fd, self.path):
                os.close(fd)
                continue
            self.fd = fd
        if self.held:
            os.ftruncate(self.fd, 0)
            os.write(self.fd, f"{os.getpid()}\n".encode())
        return self

    def __exit__(self, *exc_info) -> None:
        if self.fd is None:
            return
        # removed while still held: a run that opened it meanwhile finds it gone and opens the new one
        self.path.unlink(missing_ok=True)
        os.close(self.fd)
        self.fd, self.held = None, False


def _try_flock(fd: int) -> bool:
    """True once locked; False where the file system has no locks; BlockingIOError when another run holds it."""
    if fcntl is None:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise
    except OSError as exc:
        if exc.errno in _NO_LOCKING:
            return False
        raise
    return True


def _is_same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def _pid_in(path: Path) -> int | None:
    try:
        return int(path.read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        pass
    return True


# --- leftovers of killed runs --------------------------------------------------------------------


def staging_dir(out: Path) -> Path:
    """Where the new run is written before it is put in place: beside OUT, or inside a mount point."""
    if is_mount_point(out):
        return out / f".curate.tmp-{os.getpid()}"
    return out.parent / f".{out.name}.tmp-{os.getpid()}"


def _leftovers(out: Path) -> list[tuple[Path, str, int]]:
    """(path, kind, pid) of OUT's staging folders: tmp/old beside it, tmp/ready/moving inside a mount point."""
    if is_mount_point(out):
        folder, pattern = out, _MOUNT_STAGING
    else:
        folder, pattern = out.parent, re.compile(r"\." + re.escape(out.name) + r"\.(tmp|old)-(\d+)")
    if not folder.is_dir():
        return []
    found = []
    for entry in folder.iterdir():
        match = pattern.fullmatch(entry.name)
        if match and entry.is_dir() and not entry.is_symlink():  # curate stages folders, never files
            found.append((entry, match.group(1), int(match.group(2))))
    return sorted(found)


def clean_leftovers(out: Path, lock: OutLock) -> None:
    """Finish or remove what killed runs left behind. Under the lock no other run is writing OUT, so
    every leftover is a dead run's; without a lock, only those whose pid is no longer alive are touched.

    Beside OUT a leftover is removed, except an old run set aside by the two-rename fallback when OUT
    itself is missing (killed between the renames): that one is put back. Inside a mount point, a
    complete new run (ready, moving) is moved in; an incomplete one (tmp) is removed.
    """
    for path, kind, pid in _leftovers(out):
        if not lock.held and pid != os.getpid() and _pid_alive(pid):
            continue
        try:
            if kind == "old" and not out.exists() and is_curate_output(path):
                os.replace(path, out)
            elif kind == "ready":
                _fill_from(path, out)
            elif kind == "moving":
                _move_files_in(path, out)
            else:
                remove_run(path)
        except OSError as exc:
            raise CurateError(
                f"{path}: cannot remove this leftover of an interrupted run: {exc.strerror or exc}"
            ) from exc


def remove_run(path: Path) -> None:
    """Delete a run, manifest.json first, so that a half-deleted run is never taken for a run."""
    if path.is_dir() and not path.is_symlink():
        (path / "manifest.json").unlink(missing_ok=True)
        checkpoint("removing-old")
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


# --- may OUT be written? -------------------------------------------------------------------------


def check_replaceable(out: Path, force: bool) -> None:
    """OUT may be written when it is missing or empty; with --force, when it holds an earlier curate
    run that can be deleted. Anything else is refused: --force never deletes a folder of other files."""
    if not out.exists():
        return
    if not out.is_dir():
        raise CurateError(f"{out}: exists and is not a folder")
    if not any(not _is_own_entry(entry.name) for entry in out.iterdir()):
        return
    why = why_not_curate_output(out)
    if why is not None:
        raise CurateError(
            f"{out}: folder is not empty and is not an earlier curate output ({why}); "
            "--force replaces only an earlier run, choose another OUT"
        )
    if not force:
        raise CurateError(f"{out}: holds an earlier curate run; use --force to replace it")
    _check_removable(out)


def _is_own_entry(name: str) -> bool:
    """The lock and staging folders that live inside a mount point OUT: not content."""
    return name == MOUNT_LOCK or _MOUNT_STAGING.fullmatch(name) is not None


def _check_removable(out: Path) -> None:
    """Refuse, before any work, an earlier run that could not be deleted once the new one is in place."""

    def unreadable(exc: OSError) -> None:
        raise CurateError(f"{out}: cannot replace the earlier run: cannot read {exc.filename}: {exc.strerror or exc}")

    for root, dirs, files in os.walk(out, onerror=unreadable):
        if (dirs or files) and not os.access(root, os.W_OK | os.X_OK):
            raise CurateError(f"{out}: cannot replace the earlier run: no write permission in {root}")


# --- putting the new run in place ----------------------------------------------------------------


def put_in_place(tmp: Path, out: Path) -> None:
    """Make the complete run in `tmp` OUT. OUT holds the old or the new run at every moment (a
    mount point: until a later run finishes the move), then the old run is deleted."""
    if tmp.parent == out:
        _fill_mount_point(tmp, out)
    elif not out.exists():
        os.replace(tmp, out)
    elif exchange(tmp, out):
        checkpoint("exchanged")
        _remove_quietly(tmp)  # the old run, now under the staging name
    else:
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
        checkpoint("renamed-old")
        os.replace(tmp, out)
        _remove_quietly(old)


def _remove_quietly(path: Path) -> None:
    """The new run is in place and the old one was checked deletable: should deleting it still fail,
    the run has succeeded all the same, and the next run removes the leftover."""
    try:
        remove_run(path)
    except OSError:
        pass


def exchange(a: Path, b: Path) -> bool:
    """Swap two names in one step (Linux renameat2 RENAME_EXCHANGE); False where that is unavailable."""
    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # a kernel or file system without it
        return False
    raise OSError(code, os.strerror(code), str(a), None, str(b))


def _renameat2():
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2  # glibc 2.28 and later
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


def _fill_mount_point(tmp: Path, out: Path) -> None:
    ready = out / tmp.name.replace(".tmp-", ".ready-")
    os.replace(tmp, ready)  # complete from here on: a later run finishes the move if this one is killed
    _fill_from(ready, out)


def _fill_from(ready: Path, out: Path) -> None:
    """Delete OUT's old run (manifest.json first), then move the ready run in (manifest.json last)."""
    (out / "manifest.json").unlink(missing_ok=True)
    for entry in sorted(out.iterdir()):
        if not _is_own_entry(entry.name):
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
            checkpoint("mount-clearing")
    moving = ready.with_name(ready.name.replace(".ready-", ".moving-"))
    os.replace(ready, moving)
    _move_files_in(moving, out)


def _move_files_in(moving: Path, out: Path) -> None:
    """Move the new run's files into OUT, manifest.json last: until it is there, OUT is not a run."""
    entries = sorted(moving.iterdir(), key=lambda p: (p.name == "manifest.json", p.name))
    for entry in entries:
        target = out / entry.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(entry, target)
        checkpoint("mount-moving")
    moving.rmdir()
