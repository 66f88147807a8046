"""The split as other tools read it: one JSON type at every path, `datasets.load_dataset("json")`.

Arrow infers one type per column from all rows; a path that is a string in one record and an
object in another (tool call arguments, before they had one form) makes `load_dataset` fail with
"ArrowInvalid: ... changed from string to object". The split of every file in ../shared/data is
checked here, `meta` apart: it is the user's, passed through as it is (see
`test_meta_of_the_shared_files_is_reported_not_checked`).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import polars as pl
import pytest

from curator import columns as C
from curator.config import load_config
from curator.io.readers import discover, display_name, iter_file
from curator.pipeline import output_lines, run_stages
from curator.stages import registry
from curator.stages.base import StageContext
from curator.stages.validate import build_frame
from tests.conftest import SHARED

DATA = SHARED / "data"


def json_type(value) -> str | None:
    """The JSON type of a value; None for null (compatible with every type, as a missing key is)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def types_by_path(records, skip: tuple[str, ...] = ()) -> dict[str, set[str]]:
    """path -> the JSON types found there over all records; list indices collapse to `[]`."""
    found: dict[str, set[str]] = defaultdict(set)

    def walk(value, path: str) -> None:
        if path in skip:
            return
        kind = json_type(value)
        if kind is not None:
            found[path].add(kind)
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{path}.{key}")
        elif isinstance(value, list):
            for item in value:
                walk(item, f"{path}[]")

    for record in records:
        walk(record, "$")
    return dict(found)


def conflicts(found: dict[str, set[str]]) -> dict[str, set[str]]:
    return {path: kinds for path, kinds in found.items() if len(kinds) > 1}


def test_the_checker_sees_what_arrow_refuses():
    # What the split held before tool use had one form: arguments a string in OpenAI records, an
    # object in converted ShareGPT ones; content null on a call turn, a string elsewhere.
    before = [
        {"messages": [{"role": "assistant", "content": None, "tool_calls": [{"function": {"name": "a", "arguments": "{}"}}]}]},
        {"messages": [{"role": "assistant", "content": "x", "tool_calls": [{"function": {"name": "a", "arguments": {}}}]}]},
        {"messages": [{"role": "assistant", "content": "y", "weight": True}, {"role": "assistant", "content": "z", "weight": 1}]},
    ]
    assert conflicts(types_by_path(before)) == {
        "$.messages[].tool_calls[].function.arguments": {"string", "object"},
        "$.messages[].weight": {"boolean", "number"},
    }
    assert conflicts(types_by_path(before, skip=("$.messages",))) == {}


def shared_files() -> list[Path]:
    if not DATA.is_dir():
        pytest.skip("../shared/data is not available")
    return discover(DATA).files


@pytest.fixture(scope="module")
def shared_split(tmp_path_factory) -> Path:
    """The split of every file under ../shared/data, as `curate run` writes it (`output_lines`),
    once for all files together (`all/`) and once per file (`<n>/`, what a run over that file
    alone writes). Every valid record is kept: no stage that drops valid records runs, so these
    splits hold every shape a run over these files can write."""
    files = shared_files()
    cfg = load_config(None, ["gates.min_examples=null"])
    ctx = StageContext(config=cfg)
    lines = (line for path in files for line in iter_file(path, display_name(path), cfg.input.max_line_bytes))
    frame, _, _ = run_stages(build_frame(lines, ctx), ctx, [registry.BY_NAME["normalize"], registry.BY_NAME["split"]])
    kept = frame.filter(C.alive())
    out = tmp_path_factory.mktemp("shared-split")
    write_split(out / "all", kept)
    for n, path in enumerate(files):
        write_split(out / str(n), kept.filter(pl.col(C.SOURCE_FILE) == display_name(path)))
    return out


def write_split(folder: Path, kept: pl.DataFrame) -> None:
    folder.mkdir()
    for side in ("train", "val"):
        text = "".join(line + "\n" for line in output_lines(kept.filter(pl.col(C.SPLIT) == side)))
        (folder / f"{side}.jsonl").write_text(text, encoding="utf-8")


def split_records(folder: Path):
    """The records of train.jsonl and val.jsonl in `folder`."""
    for side in ("train", "val"):
        with (folder / f"{side}.jsonl").open(encoding="utf-8") as fh:
            for line in fh:
                yield json.loads(line)


def test_every_path_of_the_shared_split_has_one_type(shared_split):
    records = list(split_records(shared_split / "all"))
    assert len(records) > 20_000
    found = types_by_path(records, skip=("$.meta",))
    assert conflicts(found) == {}
    # the paths tool use writes, each with its one type
    assert found["$.messages[].tool_calls[].function.arguments"] == {"string"}
    assert found["$.messages[].content"] == {"string"}
    assert found["$.tools[].function.parameters"] == {"object"}
    assert sum("tools" in r for r in records) > 0


def test_meta_of_the_shared_files_is_reported_not_checked(shared_split):
    """meta is the user's, passed through as it is; what the shared files have there, for the record:
    one type per path, so a run over all of them loads too."""
    found = types_by_path(split_records(shared_split / "all"))
    assert {path: kinds for path, kinds in conflicts(found).items() if path.startswith("$.meta")} == {}


def load_json(datasets, folder: Path, **options):
    files = {side: str(folder / f"{side}.jsonl") for side in ("train", "val") if (folder / f"{side}.jsonl").stat().st_size}
    return datasets.load_dataset("json", data_files=files, cache_dir=str(folder / "hf-cache"), **options)


def test_datasets_loads_the_split_of_each_shared_file(shared_split):
    datasets = pytest.importorskip("datasets")
    datasets.disable_progress_bars()
    folders = sorted((p for p in shared_split.iterdir() if p.name != "all"), key=lambda p: int(p.name))
    assert len(folders) == len(shared_files())
    rows = 0
    for folder in folders:
        loaded = load_json(datasets, folder)
        for side, table in loaded.items():
            assert table.num_rows == sum(1 for _ in (folder / f"{side}.jsonl").open(encoding="utf-8")), folder
            rows += table.num_rows
    assert rows == sum(1 for _ in split_records(shared_split / "all"))


def test_datasets_loads_the_split_of_all_shared_files_read_as_one_chunk(shared_split):
    """datasets takes the columns from the first 10 MB of a file: here the first tool call comes
    later, so the whole file has to be one chunk (README.md, "Tool use")."""
    datasets = pytest.importorskip("datasets")
    folder = shared_split / "all"
    loaded = load_json(datasets, folder, chunksize=(folder / "train.jsonl").stat().st_size + 1)
    assert loaded["train"].num_rows == sum(1 for _ in (folder / "train.jsonl").open(encoding="utf-8"))
    with_calls = next(r for r in loaded["train"] if any(m.get("tool_calls") for m in r["messages"]))
    call = next(m for m in with_calls["messages"] if m.get("tool_calls"))["tool_calls"][0]
    assert list(call) == ["id", "type", "function"] and isinstance(call["function"]["arguments"], str)
    assert isinstance(json.loads(call["function"]["arguments"]), dict)
