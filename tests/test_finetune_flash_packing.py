"""Packed rows under transformers' flash-attention code path, on CPU.

transformers runs its real flash-attention path (integrations.flash_attention -> _flash_attention_forward,
with its `_is_packed_sequence` / `cu_seqlens` logic); only the CUDA kernels it would import are replaced by an
exact pure-torch stand-in that attends within each `cu_seqlens` segment, as flash_attn_varlen_func does.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from finetune import modeling  # noqa: E402
from finetune.data import SplitRecord, collate, encode_records, flatten_rows  # noqa: E402
from finetune.evaluate import streaming_perplexity  # noqa: E402
from tests.finetune_support import chat_tokenizer, one_torch_thread, real_records, tiny_mistral  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    yield from one_torch_thread()


def _varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q=None, max_seqlen_k=None, dropout_p=0.0,
            softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0, deterministic=False):
    """flash_attn_varlen_func in pure torch: causal attention inside each cu_seqlens segment, GQA heads repeated."""
    out = torch.empty_like(q)
    rep = q.shape[1] // k.shape[1]
    for s, e in zip(cu_seqlens_q[:-1].tolist(), cu_seqlens_q[1:].tolist()):
        qs, ks, vs = (x[s:e].transpose(0, 1) for x in (q, k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)))
        out[s:e] = torch.nn.functional.scaled_dot_product_attention(
            qs, ks, vs, is_causal=causal, scale=softmax_scale
        ).transpose(0, 1)
    return out


def _dense(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0,
           deterministic=False):
    """flash_attn_func: each row of the batch is one sequence (no boundaries inside a row)."""
    b, n = q.shape[:2]
    cu = torch.arange(0, b * n + 1, n)
    flat = [x.reshape(b * n, *x.shape[2:]) for x in (q, k, v)]
    return _varlen(*flat, cu, cu, n, n, dropout_p, softmax_scale, causal).view(q.shape)


@pytest.fixture
def flash_standin(monkeypatch):
    from transformers import modeling_flash_attention_utils as fau

    import transformers

    process = fau._lazy_define_process_function(_varlen)
    # the guard builds its probe with attn_implementation="flash_attention_2", which loading refuses without the
    # flash_attn package: build it with sdpa, then switch the forward to the flash path as the test model does
    from_config = transformers.AutoModelForCausalLM.from_config

    def probe_from_config(config, attn_implementation=None, **kwargs):
        model = from_config(config, attn_implementation="sdpa", **kwargs)
        model.config._attn_implementation = attn_implementation
        return model

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_config", probe_from_config)
    monkeypatch.setattr(fau, "lazy_import_flash_attention", lambda *a, **k: ((_dense, _varlen, None, None, None), (process, dict)))


def _flash_mistral():
    model = tiny_mistral().double()
    model.config._attn_implementation = "flash_attention_2"
    return model


def _examples(n: int):
    records = [SplitRecord(r["messages"], f"r{i}") for i, r in enumerate(real_records("llamafactory_identity.jsonl", n))]
    examples, _ = encode_records(records, chat_tokenizer(), 2048)
    return examples


@pytest.mark.parametrize("rows", [1, 2, 4])
def test_packed_rows_under_flash_attention_equal_each_example_alone(flash_standin, rows):
    examples = _examples(2 * rows)
    model = _flash_mistral()
    packed = [[2 * r, 2 * r + 1] for r in range(rows)]  # two examples per row, `rows` rows per micro-batch
    with torch.no_grad():
        got = modeling.logits(model, collate(examples, packed, pad_id=0))
        for r, row in enumerate(packed):
            start = 0
            for i in row:
                n = len(examples[i].ids)
                alone = modeling.logits(model, collate(examples, [[i]], pad_id=0))[0, :n]
                torch.testing.assert_close(got[r, start : start + n], alone, rtol=1e-9, atol=1e-9)
                start += n


def test_flash_attention_without_flattening_leaks_across_examples_in_2_rows(flash_standin, monkeypatch):
    # what the flattening prevents: transformers confines packed examples under flash-attention in ONE row only
    examples = _examples(4)
    model = _flash_mistral()
    batch = collate(examples, [[0, 1], [2, 3]], pad_id=0)
    n0, n1 = len(examples[0].ids), len(examples[1].ids)
    with torch.no_grad():
        good = modeling.logits(model, batch)[0, n0 : n0 + n1]
        monkeypatch.setattr(modeling, "needs_flat_rows", lambda attn: False)
        bad = modeling.logits(model, batch)[0, n0 : n0 + n1]
    assert (good - bad).abs().max() > 0.1


def test_flatten_rows_makes_one_row_whose_positions_restart_at_each_example():
    examples = _examples(3)
    batch = collate(examples, [[0, 1], [2]], pad_id=0)
    flat = flatten_rows(batch)
    width = batch["input_ids"].shape[1]
    lens = [len(e.ids) for e in examples]
    assert flat["input_ids"].shape == flat["position_ids"].shape == flat["targets"].shape == (1, 2 * width)
    expected_positions = (list(range(lens[0])) + list(range(lens[1])) + list(range(width - lens[0] - lens[1]))
                          + list(range(lens[2])) + list(range(width - lens[2])))
    assert flat["position_ids"][0].tolist() == expected_positions
    assert flat["input_ids"][0, : lens[0] + lens[1]].tolist() == examples[0].ids + examples[1].ids
    assert flat["seq_lens"] == [[lens[0], lens[1], width - lens[0] - lens[1], lens[2], width - lens[2]]]
    assert flat["n_target_tokens"] == batch["n_target_tokens"]


def test_flash_guard_checks_the_configured_rows_per_micro_batch(flash_standin, monkeypatch):
    from curator.errors import CurateError

    model = _flash_mistral()
    for rows in (1, 2, 4):
        modeling.check_packed_attention(model, torch.device("cpu"), torch.float64, micro_batch_rows=rows)
    # without the flattening, one row is still confined but two rows are not, and the guard says so
    monkeypatch.setattr(modeling, "needs_flat_rows", lambda attn: False)
    modeling.check_packed_attention(model, torch.device("cpu"), torch.float64, micro_batch_rows=1)
    with pytest.raises(CurateError, match=r"attn_implementation flash_attention_2 at 2 row\(s\) per micro-batch"):
        modeling.check_packed_attention(model, torch.device("cpu"), torch.float64, micro_batch_rows=2)


def test_evaluation_under_flash_attention_is_the_same_at_1_and_4_rows(flash_standin):
    examples = _examples(8)
    model = _flash_mistral()
    rows = [[2 * r, 2 * r + 1] for r in range(4)]
    cpu = torch.device("cpu")
    one = streaming_perplexity(model, examples, rows, 1, 0, 64, cpu, torch.float64)
    four = streaming_perplexity(model, examples, rows, 4, 0, 64, cpu, torch.float64)
    assert one.n_tokens == four.n_tokens > 0
    assert four.loss == pytest.approx(one.loss, rel=1e-6)  # loss_sum takes the cross-entropy in float32
