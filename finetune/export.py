"""Export: the PEFT adapter with its tokenizer and chat template, and a merged bf16 model.

The adapter folder is what vLLM (`--enable-lora --lora-modules name=DIR`) and TGI (`LORA_ADAPTERS=DIR`) load:
`adapter_config.json` + `adapter_model.safetensors` as written by peft's `save_pretrained` (the base model named
by an absolute path when it is a local folder), next to the files of the tokenizer the run trained with
(`tokenizer.json`, `tokenizer_config.json` carrying the chat template) so a server renders and tokenizes prompts
into the ids the model was trained on: for the built-in Mistral profile, AutoTokenizer's apply_chat_template
equals curator.tokenize_chat's ids and trained mask on every record of ../shared/data/chat and on tool-call
records, indented code included (tests/test_chat_template.py). The one exception by construction: message text
holding "<s>", "</s>" or "<unk>" literally, which training encodes as text and a Hugging Face tokenizer parses as
the special token. `curate export-template OUT DIR` writes the same tokenizer files with OUT/chat_template.jinja
(`export_template`), without an adapter. `curate export ADAPTER_DIR --merge OUT_DIR` folds the adapter into the base weights
(peft `merge_and_unload`, W + (alpha / r) B A) and saves a plain transformers model in bf16 that needs no
peft at inference. Base models and tokenizers load as in training: trust_remote_code=False, and a folder that
needs its own Python code refused (finetune.modeling.refuse_folder_code).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from curator.errors import CurateError
from curator.tokenize_chat import MISTRAL_V1_CHAT_TEMPLATE

# Files of a transformers tokenizer folder, copied as they are from a tokenizer folder.
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
    "added_tokens.json",
)

# The chat template of the adapter folder for the `mistral-v1` chat format: the conversation rendered as
# curator.tokenize_chat encodes it for training (its module docstring is the one description of the rendering;
# the template lives beside the code it mirrors). Not Mistral-7B-Instruct-v0.2's own template: that one refuses
# tools, tool calls and tool turns, system messages past the first and runs of one role, all of which training
# encodes, and it has no {% generation %} markers for the trained tokens.
CURATOR_MISTRAL_V1_CHAT_TEMPLATE = MISTRAL_V1_CHAT_TEMPLATE


def _copy_tokenizer_folder(source: Path, out_dir: Path) -> list[str]:
    copied = []
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, out_dir / name)
            copied.append(name)
    return copied


def save_tokenizer(tokenizer, base_model: str | None, out_dir: Path) -> list[str]:
    """Tokenizer files with a chat template into out_dir; returns the file names written.

    The files are those of the tokenizer the run trained with, so that a server tokenizes as training did:
    for the built-in Mistral profile (`mistral-v1` chat format), the SentencePiece model with a tokenizer.json
    equal to it and the template that renders training's encoding (see `_save_chat_tokenizer`); for a profile
    read from a Hugging Face tokenizer folder, that folder's files. Only a ChatTokenizer without files of its
    own falls back to the base model's tokenizer (its folder, then the cached hub tokenizer).
    """
    written = _save_chat_tokenizer(tokenizer, out_dir)
    if not written and base_model and Path(base_model).is_dir():
        written = _copy_tokenizer_folder(Path(base_model), out_dir)
    if not written and base_model:
        try:
            from transformers import AutoTokenizer

            from finetune.modeling import refuse_folder_code

            refuse_folder_code(base_model)
            AutoTokenizer.from_pretrained(base_model, local_files_only=True, trust_remote_code=False).save_pretrained(
                str(out_dir)
            )
            written = [p.name for p in out_dir.iterdir() if p.name in TOKENIZER_FILES]
        except (OSError, ValueError):
            written = []
    if not written:
        raise CurateError(
            f"no tokenizer files for profile {tokenizer.profile.name}: give --model a folder that holds its tokenizer"
        )
    config_path = out_dir / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    has_template = bool(config.get("chat_template")) or (out_dir / "chat_template.jinja").is_file()
    if not has_template:  # the template that renders what training encoded: the profile's, not Mistral's
        config["chat_template"] = tokenizer.chat_template or CURATOR_MISTRAL_V1_CHAT_TEMPLATE
        config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")
        if "tokenizer_config.json" not in written:
            written.append("tokenizer_config.json")
    return written


def mistral_v1_tokenizer_json():
    """The `tokenizers` Tokenizer of tokenizer.json for the built-in Mistral profile.

    Its model (BPE vocab, merges, byte fallback) and decoder are those the trainer encodes with
    (`curator.tokenize_chat.tokenizer_from_sentencepiece`); for whole strings it adds what SentencePiece and
    transformers' Llama tokenizers do: <unk>, <s>, </s> as special tokens (so "<s>" in a chat template is the
    BOS id), the dummy prefix "▁" at the start of the text only (Metaspace, prepend_scheme "first", no split:
    after <s> or </s> the template's own space is the prefix), and <s> before a plain text (post-processor).
    """
    from tokenizers import AddedToken, pre_tokenizers, processors

    from curator.tokenize_chat import mistral_v1_model_file, tokenizer_from_sentencepiece

    tok = tokenizer_from_sentencepiece(mistral_v1_model_file())
    tok.normalizer = None
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in ("<unk>", "<s>", "</s>")])
    tok.post_processor = processors.TemplateProcessing(
        single="<s>:0 $A:0", pair="<s>:0 $A:0 <s>:1 $B:1", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
    return tok


def _save_chat_tokenizer(tokenizer, out_dir: Path) -> list[str]:
    """The ChatTokenizer's own files: its profile's tokenizer folder, or for the built-in Mistral profile the
    SentencePiece model shipped by mistral-common, tokenizer.json built from it (`mistral_v1_tokenizer_json`:
    what AutoTokenizer, vLLM and TGI load) and a tokenizer_config.json with the template that renders what
    training encoded (CURATOR_MISTRAL_V1_CHAT_TEMPLATE). Empty when the profile has no files of its own."""
    profile = tokenizer.profile
    if profile.tokenizer_path:
        return _copy_tokenizer_folder(Path(profile.tokenizer_path), out_dir)
    if profile.chat_format == "mistral-v1":
        from curator.tokenize_chat import mistral_v1_model_file

        shutil.copy2(mistral_v1_model_file(), out_dir / "tokenizer.model")
        mistral_v1_tokenizer_json().save(str(out_dir / "tokenizer.json"))
        config = {
            # the generic fast tokenizer: it uses tokenizer.json as written (a LlamaTokenizer class would rebuild
            # the pre-tokenizer and, in transformers 5, split "    return" as "▁▁▁▁", "return" where SentencePiece
            # and training give "▁▁▁", "▁return")
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": "<s>",
            "eos_token": "</s>",
            "unk_token": "<unk>",
            "add_bos_token": True,
            "add_eos_token": False,
            "model_max_length": profile.context_length,
            "chat_template": CURATOR_MISTRAL_V1_CHAT_TEMPLATE,
        }
        (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
        return ["tokenizer.model", "tokenizer.json", "tokenizer_config.json"]
    return []


def export_template(out: str | Path, dest: str | Path) -> list[str]:
    """A tokenizer folder for OUT in `dest`: the tokenizer files of the profile OUT was curated for, with
    OUT/chat_template.jinja as their chat template, so `AutoTokenizer.from_pretrained(dest)` (offline)
    renders and masks as curator trains. Returns the file names written. No torch needed.
    """
    from curator.inspect_records import tokenizer_of

    out, dest = Path(out), Path(dest)
    template_path = out / "chat_template.jinja"
    if not template_path.is_file():
        raise CurateError(f"{template_path}: missing (`curate run` writes it when its tokens stage runs)")
    template = template_path.read_text(encoding="utf-8")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise CurateError(f"{dest}: exists and is not an empty folder")
    tokenizer = tokenizer_of(out)
    dest.mkdir(parents=True, exist_ok=True)
    written = _save_chat_tokenizer(tokenizer, dest)
    if not written:
        raise CurateError(f"no tokenizer files for profile {tokenizer.profile.name}")
    config_path = dest / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    config["chat_template"] = template
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")
    if (dest / "chat_template.jinja").is_file():  # transformers reads this file before the config's key
        (dest / "chat_template.jinja").write_text(template, encoding="utf-8")
    return sorted(set(written) | {"tokenizer_config.json"})


def save_adapter(model, tokenizer, out_dir: str | Path, base_model: str | None = None) -> Path:
    """adapter_config.json + adapter_model.safetensors (peft) and the tokenizer files, into out_dir."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    save_tokenizer(tokenizer, base_model, out_dir)
    return out_dir


def load_adapter_model(adapter_dir: str | Path, base_model: str | None = None, dtype=None, device: str = "cpu"):
    """Base model (from adapter_config.json unless given) with the saved adapter, in eval mode."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from finetune.modeling import first_line, refuse_folder_code

    adapter_dir = Path(adapter_dir)
    base = base_model or adapter_base(adapter_dir)
    refuse_folder_code(base)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            base, dtype=dtype or torch.float32, local_files_only=True, trust_remote_code=False
        )
    except (OSError, ValueError) as exc:  # not cached, weights missing, not a causal LM
        raise CurateError(f"{base}: cannot load the base model: {first_line(exc)}") from exc
    return PeftModel.from_pretrained(model, str(adapter_dir)).to(device).eval()


# Shard size of a merged model: the streamed merge holds about one shard in memory at a time.
MERGE_SHARD_BYTES = 1_000_000_000


def merge_adapter(
    adapter_dir: str | Path, out_dir: str | Path, base_model: str | None = None, dtype: str = "bfloat16",
    max_shard_bytes: int = MERGE_SHARD_BYTES,
) -> Path:
    """Fold the adapter into the base weights and save a plain model (default bf16) with the tokenizer.

    Each sum W + (alpha / r) B A is done in float32 and rounded once to `dtype`. A plain LoRA adapter on a
    safetensors base is merged one weight at a time into shards of `max_shard_bytes` (finetune.merge: a few
    GB of host memory for a 7B model); anything else loads the base in `dtype` (not float32: 14.5 GB for 7B,
    not 29 GB) and folds the adapter layer by layer (`fold_lora_weights`). A base stored in bf16
    (Mistral-7B-Instruct-v0.2) gives the weights an all-float32 merge would. An adapter trained on a quantized
    base (train_config.yaml `quantization: nf4 | int8`) is merged into the unquantized base, as peers do:
    merging into dequantized 4-bit weights would bake their rounding error into every weight.
    """
    import torch

    from finetune.merge import stream_merge
    from finetune.modeling import model_folder, refuse_folder_code

    adapter_dir, out_dir = Path(adapter_dir), Path(out_dir)
    base = base_model or adapter_base(adapter_dir)
    refuse_folder_code(base)
    folder = model_folder(base)
    target = getattr(torch, dtype)
    if folder is None or not stream_merge(folder, adapter_dir, out_dir, target, max_shard_bytes):
        model = load_adapter_model(adapter_dir, base, dtype=target)
        fold_lora_weights(model)
        merged = model.unload()  # the LoRA modules removed, their sums already in the base weights
        out_dir.mkdir(parents=True, exist_ok=True)
        merged.save_pretrained(str(out_dir), safe_serialization=True, max_shard_size=max_shard_bytes)
    copied = _copy_tokenizer_folder(adapter_dir, out_dir)
    if not copied:
        raise CurateError(f"{adapter_dir}: no tokenizer files to copy beside the merged model")
    return out_dir


def adapter_base(adapter_dir: Path) -> str:
    """The base model adapter_config.json names."""
    config_path = adapter_dir / "adapter_config.json"
    if not config_path.is_file():
        raise CurateError(f"{config_path}: missing (not an adapter folder written by `curate train`)")
    base = json.loads(config_path.read_text(encoding="utf-8")).get("base_model_name_or_path")
    if not base:
        raise CurateError(f"{config_path}: base_model_name_or_path: missing; pass --base-model")
    return base


def fold_lora_weights(model) -> None:
    """W <- round(W + (alpha / r) B A) for every LoRA linear of the active adapter, the sum in float32.

    peft's own merge rounds the delta to the weight's dtype before adding it (two roundings in bf16); this
    rounds once. A float32 copy of one weight at a time is the only extra memory. Layers other than plain
    LoRA linears (DoRA, LoRA biases, embeddings, convolutions: adapters `curate train` does not write) use peft's merge.
    """
    import torch
    from peft.tuners.lora import Linear as LoraLinear
    from peft.tuners.lora import LoraLayer

    with torch.no_grad():
        for module in model.modules():
            if not isinstance(module, LoraLayer):
                continue
            for name in module.active_adapters:
                if name not in module.lora_A and name not in getattr(module, "lora_embedding_A", {}):
                    continue
                plain = not module.use_dora.get(name, False) and not module.lora_bias.get(name, False)
                if type(module) is LoraLinear and plain:
                    weight = module.get_base_layer().weight
                    weight.data = (weight.float() + module.get_delta_weight(name).float()).to(weight.dtype)
                    module.merged_adapters.append(name)
                else:
                    module.merge(adapter_names=[name])


def trained_quantization(adapter_dir: str | Path) -> str:
    """The `quantization` the adapter was trained with (its train_config.yaml), `none` when not recorded."""
    import yaml

    path = Path(adapter_dir) / "train_config.yaml"
    if not path.is_file():
        return "none"
    try:
        saved = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        return "none"
    value = saved.get("quantization") if isinstance(saved, dict) else None
    return value if isinstance(value, str) else "none"
