"""Readers: every input line, with its provenance, and nothing lost.

`discover(raw)` lists the input files under RAW in a deterministic order; `iter_file(path)`
yields one `RawLine` per line of a .jsonl / .jsonl.gz file, or per element of a .json array.
A line that cannot be read (invalid UTF-8, a truncated gzip tail, an overlong line) is still
yielded, with the reason it failed, so the pipeline rejects it instead of losing it.
Only a file that cannot be opened at all raises, with an error that names it.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from curator.errors import CurateError
from curator.io.strict_json import DECODER, lone_surrogate, surrogate_error
from curator.out_dir import is_curate_output

SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz")
BOM = b"\xef\xbb\xbf"
GZIP_MAGIC = b"\x1f\x8b"


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


def discover(raw: str | Path, exclude: Path | None = None) -> Discovered:
    """RAW itself when it is a file; else every input file under it, recursively, sorted by path.

    Input files end in .jsonl, .jsonl.gz, .json or .json.gz (any case). Hidden files and folders
    (a leading ".") are passed over silently; other files, symbolic links to folders (not followed,
    so a link cannot loop or pull in a second copy), `exclude` (OUT, when it lies inside RAW) and
    folders holding an earlier curate run (its outputs are not input) are listed in `skipped`.
    A folder that cannot be read is an error, not a silent gap.
    """
    raw = Path(raw)
    if raw.is_file():
        return Discovered([raw])
    if not raw.exists():
        raise CurateError(f"{raw}: no such file or folder")
    if not raw.is_dir():
        raise CurateError(f"{raw}: not a file or folder")
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
            if is_input_file(path):
                files.append(path)
            else:
                skipped.append((path.as_posix(), "not .jsonl, .jsonl.gz, .json or .json.gz"))
    files.sort(key=lambda p: p.relative_to(raw).as_posix())
    return Discovered(files, sorted(skipped))


def _decode(data: bytes, source: str, number: int, max_bytes: int) -> RawLine:
    if len(data) > max_bytes:
        preview = data[:200].decode("utf-8", errors="replace")
        message = (
            f"line is {len(data):,} bytes, over the limit of {max_bytes:,} (input.max_line_bytes); "
            "raw holds its first 200 bytes only"
        )
        return RawLine(source, number, preview, error=("io.line_too_long", message))
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


def _open(path: Path):
    """The file's bytes; gzip when named .gz, or when a file named otherwise starts with gzip's magic."""
    try:
        if path.name.lower().endswith(".gz"):
            return gzip.open(path, "rb")
        with path.open("rb") as probe:
            compressed = probe.read(2) == GZIP_MAGIC
        return gzip.open(path, "rb") if compressed else path.open("rb")
    except OSError as exc:
        raise CurateError(f"{path}: cannot read: {exc.strerror or exc}") from exc


def iter_jsonl(path: Path, source: str | None = None, max_line_bytes: int = 4_000_000) -> Iterator[RawLine]:
    """One RawLine per line of a .jsonl or .jsonl.gz file (JSON not yet parsed), streamed."""
    source = source or str(path)
    number = 0
    with _open(path) as fh:
        try:
            for chunk in fh:
                number += 1
                if chunk.endswith(b"\n"):
                    chunk = chunk[:-1]
                yield _decode(chunk, source, number, max_line_bytes)
        except gzip.BadGzipFile as exc:
            if number == 0:
                raise CurateError(f"{source}: not a gzip file ({exc})") from exc
            yield _truncated(source, number + 1, exc)
        except (EOFError, zlib.error) as exc:
            yield _truncated(source, number + 1, exc)
        except OSError as exc:
            raise CurateError(f"{source}: cannot read: {exc.strerror or exc}") from exc


def _truncated(source: str, number: int, exc: Exception) -> RawLine:
    return RawLine(
        source,
        number,
        "",
        error=("io.truncated_gzip", f"gzip stream is truncated or corrupt ({exc}); the rest of the file is lost"),
    )


def iter_json_array(path: Path, source: str | None = None) -> Iterator[RawLine]:
    """One RawLine per element of a .json file holding an array of records.

    An element that cannot be decoded is rejected on its own (curator/io/formats.py keeps the
    element boundaries and the exact raw bytes); a file that is not an array raises.
    """
    from curator.io.formats import FormatError, iter_json_array as elements

    source = source or str(path)
    if path.name.lower().endswith(".gz"):
        with _open(path) as fh:
            try:
                data = fh.read()
            except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
                raise CurateError(f"{source}: gzip stream is truncated or corrupt ({exc})") from exc
    else:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise CurateError(f"{source}: cannot read: {exc.strerror or exc}") from exc
    for number, value, raw in elements(data, name=source, with_raw=True):
        text = raw.decode("utf-8", errors="replace")
        if isinstance(value, FormatError):
            b64 = base64.b64encode(raw).decode("ascii") if value.code == "io.bad_utf8" else None
            yield RawLine(source, number, text, raw_b64=b64, error=(value.code, value.message))
        elif (field := lone_surrogate(text, value)) is not None:
            yield RawLine(source, number, text, error=surrogate_error(field))
        else:
            yield RawLine(source, number, text, obj=value, parsed=True)


def iter_file(path: Path, source: str | None = None, max_line_bytes: int = 4_000_000) -> Iterator[RawLine]:
    if path.name.lower().endswith((".json", ".json.gz")):
        return iter_json_array(path, source)
    return iter_jsonl(path, source, max_line_bytes)


def parse(line: RawLine) -> RawLine:
    """Parse the line's JSON in place; a failure becomes the line's error."""
    if line.parsed or line.error:
        return line
    try:
        line.obj = DECODER.decode(line.text)
        line.parsed = True
    except RecursionError:
        line.error = ("io.bad_json", "JSON nested too deeply to parse")
        return line
    except ValueError as exc:
        line.error = ("io.bad_json", f"invalid JSON: {exc}")
        return line
    field = lone_surrogate(line.text, line.obj)
    if field is not None:
        line.error = surrogate_error(field)
        line.obj, line.parsed = None, False
    return line
