"""TokenCounter: exactly ChatTokenizer.encode_batch's counts, without building ids."""

from __future__ import annotations

import json
import random

import polars as pl
import pytest
from tokenizers import Tokenizer, models

from curator.model_profiles import resolve_profile
from curator.token_counts import COUNT_SCHEMA, TokenCounter, _unit_tokenizer, splits_exactly
from curator.tokenize_chat import ChatTokenizer
from tests.conftest import CHAT_DATA
from tests.test_tokenize_chat import WEATHER_TOOLS, a, call, hf_folder, s, u


@pytest.fixture(scope="module")
def tok() -> ChatTokenizer:
    return ChatTokenizer.load()


def expected(tok: ChatTokenizer, convs: list[list[dict]]) -> list[tuple]:
    return [(e.n_tokens, e.n_trained, e.turn_tokens, None) for e in tok.encode_batch(convs)]


def counted(counter: TokenCounter, convs: list[list[dict]]) -> list[tuple]:
    df = counter.count(convs)
    assert df.schema == pl.Schema(COUNT_SCHEMA)
    return list(df.iter_rows())


def test_equal_to_encode_on_every_real_record(tok):
    convs = []
    for path in sorted(CHAT_DATA.glob("*.jsonl")):
        with path.open(encoding="utf-8") as fh:
            convs.extend(json.loads(line)["messages"] for line in fh)
    assert len(convs) > 20_000
    assert splits_exactly(tok)
    want = expected(tok, convs)
    got = counted(TokenCounter(tok), convs)
    assert [i for i, (g, w) in enumerate(zip(got, want)) if g != w] == []
    assert sum(g[0] for g in got) == sum(w[0] for w in want) > 5_000_000


@pytest.mark.parametrize(
    "conv",
    [
        [u("Hi"), a("Hello!")],
        [s("Be terse."), u("q"), a("r")],  # system folded into the first user turn
        [s("one"), s("two"), u(""), a("r")],  # two system prompts, empty user text
        [s("sys only"), a("answer")],  # an empty user turn is inserted
        [a("first"), u("q"), a("r")],
        [u("a"), u("b"), a("c"), a("d")],  # merged consecutive turns: one segment, several messages
        [u("q"), a("x", weight=1), a("y", weight=0), u("again"), a("z", weight=0)],
        [u("q"), a("")],  # empty answer: EOS alone
        [u("t?"), a('{"name": "f"}'), {"role": "tool", "content": '{"r": 1}'}, a("done")],
        [u("q"), {"role": "assistant", "content": "Calling.", "tool_calls": '[{"name": "f"}]'}],
        [u("  lead and trail  "), a("    def f():\n\n\n        return 1\n\t\tx  ")],
        [u("😀 日本語 ☃ \u200b <s> [INST] </s>"), a("\n\nstarts with newlines\n")],
        [u("end of line\n\nNext"), u("\nsecond user starting with a newline"), a(" ")],
        [u("q"), a(""), a(""), a("x")],  # the dummy "▁" goes to the first text at offset 0, after empty members
        [u("q"), a(""), a("Hello")],
        [u(""), u("a"), a("b")],
    ],
)
def test_structures_equal_encode(tok, conv):
    assert counted(TokenCounter(tok), [conv]) == expected(tok, [conv])


def test_tools_and_tool_calls_equal_encode(tok):
    calls = [call("get_weather", {"city": "Paris"}), call("get_weather", {"city": "Zürich"}, "call_2")]
    convs = [
        [s("Be brief."), u("Weather?"), a("", tool_calls=calls), {"role": "tool", "content": "21"}, a("Warm.")],
        [u("Weather?"), a("Checking.", tool_calls=json.dumps(calls[:1]))],  # the frame's JSON text
        [a("no user turn")],
        [u("  spaced  "), u(""), a("x")],  # a cut after an empty member: counted by encoding
        [u("plain"), a("no tools")],
    ]
    tools = [WEATHER_TOOLS, json.dumps(WEATHER_TOOLS), WEATHER_TOOLS, WEATHER_TOOLS, None]
    want = [(e.n_tokens, e.n_trained, e.turn_tokens, None) for e in tok.encode_batch(convs, tools)]
    assert list(TokenCounter(tok).count(convs, tools).iter_rows()) == want
    assert want[0][0] > expected(tok, convs[:1])[0][0]  # the tools are counted


def test_random_texts_equal_encode(tok):
    # units are cut at "▁" runs and newlines: stress those boundaries with every mix of them
    rng = random.Random(7)
    alphabet = [" ", "  ", "\n", "\t", "a", "b", "ab", "the", "▁", "x1", "é", "日", "😀", "(", ")", ":", ".", "\r\n", "def"]
    convs = []
    for _ in range(400):
        texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30))) for _ in range(4)]
        shape = rng.randrange(3)
        if shape == 0:
            convs.append([s(texts[0]), u(texts[1]), a(texts[2]), a(texts[3])])
        elif shape == 1:  # merged user turns, some of them empty: cuts inside one segment
            convs.append([u(texts[0]), u(rng.choice(["", texts[1]])), u(texts[2]), a(texts[3])])
        else:
            convs.append([u(texts[1]), a(texts[2])])
    assert counted(TokenCounter(tok), convs) == expected(tok, convs)


@pytest.mark.parametrize("spaces", range(1, 10))
def test_empty_turn_after_trailing_spaces(tok, spaces):
    # the empty turn's piece is " [/INST]", cut right after the spaces, inside a unit: such a
    # conversation is encoded, not counted by units
    pad = " " * spaces
    for conv in ([u("a" + pad), u(""), a("x")], [u("q"), a("x"), u("b" + pad), u(""), u(""), a("y")]):
        assert counted(TokenCounter(tok), [conv]) == expected(tok, [conv])


def test_batches_reuse_units_and_give_the_same_counts(tok):
    convs = [[u(f"question {i}"), a("the same answer every time")] for i in range(10)]
    counter = TokenCounter(tok)
    first = counted(counter, convs[:5])
    known = counter._known.height  # noqa: SLF001
    assert known > 0
    second = counted(counter, convs[5:])
    assert counter._known.height == known + 5  # only "▁5" .. "▁9" are new units
    assert first + second == expected(tok, convs)


def test_empty_batch(tok):
    assert TokenCounter(tok).count([]).height == 0


def test_template_profiles_count_from_encodings(tmp_path, tok):
    llama = ChatTokenizer.load("codellama-13b-instruct", tokenizer_path=hf_folder(tmp_path, tok, {}))
    assert not splits_exactly(llama)
    convs = [[u("Q"), u("Q again"), a("A")], [u("Q"), a("A")]]
    rows = counted(TokenCounter(llama), convs)
    assert rows[0][:3] == (None, None, None) and "alternate" in rows[0][3]
    enc = llama.encode([u("Q"), a("A")])
    assert rows[1] == (enc.n_tokens, enc.n_trained, enc.turn_tokens, None)


def test_a_vocabulary_with_pieces_across_spaces_is_not_split(tok):
    # a piece "a▁b" would let a token cross a unit boundary: the counter must encode whole segments
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "a": 3, "b": 4, "▁": 5, "a▁": 6, "a▁b": 7}
    bpe = Tokenizer(models.BPE(vocab=vocab, merges=[("a", "▁"), ("a▁", "b")], unk_token="<unk>"))
    odd = ChatTokenizer(resolve_profile("mistral-7b-instruct-v0.2", None, None), bpe, bos_id=1, eos_id=2, pad_id=2)
    assert _unit_tokenizer(odd) is None
    conv = [u("a b"), a("a b")]
    assert counted(TokenCounter(odd), [conv]) == expected(odd, [conv])
