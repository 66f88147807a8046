"""Secrets and PII: each kind found, redacted with its typed placeholder, rejected or flagged by
policy; no findings on look-alikes; the known findings of the real data."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from curator.columns import MESSAGE
from curator.config import load_config
from curator.stages import secrets
from curator.stages.base import StageContext

CHAT = Path(__file__).resolve().parents[2] / "shared" / "data" / "chat"

# one made-up value per kind, in the vendor's documented format
SAMPLES = {
    "aws_access_key": "AKIAZ2QW7YXK4MDN3BTE",
    "aws_secret_key": "aws_secret_access_key = wJalrXUtnFEMIK7MDENGbPxRfiCYzEXAMPLEKEY1",
    "github_token": "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8",
    "openai_key": "sk-" + "A" * 10 + "b" * 10 + "T3BlbkFJ" + "c" * 20,
    "slack_token": "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
    "private_key": "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7\n-----END RSA PRIVATE KEY-----",
    "jwt": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
    "email": "maria.lopez@acme-corp.io",
    "phone": "(415) 555-0132",
}


def frame(*convs, meta=None) -> pl.DataFrame:
    n = len(convs)
    msgs = [[{"role": r, "content": c, "weight": None, "tool_calls": t, "tool_call_id": None}
             for r, c, *rest in conv for t in [rest[0] if rest else None]] for conv in convs]
    return pl.DataFrame(
        {"messages": msgs, "meta": meta or [None] * n, "reject_reasons": [[] for _ in range(n)],
         "reject_details": [[] for _ in range(n)]},
        schema={"messages": pl.List(MESSAGE), "meta": pl.Utf8, "reject_reasons": pl.List(pl.Utf8),
                "reject_details": pl.List(pl.Utf8)},
    )


def run(df, *overrides):
    ctx = StageContext(config=load_config(None, list(overrides)))
    return secrets.run(df, ctx), ctx


@pytest.mark.parametrize("kind", list(SAMPLES))
def test_each_kind_is_found_and_redacted_with_its_placeholder(kind):
    text = f"Here you go: {SAMPLES[kind]} and that is all."
    out, ctx = run(frame([("user", "config?"), ("assistant", text)]), f"secrets.policy.{kind}=redact")
    row = out.row(0, named=True)
    assert row["secret_findings"] == [{"kind": kind, "action": "redact", "turn": 1}]
    redacted = row["messages"][1]["content"]
    assert f"[REDACTED:{kind}]" in redacted
    assert redacted.startswith("Here you go: ") and redacted.endswith(" and that is all.")
    secret_part = SAMPLES[kind].split("= ")[-1]
    assert secret_part not in redacted
    assert row["messages"][0]["content"] == "config?"
    assert row["reject_reasons"] == []
    assert ctx.summaries["secrets"]["kinds"][kind] == {"rows": 1, "action": "redact"}


def test_aws_secret_after_the_cli_flag_is_redacted():
    text = "aws configure set aws_secret_access_key 9f2Kq8LmZx4Vb7Nc1Rt6Yh3Wj5Pd0Sa2Ge8Ui4Oo\nthen run it"
    out, _ = run(frame([("user", text)]))
    assert out.row(0, named=True)["messages"][0]["content"] == (
        "aws configure set aws_secret_access_key [REDACTED:aws_secret_key]\nthen run it"
    )


def test_aws_secret_redaction_keeps_the_key_name():
    out, _ = run(frame([("user", SAMPLES["aws_secret_key"])]))
    assert out.row(0, named=True)["messages"][0]["content"] == "aws_secret_access_key = [REDACTED:aws_secret_key]"


@pytest.mark.parametrize("prefix", ["AKIA", "ASIA"])
def test_long_term_and_temporary_aws_access_key_ids_are_redacted(prefix):
    # ASIA ids come with STS session credentials, which are pasted into chats as often as AKIA ones
    key = prefix + "Z2QW7YXK4MDN3BTE"
    out, _ = run(frame([("user", f"export AWS_ACCESS_KEY_ID={key}"), ("assistant", "done")]))
    row = out.row(0, named=True)
    assert row["secret_findings"] == [{"kind": "aws_access_key", "action": "redact", "turn": 0}]
    assert row["messages"][0]["content"] == "export AWS_ACCESS_KEY_ID=[REDACTED:aws_access_key]"


def test_private_key_block_is_redacted_whole():
    text = "key:\n" + SAMPLES["private_key"] + "\nthen run ssh."
    out, _ = run(frame([("user", text)]), "secrets.policy.private_key=redact")
    assert out.row(0, named=True)["messages"][0]["content"] == "key:\n[REDACTED:private_key]\nthen run ssh."


def test_reject_policy_rejects_with_kind_reason():
    out, _ = run(frame([("user", "hi"), ("assistant", SAMPLES["private_key"])], [("user", "hi"), ("assistant", "no key")]))
    first, second = out.rows(named=True)
    assert first["reject_reasons"] == ["secrets.private_key"]
    assert first["reject_details"] == ["private_key found in turn 1"]
    assert first["messages"][1]["content"] == SAMPLES["private_key"]  # rejected rows are not rewritten
    assert second["reject_reasons"] == [] and second["secret_findings"] == []


def test_flag_policy_keeps_the_text():
    text = f"Write to {SAMPLES['email']}"
    out, _ = run(frame([("user", text)]), "secrets.policy.email=flag")
    row = out.row(0, named=True)
    assert row["messages"][0]["content"] == text
    assert row["secret_findings"] == [{"kind": "email", "action": "flag", "turn": 0}]
    assert row["reject_reasons"] == []


def test_tool_calls_and_meta_are_scanned_and_redacted():
    calls = json.dumps([{"function": {"name": "send", "arguments": {"to": SAMPLES["email"]}}}])
    out, _ = run(frame([("user", "mail her"), ("assistant", "", calls)], meta=[json.dumps({"by": "li.wei@corp.io"})]))
    row = out.row(0, named=True)
    assert row["secret_findings"] == [{"kind": "email", "action": "redact", "turn": 1},
                                      {"kind": "email", "action": "redact", "turn": None}]
    assert json.loads(row["messages"][1]["tool_calls"])[0]["function"]["arguments"]["to"] == "[REDACTED:email]"
    assert json.loads(row["meta"]) == {"by": "[REDACTED:email]"}


def test_one_finding_per_kind_per_turn_and_rows_without_untouched():
    out, _ = run(frame([("user", f"{SAMPLES['phone']} or {SAMPLES['phone']}"), ("assistant", SAMPLES["github_token"])],
                       [("user", "plain"), ("assistant", "text")]))
    first, second = out.rows(named=True)
    assert first["secret_findings"] == [{"kind": "phone", "action": "redact", "turn": 0},
                                        {"kind": "github_token", "action": "redact", "turn": 1}]
    assert first["messages"][0]["content"] == "[REDACTED:phone] or [REDACTED:phone]"
    assert second["messages"] == [{"role": "user", "content": "plain", "weight": None, "tool_calls": None, "tool_call_id": None},
                                  {"role": "assistant", "content": "text", "weight": None, "tool_calls": None, "tool_call_id": None}]


@pytest.mark.parametrize(
    "text",
    [
        "Write to john.doe@example.com or test@mail.example or a@b.test",  # reserved documentation domains
        "On 2023-10-15 the total was 315581.4976 and 450000-2000 = 448000.",  # dates and math, not phones
        "Use the AKIA prefix; keys look like AKIA... but this is not one.",
        "The sk-learn package, eyJ-prefixed strings and xoxb- prefixes are not tokens.",
        "Version 1.2.3.4, ISBN 978-3-16-148410-0, the loop for i in range(1000000).",
    ],
)
def test_look_alikes_are_not_findings(text):
    out, _ = run(frame([("user", text)]))
    row = out.row(0, named=True)
    assert row["secret_findings"] == []
    assert row["messages"][0]["content"] == text


def test_unknown_kind_in_policy_is_a_config_error():
    from curator.errors import CurateError

    with pytest.raises(CurateError, match="secrets.policy.password"):
        load_config(None, ["secrets.policy.password=reject"])
    with pytest.raises(CurateError, match="secrets.policy.email"):
        load_config(None, ["secrets.policy.email=delete"])


@pytest.mark.skipif(not CHAT.exists(), reason="needs ../shared/data/chat")
def test_real_data_holds_no_credentials_and_the_known_pii():
    """The public sets carry no keys or tokens; the e-mails and phone numbers they do carry are
    fictional ones in coding tasks (Exercism's phone-number exercise uses 613-995-0253)."""
    convs = []
    for path in sorted(CHAT.glob("*.jsonl")):
        for line in path.open(encoding="utf-8"):
            rec = json.loads(line)
            convs.append([(m["role"], m.get("content") or "", m.get("tool_calls") and json.dumps(m["tool_calls"]))
                          for m in rec["messages"]])
    out, ctx = run(frame(*convs))
    kinds = ctx.summaries["secrets"]["kinds"]
    credentials = [k for k in secrets.KINDS if k not in ("email", "phone")]
    assert {k: kinds[k]["rows"] for k in credentials} == {k: 0 for k in credentials}
    phones = out.filter(pl.col("secret_findings").list.eval(pl.element().struct.field("kind") == "phone").list.any())
    texts = phones.select(pl.col("messages").list.eval(pl.element().struct.field("content")).list.join("\n")).to_series()
    assert phones.height >= 1
    assert texts.str.contains("[REDACTED:phone]", literal=True).all()
    assert not texts.str.contains("613-995-0253", literal=True).any()


# --- JSON columns: decoded values, valid JSON after redaction ------------------------------------


def test_jwt_in_tool_call_arguments_is_redacted_and_the_json_stays_valid():
    calls = json.dumps([{"function": {"name": "login", "arguments": json.dumps({"auth": SAMPLES["jwt"]})}}])
    out, _ = run(frame([("user", "log in"), ("assistant", "", calls)]))
    row = out.row(0, named=True)
    assert row["reject_reasons"] == []
    args = json.loads(json.loads(row["messages"][1]["tool_calls"])[0]["function"]["arguments"])
    assert args == {"auth": "[REDACTED:jwt]"}


def test_secret_in_meta_next_to_escaped_quotes_keeps_the_json_valid():
    meta = json.dumps({"note": f'token "{SAMPLES["jwt"]}" used', "n": 1}, sort_keys=True, separators=(",", ":"))
    out, _ = run(frame([("user", "q"), ("assistant", "a")], meta=[meta]))
    assert json.loads(out.row(0, named=True)["meta"]) == {"note": 'token "[REDACTED:jwt]" used', "n": 1}


def test_unterminated_private_key_in_meta_is_redacted_within_its_value(tmp_path):
    meta = json.dumps({"key": "-----BEGIN RSA PRIVATE KEY-----\nMIIE", "other": "kept"}, sort_keys=True, separators=(",", ":"))
    out, _ = run(frame([("user", "q"), ("assistant", "a")], meta=[meta]), "secrets.policy.private_key=redact")
    assert json.loads(out.row(0, named=True)["meta"]) == {"key": "[REDACTED:private_key]", "other": "kept"}


def test_aws_secret_in_double_encoded_arguments_is_found():
    args = json.dumps({"aws_secret_access_key": "wJalrXUtnFEMIK7MDENGbPxRfiCYzEXAMPLEKEY1"})
    calls = json.dumps([{"function": {"name": "configure", "arguments": args}}])
    out, _ = run(frame([("user", "set it"), ("assistant", "", calls)]))
    row = out.row(0, named=True)
    assert row["secret_findings"] == [{"kind": "aws_secret_key", "action": "redact", "turn": 1}]
    args_out = json.loads(json.loads(row["messages"][1]["tool_calls"])[0]["function"]["arguments"])
    assert args_out == {"aws_secret_access_key": "[REDACTED:aws_secret_key]"}


def test_aws_secret_named_by_its_meta_key_is_redacted():
    meta = json.dumps({"aws_secret_access_key": "wJalrXUtnFEMIK7MDENGbPxRfiCYzEXAMPLEKEY1"})
    out, _ = run(frame([("user", "q"), ("assistant", "a")], meta=[meta]))
    assert json.loads(out.row(0, named=True)["meta"]) == {"aws_secret_access_key": "[REDACTED:aws_secret_key]"}


def test_jwt_before_an_escape_in_code_keeps_the_escape():
    code = f'printf("token: {SAMPLES["jwt"]}\\n");'
    out, _ = run(frame([("user", "q"), ("assistant", code)]))
    assert out.row(0, named=True)["messages"][1]["content"] == 'printf("token: [REDACTED:jwt]\\n");'


def test_a_secret_redaction_cannot_remove_is_rejected(monkeypatch):
    # a redaction pattern that misses what the detector finds must not let the secret through
    broken = secrets.Detector("github_token", secrets.DETECTORS["github_token"].pattern, redact_pattern="nothing-matches-this")
    monkeypatch.setitem(secrets.DETECTORS, "github_token", broken)
    out, _ = run(frame([("user", "q"), ("assistant", SAMPLES["github_token"])]))
    row = out.row(0, named=True)
    assert row["reject_reasons"] == ["secrets.redaction_incomplete"]
    assert row["reject_details"] == ["github_token still found after redaction in turn 1"]


def test_a_key_split_by_invisible_characters_is_found_and_redacted_without_them():
    key = SAMPLES["aws_access_key"]
    hidden = key[:4] + "\u200b" + key[4:12] + "\u2060" + key[12:]
    out, _ = run(frame([("user", f"key {hidden} ok \u200d"), ("assistant", "stored")]))
    row = out.row(0, named=True)
    assert row["secret_findings"] == [{"kind": "aws_access_key", "action": "redact", "turn": 0}]
    assert row["messages"][0]["content"] == "key [REDACTED:aws_access_key] ok "


def test_invisible_characters_stay_where_no_secret_needs_them():
    text = f"{SAMPLES['email']} \u200c\U0001f468\u200d\U0001f469"
    out, _ = run(frame([("user", "mail?"), ("assistant", text)]))
    assert out.row(0, named=True)["messages"][1]["content"] == "[REDACTED:email] \u200c\U0001f468\u200d\U0001f469"


@pytest.mark.parametrize("address", ["jürgen.weiß@bücherhaus-müller.de", "иван@почта.рф", "user@corp.cn"])
def test_internationalised_email_addresses_are_found(address):
    out, _ = run(frame([("user", "who?"), ("assistant", f"请联系{address}谢谢")]))
    assert out.row(0, named=True)["messages"][1]["content"] == "请联系[REDACTED:email]谢谢"


def test_a_secret_used_as_a_meta_key_is_redacted_also_when_meta_holds_an_escape():
    meta = json.dumps({SAMPLES["aws_access_key"]: 1, "note": "a\\b"}, separators=(",", ":"))
    out, _ = run(frame([("user", "q"), ("assistant", "a")], meta=[meta]))
    row = out.row(0, named=True)
    assert row["secret_findings"] == [{"kind": "aws_access_key", "action": "redact", "turn": None}]
    assert json.loads(row["meta"]) == {"[REDACTED:aws_access_key]": 1, "note": "a\\b"}


def test_display_redaction_withholds_a_key_hidden_behind_a_json_escape():
    key = SAMPLES["aws_access_key"]
    raw = '{"messages": [{"content": "\\u0041' + key[1:] + '"'
    shown = secrets.redact_for_display([raw, f"plain {key}", None, "nothing here"])
    assert shown == [secrets.WITHHELD, "plain [REDACTED:aws_access_key]", None, "nothing here"]


@pytest.mark.parametrize("kind", ["aws_access_key", "openai_key", "github_token", "jwt", "slack_token"])
def test_a_key_written_right_after_chinese_or_japanese_is_found(kind):
    out, _ = run(frame([("user", f"我的密钥是{SAMPLES[kind]}请保管好它"), ("assistant", "好的")]))
    assert out.row(0, named=True)["messages"][0]["content"] == f"我的密钥是[REDACTED:{kind}]请保管好它"


def test_a_phone_number_between_cjk_characters_is_found():
    out, _ = run(frame([("user", "电话613-995-0253谢谢"), ("assistant", "好的")]))
    assert out.row(0, named=True)["messages"][0]["content"] == "电话[REDACTED:phone]谢谢"


@pytest.mark.parametrize("mark", ["\u061c", "\u034f", "\ufe0f", "\u3164", "\u180b"])
def test_detectors_read_through_marks_joiners_and_fillers(mark):
    key = SAMPLES["aws_access_key"]
    out, _ = run(frame([("user", f"key {key[:4]}{mark}{key[4:]} ok"), ("assistant", "stored")]))
    assert out.row(0, named=True)["messages"][0]["content"] == "key [REDACTED:aws_access_key] ok"


def test_a_secret_call_id_is_redacted_alike_in_the_call_and_its_result():
    key = SAMPLES["aws_access_key"]
    calls = json.dumps([{"id": key, "type": "function", "function": {"name": "f", "arguments": "{}"}}])
    df = frame([("user", "go"), ("assistant", "", calls), ("tool", "done"), ("assistant", "ok")])
    df = df.with_columns(pl.col("messages").list.eval(pl.element().struct.with_fields(
        tool_call_id=pl.when(pl.element().struct.field("role") == "tool").then(pl.lit(key)).otherwise(None))))
    out, _ = run(df)
    messages = out.row(0, named=True)["messages"]
    assert json.loads(messages[1]["tool_calls"])[0]["id"] == "[REDACTED:aws_access_key]"
    assert messages[2]["tool_call_id"] == "[REDACTED:aws_access_key]"


def test_a_key_in_a_tool_definition_is_redacted_in_tools():
    key = SAMPLES["aws_access_key"]
    tools = json.dumps([{"type": "function", "function": {"name": "s3", "description": f"uses {key}", "parameters": {}}}],
                       ensure_ascii=False)
    out, _ = run(frame([("user", "q"), ("assistant", "a")]).with_columns(pl.lit(tools).alias("tools")))
    row = out.row(0, named=True)
    assert row["secret_findings"] == [{"kind": "aws_access_key", "action": "redact", "turn": None}]
    assert json.loads(row["tools"]) == [
        {"type": "function", "function": {"name": "s3", "description": "uses [REDACTED:aws_access_key]", "parameters": {}}}]
    assert list(json.loads(row["tools"])[0]) == ["type", "function"]  # canonical key order kept
