"""The stage contract (curator/stages/registry.py) holds for every stage, on real data.

- a `row` stage gives the same columns over the whole frame and over the same rows cut into
  random batches (what lets an engine run it in batches);
- a stage writes exactly the columns it declares, and needs only the columns it declares reading;
- reading the config imports no stage implementation.
"""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from curator import columns as C
from curator.config import load_config
from curator.io.readers import discover
from curator.pipeline import read_lines
from curator.stages import registry, validate
from curator.stages.base import Progress, StageContext
from tests.conftest import CHAT_DATA, NATIVE_DATA, SAMPLES

# Columns every stage may read and update: the verdict, and where a row came from.
BOOKKEEPING = (C.ROW, C.REF, C.SOURCE_FILE, C.SOURCE_LINE, C.REJECT_REASONS, C.REJECT_DETAILS, C.WARNINGS)
ROW_STAGES = [s for s in registry.STAGES if s.kind == "row" and not s.on_read]


def _inputs(tmp: Path) -> list[Path]:
    """The golden sample (planted defects) and real records of other shapes: tool calls, Chinese Alpaca."""
    files = discover(SAMPLES / "raw").files
    extra = [CHAT_DATA / "llamafactory_glaive_toolcall_en_demo.jsonl", NATIVE_DATA / "alpaca_zh_sample.json"]
    return files + [p for p in extra if p.exists()]


@pytest.fixture(scope="module")
def stage_inputs(tmp_path_factory) -> dict[str, tuple[pl.DataFrame, pl.DataFrame]]:
    """stage name -> (the live rows it received in a full run, the rows it returned)."""
    cfg = load_config(None, ["gates.min_examples=null", "select.target=300"])
    ctx = StageContext(config=cfg, progress=Progress(False))
    frame = validate.build_frame(read_lines(_inputs(tmp_path_factory.mktemp("in")), cfg, ctx.progress), ctx)
    live = frame.filter(C.alive())
    seen = {}
    for stage in registry.active(cfg.skip_stages):
        out = stage.run(live, ctx)
        seen[stage.name] = (live, out)
        live = out.filter(C.alive())
    return seen


def _context() -> StageContext:
    return StageContext(config=load_config(None, ["gates.min_examples=null", "select.target=300"]))


def _changed(before: pl.DataFrame, after: pl.DataFrame) -> set[str]:
    """Columns `after` added, or holds with other values than `before`."""
    out = set(after.columns) - set(before.columns)
    for name in set(after.columns) & set(before.columns):
        if not after.get_column(name).equals(before.get_column(name), check_names=True, null_equal=True):
            out.add(name)
    return out


def _in_batches(stage: registry.Stage, frame: pl.DataFrame, seed: int) -> pl.DataFrame:
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, frame.height), k=min(6, frame.height - 1)))
    parts = [frame.slice(a, b - a) for a, b in zip([0, *cuts], [*cuts, frame.height])]
    return pl.concat([stage.run(part, _context()) for part in parts], how="vertical_relaxed")


def test_every_stage_is_declared_once_in_run_order():
    names = [s.name for s in registry.STAGES]
    assert names == ["validate", "normalize", "dedup_exact", "secrets", "language", "code_language", "tokens",
                     "quality", "dedup_minhash", "select", "split"]
    assert [s.name for s in registry.STAGES if s.kind == "global"] == ["dedup_exact", "dedup_minhash", "select",
                                                                       "split"]


def test_the_config_has_one_section_per_stage_in_registry_order():
    sections = list(load_config().resolved())
    assert sections == ["seed", "skip_stages", "input", *[s.name for s in registry.STAGES], "output", "gates"]
    assert registry.SKIPPABLE == ("dedup_exact", "secrets", "language", "code_language", "tokens", "quality",
                                  "dedup_minhash", "select")


@pytest.mark.parametrize("stage", ROW_STAGES, ids=lambda s: s.name)
@pytest.mark.parametrize("seed", [1, 2])
def test_row_stage_gives_the_same_columns_under_any_batching(stage, seed, stage_inputs):
    given, whole = stage_inputs[stage.name]
    batched = _in_batches(stage, given, seed)
    assert_frame_equal(batched.select(whole.columns), whole)


@pytest.mark.parametrize("stage", [s for s in registry.STAGES if not s.on_read], ids=lambda s: s.name)
def test_stage_writes_what_it_declares(stage, stage_inputs):
    given, returned = stage_inputs[stage.name]
    undeclared = _changed(given, returned) - set(stage.writes) - {C.REJECT_REASONS, C.REJECT_DETAILS, C.WARNINGS}
    assert undeclared == set()
    missing = set(stage.writes) - set(returned.columns)
    assert missing == set()


@pytest.mark.parametrize("stage", [s for s in registry.STAGES if not s.on_read], ids=lambda s: s.name)
def test_stage_needs_only_the_columns_it_declares_reading(stage, stage_inputs):
    given, returned = stage_inputs[stage.name]
    keep = [c for c in given.columns if c in set(stage.reads) | set(BOOKKEEPING)]
    narrow = stage.run(given.select(keep), _context())
    wrote = [c for c in returned.columns if c in set(stage.writes) | {C.REJECT_REASONS, C.REJECT_DETAILS}]
    assert_frame_equal(narrow.select(wrote), returned.select(wrote))


SUMMARIZING = [s for s in ROW_STAGES if s.summary is not None]


@pytest.mark.parametrize("stage", SUMMARIZING, ids=lambda s: s.name)
def test_summary_reads_names_only_columns_the_stage_returns_without_text(stage):
    assert stage.summary_reads, "a frame of no column has no rows: merge_summary could not count them"
    assert set(stage.summary_reads) <= set(stage.writes) | set(BOOKKEEPING)
    assert not set(stage.summary_reads) & {C.RAW, C.RAW_B64, C.MESSAGES, C.TOOLS}


@pytest.mark.parametrize("stage", SUMMARIZING, ids=lambda s: s.name)
def test_merge_summary_needs_only_the_columns_of_summary_reads(stage, stage_inputs):
    """Merged from shards narrowed to `summary_reads` (what the engines keep), the summary is the one
    merged from every column; reading another column raises ColumnNotFoundError."""
    given, _ = stage_inputs[stage.name]
    cuts = [0, given.height // 3, given.height // 2, given.height]
    outs, partials = [], []
    for a, b in zip(cuts, cuts[1:]):
        ctx = _context()
        outs.append(stage.run(given.slice(a, b - a), ctx))
        partials.append(ctx.summaries.get(stage.name) or {})
    out = pl.concat(outs, how="vertical_relaxed")
    narrow = stage.merge_summary(out.select(stage.summary_reads), partials, _context())
    assert narrow == stage.merge_summary(out, partials, _context())


def test_reading_the_config_imports_no_stage_implementation():
    code = (
        "import sys\n"
        "from curator.config import CurateConfig, load_config\n"
        "import finetune.config\n"
        "load_config(None, ['dedup_minhash.threshold=0.7'])\n"
        "heavy = ('polars', 'numpy', 'tree_sitter', 'tokenizers', 'langdetect', 'datasketch', 'torch')\n"
        "light = {'curator.stages', 'curator.stages.registry', 'curator.stages.base'}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy\n"
        "             or (m.startswith('curator.stages') and m not in light)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_code_language_defaults_are_the_detectors_defaults():
    from curator.code_blocks import UnfencedSettings
    from curator.code_langs import DetectSettings
    from curator.stage_configs import CodeLanguageConfig

    cfg = CodeLanguageConfig()
    assert cfg.settings() == DetectSettings()
    assert cfg.unfenced_settings() == UnfencedSettings()


def test_architecture_doc_tables_are_current():
    from curator.stages.registry import with_tables

    doc = (Path(__file__).resolve().parents[1] / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    assert with_tables(doc) == doc, "docs/ARCHITECTURE.md is out of date: run `make docs`"


def test_every_summary_a_full_run_writes_matches_its_model(stage_inputs):
    ctx = _context()
    for name, (given, _) in stage_inputs.items():
        registry.BY_NAME[name].run(given, ctx)
    assert sorted(ctx.summaries) == ["code_language", "dedup_exact", "dedup_minhash", "language", "quality",
                                     "secrets", "select", "split", "tokens"]
    registry.check_summaries(ctx.summaries)  # raises on any undeclared key or wrong type
    assert registry.read_summary({"summaries": ctx.summaries}, "tokens").context_length == 8192


def test_an_undeclared_summary_key_stops_the_run():
    with pytest.raises(RuntimeError, match=r"(?s)^stage split's summary does not match SplitSummary: .*surprise"):
        registry.check_summaries({"split": {"train": 1, "val": 0, "surprise": 2}})
    with pytest.raises(RuntimeError, match=r"^stage normalize wrote a summary but declares no summary model$"):
        registry.check_summaries({"normalize": {"rows": 1}})


def test_a_summary_of_another_shape_reads_as_none():
    assert registry.read_summary({"summaries": {"quality": {"threshold": 0.5}}}, "quality") is None
    assert registry.read_summary({}, "quality") is None
    assert registry.read_summary({"summaries": {"quality": {"high_quality_threshold": 0.5}}},
                                 "quality").high_quality_threshold == 0.5
