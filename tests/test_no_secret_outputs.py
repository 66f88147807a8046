"""No secret leaves in any output: a key planted in rows rejected for every kind of reason (bad JSON,
schema, exact and near duplicate, a private key, quality), in meta keys and behind invisible
characters never appears in annotations, manifest, duplicates, the three reports or the review sheet;
only rejects.jsonl keeps the raw line, and `output.rejects_raw` drops or redacts it."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from curator.config import load_config
from curator.pipeline import run
from curator.report.sample import write_sample
from tests.conftest import chat, write_lines

# Made-up values in their vendors' formats, each one unique so a leak names its source.
AWS_BAD_JSON = "AKIAQ2W3E4R5T6Y7U2IO"
GH_SCHEMA = "ghp_" + "Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Ji1Hg0FeDcBa"
EMAIL_DUP = "jonas.keller@privatmail-example.de"
PHONE_NEAR = "(613) 995-0253"
OPENAI_QUALITY = "sk-proj-" + "Q" * 20 + "r" * 24
PRIVATE_KEY_BODY = "MIIEowIBAAKCAQEA7zZq9secretbodyXyZ"
PRIVATE_KEY = f"-----BEGIN RSA PRIVATE KEY-----\n{PRIVATE_KEY_BODY}\n-----END RSA PRIVATE KEY-----"
AWS_META_KEY = "AKIAZ7X6C5V4B3N2M7LK"
AWS_ZERO_WIDTH = "AKIAP5O4I3U2Y7T6R5EW"
IDN_EMAIL = "jürgen.weiß@bücherhaus-müller.de"
JWT_DETAIL = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJyb2xlLWxlYWsifQ.c2lnbmF0dXJlLWxlYWstdGVzdA"

LONG_ANSWER = " ".join(f"word{i} explains step {i} of the procedure in detail" for i in range(40))


def _zero_width(key: str) -> str:
    return key[:4] + "\u200b" + key[4:10] + "\u2060" + key[10:]


def plant(raw: Path) -> None:
    dup = chat(("user", f"Mail {EMAIL_DUP} about the invoice"), ("assistant", "Sure, I will write the mail now."))
    near = chat(("user", f"Call me at {PHONE_NEAR}. " + LONG_ANSWER), ("assistant", LONG_ANSWER))
    near_copy = chat(("user", f"Call me at {PHONE_NEAR}. " + LONG_ANSWER), ("assistant", LONG_ANSWER + " done"))
    write_lines(raw / "a.jsonl", [
        '{"messages": [{"role": "user", "content": "' + AWS_BAD_JSON + '"}',  # io.bad_json
        chat(("robot", f"token {GH_SCHEMA}"), ("assistant", "ok")),  # schema.bad_role
        {"messages": [{"role": JWT_DETAIL, "content": "hi"}, {"role": "assistant", "content": "ok"}]},
        dup,
        dup,  # dup.exact, rejected before the secrets stage
        near,
        near_copy,  # dup.near
        chat(("user", "Show me my key."), ("assistant", f"Here it is:\n{PRIVATE_KEY}")),  # secrets.private_key
        chat(("user", "Key?"), ("assistant", f"{OPENAI_QUALITY}")),  # kept or rejected by quality
        chat(("user", "What is the capital of France?"), ("assistant", "Paris is the capital of France."),
             meta={AWS_META_KEY: 1, "note": "a\\b"}),
        chat(("user", "Store this key safely: " + _zero_width(AWS_ZERO_WIDTH)), ("assistant", "Done, it is stored.")),
        chat(("user", f"Write to {IDN_EMAIL} please."), ("assistant", "I will write to them today.")),
    ])


SECRETS = [AWS_BAD_JSON, GH_SCHEMA, EMAIL_DUP, PHONE_NEAR, OPENAI_QUALITY, PRIVATE_KEY_BODY, AWS_META_KEY,
           AWS_ZERO_WIDTH, IDN_EMAIL, JWT_DETAIL]


def _texts(path: Path) -> str:
    """Everything a reader of `path` can see, as text (parquet: every value of every column)."""
    if path.suffix == ".parquet":
        frame = pl.read_parquet(path)
        return json.dumps(frame.to_dicts(), default=str, ensure_ascii=False)
    text = path.read_text(encoding="utf-8")
    try:  # JSON escapes (\u200b, \n) must not hide a key from the check either
        return text + "\n" + json.dumps(json.loads(text), ensure_ascii=False) if path.suffix == ".json" else text
    except ValueError:
        return text


def _visible(text: str) -> str:
    for ch in "\u200b\u2060":
        text = text.replace(ch, "")
    return text


def leaks(out: Path, skip: tuple[str, ...]) -> dict[str, list[str]]:
    found = {}
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        if path.name in skip:
            continue
        seen = _visible(_texts(path))
        hits = [s for s in SECRETS if s in seen]
        if hits:
            found[path.name] = hits
    return found


@pytest.fixture(scope="module")
def curated(tmp_path_factory):
    root = tmp_path_factory.mktemp("leak")
    plant(root / "raw")
    config = load_config(None, ["gates.min_examples=null", "dedup_minhash.threshold=0.7"])
    run(root / "raw", root / "out", config)
    write_sample(root / "out", n=20)
    return root


def test_rows_rejected_for_every_reason_are_rejected_as_planted(curated):
    reasons = {}
    for line in (curated / "out" / "rejects.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        reasons[record["source_line"]] = record["reasons"]
    assert reasons[1] == ["io.bad_json"]
    assert reasons[2][0].startswith("schema.") and reasons[3][0].startswith("schema.")
    assert reasons[5] == ["dup.exact"]
    assert reasons[6] == ["dup.near"]  # the longer copy (line 7) is kept
    assert reasons[8] == ["secrets.private_key"]


def test_no_output_but_rejects_holds_a_secret(curated):
    assert leaks(curated / "out", skip=("rejects.jsonl",)) == {}


def test_rejects_keep_the_raw_line_by_default(curated):
    rejects = (curated / "out" / "rejects.jsonl").read_text(encoding="utf-8")
    assert AWS_BAD_JSON in rejects and PRIVATE_KEY_BODY in json.loads(
        [line for line in rejects.splitlines() if '"source_line": 8' in line][0])["raw"]


@pytest.mark.parametrize("policy", ["redacted", "false"])
def test_rejects_raw_can_be_redacted_or_dropped(tmp_path, policy):
    plant(tmp_path / "raw")
    config = load_config(None, ["gates.min_examples=null", f"output.rejects_raw={policy}"])
    run(tmp_path / "raw", tmp_path / "out", config)
    assert leaks(tmp_path / "out", skip=()) == {}
    records = [json.loads(x) for x in (tmp_path / "out" / "rejects.jsonl").read_text(encoding="utf-8").splitlines()]
    if policy == "false":
        assert all("raw" not in r and "raw_b64" not in r for r in records)
    else:
        bad_json = next(r for r in records if r["source_line"] == 1)
        assert bad_json["raw"] == '{"messages": [{"role": "user", "content": "[REDACTED:aws_access_key]"}'


def test_flagged_kinds_stay_in_the_split_only(tmp_path):
    plant(tmp_path / "raw")
    flags = [f"secrets.policy.{k}=flag" for k in ("aws_access_key", "email", "phone", "openai_key")]
    config = load_config(None, ["gates.min_examples=null", *flags])
    run(tmp_path / "raw", tmp_path / "out", config)
    write_sample(tmp_path / "out", n=20)
    split = leaks(tmp_path / "out", skip=("rejects.jsonl",))
    assert set(split) == {"train.jsonl"} and AWS_META_KEY in split["train.jsonl"]  # the policy kept it there
    assert leaks(tmp_path / "out", skip=("rejects.jsonl", "train.jsonl", "val.jsonl")) == {}


def test_validate_findings_name_no_secret(tmp_path):
    from click.testing import CliRunner

    from curator.cli import cli

    path = write_lines(tmp_path / "v.jsonl", [
        {**chat(("user", "hi"), ("assistant", "ok")), AWS_META_KEY: 1},
        {"messages": [{"role": "user", "content": "hi", GH_SCHEMA: 2}, {"role": "assistant", "content": "ok"}]},
        {"conversations": [{"from": EMAIL_DUP, "value": "hi"}]},
    ])
    for fmt in ("text", "json"):
        result = CliRunner().invoke(cli, ["validate", "--format", fmt, str(path)])
        assert result.exit_code == 1
        shown = result.output
        assert "schema.extra_field" in shown and "[REDACTED:aws_access_key]" in shown
        assert not [s for s in (AWS_META_KEY, GH_SCHEMA, EMAIL_DUP) if s in shown]


def test_redacted_rejects_withhold_a_utf16_line_holding_a_key(tmp_path):
    record = json.dumps(chat(("user", f"key {AWS_BAD_JSON} end"), ("assistant", "ok")))
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "windows.jsonl").write_bytes(record.encode("utf-16"))
    run(tmp_path / "raw", tmp_path / "out", load_config(None, ["gates.min_examples=null", "output.rejects_raw=redacted"]))
    [reject] = [json.loads(x) for x in (tmp_path / "out" / "rejects.jsonl").read_text(encoding="utf-8").splitlines()]
    assert reject["reasons"] == ["io.bad_utf8"] and "raw_b64" not in reject
    assert reject["raw"] == "[withheld: holds a secret that could not be redacted in place]"
