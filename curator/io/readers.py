"""Readers: every input line, with its provenance, and nothing lost.

`discover(raw)` lists the input files under RAW in a deterministic order; `iter_file(path)`
yields one `RawLine` per line of a .jsonl / .jsonl.gz file, or per element of a .json array.
A line that cannot be read (invalid UTF-8, a truncated gzip tail, an overlong line) is still
yielded, with the reason it failed, so the pipeline rejects it instead of losing it; so is a file
that cannot be read at all (unreadable, not gzip): one reject at its first line. Memory is bounded by
`max_line_bytes`, whatever the size of a file or of one of its lines.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import os
import stat
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Iterator

from curator.errors import CurateError
from curator.io.strict_json import DepthError, NumberError, decode, lone_surrogate, surrogate_error
from curator.out_dir import is_curate_output

SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz")
BOM = b"\xef\xbb\xbf"
GZIP_MAGIC = b"\x1f\x8b"
MAX_LINE_BYTES = 4_000_000  # input.max_line_bytes's default
CHUNK_BYTES = 1 << 20  # how much of an overlong line is read at a time while walking past it
PREVIEW_BYTES = 200  # what the rejects file keeps of an overlong line


@dataclass
class RawLine:
    """One input line (or .json array element) and what reading it found."""

    source_file: str
    source_line: int  # 1-based
    text: str  # the line as text (invalid UTF-8 replaced), without the newline
    raw_b64: str | None = None  # base64 of the bytes when they were not valid UTF-8
    obj: Any = None  # the parsed JSON value when `parsed`
    parsed: bool = False
    error: tuple[str, str] | None = None  # (reason code, message) when the line could not be read
    warnings: list[tuple[str, str]] = field(default_factory=list)  # (code, message), not fatal
    # .json: the line of the file the element starts on; source_line is the element's number there,
    # the provenance `curate run` records, and `curate validate` shows this one, where an editor jumps
    file_line: int | None = None


def display_name(path: Path) -> str:
    """The path as text that can be written as UTF-8: undecodable bytes in a name become \\xNN."""
    name = path.as_posix()
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        name = name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return name


def is_input_file(path: Path) -> bool:
    return path.name.lower().endswith(SUFFIXES)


@dataclass
class Discovered:
    """The input files under RAW, and what was left out and why (reported in the manifest)."""

    files: list[Path]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, why)


def _unreadable_folder(exc: OSError) -> None:
    raise CurateError(f"{exc.filename}: cannot read folder: {exc.strerror or exc}")


def _file_kind(mode: int) -> str:
    """What a path that is not a regular file is, in words."""
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a special file"


def not_regular(path: Path) -> str | None:
    """Why `path` cannot be read as an input file (a FIFO, a device, a socket, a link to one, a link
    to nothing), or None when it is a regular file. Reading a FIFO waits for a writer forever and a
    device like /dev/zero never ends, so only regular files are read."""
    link = "symbolic link to " if path.is_symlink() else ""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "symbolic link to a missing file" if link else "no such file"
    except OSError as exc:
        return f"cannot be examined: {exc.strerror or exc}"
    if stat.S_ISREG(mode):
        return None
    return f"{link}{_file_kind(mode)}, not a regular file"


def starts_like_json(path: Path) -> bool:
    """Whether the first bytes of `path` say JSON or JSON Lines (a "{" or "[" after a byte order mark and
    white space) or gzip: a RAW file named otherwise (data.txt) is read only then, so that a CSV is
    not read as a column of bad JSON lines."""
    try:
        with _open_regular(path) as fh:
            head = fh.read(4096)
    except OSError:  # read anyway: the reader turns why into a reject, as for any input file
        return True
    if head.startswith(GZIP_MAGIC):
        return True
    return head.removeprefix(BOM).lstrip()[:1] in (b"{", b"[")


def discover(raw: str | Path, exclude: Path | None = None) -> Discovered:
    """RAW itself when it is a file named as an input file or starting like one (`starts_like_json`),
    else skipped; when RAW is a folder, every input file under it, recursively, sorted by path.

    Input files end in .jsonl, .jsonl.gz, .json or .json.gz (any case). Hidden files and folders
    (a leading ".") are passed over silently; other files, input names that are not regular files
    (a FIFO, a device, a socket, a link to one or to nothing: see `not_regular`), symbolic links to
    folders (not followed, so a link cannot loop or pull in a second copy), `exclude` (OUT, when it
    lies inside RAW) and folders holding an earlier curate run (its outputs are not input) are listed
    in `skipped`. A folder that cannot be read is an error, not a silent gap.
    """
    raw = Path(raw)
    if raw.is_file():
        if is_input_file(raw) or starts_like_json(raw):
            return Discovered([raw])
        return Discovered([], [(raw.as_posix(), "not .jsonl, .jsonl.gz, .json or .json.gz, and does not start like JSON")])
    if not raw.exists():
        raise CurateError(f"{raw}: no such file or folder")
    if not raw.is_dir():
        raise CurateError(f"{raw}: {not_regular(raw)}; not read")
    excluded = exclude.resolve() if exclude is not None else None
    files: list[Path] = []
    skipped: list[tuple[str, str]] = []
    for root, dirs, names in os.walk(raw, onerror=_unreadable_folder):
        keep = []
        for d in sorted(dirs):
            path = Path(root) / d
            if d.startswith("."):
                continue
            if path.is_symlink():
                skipped.append((path.as_posix(), "symbolic link to a folder (not followed)"))
            elif excluded is not None and path.resolve() == excluded:
                skipped.append((path.as_posix(), "the output folder of this run"))
            elif is_curate_output(path):
                skipped.append((path.as_posix(), "an earlier curate output"))
            else:
                keep.append(d)
        dirs[:] = keep
        for name in names:
            path = Path(root) / name
            if name.startswith("."):
                continue
            if not is_input_file(path):
                skipped.append((path.as_posix(), "not .jsonl, .jsonl.gz, .json or .json.gz"))
            elif (why := not_regular(path)) is not None:
                skipped.append((path.as_posix(), why))
            else:
                files.append(path)
    files.sort(key=lambda p: p.relative_to(raw).as_posix())
    return Discovered(files, sorted(skipped))


def _too_long(preview: bytes, size: int, max_bytes: int, source: str, number: int) -> RawLine:
    message = (
        f"line is {size:,} bytes, over the limit of {max_bytes:,} (input.max_line_bytes); "
        f"raw holds its first {len(preview)} bytes only"
    )
    return RawLine(source, number, preview.decode("utf-8", errors="replace"), error=("io.line_too_long", message))


def _decode(data: bytes, source: str, number: int, max_bytes: int) -> RawLine:
    if len(data) > max_bytes:
        return _too_long(data[:PREVIEW_BYTES], len(data), max_bytes, source, number)
    warnings = []
    if data.startswith(BOM):
        data = data[len(BOM) :]
        warnings.append(("io.bom", "UTF-8 byte order mark removed"))
    if data.endswith(b"\r"):
        data = data[:-1]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return RawLine(
            source,
            number,
            data.decode("utf-8", errors="replace"),
            raw_b64=base64.b64encode(data).decode("ascii"),
            error=("io.bad_utf8", f"invalid UTF-8 at byte {exc.start}"),
            warnings=warnings,
        )
    if not text.strip():
        return RawLine(source, number, text, error=("io.blank_line", "blank line"), warnings=warnings)
    return RawLine(source, number, text, warnings=warnings)


class NotRegularFile(OSError):
    """An input path that is a FIFO, a device, a socket or a folder when it is opened."""


def _open_regular(path: Path) -> BinaryIO:
    """`path` opened for reading, once it is known to be a regular file; raises OSError.

    Opened without blocking and checked with fstat before anything is read: a FIFO put in place
    of a file after `discover` must not hang the run, nor a device feed it without end.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFile(f"{_file_kind(mode)}, not a regular file")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


class ReadDigest:
    """The sha256 of the bytes read from one input file; `complete` once the file was hashed to its end
    (not when it could not be opened or read)."""

    def __init__(self) -> None:
        self._sha = hashlib.sha256()
        self.complete = False

    def update(self, data: bytes) -> None:
        self._sha.update(data)

    def hexdigest(self) -> str | None:
        return self._sha.hexdigest() if self.complete else None


class _HashedReads:
    """A binary file whose bytes also go into `digest` as they are read: the manifest then hashes the
    bytes the run read, not the file as it is later (a file appended to during the run)."""

    def __init__(self, fh: BinaryIO, digest: ReadDigest) -> None:
        self._fh, self._digest = fh, digest

    def _seen(self, data: bytes) -> bytes:
        self._digest.update(data)
        return data

    def read(self, size: int = -1) -> bytes:
        return self._seen(self._fh.read(size))

    def read1(self, size: int = -1) -> bytes:
        return self._seen(self._fh.read1(size))

    def readline(self, size: int = -1) -> bytes:
        return self._seen(self._fh.readline(size))

    def readable(self) -> bool:
        return True


@contextmanager
def _open(path: Path, digest: ReadDigest | None = None) -> Iterator[BinaryIO]:
    """The file's bytes; gzip when named .gz, or when a file named otherwise starts with gzip's magic.

    With `digest`, every byte of the file goes into it: what the reader reads, then
    the rest of the file when the reader stops early (a truncated gzip stream)."""
    with _open_regular(path) as fh:
        compressed = path.name.lower().endswith(".gz") or fh.read(2) == GZIP_MAGIC
        fh.seek(0)
        source: Any = fh if digest is None else _HashedReads(fh, digest)
        try:
            if compressed:
                with gzip.GzipFile(fileobj=source, mode="rb") as gz:
                    yield gz
            else:
                yield source
        finally:
            if digest is not None:
                while chunk := fh.read(CHUNK_BYTES):
                    digest.update(chunk)
                digest.complete = True


# Errors that end the reading of a file, at its start or part way: the file goes on as one reject
# at the first line not read, and the run goes on with the next file.
READ_ERRORS = (OSError, EOFError, zlib.error)


def _read_failure(source: str, path: Path, number: int, exc: BaseException) -> RawLine:
    """The reject standing for what could not be read of a file, at the first line that was not read."""
    lost = "the rest of the file is lost" if number > 1 else "nothing of the file was read"
    if isinstance(exc, gzip.BadGzipFile) and number == 1:
        error = ("io.bad_gzip", f"not a gzip file ({exc}); {lost}")
    elif isinstance(exc, (EOFError, zlib.error, gzip.BadGzipFile)):
        error = ("io.truncated_gzip", f"gzip stream is truncated or corrupt ({exc}); {lost}")
    elif isinstance(exc, NotRegularFile):
        error = ("io.not_regular_file", f"{exc}; {lost}")
    elif isinstance(exc, FileNotFoundError) and path.is_symlink():
        error = ("io.unreadable", f"cannot read: symbolic link to a missing file; {lost}")
    else:
        strerror = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        error = ("io.unreadable", f"cannot read: {strerror}; {lost}")
    return RawLine(source, number, "", error=error)


def _lines(fh: BinaryIO, max_bytes: int) -> Iterator[bytes | tuple[bytes, int]]:
    """Each line of `fh` without its newline, read in pieces of at most `max_bytes` + 1 bytes; a longer
    line is (its first PREVIEW_BYTES, its size), walked past without being held."""
    while True:
        data = fh.readline(max_bytes + 1)
        if not data:
            return
        if data.endswith(b"\n"):
            yield data[:-1]
        elif len(data) <= max_bytes:
            yield data  # the last line, without a newline
        else:
            preview, size = data[:PREVIEW_BYTES], len(data)
            while data and not data.endswith(b"\n"):
                data = fh.readline(CHUNK_BYTES)
                size += len(data)
            yield preview, size - data.endswith(b"\n")


def iter_jsonl(
    path: Path, source: str | None = None, max_line_bytes: int = MAX_LINE_BYTES, digest: ReadDigest | None = None
) -> Iterator[RawLine]:
    """One RawLine per line of a .jsonl or .jsonl.gz file (JSON not yet parsed), streamed.

    Memory is bounded by `max_line_bytes`: a longer line is rejected (io.line_too_long) with its first
    200 bytes, never held whole. A file that fails part way (a truncated gzip stream, a read error)
    or as a whole (not gzip, unreadable) ends in one reject at the first line not read.
    """
    source = source or str(path)
    number = 0
    try:
        with _open(path, digest) as fh:
            for item in _lines(fh, max_line_bytes):
                number += 1
                if isinstance(item, tuple):
                    yield _too_long(*item, max_line_bytes, source, number)
                else:
                    yield _decode(item, source, number, max_line_bytes)
    except READ_ERRORS as exc:
        yield _read_failure(source, path, number + 1, exc)


def iter_json_array(
    path: Path, source: str | None = None, max_line_bytes: int = MAX_LINE_BYTES, digest: ReadDigest | None = None
) -> Iterator[RawLine]:
    """One RawLine per element of a .json (or .json.gz) file holding an array of records, streamed.

    An element that cannot be decoded, or is over `max_line_bytes`, is rejected on its own
    (curator/io/formats.py keeps the element boundaries and the exact raw bytes); a file that is not
    an array is one reject; a file that fails to read ends in one reject, as in `iter_jsonl`.
    """
    from curator.io.formats import FormatError, iter_array_elements

    source = source or str(path)
    number = 0
    try:
        with _open(path, digest) as fh:
            items = iter_array_elements(fh, name=source, with_raw=True, with_line=True, max_element_bytes=max_line_bytes)
            for number, value, raw, line in items:
                text = raw.decode("utf-8", errors="replace")
                if isinstance(value, FormatError):
                    b64 = base64.b64encode(raw).decode("ascii") if value.code == "io.bad_utf8" else None
                    message = f"{value.field}: {value.message}" if value.field else value.message
                    yield RawLine(source, number, text, raw_b64=b64, error=(value.code, message), file_line=line)
                elif (field := lone_surrogate(text, value)) is not None:
                    yield RawLine(source, number, text, error=surrogate_error(field), file_line=line)
                else:
                    yield RawLine(source, number, text, obj=value, parsed=True, file_line=line)
    except READ_ERRORS as exc:
        yield _read_failure(source, path, number + 1, exc)


def iter_file(
    path: Path, source: str | None = None, max_line_bytes: int = MAX_LINE_BYTES, digest: ReadDigest | None = None
) -> Iterator[RawLine]:
    """The lines (or .json array elements) of one input file; a file that cannot be read is a reject, never an
    exception. With `digest`, the file's bytes as read go into it."""
    if path.name.lower().endswith((".json", ".json.gz")):
        return iter_json_array(path, source, max_line_bytes, digest)
    return iter_jsonl(path, source, max_line_bytes, digest)


def parse(line: RawLine) -> RawLine:
    """Parse the line's JSON in place; a failure becomes the line's error."""
    if line.parsed or line.error:
        return line
    try:
        line.obj = decode(line.text)
        line.parsed = True
    except RecursionError:
        line.error = ("io.bad_json", "JSON nested too deeply to parse")
        return line
    except (NumberError, DepthError) as exc:  # the message names the field, or the depth
        line.error = ("io.bad_json", str(exc))
        return line
    except ValueError as exc:
        line.error = ("io.bad_json", f"invalid JSON: {exc}")
        return line
    field = lone_surrogate(line.text, line.obj)
    if field is not None:
        line.error = surrogate_error(field)
        line.obj, line.parsed = None, False
    return line
