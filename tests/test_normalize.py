"""Normalisation (curator/stages/normalize.py): whitespace that is meaning is kept."""

import polars as pl

from curator import columns as C
from curator.config import CurateConfig
from curator.stages import normalize
from curator.stages.base import StageContext
from tests.conftest import messages_frame


def _normalise(*contents: str, **overrides) -> list[str]:
    df = messages_frame([[("user", "q"), ("assistant", c)] for c in contents])
    df = df.with_columns(pl.int_range(df.height, dtype=pl.Int64).alias(C.ROW))
    ctx = StageContext(config=CurateConfig.model_validate({"normalize": overrides}))
    out = normalize.run(df, ctx)
    return [m[1]["content"] for m in out[C.MESSAGES].to_list()]


def test_trailing_spaces_inside_fenced_code_are_kept():
    code = "Check it:  \n```python   \nassert pad('a') == 'a   '   \n\t\n```  \nDone. \t\n"
    assert _normalise(code) == ["Check it:\n```python\nassert pad('a') == 'a   '   \n\t\n```\nDone."]
    tilde = "~~~\nline   \n~~~"
    assert _normalise(tilde) == [tilde]


def test_markdown_hard_line_break_is_two_spaces_and_other_trailing_whitespace_goes():
    text = "Roses are red,   \nviolets are blue.\t\nSugar is sweet.  \n\nNew paragraph.  "
    assert _normalise(text) == ["Roses are red,  \nviolets are blue.\nSugar is sweet.\n\nNew paragraph."]


def test_crlf_and_nfc_apply_inside_code_too():
    text = "```\r\nx = 'Cafe\u0301'  \r\n```\r\n"
    assert _normalise(text) == ["```\nx = 'Caf\u00e9'  \n```"]


def test_plain_turns_keep_the_fast_rule_and_the_hash_follows_the_text():
    assert _normalise("a \nb\t\n\n", "a\nb") == ["a\nb", "a\nb"]
    df = messages_frame([[("user", "q"), ("assistant", code)] for code in ("```\nx  \n```", "```\nx\n```")])
    df = df.with_columns(pl.int_range(df.height, dtype=pl.Int64).alias(C.ROW))
    hashes = normalize.run(df, StageContext(config=CurateConfig())).get_column(C.CONTENT_HASH).to_list()
    assert hashes[0] != hashes[1]  # different code, different conversations


def test_stripping_off_leaves_whitespace():
    assert _normalise("a  \r\nb  ", strip_trailing_whitespace=False) == ["a  \nb  "]


def test_bidi_controls_and_tag_characters_are_removed_with_a_warning_and_flags_kept():
    trojan = "access = 'user\u202e \u2066// admin\u2069 \u2066'"
    smuggled = "Hello\U000e0049\U000e0067\U000e006e\U000e006f\U000e0072\U000e0065 there"
    scotland = "\U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f"
    df = messages_frame([[("user", "q"), ("assistant", t)] for t in (trojan, smuggled, scotland, "plain")])
    df = df.with_columns(pl.int_range(df.height, dtype=pl.Int64).alias(C.ROW),
                         pl.Series(C.WARNINGS, [[]] * df.height, dtype=pl.List(pl.Utf8)))
    out = normalize.run(df, StageContext(config=CurateConfig()))
    assert [m[1]["content"] for m in out[C.MESSAGES].to_list()] == [
        "access = 'user // admin '", "Hello there", scotland, "plain"]
    note = "normalize.hidden_controls: bidi control or tag characters removed"
    assert out[C.WARNINGS].to_list() == [[note], [note], [], []]


def test_hidden_controls_can_be_kept():
    assert _normalise("a\u2066b\u2069", remove_hidden_controls=False) == ["a\u2066b\u2069"]
