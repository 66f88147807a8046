"""Validate lines and files without the pipeline's machinery (no polars): `curate validate`.

The pre-commit hook imports only this module, the schema (pydantic) and the readers, so a
small file is answered in a fraction of a second.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator

from curator.io.readers import MAX_LINE_BYTES, RawLine, display_name, iter_file, parse
from curator.schema import Problem, check_record, to_plain
from curator.secret_patterns import WARNING_KINDS, find_kinds, redact_text


def check_line(
    line: RawLine, fmt: str = "auto", extra_fields: str = "warn", build: bool = True, repairs: tuple[str, ...] | None = None
) -> tuple[dict | None, list[Problem], str]:
    """Parse and validate one line: (plain record or None, problems, detected source format).

    With `build=False` (the hook) the plain record is not built and None is returned for it.

    Lines in Alpaca, ShareGPT or GPTeacher shape are converted to chat records first
    (curator/io/formats.py) unless `fmt` is "chat", with the `repairs` of input.repairs (all by default);
    each repair made is a `repair.*` warning.
    """
    problems = [Problem("", msg, code, warning=True) for code, msg in line.warnings]
    parse(line)
    if line.error:
        code, msg = line.error
        return None, problems + [Problem("", msg, code)], "unknown"
    obj = line.obj
    source_format = "chat"
    if isinstance(obj, dict) and (fmt not in ("auto", "chat") or (fmt == "auto" and "messages" not in obj)):
        obj, source_format, problem, notes = _convert(obj, fmt, repairs)
        if problem:
            return None, problems + [problem], source_format
        problems += [Problem("", message, code, warning=True) for code, message in notes]
    record, found = check_record(obj)
    if extra_fields == "reject":
        found = [Problem(p.field, p.message, p.code) if p.code == "schema.extra_field" else p for p in found]
    problems += found
    if record is None or not build or any(not p.warning for p in problems):
        return None, problems, source_format
    return to_plain(record), problems, source_format


def _convert(obj: dict, fmt: str, repairs: tuple[str, ...] | None) -> tuple[Any, str, Problem | None, list]:
    from curator.io.formats import REPAIRS, FormatError, detect_format, to_chat_repaired

    try:
        shape = detect_format(obj) if fmt == "auto" else fmt
        if shape == "chat":
            return obj, shape, None, []
        record, notes = to_chat_repaired(obj, shape, repairs=REPAIRS if repairs is None else repairs)
        return record, shape, None, notes
    except FormatError as exc:
        field = getattr(exc, "field", "") or ""
        message = getattr(exc, "message", None) or str(exc)
        return obj, fmt, Problem(field, message, getattr(exc, "code", "format.invalid")), []


@dataclass(frozen=True)
class Finding:
    file: str
    line: int
    problem: Problem

    def format(self) -> str:
        # field names and messages quote the data (a key, a speaker tag): no secret in a hook's output
        shown = replace(self.problem, field=redact_text(self.problem.field), message=redact_text(self.problem.message))
        return shown.format(self.file, self.line)

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "field": redact_text(self.problem.field),
            "message": redact_text(self.problem.message),
            "code": self.problem.code,
            "severity": "warning" if self.problem.warning else "error",
        }


def validate_file(
    path: Path, fmt: str = "auto", extra_fields: str = "warn", max_line_bytes: int = MAX_LINE_BYTES,
    repairs: tuple[str, ...] | None = None, secrets: bool = False,
) -> Iterator[tuple[int, list[Finding]]]:
    """For each record of `path`: (1, its findings). Streams, holding at most one line of
    `max_line_bytes`; a file that cannot be read is a finding on its line 1, as it is a reject in a run.
    With `secrets`, every string of a parsed line is also searched for secrets (secret_problems).
    A record in another shape than the file's first (an Alpaca record among chat records) is a
    `format.mixed_shapes` warning: `curate run` converts it, but it is more often a paste error.
    A .json element's findings name the line of the file it starts on, not its number."""
    source = display_name(path)
    first: tuple[str, int] | None = None  # the file's first shape, and where it was seen
    for line in iter_file(path, source, max_line_bytes):
        _, problems, shape = check_line(line, fmt, extra_fields, build=False, repairs=repairs)
        where = line.file_line or line.source_line
        if shape in SHAPES and fmt == "auto":
            first = first or (shape, where)
            if shape != first[0]:
                problems.append(mixed_shapes(shape, *first))
        if secrets and not line.error:
            problems += secret_problems(line.obj)
        yield 1, [Finding(source, where, p) for p in problems]


SHAPES = ("chat", "alpaca", "sharegpt", "gpteacher")


def mixed_shapes(shape: str, first: str, first_line: int) -> Problem:
    message = f"{shape} record in a file whose first record (line {first_line}) is {first}"
    return Problem("", message, "format.mixed_shapes", warning=True)


def secret_problems(obj: Any) -> list[Problem]:
    """A `secrets.KIND` problem for each kind of secret in each string of `obj` as it is in the file
    (values and keys, at any depth): an error for keys and tokens, a warning for e-mails and phones.
    The message names the kind only; the field is redacted when shown (Finding.format)."""
    return [
        Problem(field, kind, f"secrets.{kind}", warning=kind in WARNING_KINDS)
        for field, text in _strings(obj, "")
        for kind in find_kinds(text)
    ]


def _strings(obj: Any, field: str) -> Iterator[tuple[str, str]]:
    """(field path, text) for every string in `obj`, dict keys included (a key's field is its own path)."""
    if isinstance(obj, str):
        yield field, obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            child = f"{field}.{key}" if field else str(key)
            yield child, str(key)
            yield from _strings(value, child)
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from _strings(value, f"{field}[{i}]")
