"""QLoRA (`quantization: nf4 | int8`) on a tiny random Mistral: the base quantized by bitsandbytes on CPU, the
adapter trained, saved, reloaded on the float32 base and merged into the unquantized base."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")
bnb = pytest.importorskip("bitsandbytes")

from click.testing import CliRunner  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from curator.cli import cli  # noqa: E402
from curator.errors import CurateError  # noqa: E402
from finetune import modeling  # noqa: E402
from finetune.config import TrainConfig  # noqa: E402
from finetune.export import load_adapter_model  # noqa: E402
from finetune.train import prepare_split, run_training  # noqa: E402
from tests.finetune_support import (  # noqa: E402
    chat_tokenizer,
    one_torch_thread,
    real_records,
    save_tiny_mistral,
    tiny_train_settings,
    write_curated_folder,
)

CPU = torch.device("cpu")


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    yield from one_torch_thread()


def _config(model_dir, quantization: str) -> TrainConfig:
    return TrainConfig.model_validate(tiny_train_settings(
        model_dir, quantization=quantization, context_length=256, max_steps=3, save_every_steps=None,
        eval={"every_steps": None, "bleu_samples": 0, "max_new_tokens": 4, "compare_sheet_samples": 0},
    ))


@pytest.fixture(scope="module")
def qlora(tmp_path_factory):
    """A 3-step nf4 run: the training model as it ended, and the adapter folder."""
    root = tmp_path_factory.mktemp("qlora")
    base = save_tiny_mistral(root / "base")
    config = _config(base, "nf4")
    tokenizer = chat_tokenizer()
    train = prepare_split(_jsonl(root / "train.jsonl", real_records("llamafactory_identity.jsonl", 12)), tokenizer, 256)
    val = prepare_split(_jsonl(root / "val.jsonl", real_records("llamafactory_identity.jsonl", 2, start=40)), tokenizer, 256)
    model = modeling.build_training_model(config, CPU, torch.float32)
    initial = {k: p.detach().clone() for k, p in model.named_parameters() if p.requires_grad}
    result = run_training(config, train, val, tokenizer, root / "adapter", show_progress=False, model=model)
    return {"root": root, "base": base, "model": model, "initial": initial, "adapter": root / "adapter",
            "result": result}


def _jsonl(path, records):
    import json

    path.write_text("".join(json.dumps({"messages": r["messages"]}) + "\n" for r in records), encoding="utf-8")
    return path


def test_nf4_base_is_4bit_normalfloat_with_double_quant_and_only_the_adapter_trains(qlora):
    model = qlora["model"]
    q_proj = model.get_base_model().model.layers[0].self_attn.q_proj
    layer = q_proj.base_layer
    assert type(layer) is bnb.nn.Linear4bit
    assert layer.weight.dtype == torch.uint8 and layer.weight.quant_type == "nf4"
    assert layer.weight.quant_state.nested  # double quantization of the absmax scales
    assert layer.compute_dtype == torch.float32  # the run's dtype on CPU (precision fp32)
    trainable = {k for k, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in k for k in trainable)
    # prepare_model_for_kbit_training: what stays unquantized is float32
    assert model.get_base_model().model.norm.weight.dtype == torch.float32
    assert qlora["result"].steps == 3 and all(loss == loss for loss in qlora["result"].train_losses)


def test_nf4_adapter_loads_on_the_float32_base_with_the_trained_weights_and_generates(qlora):
    trained = {k: p.detach() for k, p in qlora["model"].named_parameters() if p.requires_grad}
    saved = load_file(str(qlora["adapter"] / "adapter_model.safetensors"))
    loaded = load_adapter_model(qlora["adapter"])
    assert not any(isinstance(m, (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)) for m in loaded.modules())
    got = {k: p.detach() for k, p in loaded.named_parameters() if "lora_" in k}
    assert set(got) == set(trained) and len(saved) == len(trained)
    for name, weight in trained.items():
        assert torch.equal(got[name], weight), name
    changed = [k for k in trained if "lora_B" in k and not torch.equal(trained[k], qlora["initial"][k])]
    assert changed  # lora_B starts at zero: training moved it
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    prompt = torch.tensor([[1, 733, 16289, 28793, 22557, 733, 28748, 16289, 28793]])
    with torch.no_grad():
        out = loaded.generate(input_ids=prompt, max_new_tokens=4, min_new_tokens=4, do_sample=False)
        with loaded.disable_adapter():
            plain = loaded(input_ids=prompt).logits
        adapted = loaded(input_ids=prompt).logits
    assert out.shape == (1, prompt.shape[1] + 4) and torch.equal(out[:, : prompt.shape[1]], prompt)
    assert (adapted - plain).abs().max() > 1e-4  # the adapter changes the float32 base's output


def test_export_merge_of_an_nf4_adapter_merges_into_the_unquantized_base_in_bf16(qlora):
    merged_dir = qlora["root"] / "merged"
    result = CliRunner().invoke(cli, ["export", str(qlora["adapter"]), "--merge", str(merged_dir)])
    assert result.exit_code == 0, result.output
    assert "note: adapter trained on a nf4 base; merging it into the unquantized base in bfloat16" in result.output
    merged = load_file(str(merged_dir / "model.safetensors"))
    base = load_file(str(qlora["base"] / "model.safetensors"))
    adapter = load_file(str(qlora["adapter"] / "adapter_model.safetensors"))
    prefix = "base_model.model.model.layers.0.self_attn.q_proj"
    delta = (adapter[f"{prefix}.lora_B.weight"] @ adapter[f"{prefix}.lora_A.weight"]) * (32 / 16)
    want = (base["model.layers.0.self_attn.q_proj.weight"] + delta).to(torch.bfloat16)
    assert torch.equal(merged["model.layers.0.self_attn.q_proj.weight"], want)
    assert all(t.dtype == torch.bfloat16 for t in merged.values()) and set(merged) == set(base)


def test_int8_base_is_llm_int8_and_a_step_reaches_the_adapter(tmp_path):
    config = _config(save_tiny_mistral(tmp_path / "base"), "int8")
    model = modeling.build_training_model(config, CPU, torch.float32)
    layer = model.get_base_model().model.layers[0].mlp.down_proj.base_layer
    assert type(layer) is bnb.nn.Linear8bitLt and layer.weight.dtype == torch.int8
    batch = {"input_ids": torch.tensor([[1, 50, 60, 70, 80]]), "position_ids": torch.arange(5)[None],
             "targets": torch.tensor([[50, 60, 70, 80, -100]])}
    loss, n = modeling.loss_sum(model, batch, 64)
    loss.backward()
    grads = [p.grad for k, p in model.named_parameters() if "lora_A" in k]
    assert n == 4 and grads and all(g is not None for g in grads)


def test_quantization_without_bitsandbytes_is_one_line_naming_the_extra(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name, *a))
    records = real_records("llamafactory_identity.jsonl", 4)
    curated = write_curated_folder(tmp_path / "out", records[:3], records[3:])
    result = CliRunner().invoke(cli, [
        "train", str(curated), "--output", str(tmp_path / "a"), "--model", str(save_tiny_mistral(tmp_path / "m")),
        "-s", "quantization=nf4", "-q",
    ])
    assert result.exit_code == 1
    assert result.output == (
        "error: quantization: nf4 needs bitsandbytes: pip install 'curator[train]' (or set quantization: none)\n"
    )


def test_a_bitsandbytes_that_cannot_run_here_is_one_line(monkeypatch):
    def no_kernel(self, *args, **kwargs):
        raise RuntimeError("no 4-bit kernel for this device\ndetails ...")

    monkeypatch.setattr(bnb.nn.Linear4bit, "forward", no_kernel)
    with pytest.raises(CurateError) as info:
        modeling.check_quantization_runs("nf4", CPU, torch.float32)
    assert str(info.value) == (
        f"quantization: nf4 does not run on cpu with bitsandbytes {bnb.__version__} and torch {torch.__version__}: "
        "no 4-bit kernel for this device; set quantization: none"
    )


def test_quantization_is_a_documented_config_key_that_defaults_to_none():
    assert TrainConfig().quantization == "none"
    with pytest.raises(Exception, match="'none', 'nf4' or 'int8'"):
        TrainConfig.model_validate({"quantization": "fp4"})


def test_an_evaluation_between_steps_leaves_the_gradients_as_they_were(tmp_path):
    # bitsandbytes repacks 4-bit weights for a CPU inference kernel without backward at the first eval forward
    config = TrainConfig.model_validate(
        tiny_train_settings(save_tiny_mistral(tmp_path / "base"), quantization="nf4", lora={"dropout": 0.0})
    )
    batch = {"input_ids": torch.tensor([[1, 50, 60, 70, 80]]), "position_ids": torch.arange(5)[None],
             "targets": torch.tensor([[50, 60, 70, 80, -100]])}

    def first_layer_grads(evaluate_first: bool) -> dict:
        model = modeling.build_training_model(config, CPU, torch.float32)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.fill_(0.01)  # non-zero, so gradients reach lora_A
        if evaluate_first:
            model.eval()
            with torch.no_grad():
                modeling.loss_sum(model, batch, 64)
            model.train()
        modeling.loss_sum(model, batch, 64)[0].backward()
        return {k: p.grad for k, p in model.named_parameters() if "layers.0." in k and "lora_A" in k}

    fresh, after_eval = first_layer_grads(False), first_layer_grads(True)
    assert len(fresh) == 7
    for name, grad in fresh.items():
        assert torch.equal(after_eval[name], grad), name
