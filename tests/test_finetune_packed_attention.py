"""Packed rows under every attention implementation the trainer can pick: each example's logits equal the
example run alone, at 1, 2 and 4 rows per micro-batch; what `auto` picks; and the attention each computes.

CPU stand-ins, each running transformers' own code path for the implementation: flash_attention_2 through
test_finetune_flash_packing's exact varlen kernel; flex_attention through transformers' BlockMask with torch's
eager flex_attention instead of the compiled kernel (one test runs the compiled one in float32).
"""

from __future__ import annotations

import warnings

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from curator.errors import CurateError  # noqa: E402
from finetune import attention, modeling  # noqa: E402
from finetune.data import SplitRecord, collate, encode_records, flatten_rows, pack_best_fit  # noqa: E402
from finetune.evaluate import generate, streaming_perplexity  # noqa: E402
from tests.finetune_support import chat_tokenizer, one_torch_thread, real_records, tiny_mistral  # noqa: E402
from tests.test_finetune_flash_packing import _varlen, flash_standin  # noqa: E402,F401  (a fixture)

IMPLEMENTATIONS = ["sdpa", "eager", "sdpa_segments", "flex_attention", "flash_attention_2"]


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    yield from one_torch_thread()


@pytest.fixture
def eager_flex(monkeypatch):
    """transformers' flex path with torch's eager flex_attention (same BlockMask, scores not fused); the block
    masks it is given are kept in the returned list."""
    from torch.nn.attention.flex_attention import flex_attention
    from transformers.integrations import flex_attention as tf_flex

    seen = []

    def eager(query, key, value, training=False, **kwargs):
        seen.append(kwargs["block_mask"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "flex_attention called without torch.compile()": intended here
            return flex_attention(query, key, value, **kwargs)

    monkeypatch.setattr(tf_flex, "compile_friendly_flex_attention", eager)
    return seen


@pytest.fixture
def implementation(request, monkeypatch):
    """A tiny float64 Mistral running `request.param`, with its CPU stand-in set up."""
    attn = request.param
    if attn == "flash_attention_2":
        request.getfixturevalue("flash_standin")
    if attn == "flex_attention":
        request.getfixturevalue("eager_flex")
    attention.register_sdpa_segments()
    model = tiny_mistral().double()
    model.config._attn_implementation = attn
    return model


def _examples(n: int, start: int = 0):
    records = [SplitRecord(r["messages"], f"r{i}") for i, r in enumerate(real_records("llamafactory_identity.jsonl", n, start))]
    examples, _ = encode_records(records, chat_tokenizer(), 2048)
    return examples


def _alone(examples, i: int) -> torch.Tensor:
    """Logits of example i alone in its row, under plain sdpa."""
    model = tiny_mistral().double()
    with torch.no_grad():
        return modeling.logits(model, collate(examples, [[i]], pad_id=0))[0, : len(examples[i].ids)]


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS, indirect=True)
@pytest.mark.parametrize("rows", [1, 2, 4])
def test_packed_rows_equal_each_example_alone(implementation, rows):
    examples = _examples(3 * rows)
    packed = [[3 * r, 3 * r + 1, 3 * r + 2] for r in range(rows)]  # three examples per row, rows of unequal length
    # eager takes its softmax in float32 whatever the model's dtype; the others stay in float64
    tolerance = 1e-5 if implementation.config._attn_implementation == "eager" else 1e-9
    with torch.no_grad():
        got = modeling.logits(implementation, collate(examples, packed, pad_id=0))
    for r, row in enumerate(packed):
        start = 0
        for i in row:
            n = len(examples[i].ids)
            torch.testing.assert_close(got[r, start : start + n], _alone(examples, i), rtol=0, atol=tolerance)
            start += n


def test_compiled_flex_attention_confines_packed_rows_on_cpu():
    # the real path: transformers compiles flex_attention (float32 on CPU: its CPU kernels take no float64)
    examples = _examples(4)
    model = tiny_mistral()
    model.config._attn_implementation = "flex_attention"
    packed = [[0, 1], [2, 3]]
    with torch.no_grad():
        got = modeling.logits(model, collate(examples, packed, pad_id=0))
        model.config._attn_implementation = "sdpa"
        for r, row in enumerate(packed):
            start = 0
            for i in row:
                n = len(examples[i].ids)
                alone = modeling.logits(model, collate(examples, [[i]], pad_id=0))[0, :n]
                torch.testing.assert_close(got[r, start : start + n], alone, rtol=1e-4, atol=1e-4)
                start += n


@pytest.mark.parametrize("implementation", ["sdpa_segments", "flex_attention", "flash_attention_2"], indirect=True)
def test_evaluation_runs_the_same_attention_and_matches_sdpa_at_1_2_and_4_rows(implementation):
    examples = _examples(8)
    rows = [[2 * r, 2 * r + 1] for r in range(4)]
    cpu = torch.device("cpu")
    reference = streaming_perplexity(tiny_mistral().double(), examples, rows, 1, 0, 64, cpu, torch.float64)
    for per_batch in (1, 2, 4):
        got = streaming_perplexity(implementation, examples, rows, per_batch, 0, 64, cpu, torch.float64)
        assert got.n_tokens == reference.n_tokens > 0
        assert got.loss == pytest.approx(reference.loss, rel=1e-6)  # loss_sum takes the cross-entropy in float32


def test_sdpa_segments_runs_sdpa_once_per_segment_of_each_row(monkeypatch):
    from transformers.integrations import sdpa_attention

    attention.register_sdpa_segments()
    examples = _examples(5)
    model = tiny_mistral().double()
    model.config._attn_implementation = "sdpa_segments"
    lengths = []
    real = sdpa_attention.sdpa_attention_forward

    def counting(module, query, *args, **kwargs):
        lengths.append(query.shape[2])
        return real(module, query, *args, **kwargs)

    monkeypatch.setattr(sdpa_attention, "sdpa_attention_forward", counting)
    batch = collate(examples, [[0, 1, 2], [3, 4]], pad_id=0)
    with torch.no_grad():
        modeling.hidden_states(model, batch)
    per_layer = [n for lens in batch["seq_lens"] for n in lens]  # examples, then each row's padding
    assert lengths == per_layer * model.config.num_hidden_layers


def test_sdpa_segments_keeps_a_sliding_window_inside_each_example():
    attention.register_sdpa_segments()
    examples = _examples(2)
    torch.manual_seed(0)
    model = tiny_mistral().double()
    model.config.sliding_window = 4  # shorter than the examples: the window, not the example, bounds attention
    model.config._attn_implementation = "sdpa_segments"
    with torch.no_grad():
        got = modeling.logits(model, collate(examples, [[0, 1]], pad_id=0))
        model.config._attn_implementation = "sdpa"
        n0, n1 = len(examples[0].ids), len(examples[1].ids)
        alone = modeling.logits(model, collate(examples, [[1]], pad_id=0))[0, :n1]
        unwindowed = modeling.logits(tiny_mistral().double(), collate(examples, [[1]], pad_id=0))[0, :n1]
    torch.testing.assert_close(got[0, n0 : n0 + n1], alone, rtol=1e-9, atol=1e-9)
    assert (alone - unwindowed).abs().max() > 0.1  # the window did change the result


def test_generation_under_sdpa_segments_equals_sdpa():
    # left-padded prompts with a cache: the mask and the cache go to transformers' SDPA as they are
    attention.register_sdpa_segments()
    tokenizer = chat_tokenizer()
    prompts = [e.ids[:12] for e in _examples(3)] + [_examples(1)[0].ids[:5]]
    cpu = torch.device("cpu")
    model = tiny_mistral()
    want = generate(model, prompts, tokenizer, 6, 4, cpu, torch.float32)
    model.config._attn_implementation = "sdpa_segments"
    assert generate(model, prompts, tokenizer, 6, 4, cpu, torch.float32) == want


@pytest.mark.parametrize("implementation", ["sdpa_segments", "flex_attention", "flash_attention_2"], indirect=True)
def test_guard_passes_each_confined_implementation_at_1_2_and_4_rows(implementation):
    for rows in (1, 2, 4):
        modeling.check_packed_attention(implementation, torch.device("cpu"), torch.float64, micro_batch_rows=rows)


def test_guard_refuses_sdpa_segments_that_miss_example_boundaries(monkeypatch):
    attention.register_sdpa_segments()
    model = tiny_mistral()
    model.config._attn_implementation = "sdpa_segments"
    modeling.check_packed_attention(model, torch.device("cpu"), torch.float32, micro_batch_rows=2)
    # one segment per row: causal over the whole row, as if the position ids were not read
    monkeypatch.setattr(attention, "segment_bounds", lambda pos: [[(0, pos.shape[1])]] * pos.shape[0])
    with pytest.raises(CurateError, match=r"attn_implementation sdpa_segments at 2 row\(s\) per micro-batch"):
        modeling.check_packed_attention(model, torch.device("cpu"), torch.float32, micro_batch_rows=2)


@pytest.mark.usefixtures("flash_standin")
@pytest.mark.parametrize("rows", [1, 2, 4])
def test_flash_attention_gets_the_collators_boundaries_at_every_rows_per_micro_batch(monkeypatch, rows):
    from transformers import modeling_flash_attention_utils as fau

    seen = []

    def recording(q, k, v, cu_seqlens_q, cu_seqlens_k, *args, **kwargs):
        seen.append(cu_seqlens_q.tolist())
        return _varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, *args, **kwargs)

    process = fau._lazy_define_process_function(recording)
    monkeypatch.setattr(fau, "lazy_import_flash_attention", lambda *a, **k: ((None, recording, None, None, None), (process, dict)))
    examples = _examples(3 * rows)
    model = tiny_mistral().double()
    model.config._attn_implementation = "flash_attention_2"
    batch = collate(examples, [[3 * r, 3 * r + 1, 3 * r + 2] for r in range(rows)], pad_id=0)
    with torch.no_grad():
        modeling.hidden_states(model, batch)
    bounds = [0]
    for n in flatten_rows(batch)["seq_lens"][0]:
        bounds.append(bounds[-1] + n)
    assert seen == [bounds] * model.config.num_hidden_layers


def test_flex_block_mask_computes_exactly_the_blocks_counted(eager_flex):
    # long rows of real examples: many 128-token blocks, examples straddling block edges
    examples = _examples(40)
    rows = pack_best_fit([len(e.ids) for e in examples], 1024)[:2]
    batch = collate(examples, rows, pad_id=0)
    model = tiny_mistral()
    model.config._attn_implementation = "flex_attention"
    with torch.no_grad():
        modeling.hidden_states(model, batch)
    mask = eager_flex[0]
    assert mask.BLOCK_SIZE == (attention.FLEX_BLOCK, attention.FLEX_BLOCK)
    computed = (mask.kv_num_blocks + mask.full_kv_num_blocks).sum(dim=(1, 2)).tolist()
    width = batch["input_ids"].shape[1]
    segments = attention.rows_segments(batch["seq_lens"], width)
    # seq_lens holds the padding as a segment already: rows_segments adds none
    assert segments == batch["seq_lens"]
    assert computed == [attention.flex_blocks(s) for s in segments]
    assert max(computed) < (-(-width // 128)) ** 2  # sparser than the dense row


def test_attention_pair_counts_of_a_small_layout():
    seq_lens = [[3, 2], [4]]  # two rows padded to width 6: padding segments of 1 and 2
    assert attention.rows_segments(seq_lens, 6) == [[3, 2, 1], [4, 2]]
    assert attention.pairs_needed(seq_lens) == 6 + 3 + 10
    assert attention.pairs_sdpa_full_mask(2, 6) == 72
    assert attention.pairs_per_segment(seq_lens, 6) == 6 + 3 + 1 + 10 + 3
    # blocks of 2: row [3, 2, 1] -> query blocks {0,1}: kv block 0; {2,3}: 0, 1; {4,5}: 1 (4 reaches 3), 2
    assert attention.flex_blocks([3, 2, 1], block=2) == 1 + 2 + 2
    assert attention.flex_blocks([6], block=2) == 1 + 2 + 3
    assert attention.pairs_flex([[6]], 6, block=2) == 6 * 4


def test_segment_bounds_restart_where_positions_do():
    pos = torch.tensor([[0, 1, 2, 0, 1, 0], [0, 1, 2, 3, 0, 1]])
    assert attention.segment_bounds(pos) == [[(0, 3), (3, 5), (5, 6)], [(0, 4), (4, 6)]]


def _fake_cuda_flash(monkeypatch, installed: bool):
    import sys
    import types

    if installed:
        monkeypatch.setitem(sys.modules, "flash_attn", types.ModuleType("flash_attn"))
    else:
        monkeypatch.setitem(sys.modules, "flash_attn", None)  # import raises ImportError


@pytest.mark.parametrize("flash, flex, dtype, expected", [
    (True, True, torch.bfloat16, "flash_attention_2"),
    (True, True, torch.float16, "flash_attention_2"),
    (True, True, torch.float32, "flex_attention"),  # flash-attn takes no float32
    (False, True, torch.bfloat16, "flex_attention"),
    (False, False, torch.bfloat16, "sdpa_segments"),
    (True, False, torch.float32, "sdpa_segments"),
])
def test_auto_attention_on_cuda_computes_only_within_examples(monkeypatch, flash, flex, dtype, expected):
    _fake_cuda_flash(monkeypatch, flash)
    monkeypatch.setattr(attention, "flex_attention_runs", lambda device: flex)
    assert modeling.resolve_attn_implementation("auto", torch.device("cuda"), dtype) == expected


def test_auto_attention_on_cpu_is_sdpa_and_a_setting_is_kept(monkeypatch):
    _fake_cuda_flash(monkeypatch, True)
    monkeypatch.setattr(attention, "flex_attention_runs", lambda device: True)
    assert modeling.resolve_attn_implementation("auto", torch.device("cpu"), torch.bfloat16) == "sdpa"
    assert modeling.resolve_attn_implementation("sdpa", torch.device("cuda"), torch.bfloat16) == "sdpa"
    assert modeling.resolve_attn_implementation("eager", torch.device("cuda"), torch.bfloat16) == "eager"


def test_flex_attention_runs_only_on_cuda_with_triton(monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    assert not attention.flex_attention_runs(torch.device("cpu"))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object() if name == "triton" else find_spec(name))
    assert attention.flex_attention_runs(torch.device("cuda"))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "triton" else find_spec(name))
    assert not attention.flex_attention_runs(torch.device("cuda"))


def test_flex_attention_is_refused_for_training_on_cpu():
    modeling.check_attention_trains("flex_attention", torch.device("cuda"))
    modeling.check_attention_trains("sdpa_segments", torch.device("cpu"))
    with pytest.raises(CurateError, match=r"attn_implementation: flex_attention has no backward on cpu in torch \S+; "
                                          r"set attn_implementation: sdpa_segments \(or auto\)"):
        modeling.check_attention_trains("flex_attention", torch.device("cpu"))


def test_sdpa_segments_trains_packed_rows_with_the_gradients_of_sdpa():
    attention.register_sdpa_segments()
    examples = _examples(4)
    batch = collate(examples, [[0, 1], [2, 3]], pad_id=0)
    grads = {}
    for attn in ("sdpa", "sdpa_segments"):
        model = tiny_mistral().double()
        model.config._attn_implementation = attn
        loss, _ = modeling.loss_sum(model, batch, 64)
        loss.backward()
        grads[attn] = model.model.layers[0].self_attn.q_proj.weight.grad
    torch.testing.assert_close(grads["sdpa_segments"], grads["sdpa"], rtol=1e-9, atol=1e-12)


@pytest.mark.usefixtures("flash_standin")
@pytest.mark.parametrize("rows, refused", [(1, False), (2, True)])
def test_start_of_run_guard_probes_the_configured_rows_per_micro_batch(monkeypatch, rows, refused):
    from finetune.config import TrainConfig
    from finetune.train import Split, _ready_model

    # flash-attention without the flattening: one row is confined, two rows leak, so only a guard that runs the
    # configured rows per micro-batch refuses the second run
    monkeypatch.setattr(modeling, "needs_flat_rows", lambda attn: False)
    model = tiny_mistral().double()
    model.config._attn_implementation = "flash_attention_2"
    config = TrainConfig(model="tiny", device="cpu", precision="fp32", micro_batch_rows=rows, context_length=512)
    train = Split([], _examples(2), {})
    if refused:
        with pytest.raises(CurateError, match=r"attn_implementation flash_attention_2 at 2 row\(s\) per micro-batch"):
            _ready_model(config, model, train, torch.device("cpu"))
    else:
        _ready_model(config, model, train, torch.device("cpu"))
