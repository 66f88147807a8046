"""Read a finished run folder (OUT) back: the only inputs of every report.

A report never recomputes a figure differently from the pipeline: it reads what the run
wrote and nothing else.

- `manifest.json`: counts, funnel, gates, stage metadata and summaries, config, versions, sha256s.
- `annotations.parquet`: one row per input line with every column the stages wrote (no raw text).
- `rejects.jsonl`: the original line of every rejected row, its source and its reason codes.

Every record and line read here comes back with its secrets redacted (all kinds, whatever the run's
policy kept in the split): reports and the review sheet never show one.
- `train.jsonl` / `val.jsonl`: the kept records, in input (`row`) order; line i of train.jsonl is the
  i-th row of the annotations whose `split` is "train" (the pipeline writes both in `row` order).
"""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from curator import columns as C
from curator.errors import CurateError

REQUIRED_FILES = ("manifest.json", "annotations.parquet", "rejects.jsonl", "train.jsonl", "val.jsonl")

# rejects.jsonl lines, read with an explicit schema so a file whose first lines all lack `raw_b64`
# (the usual case) still reads it later, and keys added by later versions are ignored.
REJECTS_SCHEMA = {
    "source_file": pl.Utf8,
    "source_line": pl.Int64,
    "ref": pl.Utf8,
    "raw": pl.Utf8,
    "raw_b64": pl.Utf8,
    "reasons": pl.List(pl.Utf8),
    "details": pl.List(pl.Utf8),
}
# How much of rejects.jsonl is parsed at once: memory stays this (times a few) however many rejects.
REJECTS_CHUNK_BYTES = 2 << 20


@dataclass
class Run:
    """The files of one run folder, loaded once."""

    out_dir: Path
    manifest: dict[str, Any]
    ann: pl.DataFrame

    def has(self, column: str) -> bool:
        """True when a stage wrote `column` (a stage not built yet writes nothing)."""
        return column in self.ann.columns

    def rejects_of(self, refs: set[str]) -> pl.DataFrame:
        """The lines of rejects.jsonl whose ref is in `refs`, as a frame. The whole file is checked,
        but read `REJECTS_CHUNK_BYTES` at a time: it holds the raw text of every reject, and reports
        need a few samples of it."""
        path = self.out_dir / "rejects.jsonl"
        parts = [pl.DataFrame(schema=REJECTS_SCHEMA)]
        wanted = pl.col("ref").is_in(list(refs))
        with path.open("rb") as fh:
            while chunk := fh.readlines(REJECTS_CHUNK_BYTES):  # whole lines: a chunk parses on its own
                try:
                    frame = pl.read_ndjson(io.BytesIO(b"".join(chunk)), schema=REJECTS_SCHEMA)
                except Exception as exc:  # polars raises ComputeError with the offending line inside
                    raise CurateError(f"{path}: not valid JSON lines: {exc}") from exc
                parts.append(frame.filter(wanted))
        return pl.concat(parts)

    def kept_records(self, refs: set[str]) -> dict[str, dict]:
        """The kept records (parsed train/val lines) of the given refs, read from train/val.jsonl.

        Line i of train.jsonl is the i-th "train" row of the annotations; the record's `id` (its
        content hash) must agree, else the folder was edited after the run and this is an error.
        """
        out: dict[str, dict] = {}
        if not refs or not self.has("split"):
            return out
        for split in ("train", "val"):
            part = self.ann.filter(pl.col("split") == split).sort("row")
            hashes = part[C.CONTENT_HASH].to_list() if self.has(C.CONTENT_HASH) else [None] * part.height
            wanted = {i: (ref, h) for i, (ref, h) in enumerate(zip(part["ref"].to_list(), hashes)) if ref in refs}
            if not wanted:
                continue
            path = self.out_dir / f"{split}.jsonl"
            with path.open(encoding="utf-8") as fh:
                for i, line in enumerate(fh):
                    if i not in wanted:
                        continue
                    ref, h = wanted[i]
                    record = _parse_line(line, path, i + 1)
                    if h is not None and isinstance(record, dict) and "id" in record and record["id"] != h:
                        raise CurateError(
                            f"{path}:{i + 1}: id {record['id']} does not match content_hash {h} of {ref} in "
                            "annotations.parquet (was the run folder edited?)"
                        )
                    out[ref] = record
        return dict(zip(out, self._redacted(list(out.values()))))

    def rejected_records(self, refs: set[str]) -> dict[str, dict]:
        """{ref: {"record": parsed JSON or None, "raw": original text, "source_file", "reasons", "details"}}."""
        if not refs:
            return {}
        rows = self.rejects_of(refs).to_dicts()
        out = {}
        for r in rows:
            raw = r["raw"]
            if raw is None and r["raw_b64"] is not None:
                raw = base64.b64decode(r["raw_b64"]).decode("utf-8", errors="replace")
            try:
                record = json.loads(raw) if raw is not None else None
            except (ValueError, RecursionError):  # junk lines stay text
                record = None
            out[r["ref"]] = {
                "record": record,
                "raw": raw or "",
                "source_file": r["source_file"],
                "reasons": r["reasons"] or [],
                "details": r["details"] or [],
            }
        records = self._redacted([o["record"] for o in out.values()])
        raws = self._redacted_texts([o["raw"] for o in out.values()])
        for o, record, raw in zip(out.values(), records, raws):
            o["record"], o["raw"] = record, raw
        return out

    def _secrets_config(self):
        """The run's secrets config (its e-mail domains that are not personal data), else the defaults."""
        from curator.stages.secrets import Config

        try:
            return Config.model_validate((self.manifest.get("config") or {}).get("secrets") or {})
        except ValueError:
            return Config()

    def _redacted(self, records: list) -> list:
        """Records as reports show them: every secret redacted, whatever the run's policy kept."""
        from curator.stages.secrets import redact_values_for_display

        return redact_values_for_display(records, self._secrets_config()) if records else records

    def _redacted_texts(self, texts: list[str]) -> list[str]:
        from curator.stages.secrets import redact_for_display

        return redact_for_display(texts, self._secrets_config()) if texts else texts


def _parse_line(line: str, path: Path, lineno: int) -> dict:
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise CurateError(f"{path}:{lineno}: not valid JSON: {exc.msg}") from exc


def load_run(out_dir: str | Path) -> Run:
    """Load OUT; a missing file or a manifest that is not JSON is a one-line CurateError."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise CurateError(f"{out_dir}: not a run folder (no such directory)")
    missing = [name for name in REQUIRED_FILES if not (out_dir / name).is_file()]
    if missing:
        raise CurateError(f"{out_dir}: not a finished run folder, missing {', '.join(missing)}")
    manifest_path = out_dir / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CurateError(f"{manifest_path}:{exc.lineno}: not valid JSON: {exc.msg}") from exc
    if not isinstance(manifest, dict):
        raise CurateError(f"{manifest_path}: expected a JSON object, got {type(manifest).__name__}")
    ann_path = out_dir / "annotations.parquet"
    ann = _read_annotations(ann_path)
    for col in ("row", "ref", C.REJECT_REASONS):
        if col not in ann.columns:
            raise CurateError(f"{ann_path}: column {col!r} missing (columns: {', '.join(ann.columns)})")
    # the pipeline writes the rows in order: sorting them again would hold two copies of every column
    return Run(out_dir=out_dir, manifest=manifest, ann=ann if ann.get_column("row").is_sorted() else ann.sort("row"))


def _read_annotations(path: Path) -> pl.DataFrame:
    """annotations.parquet with each column in one chunk (a float sum depends on the chunks), read a
    column at a time: read whole, then put in one chunk, every column would be held twice."""
    try:
        with open(path, "rb") as fh:  # a handle: a path is read as a glob pattern, and OUT may hold [ ] * ?
            names = list(pl.read_parquet_schema(fh))
        return pl.DataFrame([pl.read_parquet(path, columns=[name], glob=False).to_series().rechunk() for name in names])
    except Exception as exc:
        raise CurateError(f"{path}: cannot read parquet: {exc}") from exc
