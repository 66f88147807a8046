"""curator.tokenize_chat: ids equal to mistral-common's reference, masks, per-turn counts, profiles."""

from __future__ import annotations

import json
import multiprocessing
import os
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache

import pytest
import sentencepiece as spm
from mistral_common.protocol.instruct.messages import (
    AssistantMessage,
    FinetuningAssistantMessage,
    SystemMessage,
    UserMessage,
)
from mistral_common.protocol.instruct.request import ChatCompletionRequest
from mistral_common.protocol.instruct.validator import ValidationMode
from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

from curator.errors import CurateError
from curator.model_profiles import PROFILES
from curator.tokenize_chat import ChatFormatError, ChatTokenizer, mistral_v1_model_file, render_tool_calls
from tests.conftest import CHAT_DATA


@pytest.fixture(scope="module")
def tok() -> ChatTokenizer:
    return ChatTokenizer.load()


@pytest.fixture(scope="module")
def sp() -> spm.SentencePieceProcessor:
    return spm.SentencePieceProcessor(model_file=str(mistral_v1_model_file()))


@pytest.fixture(scope="module")
def ref() -> MistralTokenizer:
    # MistralTokenizer.v1() is the same tokenizer.model.v1 in "test" mode, which wants the last turn to be
    # a user turn; training data ends with an answer, which is what the finetuning mode validates.
    return MistralTokenizer.from_file(str(mistral_v1_model_file()), mode=ValidationMode.finetuning)


def reference_ids(ref: MistralTokenizer, messages: list[dict], validate: bool = True) -> list[int]:
    """mistral-common's chat-completion encoding; tool turns relabelled user (our documented rule).

    validate=False runs the reference's normaliser and instruct tokenizer without its validator, for
    structures the validator refuses (a system message after an answer) but the encoding defines.
    """
    out = []
    for m in messages:
        role, content = m["role"], m.get("content") or ""
        if role == "system":
            out.append(SystemMessage(content=content))
        elif role in ("user", "tool"):
            out.append(UserMessage(content=content))
        elif m.get("weight") is None:
            out.append(AssistantMessage(content=content))
        else:
            out.append(FinetuningAssistantMessage(content=content, weight=m["weight"]))
    request = ChatCompletionRequest(messages=out)
    if validate:
        return ref.encode_chat_completion(request).tokens
    instruct = ref._instruct_request_normalizer.from_chat_completion_request(request)
    return ref.instruct_tokenizer.encode_instruct(instruct).tokens


@lru_cache(maxsize=1)
def _worker_reference() -> MistralTokenizer:
    return MistralTokenizer.from_file(str(mistral_v1_model_file()), mode=ValidationMode.finetuning)


def _reference_chunk(chunk: list[list[dict]]) -> list[list[int] | None]:
    """Reference ids of a chunk of conversations (None where the reference refuses one); runs in a worker."""
    out: list[list[int] | None] = []
    for messages in chunk:
        try:
            out.append(reference_ids(_worker_reference(), messages))
        except Exception:
            out.append(None)
    return out


def u(text: str) -> dict:
    return {"role": "user", "content": text}


def a(text: str, **extra) -> dict:
    return {"role": "assistant", "content": text, **extra}


def s(text: str) -> dict:
    return {"role": "system", "content": text}


# --- the proof: every real record ------------------------------------------------------------------


def test_equal_to_mistral_common_on_every_real_record(tok):
    records = []
    for path in sorted(CHAT_DATA.glob("*.jsonl")):
        with path.open(encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                records.append((path.name, n, json.loads(line)["messages"]))
    assert len(records) > 20_000
    encoded = tok.encode_batch([m for _, _, m in records])  # the fast path, one batched call

    # the reference is slow (pydantic + one SentencePiece call per segment): spread it over the cores
    convs = [m for _, _, m in records]
    step = 1000
    # spawn, not fork: the parent's tokenizers thread pool must not be forked
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(4, os.cpu_count() or 1), mp_context=ctx) as pool:
        chunks = pool.map(_reference_chunk, [convs[i : i + step] for i in range(0, len(convs), step)])
        expected_all = [ids for chunk in chunks for ids in chunk]

    mismatches, refused, with_tool = [], [], 0
    longest: dict[str, int] = defaultdict(int)
    for (name, n, messages), enc, expected in zip(records, encoded, expected_all):
        longest[name] = max(longest[name], enc.n_tokens)
        assert sum(enc.turn_tokens) == enc.n_tokens and len(enc.trained) == enc.n_tokens
        with_tool += any(m["role"] == "tool" for m in messages)
        if expected is None:  # the reference refuses empty answers; checked below
            refused.append((name, n, messages, enc))
            continue
        if expected != enc.ids:
            mismatches.append(f"{name}:{n}")
    assert mismatches == []
    assert with_tool == 153  # the Glaive records with tool turns were compared too (README: 153 of 300)

    # the two empty answers of codealpaca_2k (README): encoded as the prompt, then EOS alone, trained
    assert [(name, messages[-1]["content"]) for name, _, messages, _ in refused] == [("codealpaca_2k.jsonl", "")] * 2
    for _, _, messages, enc in refused:
        prompt = MistralTokenizer.v1().encode_chat_completion(ChatCompletionRequest(messages=[UserMessage(content=messages[0]["content"])]))
        assert enc.ids == prompt.tokens + [tok.eos_id]
        assert enc.trained == [False] * len(prompt.tokens) + [True]

    # known maxima of the real data (../shared/README.md)
    assert longest["exercism_python.chat.jsonl"] == 10_678
    assert longest["exercism_typescript.chat.jsonl"] == 8_764
    assert longest["llamafactory_glaive_toolcall_en_demo.jsonl"] == 11_607


# --- the format, exactly ---------------------------------------------------------------------------------


def test_segments_mask_and_turn_counts(tok, sp):
    enc = tok.encode([u("Hi"), a("Hello!"), u("Bye"), a("See you.")])
    first, answer = sp.encode("[INST] Hi [/INST]"), sp.encode("Hello!")
    second, answer2 = sp.encode("[INST] Bye [/INST]"), sp.encode("See you.")
    assert enc.ids == [1, *first, *answer, 2, *second, *answer2, 2]
    assert enc.trained == [False] * (1 + len(first)) + [True] * (len(answer) + 1) + [False] * len(second) + [True] * (
        len(answer2) + 1
    )
    assert enc.turn_tokens == [1 + len(first), len(answer) + 1, len(second), len(answer2) + 1]
    assert enc.n_tokens == len(enc.ids) and enc.n_trained == len(answer) + len(answer2) + 2
    assert tok.decode(enc.ids) == "[INST] Hi [/INST] Hello! [INST] Bye [/INST] See you."
    assert (tok.bos_id, tok.eos_id, tok.pad_id) == (1, 2, 2)


def test_rendering_one_string_differs_at_turn_boundaries(tok, sp):
    # why we encode per segment: the answer's own dummy prefix gives "▁The", a rendered string "The"
    messages = [u("Say it"), a("The end")]
    rendered = sp.encode("[INST] Say it [/INST]The end")
    assert tok.encode(messages).ids[1:-1] != rendered
    assert tok.encode(messages).ids[-3:-1] == sp.encode("The end")


def test_system_prompts_join_into_the_first_user_turn(tok, ref, sp):
    messages = [s("Be brief."), u("Q1"), a("A1"), s("Use English."), u("Q2"), a("A2")]
    enc = tok.encode(messages)
    assert enc.ids == reference_ids(ref, messages, validate=False)
    assert enc.ids[1 : 1 + len(sp.encode("[INST] Be brief.\n\nUse English.\n\nQ1 [/INST]"))] == sp.encode(
        "[INST] Be brief.\n\nUse English.\n\nQ1 [/INST]"
    )
    assert sum(enc.turn_tokens) == enc.n_tokens
    assert enc.turn_tokens[3] > 0 and enc.turn_tokens[0] > 0  # both system messages own their text


@pytest.mark.parametrize(
    "messages",
    [
        [u("a"), u("b"), a("c")],  # consecutive user turns merge with "\n\n"
        [u("a"), s("sys"), u("b"), a("c")],  # a system message keeps them apart
        [a("first"), u("q"), a("r")],  # no user turn first: an empty one is inserted
        [s("only system"), a("answer")],
        [u("q"), a("x", weight=1), a("y", weight=0)],  # different weights: not merged
        [u("q"), a("x"), a("y")],
        [u("  spaces   inside\t\ttabs  "), a("    def f():\n        return 1\n")],
        [u(""), u("a"), a("b")],  # an empty member of a merged run is skipped, not joined
        [s("S"), u(""), u("a"), a("b")],
        [u("q"), a("x"), u(""), u(""), u("b"), a("c")],
    ],
)
def test_structures_match_the_reference(tok, ref, messages):
    enc = tok.encode(messages)
    assert enc.ids == reference_ids(ref, messages)
    assert sum(enc.turn_tokens) == enc.n_tokens and len(enc.turn_tokens) == len(messages)


def test_weight_zero_turns_are_not_trained(tok, sp):
    enc = tok.encode([u("q"), a("draft", weight=0), u("again"), a("final", weight=1)])
    trained_ids = [i for i, t in zip(enc.ids, enc.trained) if t]
    assert trained_ids == [*sp.encode("final"), 2]


def test_tool_turns_encode_as_user_turns(tok):
    call = '{"name": "get_time", "arguments": {}}'
    with_tool = tok.encode([u("time?"), a(call), {"role": "tool", "content": '{"time": "12:00"}'}, a("It is noon.")])
    relabelled = tok.encode([u("time?"), a(call), u('{"time": "12:00"}'), a("It is noon.")])
    assert with_tool == relabelled
    assert with_tool.turn_tokens[2] > 0
    start = sum(with_tool.turn_tokens[:2])
    assert not any(with_tool.trained[start : start + with_tool.turn_tokens[2]])


def call(name: str, args: dict, call_id: str = "call_1") -> dict:
    """A canonical OpenAI tool call: arguments as canonical JSON text."""
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(args, ensure_ascii=False)}}


WEATHER_TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Météo d'une ville",
                                      "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                     "required": ["city"]}}},
]
PARIS = '{"name": "get_weather", "arguments": {"city": "Paris"}}'
ZURICH = '{"name": "get_weather", "arguments": {"city": "Zürich"}}'


def trained_ids(enc) -> list[int]:
    return [i for i, t in zip(enc.ids, enc.trained) if t]


def test_render_tool_calls_one_line_per_call_arguments_verbatim():
    calls = [call("get_weather", {"city": "Paris"}), call("get_weather", {"city": "Zürich"}, "call_2")]
    assert render_tool_calls(calls) == PARIS + "\n" + ZURICH
    assert render_tool_calls(json.dumps(calls)) == render_tool_calls(calls)  # the frame's JSON text
    odd = {"id": "c", "type": "function", "function": {"name": "f", "arguments": '{"a":1,  "b": [ ]}'}}
    assert render_tool_calls([odd]) == '{"name": "f", "arguments": {"a":1,  "b": [ ]}}'
    assert render_tool_calls([{"name": "f", "arguments": {"x": "é"}}]) == '{"name": "f", "arguments": {"x": "é"}}'
    assert render_tool_calls([]) == render_tool_calls("[]") == ""
    assert render_tool_calls("not json") == "not json"


def test_tool_calls_are_trained_after_the_content(tok, sp):
    only = tok.encode([u("q"), a("", tool_calls=[call("get_weather", {"city": "Paris"})])])
    assert trained_ids(only) == [*sp.encode(PARIS), 2]
    as_text = tok.encode([u("q"), a(None, tool_calls=json.dumps([call("get_weather", {"city": "Paris"})]))])
    assert as_text == only
    calls = [call("get_weather", {"city": "Paris"}), call("get_weather", {"city": "Zürich"}, "call_2")]
    both = tok.encode([u("q"), a("Checking both.", tool_calls=calls)])
    assert trained_ids(both) == [*sp.encode(f"Checking both.\n\n{PARIS}\n{ZURICH}"), 2]
    assert sum(both.turn_tokens) == both.n_tokens


def test_tools_open_the_first_user_turn_before_the_system_prompt(tok, sp):
    messages = [s("Be brief."), u("Weather in Paris?"), a("", tool_calls=[call("get_weather", {"city": "Paris"})]),
                {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21}'}, a("21 degrees."),
                u("Thanks"), a("Bye")]
    enc = tok.encode(messages, WEATHER_TOOLS)
    head = f"[AVAILABLE_TOOLS] {json.dumps(WEATHER_TOOLS, ensure_ascii=False)} [/AVAILABLE_TOOLS]\n\n"
    first = sp.encode(f"[INST] {head}Be brief.\n\nWeather in Paris? [/INST]")
    assert enc.ids[: 1 + len(first)] == [1, *first] and not any(enc.trained[: 1 + len(first)])
    plain = tok.encode(messages)
    plain_first = sp.encode("[INST] Be brief.\n\nWeather in Paris? [/INST]")
    assert enc.ids[1 + len(first):] == plain.ids[1 + len(plain_first):]  # only once, in the first user turn
    assert trained_ids(enc) == trained_ids(plain)
    # the tool definitions count for the message that opens the segment (here the system prompt)
    assert enc.turn_tokens == [plain.turn_tokens[0] + len(first) - len(plain_first), *plain.turn_tokens[1:]]
    assert tok.encode(messages, json.dumps(WEATHER_TOOLS)) == enc  # the frame's JSON text
    assert tok.encode(messages, []) == plain
    # no user turn: the inserted empty one carries the tools
    alone = tok.encode([a("hi")], WEATHER_TOOLS)
    assert alone.ids == [1, *sp.encode(f"[INST] {head} [/INST]"), *sp.encode("hi"), 2]


def test_whitespace_and_rare_characters_equal_sentencepiece(tok, sp):
    texts = [" " * k + "x" for k in range(1, 34)] + ["a" + " " * k + "b" for k in range(1, 34)]
    texts += ["\n" + "\t" * 3 + "if x:", "<s> </s> <unk> [INST]", "😀 日本語 ☃ \u200b", "x" * 300, "", " "]
    got = [e.ids for e in tok.tokenizer.encode_batch(texts, add_special_tokens=False)]
    assert got == [sp.encode(t) for t in texts]


def test_batch_equals_one_by_one(tok):
    convs = [[u("q1"), a("a1")], [s("sys"), u("q2"), a("a2")], [u("q1"), a("a1")]]
    assert tok.encode_batch(convs) == [tok.encode(c) for c in convs]


def test_empty_conversation_is_an_error(tok):
    with pytest.raises(ChatFormatError, match="conversation 1"):
        tok.encode_batch([[u("q"), a("r")], []])


# --- profiles and other formats ----------------------------------------------------------------------


def test_profiles():
    assert {n: (p.context_length, p.chat_format) for n, p in PROFILES.items()} == {
        "mistral-7b-instruct-v0.2": (8192, "mistral-v1"),
        "codellama-13b-instruct": (16384, "llama-2"),
        "phi-3-mini-4k-instruct": (4096, "phi-3"),
    }
    assert ChatTokenizer.load().profile.context_length == 8192
    assert ChatTokenizer.load(context_length=4000).profile.context_length == 4000


def test_unknown_model_and_missing_tokenizer_are_clear_errors(tmp_path):
    with pytest.raises(CurateError, match="neither a profile"):
        ChatTokenizer.load("gpt-5")
    with pytest.raises(CurateError, match="tokens.tokenizer_path"):
        ChatTokenizer.load("codellama-13b-instruct")
    with pytest.raises(CurateError, match="tokenizer.json"):
        ChatTokenizer.load(str(tmp_path))


def hf_folder(tmp_path, tok: ChatTokenizer, config: dict, specials: list[str] = ()) -> str:
    """A Hugging Face tokenizer folder made from the Mistral vocabulary (no hub access in tests)."""
    from tokenizers import AddedToken, Tokenizer

    hf = Tokenizer.from_str(tok.tokenizer.to_str())
    hf.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in ["<s>", "</s>", *specials]])
    hf.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>", "eos_token": "</s>", **config}))
    return str(tmp_path)


def test_phi3_profile_trains_content_and_end_not_header(tmp_path, tok):
    folder = hf_folder(tmp_path, tok, {}, ["<|user|>", "<|assistant|>", "<|end|>", "<|system|>"])
    phi = ChatTokenizer.load("phi-3-mini-4k-instruct", tokenizer_path=folder)
    assert phi.profile.context_length == 4096
    enc = phi.encode([s("Be kind."), u("Hi"), a("Hello there")])
    assert enc.ids[0] == phi.bos_id
    trained = [i for i, t in zip(enc.ids, enc.trained) if t]
    assert phi.tokenizer.decode(trained, skip_special_tokens=False) == "Hello there<|end|> \n"
    assert len(enc.turn_tokens) == 3 and sum(enc.turn_tokens) == enc.n_tokens


def test_llama2_profile_refuses_non_alternating_roles(tmp_path, tok):
    folder = hf_folder(tmp_path, tok, {})
    llama = ChatTokenizer.load("codellama-13b-instruct", tokenizer_path=folder)
    enc = llama.encode([s("S"), u("Q"), a("A"), u("Q2"), a("A2")])
    assert enc.ids.count(llama.bos_id) == 2  # one BOS per exchange
    assert llama.tokenizer.decode([i for i, t in zip(enc.ids, enc.trained) if t], skip_special_tokens=False) == (
        "A </s> A2 </s>"
    )
    out = llama.encode_batch_or_errors([[u("Q"), u("Q again"), a("A")], [u("Q"), a("A")]])
    assert isinstance(out[0], str) and "alternate" in out[0] and not isinstance(out[1], str)
    with pytest.raises(ChatFormatError, match="conversation 0"):
        llama.encode_batch([[u("Q"), u("Q again"), a("A")]])


def test_hf_folder_uses_its_own_template_and_max_length(tmp_path, tok):
    template = "{{ bos_token }}{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}{% endfor %}"
    folder = hf_folder(tmp_path, tok, {"chat_template": template, "model_max_length": 2048})
    other = ChatTokenizer.load(folder)
    assert (other.profile.chat_format, other.profile.context_length) == ("hf-template", 2048)
    enc = other.encode([u("Q"), a("Answer")])
    assert other.tokenizer.decode([i for i, t in zip(enc.ids, enc.trained) if t], skip_special_tokens=False) == (
        "Answer</s>"
    )


def test_hf_folder_template_with_generation_markers_compiles(tmp_path, tok):
    # transformers' {% generation %} tag (what TRL's assistant_only_loss needs) must not break a folder profile
    from curator.tokenize_chat import MISTRAL_V1_CHAT_TEMPLATE

    folder = hf_folder(tmp_path, tok, {"chat_template": MISTRAL_V1_CHAT_TEMPLATE, "model_max_length": 2048})
    other = ChatTokenizer.load(folder)
    assert other.chat_template == MISTRAL_V1_CHAT_TEMPLATE
    enc = other.encode([u("Q"), a("Answer")])
    assert other.tokenizer.decode([i for i, t in zip(enc.ids, enc.trained) if t], skip_special_tokens=False) == (
        "Answer</s>"
    )


def test_converted_tokenizer_cache_round_trips(tmp_path, monkeypatch, sp):
    from curator.tokenize_chat import _cached_fast_tokenizer

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    built = _cached_fast_tokenizer(mistral_v1_model_file())
    [cached_file] = list((tmp_path / "curator" / "tokenizers").iterdir())
    loaded = _cached_fast_tokenizer(mistral_v1_model_file())
    texts = ["def f(x):\n    return x  # ok", "  leading", "émoji 😀"]
    for t in (built, loaded):
        assert [e.ids for e in t.encode_batch(texts, add_special_tokens=False)] == [sp.encode(x) for x in texts]
    assert cached_file.name.endswith(".tokenizer.json")
