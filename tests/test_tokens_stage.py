"""The tokens stage: counts, budget policies (reject / truncate / report), no_trainable, gate, cost."""

from __future__ import annotations

import json

import polars as pl
import pytest
import yaml

from curator import columns as C
from curator.config import load_config
from curator.cost import estimate_cost, load_prices
from curator.errors import CurateError
from curator.stages import tokens
from curator.stages.base import StageContext
from curator.tokenize_chat import ChatTokenizer
from tests.conftest import CHAT_DATA


def tokens_prices_default():
    from curator.cost import DEFAULT_PRICES

    return DEFAULT_PRICES


def msg(role: str, content: str, weight: int | None = None) -> dict:
    return {"role": role, "content": content, "weight": weight, "tool_calls": None, "tool_call_id": None}


def frame(conversations: list[list[dict]]) -> pl.DataFrame:
    n = len(conversations)
    return pl.DataFrame(
        {
            C.REF: [f"t.jsonl:{i + 1}" for i in range(n)],
            C.MESSAGES: conversations,
            C.REJECT_REASONS: [[] for _ in range(n)],
            C.REJECT_DETAILS: [[] for _ in range(n)],
        },
        schema={
            C.REF: pl.Utf8,
            C.MESSAGES: pl.List(C.MESSAGE),
            C.REJECT_REASONS: pl.List(pl.Utf8),
            C.REJECT_DETAILS: pl.List(pl.Utf8),
        },
    )


def run(df: pl.DataFrame, *overrides: str) -> tuple[pl.DataFrame, StageContext]:
    ctx = StageContext(config=load_config(None, list(overrides)))
    return tokens.run(df, ctx), ctx


@pytest.fixture(scope="module")
def tok() -> ChatTokenizer:
    return ChatTokenizer.load()


def n_tokens(tok, conv: list[dict]) -> int:
    return tok.encode(conv).n_tokens


SYSTEM = msg("system", "You are terse.")
EX1 = [msg("user", "First question, with quite a few words in it to make it long."), msg("assistant", "First answer.")]
EX2 = [msg("user", "Second question?"), msg("assistant", "Second answer, also long enough to count.")]
EX3 = [msg("user", "Third?"), msg("assistant", "Third.")]


def test_columns_and_counts(tok):
    conv = [msg("user", "Hi"), msg("assistant", "Hello!")]
    out, ctx = run(frame([conv]))
    enc = tok.encode(conv)
    assert out.schema[C.N_TOKENS] == pl.Int64 and out.schema[C.N_ASSISTANT_TOKENS] == pl.Int64
    assert out.schema[C.TURN_TOKENS] == pl.List(pl.Int64) and out.schema[C.TRUNCATED_TURNS] == pl.Int32
    row = out.row(0, named=True)
    assert (row["n_tokens"], row["n_assistant_tokens"], row["turn_tokens"]) == (enc.n_tokens, enc.n_trained, enc.turn_tokens)
    assert row["reject_reasons"] == [] and row["truncated_turns"] == 0
    assert ctx.summaries["tokens"]["tokens_seen"] == enc.n_tokens
    assert ctx.manifest["tokens"]["tokenizer_file"] == "mistral_common/data/tokenizer.model.v1"


def test_tools_column_and_tool_calls_are_counted_as_encoded(tok):
    from tests.test_tokenize_chat import PARIS, WEATHER_TOOLS, call

    calls = json.dumps([call("get_weather", {"city": "Paris"})])
    conv = [msg("user", "Weather?"), {**msg("assistant", ""), "tool_calls": calls},
            {**msg("tool", "21"), "tool_call_id": "call_1"}, msg("assistant", "Warm.")]
    df = frame([conv, conv]).with_columns(pl.Series(C.TOOLS, [json.dumps(WEATHER_TOOLS), None], dtype=pl.Utf8))
    out, _ = run(df)
    with_tools, without = tok.encode(conv, WEATHER_TOOLS), tok.encode(conv)
    rows = out.select(C.N_TOKENS, C.N_ASSISTANT_TOKENS, C.TURN_TOKENS).rows()
    assert rows == [(e.n_tokens, e.n_trained, e.turn_tokens) for e in (with_tools, without)]
    # the call is trained: its text and EOS, then the answer and EOS
    assert rows[1][1] == len(tok.tokenizer.encode(PARIS).ids) + 1 + len(tok.tokenizer.encode("Warm.").ids) + 1


def test_the_stage_writes_the_chat_template_of_its_profile(tmp_path, tok):
    from tests.test_tokenize_chat import hf_folder

    _, ctx = run(frame([[msg("user", "Hi"), msg("assistant", "Hello!")]]))
    assert ctx.artifacts["chat_template.jinja"] == tok.chat_template.encode("utf-8")
    assert "{%- generation -%}" in tok.chat_template
    assert ctx.manifest["tokens"]["chat_template"] == "chat_template.jinja"
    folder = hf_folder(tmp_path, tok, {}, ["<|user|>", "<|assistant|>", "<|end|>", "<|system|>"])
    _, ctx = run(frame([[msg("user", "Hi"), msg("assistant", "Hello!")]]),
                 "tokens.model=phi-3-mini-4k-instruct", f"tokens.tokenizer_path={folder}")
    from curator.model_profiles import PHI3_TEMPLATE

    assert ctx.artifacts["chat_template.jinja"] == PHI3_TEMPLATE.encode("utf-8")  # the model's own
    assert "no {% generation %} markers" in ctx.manifest["tokens"]["chat_template_note"]


def test_reject_policy_names_the_count(tok):
    long_conv = [SYSTEM, *EX1, *EX2]
    n = n_tokens(tok, long_conv)
    short = [msg("user", "Hi"), msg("assistant", "Hello!")]
    out, ctx = run(frame([long_conv, short]), f"tokens.context_length={n - 1}")
    assert out[C.REJECT_REASONS].to_list() == [["tokens.over_budget"], []]
    assert out[C.REJECT_DETAILS].to_list()[0] == [f"{n} tokens > {n - 1}-token context of mistral-7b-instruct-v0.2"]
    assert ctx.summaries["tokens"]["rejected_over_budget"] == 1 and ctx.summaries["tokens"]["kept_examples"] == 1


def test_an_example_of_exactly_the_context_is_kept_and_one_token_over_is_rejected(tok):
    conv = [SYSTEM, *EX1]
    n = n_tokens(tok, conv)
    at, ctx_at = run(frame([conv]), f"tokens.context_length={n}")
    assert at[C.REJECT_REASONS].to_list() == [[]]
    assert (ctx_at.summaries["tokens"]["over_budget"], ctx_at.summaries["tokens"]["kept_examples"]) == (0, 1)
    over, ctx_over = run(frame([conv]), f"tokens.context_length={n - 1}")
    assert over[C.REJECT_REASONS].to_list() == [["tokens.over_budget"]]
    assert (ctx_over.summaries["tokens"]["over_budget"], ctx_over.summaries["tokens"]["kept_examples"]) == (1, 0)


def test_truncate_drops_the_fewest_earliest_exchanges_and_keeps_the_system_prompt(tok):
    conv = [SYSTEM, *EX1, *EX2, *EX3]
    without_first = [SYSTEM, *EX2, *EX3]
    limit = n_tokens(tok, without_first)  # fits once EX1 is dropped, not before
    assert n_tokens(tok, conv) > limit
    out, ctx = run(frame([conv]), "tokens.policy=truncate", f"tokens.context_length={limit}")
    row = out.row(0, named=True)
    assert row["reject_reasons"] == []
    assert row["truncated_turns"] == 2
    assert row["messages"] == without_first
    assert row["n_tokens"] == limit and row["turn_tokens"] == tok.encode(without_first).turn_tokens
    assert ctx.summaries["tokens"]["truncated_examples"] == 1


def test_truncate_keeps_the_tools_in_the_first_kept_user_turn(tok):
    from tests.test_tokenize_chat import WEATHER_TOOLS

    conv, without_first = [SYSTEM, *EX1, *EX2, *EX3], [SYSTEM, *EX2, *EX3]
    limit = tok.encode(without_first, WEATHER_TOOLS).n_tokens
    df = frame([conv]).with_columns(pl.Series(C.TOOLS, [json.dumps(WEATHER_TOOLS)], dtype=pl.Utf8))
    out, _ = run(df, "tokens.policy=truncate", f"tokens.context_length={limit}")
    row = out.row(0, named=True)
    assert (row["reject_reasons"], row["messages"], row["n_tokens"]) == ([], without_first, limit)


def test_truncate_rejects_when_the_last_exchange_alone_is_too_long(tok):
    conv = [*EX1, *EX2]
    alone = n_tokens(tok, EX2)
    out, _ = run(frame([conv, EX2]), "tokens.policy=truncate", f"tokens.context_length={alone - 1}")
    assert out[C.REJECT_REASONS].to_list() == [["tokens.over_budget"], ["tokens.over_budget"]]
    details = [d[0] for d in out[C.REJECT_DETAILS].to_list()]
    assert details[0] == (
        f"{n_tokens(tok, conv)} tokens > {alone - 1}-token context of mistral-7b-instruct-v0.2; "
        f"its last exchange alone is {alone} tokens"
    )
    assert details[1].endswith("; it is a single exchange")
    assert out[C.MESSAGES].to_list()[0] == conv  # untouched when it cannot fit


def test_truncate_names_a_row_that_fits_only_without_its_trained_exchanges(tok):
    # the last exchange is weight 0: dropping enough to fit leaves nothing to train on
    untrained = [msg("user", "Second question?"), msg("assistant", "Second answer, also long enough to count.", weight=0)]
    conv = [*EX1, *untrained]
    limit = n_tokens(tok, untrained)
    out, _ = run(frame([conv]), "tokens.policy=truncate", f"tokens.context_length={limit}")
    assert out[C.REJECT_REASONS].to_list() == [["tokens.over_budget"]]
    assert out[C.REJECT_DETAILS].to_list()[0][0] == (
        f"{n_tokens(tok, conv)} tokens > {limit}-token context of mistral-7b-instruct-v0.2; "
        "it fits only by dropping every trained exchange"
    )


def test_throughput_and_prices_must_be_positive_numbers(tmp_path):
    with pytest.raises(CurateError, match=r"tokens.throughput"):
        load_config(None, ['tokens.throughput={"H100 80GB": -100}'])
    prices = yaml.safe_load(open(tokens_prices_default(), encoding="utf-8"))
    prices["gpus"][0]["peak_bf16_tflops"] = "989 TFLOPS"
    bad = tmp_path / "prices.yaml"
    bad.write_text(yaml.safe_dump(prices))
    with pytest.raises(CurateError, match=r"prices\.yaml: gpus\[0\]\.peak_bf16_tflops must be a number > 0 \(TFLOP/s\) or null, got '989 TFLOPS'"):
        load_prices(bad)


def test_report_policy_rejects_nothing(tok):
    conv = [*EX1, *EX2]
    out, ctx = run(frame([conv]), "tokens.policy=report", "tokens.context_length=10")
    assert out[C.REJECT_REASONS].to_list() == [[]]
    assert ctx.summaries["tokens"]["over_budget"] == 1 and ctx.summaries["tokens"]["rejected_over_budget"] == 0
    gate = tokens.gates(out, ctx)[0]
    assert (gate.name, gate.passed, gate.value, gate.threshold) == ("tokens.within_context", False, n_tokens(tok, conv), 10)


def test_no_trainable_when_every_answer_has_weight_zero():
    out, _ = run(frame([[msg("user", "q"), msg("assistant", "a", weight=0)], [msg("user", "q"), msg("assistant", "a", weight=1)]]))
    assert out[C.REJECT_REASONS].to_list() == [["tokens.no_trainable"], []]
    assert out[C.N_ASSISTANT_TOKENS].to_list()[0] == 0


def test_gate_passes_with_the_margin(tok):
    conv = [msg("user", "Hi"), msg("assistant", "Hello!")]
    out, ctx = run(frame([conv]))
    [gate] = tokens.gates(out.filter(C.alive()), ctx)
    n = n_tokens(tok, conv)
    assert gate.passed and gate.value == n and gate.threshold == 8192
    assert gate.message == f"all 1 kept examples fit the 8,192-token context (longest {n}, {8192 - n:,} spare)"
    assert ctx.summaries["tokens"]["cost_kept"]["tokens_seen_per_epoch"] == n


def test_gate_passes_a_longest_example_of_exactly_the_context_and_fails_one_token_over(tok):
    conv = [SYSTEM, *EX1]
    n = n_tokens(tok, conv)
    out, ctx = run(frame([conv]), f"tokens.context_length={n}")
    [gate] = tokens.gates(out.filter(C.alive()), ctx)
    assert (gate.passed, gate.value, gate.threshold) == (True, n, n)
    assert gate.message == f"all 1 kept examples fit the {n:,}-token context (longest {n:,}, 0 spare)"
    one_less = StageContext(config=load_config(None, [f"tokens.context_length={n - 1}"]))
    [gate] = tokens.gates(out.filter(C.alive()), one_less)
    assert (gate.passed, gate.value, gate.threshold) == (False, n, n - 1)
    assert gate.message == f"1 of 1 kept examples exceed the {n - 1:,}-token context (longest {n:,})"


def test_cost_estimate_is_tokens_times_epochs_over_throughput():
    prices = load_prices()
    est = estimate_cost(1_000_000, 400_000, 3, prices, n_params=7.24e9, throughput={"H100 80GB": 5000.0})
    by = {o["gpu"]: o for o in est["options"]}
    assert est["tokens_seen_total"] == 3_000_000 and est["tokens_trained_total"] == 1_200_000
    assert by["H100 80GB"]["hours"] == round(3_000_000 / 5000 / 3600, 3)
    assert by["H100 80GB"]["cost"] == round(3_000_000 / 5000 / 3600 * 2.99, 2)
    a100 = 312e12 * 0.35 / (6 * 7.24e9)
    assert by["RunPod A100 80GB"]["tokens_per_second"] == round(a100, 1)
    assert by["RunPod A100 80GB"]["price_per_hour"] == 1.89
    assert by["RunPod A100 80GB"]["cost"] == round(3_000_000 / a100 / 3600 * 1.89, 2)
    assert {o["gpu"] for o in est["options"]} == {"A100 40GB", "A100 80GB", "H100 80GB", "RunPod A100 80GB"}
    with pytest.raises(CurateError, match="unknown GPU option"):
        estimate_cost(1, 1, 1, prices, 7e9, throughput={"TPU": 1.0})


def test_prices_file_errors_name_file_and_field(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text("mfu: 0.3\nflops_per_token_per_param: 6\ngpus:\n  - name: X\n    price_per_hour: 1\n")
    with pytest.raises(CurateError, match=r"p.yaml: gpus\[0\] misses field price_source"):
        load_prices(bad)
    with pytest.raises(CurateError, match="not found"):
        load_prices(tmp_path / "none.yaml")


def test_unknown_policy_is_a_config_error():
    with pytest.raises(CurateError):
        load_config(None, ["tokens.policy=cut"])


# --- real data ----------------------------------------------------------------------------------------


def real_frame(*names: str) -> pl.DataFrame:
    convs, refs = [], []
    for name in names:
        for n, line in enumerate((CHAT_DATA / name).read_text(encoding="utf-8").splitlines(), 1):
            convs.append([msg(m["role"], m["content"]) for m in json.loads(line)["messages"]])
            refs.append(f"{name}:{n}")
    return frame(convs).with_columns(pl.Series(C.REF, refs))


OVER_8K = ["exercism_python.chat.jsonl", "exercism_typescript.chat.jsonl", "llamafactory_glaive_toolcall_en_demo.jsonl"]


def test_real_records_over_8k_are_rejected():
    out, ctx = run(real_frame(*OVER_8K))
    rejected = out.filter(~C.alive())
    assert rejected[C.REJECT_REASONS].to_list() == [["tokens.over_budget"]] * rejected.height
    assert sorted(rejected[C.N_TOKENS].to_list()) == sorted(
        out.filter(pl.col(C.N_TOKENS) > 8192)[C.N_TOKENS].to_list()
    )
    assert {r.split(".")[0].split("_")[1] for r in rejected[C.REF].to_list()} >= {"python", "typescript", "glaive"}
    assert max(rejected[C.N_TOKENS].to_list()) == 11_607
    assert ctx.summaries["tokens"]["max_tokens"] == 11_607


def test_real_glaive_truncated_to_1k_fits_and_keeps_whole_trailing_exchanges(tok):
    df = real_frame("llamafactory_glaive_toolcall_en_demo.jsonl")
    out, ctx = run(df, "tokens.policy=truncate", "tokens.context_length=1024")
    cut = out.filter(pl.col(C.TRUNCATED_TURNS) > 0)
    assert cut.height > 0 and ctx.summaries["tokens"]["truncated_examples"] == cut.height
    original = dict(zip(df[C.REF].to_list(), df[C.MESSAGES].to_list()))
    for row in cut.iter_rows(named=True):
        assert row["reject_reasons"] == [] and row["n_tokens"] <= 1024
        full = original[row["ref"]]
        assert full[-len(row["messages"]) :] == row["messages"]  # a suffix: whole exchanges (no system here)
        assert row["messages"][0]["role"] == "user"
        assert len(full) - len(row["messages"]) == row["truncated_turns"]
        assert tok.encode(row["messages"]).n_tokens == row["n_tokens"]
