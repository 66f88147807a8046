"""The model side on a tiny random-weight MistralForCausalLM with the real tokenizer and real records:
packing, LoRA, loss, gradient accumulation, adapter save/load and merge."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from finetune import modeling  # noqa: E402
from finetune.config import LoraSettings  # noqa: E402
from finetune.data import SplitRecord, collate, encode_records  # noqa: E402
from finetune.train import train_step  # noqa: E402
from tests.finetune_support import chat_tokenizer, one_torch_thread, real_records, tiny_mistral  # noqa: E402

NO_DROPOUT = LoraSettings(dropout=0.0)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    yield from one_torch_thread()


def _examples(file_name: str, n: int, start: int = 0):
    records = [SplitRecord(r["messages"], f"{file_name}:{i}") for i, r in enumerate(real_records(file_name, n, start))]
    examples, _ = encode_records(records, chat_tokenizer(), 2048)
    return examples


def _lora(seed: int = 0, settings: LoraSettings = NO_DROPOUT):
    model = modeling.add_lora(tiny_mistral(seed), settings, seed)
    # peft initialises B = 0 (the adapter starts as a no-op); give B values so the adapter matters in tests
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    return model


def test_packed_forward_equals_each_example_alone():
    examples = _examples("fastchat_dummy_conversation.jsonl", 3) + _examples("llamafactory_identity.jsonl", 2)
    model = _lora()
    packed = collate(examples, [list(range(len(examples)))], pad_id=0)
    with torch.no_grad():
        packed_logits = modeling.logits(model, packed)[0]
        start = 0
        for i, example in enumerate(examples):
            alone = modeling.logits(model, collate(examples, [[i]], pad_id=0))[0, : len(example.ids)]
            torch.testing.assert_close(packed_logits[start : start + len(example.ids)], alone, rtol=1e-4, atol=1e-4)
            start += len(example.ids)
    # and the packed loss is the sum of the per-example losses
    with torch.no_grad():
        total, n = modeling.loss_sum(model, packed, chunk_tokens=50)
        parts = [modeling.loss_sum(model, collate(examples, [[i]], pad_id=0), 50) for i in range(len(examples))]
    assert n == sum(p[1] for p in parts) == sum(e.n_trained for e in examples)
    torch.testing.assert_close(total, sum(p[0] for p in parts), rtol=1e-5, atol=1e-3)


def test_packing_without_position_resets_would_leak_across_examples():
    # The guard above is meaningful: the same row with plain 0..L-1 positions changes the second example's logits.
    examples = _examples("llamafactory_identity.jsonl", 2, start=16)
    model = _lora()
    packed = collate(examples, [[0, 1]], pad_id=0)
    leaky = dict(packed, position_ids=torch.arange(packed["input_ids"].shape[1]).unsqueeze(0))
    n0 = len(examples[0].ids)
    with torch.no_grad():
        good = modeling.logits(model, packed)[0, n0 : n0 + len(examples[1].ids)]
        bad = modeling.logits(model, leaky)[0, n0 : n0 + len(examples[1].ids)]
    assert (good - bad).abs().max() > 1e-2


def test_lora_weights_change_and_base_weights_do_not():
    examples = _examples("llamafactory_identity.jsonl", 2, start=16)
    model = modeling.add_lora(tiny_mistral(), LoraSettings(), 0)
    modeling.enable_gradient_checkpointing(model)
    model.train()
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    trainable = {k for k, v in model.named_parameters() if v.requires_grad}
    assert trainable and all("lora_" in k for k in trainable)
    targets = {k.split(".")[-4] for k in trainable if "lora_A" in k}
    assert targets == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    batch = collate(examples, [[0, 1]], pad_id=0)
    for _ in range(2):
        loss, n = modeling.loss_sum(model, batch, 64)
        (loss / n).backward()
        optimizer.step()
        optimizer.zero_grad()
    for k, v in model.named_parameters():
        if k in trainable:
            if "lora_B" in k or "lora_A" in k:
                assert not torch.equal(v, before[k]), k
        else:
            assert torch.equal(v, before[k]), k


def test_loss_falls_by_a_fifth_on_a_small_repeated_batch():
    examples = _examples("llamafactory_identity.jsonl", 2, start=8)
    model = modeling.add_lora(tiny_mistral(), LoraSettings(), 0)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    batch = collate(examples, [[0], [1]], pad_id=0)
    losses = []
    for _ in range(24):
        loss, n = modeling.loss_sum(model, batch, 256)
        (loss / n).backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item() / n)
    assert losses[-1] <= 0.8 * losses[0], (losses[0], losses[-1])


class _RecordingSGD(torch.optim.SGD):
    """SGD that keeps the gradients it stepped with (train_step clears them after the step)."""

    def step(self, closure=None):
        self.stepped_grads = [p.grad.detach().clone() for g in self.param_groups for p in g["params"]]
        return super().step(closure)


def _float64_lora():
    return _lora().double()


def _train_step(model, examples, micro_batches, max_grad_norm=None):
    """train_step on `micro_batches` (lists of rows of example indices) with SGD at a constant lr of 0.5."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = _RecordingSGD(params, lr=0.5)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    batches = [collate(examples, mb, pad_id=0) for mb in micro_batches]
    model.train()
    result = train_step(model, batches, optimizer, scheduler, max_grad_norm, 64, torch.device("cpu"), torch.float64)
    return result, optimizer.stepped_grads, [p.detach().clone() for p in params]


def _unequal_examples():
    # Examples of different lengths: a per-micro-batch mean would weight their tokens unequally.
    examples = _examples("llamafactory_identity.jsonl", 2, start=8) + _examples("fastchat_dummy_conversation.jsonl", 2)
    assert len({e.n_trained for e in examples}) == 4
    return examples


@pytest.mark.parametrize("max_grad_norm", [None, 1e-3], ids=["unclipped", "clipped"])
def test_micro_batches_accumulated_give_the_gradient_and_update_of_one_batch(max_grad_norm):
    examples = _unequal_examples()
    one, grads_one, weights_one = _train_step(_float64_lora(), examples, [[[0], [1], [2], [3]]], max_grad_norm)
    for split in ([[[0], [1]], [[2], [3]]], [[[0]], [[1]], [[2]], [[3]]], [[[0, 3]], [[1], [2]]]):
        many, grads_many, weights_many = _train_step(_float64_lora(), examples, split, max_grad_norm)
        assert many.n_target_tokens == one.n_target_tokens == sum(e.n_trained for e in examples)
        assert many.loss == pytest.approx(one.loss, rel=1e-6)
        assert many.grad_norm == pytest.approx(one.grad_norm, rel=1e-6)
        for a, b in zip(grads_one, grads_many):
            torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-12)
        for a, b in zip(weights_one, weights_many):
            torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-12)
    if max_grad_norm is not None:  # clipped as one global norm over the accumulated gradient
        assert one.grad_norm > max_grad_norm
        assert float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads_one]))) == pytest.approx(max_grad_norm)


def test_step_loss_and_gradient_are_the_token_mean_over_the_whole_step():
    # Reference: each example's logits alone, cross-entropy over every trained token of the step, one mean.
    examples = _unequal_examples()
    reference_model = _float64_lora()
    params = [p for p in reference_model.parameters() if p.requires_grad]
    total = sum(
        torch.nn.functional.cross_entropy(
            modeling.logits(reference_model, batch)[0][batch["targets"][0] != -100],
            batch["targets"][0][batch["targets"][0] != -100], reduction="sum",
        )
        for batch in (collate(examples, [[i]], pad_id=0) for i in range(len(examples)))
    )
    n_trained = sum(e.n_trained for e in examples)
    (total / n_trained).backward()
    expected_grads = [p.grad.clone() for p in params]

    # micro-batches of 1 and 3 examples: their token counts differ, so any other normalisation differs
    step, grads, _ = _train_step(_float64_lora(), examples, [[[2]], [[0], [1], [3]]])
    assert step.n_target_tokens == n_trained
    assert step.n_tokens == sum(len(e.ids) for e in examples)
    assert step.loss == pytest.approx(total.item() / n_trained, rel=1e-6)
    for expected, got in zip(expected_grads, grads):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-10)


def test_adapter_save_load_gives_identical_logits(tmp_path):
    from peft import PeftModel

    examples = _examples("llamafactory_identity.jsonl", 2, start=16)
    batch = collate(examples, [[0, 1]], pad_id=0)
    model = _lora()
    model.eval()
    with torch.no_grad():
        expected = modeling.logits(model, batch)
    model.save_pretrained(str(tmp_path / "adapter"))
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    loaded = PeftModel.from_pretrained(tiny_mistral(), str(tmp_path / "adapter")).eval()
    with torch.no_grad():
        got = modeling.logits(loaded, batch)
        plain = modeling.logits(tiny_mistral(), batch)
    assert torch.equal(got, expected)
    assert (plain - expected).abs().max() > 1e-3  # the adapter does change the output


def test_merged_model_logits_match_base_plus_adapter(tmp_path):
    from finetune.export import merge_adapter
    from tests.finetune_support import save_tiny_mistral
    from transformers import AutoModelForCausalLM

    base_dir = save_tiny_mistral(tmp_path / "base")
    model = modeling.add_lora(AutoModelForCausalLM.from_pretrained(str(base_dir)), NO_DROPOUT, 0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    model.eval()
    model.save_pretrained(str(tmp_path / "adapter"))
    (tmp_path / "adapter" / "tokenizer_config.json").write_text("{}")
    examples = _examples("llamafactory_identity.jsonl", 2, start=16)
    batch = collate(examples, [[0, 1]], pad_id=0)
    with torch.no_grad():
        expected = modeling.logits(model, batch)
    merge_adapter(tmp_path / "adapter", tmp_path / "merged32", dtype="float32")
    merged = AutoModelForCausalLM.from_pretrained(str(tmp_path / "merged32")).eval()
    assert not any("lora" in k for k in merged.state_dict())
    with torch.no_grad():
        got = modeling.logits(merged, batch)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    # the default export is bf16 weights
    merge_adapter(tmp_path / "adapter", tmp_path / "merged")
    bf16 = AutoModelForCausalLM.from_pretrained(str(tmp_path / "merged"), dtype="auto")
    assert bf16.model.layers[0].self_attn.q_proj.weight.dtype == torch.bfloat16


def test_packed_attention_guard_passes_here_and_refuses_a_transformers_that_leaks(monkeypatch):
    from transformers import masking_utils

    from curator.errors import CurateError

    model = tiny_mistral()
    before = torch.get_rng_state()
    modeling.check_packed_attention(model, torch.device("cpu"), torch.float32)
    assert torch.equal(torch.get_rng_state(), before)  # the run's RNG stream is untouched (resume reproduces)
    # transformers before 4.54 built no block-diagonal mask from position ids: sdpa then attends across examples
    monkeypatch.setattr(masking_utils, "find_packed_sequence_indices", lambda position_ids: None)
    with pytest.raises(CurateError, match=r"packed rows are not confined to their examples with transformers \S+ and "
                                          r"attn_implementation sdpa .*: install transformers>=4.56 or set packing: false"):
        modeling.check_packed_attention(model, torch.device("cpu"), torch.float32)


def _fake_cuda(monkeypatch, capability: tuple[int, int], emulated_bf16: bool = True):
    """CUDA queries answered as on a card of `capability`; is_bf16_supported() answers as torch does by default
    (True on 7.x too, counting emulation), so a resolver that asks it is caught out."""
    asked = []

    def get_device_capability(device=None):
        asked.append(device)
        return capability

    monkeypatch.setattr(torch.cuda, "get_device_capability", get_device_capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: emulated_bf16 or capability[0] >= 8)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    return asked


def test_auto_precision_is_bf16_only_on_a_configured_device_with_native_bf16(monkeypatch):
    asked = _fake_cuda(monkeypatch, (7, 5))  # T4: bf16 only emulated
    assert modeling.resolve_dtype("auto", torch.device("cuda:1")) == torch.float32
    assert torch.device("cuda:1") in asked  # the configured device, not the current one
    _fake_cuda(monkeypatch, (8, 0))  # A100
    assert modeling.resolve_dtype("auto", torch.device("cuda:1")) == torch.bfloat16
    assert modeling.resolve_dtype("fp32", torch.device("cuda:1")) == torch.float32
    assert modeling.resolve_dtype("auto", torch.device("cpu")) == torch.float32


def test_auto_attention_picks_flash_attention_only_for_half_precision(monkeypatch):
    import sys
    import types

    from finetune import attention

    monkeypatch.setitem(sys.modules, "flash_attn", types.ModuleType("flash_attn"))
    monkeypatch.setattr(attention, "flex_attention_runs", lambda device: False)
    cuda = torch.device("cuda")
    assert modeling.resolve_attn_implementation("auto", cuda, torch.float32) == "sdpa_segments"
    assert modeling.resolve_attn_implementation("auto", cuda, torch.bfloat16) == "flash_attention_2"
    assert modeling.resolve_attn_implementation("auto", cuda, torch.float16) == "flash_attention_2"
    assert modeling.resolve_attn_implementation("auto", torch.device("cpu"), torch.bfloat16) == "sdpa"
    assert modeling.resolve_attn_implementation("eager", cuda, torch.bfloat16) == "eager"
    # and the precision `auto` gives on a pre-Ampere card (fp32) never meets flash-attn
    _fake_cuda(monkeypatch, (7, 0))
    assert modeling.resolve_attn_implementation("auto", cuda, modeling.resolve_dtype("auto", cuda)) == "sdpa_segments"
