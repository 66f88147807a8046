"""run(raw, out, config): compose the stages, account for every line, write atomically.

Every input line ends in exactly one place: train.jsonl, val.jsonl or rejects.jsonl (with
every reason code and its source file:line). Stages only see the rows still alive; rows
leave the frame here, once, at the end, and `read == kept + rejected` is checked before
anything is written. Outputs go to a temporary folder beside OUT and are swapped into place
under a lock (curator/out_dir.py), so an interrupted run never leaves a half-written split.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Iterator

import polars as pl

from curator import __version__, columns as C, engine as E, out_dir
from curator.config import CurateConfig
from curator.errors import CurateError, machine_error, os_errno
from curator.gates import Gate
from curator.io.readers import RawLine, ReadDigest, discover, display_name, iter_file
from curator.manifest import MANIFEST_VERSION, Manifest
from curator.memory import give_back_freed_memory
from curator.stages import registry
from curator.stages.base import Progress, StageContext


# Columns that stay out of annotations.parquet: the text itself lives in the JSONL outputs.
_TEXT_COLUMNS = E.TEXT_COLUMNS

VERSIONED_PACKAGES = (
    "polars",
    "pydantic",
    "datasketch",
    "xxhash",
    "langdetect",
    "tree-sitter",
    "tokenizers",
    "mistral-common",
)


@dataclass
class RunResult:
    out: Path
    counts: dict[str, int]
    gates: list[Gate]
    timings: list[tuple[str, float]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # files under RAW that were not read, and why
    engine: str = "local"  # the engine that ran the stages (curator/engine.py)


def check_out_path(out: Path, raw: Path | None = None) -> None:
    """Checked before any work, and before the lock is taken: OUT must not be RAW or a folder holding
    it (--force would delete the input), and OUT's folder must be writable, so a run never fails
    after the work is done. What OUT holds is checked under the lock (`out_dir.check_replaceable`).
    """
    if raw is not None:
        r, o = Path(os.path.abspath(raw)).resolve(), Path(os.path.abspath(out)).resolve()
        if r == o or o in r.parents:
            raise CurateError(f"{out}: holds the input {raw}; replacing it would delete the input, choose another OUT")
    if out.exists() and not out.is_dir():
        raise CurateError(f"{out}: exists and is not a folder")
    where = out if out_dir.is_mount_point(out) else _nearest_existing(out.absolute().parent)
    if not where.is_dir():
        raise CurateError(f"{out}: cannot be created: {where} is not a folder")
    if not os.access(where, os.W_OK | os.X_OK):
        raise CurateError(f"{out}: cannot be written: no write permission in {where}")


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def read_lines(
    files: list[Path], cfg: CurateConfig, progress: Progress, digests: dict[Path, ReadDigest] | None = None, batch: int = 1_000
) -> Iterator[RawLine]:
    """Every line of `files`; with `digests`, each file's sha256 of the bytes read goes into it.
    The bar counts records (lines, .json elements) in batches of `batch`, so one large file moves it."""
    with progress.task("read + validate") as advance:  # no total: counting records first would read twice
        pending = 0
        for path in files:
            digest = None if digests is None else digests.setdefault(path, ReadDigest())
            for line in iter_file(path, display_name(path), cfg.input.max_line_bytes, digest):
                yield line
                pending += 1
                if pending == batch:  # a bar update costs more than a record: not one per line
                    advance(pending)
                    pending = 0
        advance(pending)


def _alive_mask(df: pl.DataFrame) -> pl.Series:
    return df.select(C.alive()).to_series()


def run_stages(
    frame: pl.DataFrame, ctx: StageContext, stages: Iterable[registry.Stage] | None = None
) -> tuple[pl.DataFrame, list, list]:
    """Run each stage (default: those the config keeps) on the rows still alive; return (all rows
    sorted by `row`, funnel, timings). The local engine, on a frame already built."""
    shards = E.MemoryShards()
    shards.add(frame)
    funnel, timings = E.run_segments(shards, ctx, stages)
    return shards.finished(0), [{"stage": "read", "alive_after": frame.height}, *funnel], timings


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _versions() -> dict[str, str]:
    versions = {"curator": __version__, "python": ".".join(map(str, sys.version_info[:3]))}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _output_record(row: dict[str, Any]) -> dict[str, Any]:
    """The output record of one kept row (the slow, general path: any optional field):
    `{"id", "messages", "tools"?, "meta"?}`, tool calls as the canonical list (curator/tool_use.py)."""
    messages = []
    for m in row[C.MESSAGES]:
        msg: dict[str, Any] = {"role": m["role"], "content": m["content"]}
        if m.get("tool_calls"):
            msg["tool_calls"] = json.loads(m["tool_calls"])
        if m.get("tool_call_id") is not None:
            msg["tool_call_id"] = m["tool_call_id"]
        if m.get("weight") is not None:
            msg["weight"] = m["weight"]
        messages.append(msg)
    record: dict[str, Any] = {"id": row[C.CONTENT_HASH], "messages": messages}
    if row.get(C.TOOLS) is not None:
        record["tools"] = json.loads(row[C.TOOLS])
    if row[C.META] is not None:
        record["meta"] = json.loads(row[C.META])
    return record


def output_lines(kept: pl.DataFrame) -> list[str]:
    """One JSON line per kept row: {"id", "messages", "tools"?, "meta"?}, in row order.

    Rows whose turns carry only role and content (nearly all) are encoded by polars in one
    pass; the few with weights, tool calls or tools go through `_output_record`.
    """
    if kept.height == 0:
        return []
    if C.TOOLS not in kept.columns:
        kept = kept.with_columns(pl.lit(None, pl.Utf8).alias(C.TOOLS))
    optional = pl.col(C.MESSAGES).list.eval(
        pl.element().struct.field("weight").is_not_null()
        | pl.element().struct.field("tool_calls").is_not_null()
        | pl.element().struct.field("tool_call_id").is_not_null()
    ).list.any() | pl.col(C.TOOLS).is_not_null()
    frame = kept.with_columns(optional.alias("_optional"))
    plain = frame.filter(~pl.col("_optional"))
    turn = pl.element().struct.field
    messages_json = pl.col(C.MESSAGES).list.eval(pl.struct(turn("role"), turn("content")).struct.json_encode()).list.join(",")
    encoded = plain.select(
        C.ROW,
        pl.concat_str(
            pl.lit('{"id":"'),
            pl.col(C.CONTENT_HASH),
            pl.lit('","messages":['),
            messages_json,
            pl.lit("]"),
            pl.when(pl.col(C.META).is_not_null()).then(pl.lit(',"meta":') + pl.col(C.META)).otherwise(pl.lit("")),
            pl.lit("}"),
        ).alias("line"),
    )
    special = frame.filter(pl.col("_optional")).select(C.ROW, C.CONTENT_HASH, C.MESSAGES, C.TOOLS, C.META)
    if special.height:
        lines = [
            json.dumps(_output_record(r), ensure_ascii=False, separators=(",", ":")) for r in special.iter_rows(named=True)
        ]
        encoded = pl.concat([encoded, pl.DataFrame({C.ROW: special.get_column(C.ROW), "line": lines})])
    return encoded.sort(C.ROW).get_column("line").to_list()


def _reject_record(row: dict[str, Any]) -> dict[str, Any]:
    record = {
        "source_file": row[C.SOURCE_FILE],
        "source_line": row[C.SOURCE_LINE],
        "ref": row[C.REF],
        "reasons": row[C.REJECT_REASONS],
        "details": row[C.REJECT_DETAILS],
    }
    if row[C.RAW_B64] is not None:
        record["raw_b64"] = row[C.RAW_B64]
    elif row[C.RAW] is not None:
        record["raw"] = row[C.RAW]
    return record


def redact_annotations(frame: pl.DataFrame, cfg: CurateConfig) -> pl.DataFrame:
    """The columns that carry text from the data (meta, details, warnings, code fence labels) with
    every secret redacted, for every row: annotations and rejects show no secret, whatever the policy."""
    from curator.stages.secrets import redact_json_column_for_display, redact_series_for_display

    def redacted(texts: pl.Series) -> pl.Series:
        return redact_series_for_display(texts, cfg.secrets)

    def labels_redacted(blocks: pl.Series) -> pl.Series:
        fields = blocks.struct.unnest()
        return fields.with_columns(redacted(fields.get_column("label"))).to_struct(blocks.name)

    out = frame
    for col, fix in ((C.REJECT_DETAILS, redacted), (C.WARNINGS, redacted), (C.CODE_BLOCKS, labels_redacted)):
        if col in frame.columns:
            out = out.with_columns(_map_list_items(frame.get_column(col), fix))
    if C.META in frame.columns:
        meta = redact_json_column_for_display(frame.get_column(C.META).to_list(), cfg.secrets)
        out = out.with_columns(pl.Series(C.META, meta, dtype=pl.Utf8))
    return out


def _map_list_items(lists: pl.Series, fix) -> pl.Series:
    """`lists` with `fix` applied to the items of the non-empty lists, all at once (one batch, not a
    call per row)."""
    rows = (lists.list.len() > 0).fill_null(False).arg_true()
    if not len(rows):
        return lists
    items = pl.DataFrame({"__r": rows, lists.name: lists.gather(rows)}).explode(lists.name)
    items = items.with_columns(fix(items.get_column(lists.name)))
    fixed = items.group_by("__r", maintain_order=True).agg(pl.col(lists.name).alias("__fixed"))
    every = pl.DataFrame({"__r": pl.int_range(lists.len(), dtype=rows.dtype, eager=True), lists.name: lists})
    every = every.join(fixed, on="__r", how="left", maintain_order="left")
    return every.select(pl.coalesce("__fixed", lists.name).cast(lists.dtype).alias(lists.name)).to_series()


def _rejected_raw(rejected: pl.DataFrame, policy: bool | str, cfg: CurateConfig) -> pl.DataFrame:
    """The `raw`/`raw_b64` columns of rejects.jsonl under `output.rejects_raw`."""
    if policy is True:
        return rejected
    if policy is False:
        return rejected.with_columns(pl.lit(None, pl.Utf8).alias(C.RAW), pl.lit(None, pl.Utf8).alias(C.RAW_B64))
    from curator.stages.secrets import WITHHELD, redact_for_display

    texts = rejected.get_column(C.RAW).to_list()
    b64 = rejected.get_column(C.RAW_B64).to_list()
    redacted = redact_for_display(texts, cfg.secrets)
    # undecodable bytes stay as base64 unless their text held a secret: then the redacted text replaces them
    keep_b64 = [b is not None and r == t for b, r, t in zip(b64, redacted, texts)]
    # bytes that are not UTF-8 may be UTF-16 (a Windows export): read that way, a secret withholds the line
    wide = [i for i, k in enumerate(keep_b64) if k]
    views = [_utf16_view(b64[i]) for i in wide]
    for i, view, shown in zip(wide, views, redact_for_display(views, cfg.secrets)):
        if shown != view:
            redacted[i], keep_b64[i] = WITHHELD, False
    return rejected.with_columns(
        pl.Series(C.RAW, redacted, dtype=pl.Utf8),
        pl.Series(C.RAW_B64, [b if k else None for b, k in zip(b64, keep_b64)], dtype=pl.Utf8),
    )


def _utf16_view(b64: str) -> str:
    """Base64 bytes read as UTF-16 (with its byte order mark, else little-endian), errors replaced."""
    data = base64.b64decode(b64)
    encoding = "utf-16" if data[:2] in (b"\xff\xfe", b"\xfe\xff") else "utf-16-le"
    return data.decode(encoding, errors="replace")


# LLaMA-Factory reads OUT as it is with `dataset_dir: OUT` and `dataset: curated_train`: the OpenAI
# message keys mapped onto its ShareGPT reader (LLaMA-Factory's data/README.md, "OpenAI Format").
# No turn has the function tag: calls are `tool_calls` on assistant turns, which that reader does not
# read (README.md, "Tool use", says what it does with tool records).
LLAMAFACTORY_TAGS = {
    "role_tag": "role",
    "content_tag": "content",
    "user_tag": "user",
    "assistant_tag": "assistant",
    "observation_tag": "tool",
    "function_tag": "function_call",
    "system_tag": "system",
}


def llamafactory_dataset_info() -> dict[str, Any]:
    """OUT/dataset_info.json: one LLaMA-Factory dataset per side of the split."""
    return {
        f"curated_{side}": {
            "file_name": f"{side}.jsonl",
            "formatting": "sharegpt",
            "columns": {"messages": "messages"},
            "tags": dict(LLAMAFACTORY_TAGS),
        }
        for side in ("train", "val")
    }


def write_records(tmp: Path, frames: Iterable[pl.DataFrame], ctx: StageContext) -> pl.DataFrame:
    """Write train.jsonl, val.jsonl and rejects.jsonl from `frames` (every row, in row order, in
    batches); return the annotations: every row without its text, redacted (`redact_annotations`)."""
    paths = {name: tmp / name for name in ("train.jsonl", "val.jsonl", "rejects.jsonl")}
    handles = {name: path.open("w", encoding="utf-8", newline="\n") for name, path in paths.items()}
    try:  # a comprehension, so no batch's text is held after it is written
        narrow = [_write_batch(frame, handles, paths, ctx) for frame in frames]
    finally:
        for name, fh in handles.items():
            with _naming(paths[name]):
                fh.close()
    # in one chunk, as local's single batch has it: Parquet's bytes depend on the chunks
    return narrow[0] if len(narrow) == 1 else C.concat_in_one_chunk(narrow)


def _write_batch(frame: pl.DataFrame, handles: dict, paths: dict[str, Path], ctx: StageContext) -> pl.DataFrame:
    """Write one batch's rows to train/val/rejects.jsonl; return its annotations (`write_records`)."""
    alive = _alive_mask(frame)
    kept = frame.filter(alive)
    for side in ("train", "val"):
        with _naming(paths[f"{side}.jsonl"]):
            handles[f"{side}.jsonl"].writelines(line + "\n" for line in output_lines(kept.filter(pl.col(C.SPLIT) == side)))
    # redacted a batch at a time (it goes row by row): never a second copy of every row's annotations
    redacted = redact_annotations(frame, ctx.config)
    with _naming(paths["rejects.jsonl"]):
        _write_rejects(handles["rejects.jsonl"], redacted.filter(~alive), ctx.config)
    return redacted.drop([c for c in _TEXT_COLUMNS if c in frame.columns])


def _write_rejects(fh, rejected: pl.DataFrame, cfg: CurateConfig) -> None:
    """One JSON line per rejected row, given with its annotations redacted (`redact_annotations`),
    its raw text as `output.rejects_raw` says."""
    rejected = _rejected_raw(rejected, cfg.output.rejects_raw, cfg)
    reject_cols = [C.SOURCE_FILE, C.SOURCE_LINE, C.REF, C.REJECT_REASONS, C.REJECT_DETAILS, C.RAW, C.RAW_B64]
    for r in rejected.select(reject_cols).iter_rows(named=True):
        fh.write(json.dumps(_reject_record(r), ensure_ascii=False) + "\n")


def write_outputs(tmp: Path, annotations: pl.DataFrame, ctx: StageContext) -> dict[str, str]:
    """Write the annotations `write_records` returned and the stage artifacts beside the records it
    wrote; return the sha256 of every output."""
    with _naming(tmp / "annotations.parquet"):
        annotations.write_parquet(tmp / "annotations.parquet")
    with _naming(tmp / "dataset_info.json"):
        text = json.dumps(llamafactory_dataset_info(), indent=2) + "\n"
        (tmp / "dataset_info.json").write_text(text, encoding="utf-8")
    for name, data in sorted(ctx.artifacts.items()):
        with _naming(tmp / name):
            (tmp / name).write_bytes(data)
    names = ["train.jsonl", "val.jsonl", "rejects.jsonl", "annotations.parquet", "dataset_info.json", *sorted(ctx.artifacts)]
    return {name: _sha256_file(tmp / name) for name in names}


def size_gate(kept: pl.DataFrame, cfg: CurateConfig) -> list[Gate]:
    minimum = cfg.gates.min_examples
    if minimum is None:
        return []
    n = kept.height
    if n >= minimum:
        message = f"{n:,} examples kept, {n - minimum:,} above the minimum of {minimum:,}"
    else:
        message = f"{n:,} examples kept, {minimum - n:,} short of the minimum of {minimum:,}"
    return [Gate("size.min_examples", n >= minimum, float(n), float(minimum), message)]


def kept_gate(frame: pl.DataFrame, n_kept: int) -> list[Gate]:
    """`size.kept`, failed, when no record is kept (whatever gates.min_examples says: an empty train
    set is never what was meant), naming the reason most records were rejected for; else nothing."""
    if n_kept:
        return []
    if frame.height == 0:
        return [Gate("size.kept", False, 0.0, 1.0, "0 records kept: the input holds no records")]
    first = frame.get_column(C.REJECT_REASONS).list.first().value_counts(sort=True).row(0)
    reason, count = first[0], first[1]
    message = f"0 of {frame.height:,} records kept; the main reject reason is {reason} ({count:,} records)"
    return [Gate("size.kept", False, 0.0, 1.0, message)]


def check_resources(cfg: CurateConfig) -> None:
    """Each stage that will run checks what it loads (the rule file, the tokenizer profile), so a bad
    `--rules` or `--model` stops the run before RAW is read, not after minutes of work."""
    for stage in registry.active(cfg.skip_stages):
        stage.preflight(cfg)


def evaluate_gates(kept: pl.DataFrame, ctx: StageContext) -> list[Gate]:
    gates = size_gate(kept, ctx.config)
    for stage in registry.active(ctx.config.skip_stages):
        gates.extend(stage.gates(kept, ctx))
    return gates


@contextmanager
def _naming(path: Path) -> Iterator[None]:
    """Name `path` on an error of the machine raised without a file name (a failed write or close,
    a polars write that only says "(os error 28)")."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None:
            exc.filename = str(path)
        raise
    except Exception as exc:
        code = os_errno(exc)
        if code is None:
            raise
        raise OSError(code, os.strerror(code), str(path)) from exc


@contextmanager
def _machine_errors_said(out: Path, tmp: Path) -> Iterator[None]:
    """A full disk or a refused write while writing OUT is one line naming OUT and the file."""
    try:
        yield
    except OSError as exc:
        what = machine_error(exc)
        if what is None:
            raise
        path = Path(exc.filename) if exc.filename else tmp
        if path == tmp or tmp in path.parents:
            name = path.relative_to(tmp).as_posix() if path != tmp else "its files"
            raise CurateError(f"{out}: {what} while writing {name}") from exc
        raise CurateError(f"{path}: {what}") from exc


def run(
    raw: str | Path,
    out: str | Path,
    config: CurateConfig | None = None,
    *,
    force: bool = False,
    progress: bool = False,
) -> RunResult:
    """Curate everything under `raw` into `out`. Gates are evaluated, not enforced: see RunResult."""
    config = config or CurateConfig()
    out = Path(out)
    if out.is_symlink():  # replace what the link points at, and keep the link
        out = out.resolve()
    check_out_path(out, Path(raw))
    with out_dir.OutLock(out) as lock:
        out_dir.clean_leftovers(out, lock)
        out_dir.check_replaceable(out, force)
        return _run_locked(Path(raw), out, config, progress)


def _skipped_note(skipped: list[tuple[str, str]]) -> str:
    """What was passed over, for the error of a run that found no input: the first path and why."""
    if not skipped:
        return ""
    path, why = skipped[0]
    more = f" and {len(skipped) - 1:,} more" if len(skipped) > 1 else ""
    return f"; not read: {path} ({why}){more}"


def _run_locked(raw: Path, out: Path, config: CurateConfig, progress: bool) -> RunResult:
    found = discover(raw, exclude=out)
    files = found.files
    if not files:
        if raw.is_file():
            raise CurateError(f"{raw}: not read: {found.skipped[0][1]}; no input file found")
        raise CurateError(f"{raw}: no .jsonl, .jsonl.gz or .json files found{_skipped_note(found.skipped)}")
    check_resources(config)
    ctx = StageContext(config=config, progress=Progress(progress))
    engine, chosen_by = E.choose_engine(files, config)
    E.check_available(engine)

    # the staging folder holds the stream engine's shards while the stages run, then the new run;
    # on any failure it goes, shards and all, and OUT stays as it was
    tmp = out_dir.staging_dir(out)
    tmp.mkdir()
    try:
        with _machine_errors_said(out, tmp):
            result = _run_staged(files, found.skipped, tmp, out, ctx, engine, chosen_by)
            _write_reports(tmp)
            out_dir.checkpoint("staged")
            out_dir.put_in_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return result


def _tally(annotations: pl.DataFrame, n_read: int, ctx: StageContext) -> tuple[dict[str, int], list[Gate]]:
    """(counts, gates) of the run from its annotations, once every line is checked to be accounted for."""
    kept = annotations.filter(_alive_mask(annotations))
    n_kept, n_rejected = kept.height, annotations.height - kept.height
    if annotations.height != n_read or n_kept + n_rejected != n_read or annotations.get_column(C.ROW).n_unique() != n_read:
        raise RuntimeError(f"accounting error: read {n_read}, kept {n_kept}, rejected {n_rejected}; nothing written")
    gates = kept_gate(annotations, n_kept) + evaluate_gates(kept, ctx)
    n_val = int((kept.get_column(C.SPLIT) == "val").sum()) if n_kept else 0
    counts = {
        "read": n_read,
        "kept": n_kept,
        "rejected": n_rejected,
        "train": n_kept - n_val,
        "val": n_val,
        "with_warnings": int((annotations.get_column(C.WARNINGS).list.len() > 0).sum()),
    }
    return counts, gates


def _run_staged(
    files: list[Path], skipped: list[tuple[str, str]], tmp: Path, out: Path, ctx: StageContext, engine: str, chosen_by: str
) -> RunResult:
    """Read, run the stages under `engine` and write every output but the reports into `tmp`. The
    frames of every record go when it returns, before the reports read annotations.parquet back."""
    config = ctx.config
    shards = E.open_shards(engine, tmp)
    try:
        started = time.perf_counter()
        digests: dict[Path, ReadDigest] = {}  # the manifest hashes the bytes read, not the files as they are later
        batch_rows = config.engine.batch_rows if engine in E.SHARDED else None
        workers = E.row_workers(engine, config, files)
        # the runner opens first: a pool's processes start while the input is read
        with E.row_runner(engine, config, workers) as run_rows:
            n_read = E.read_into(shards, read_lines(files, config, ctx.progress, digests), ctx, batch_rows)
            read_time = time.perf_counter() - started
            funnel, timings = E.run_segments(shards, ctx, run_rows=run_rows, map_chunks=E.chunk_map(engine))
        funnel.insert(0, {"stage": "read", "alive_after": n_read})
        timings.insert(0, ("read + validate", read_time))
        n_shards = len(shards)
        annotations = write_records(tmp, (shards.finished(i) for i in range(n_shards)), ctx)
    finally:
        shards.close()

    counts, gates = _tally(annotations, n_read, ctx)
    registry.check_summaries(ctx.summaries)
    give_back_freed_memory()  # the shards' batches are written and gone; Parquet's encoder comes next
    outputs = write_outputs(tmp, annotations, ctx)
    manifest = Manifest.model_validate(
        {
            "manifest_version": MANIFEST_VERSION,
            "config": config.resolved(),
            "engine": {"name": engine, "chosen_by": chosen_by, "batch_rows": batch_rows, "shards": n_shards,
                       "workers": workers},
            "versions": _versions(),
            "inputs": {display_name(p): digests[p].hexdigest() for p in files},
            "inputs_skipped": [{"path": display_name(Path(p)), "why": why} for p, why in skipped],
            "outputs": outputs,
            "counts": counts,
            "funnel": funnel,
            "gates": [g.to_dict() for g in gates],
            "stages": ctx.manifest,
            "summaries": ctx.summaries,
        }
    )
    with _naming(tmp / "manifest.json"):
        (tmp / "manifest.json").write_text(manifest.to_json(), encoding="utf-8")
    return RunResult(out, counts, gates, timings, skipped, engine)


def _write_reports(tmp: Path) -> None:
    """report.json, report.md and report.html of the run staged in `tmp`, from its files alone."""
    from curator.report import write_reports

    with _naming(tmp / "report.{json,md,html}"):
        write_reports(tmp)
