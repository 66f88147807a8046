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
    config_path = adapter_dir / "adapter_config.json"
    if not config_path.is_file():
        raise CurateError(f"{config_path}: missing (not an adapter folder written by `curate train`)")
    base = base_model or json.loads(config_path.read_text(encoding="utf-8")).get("base_model_name_or_path")
    if not base:
        raise CurateError(f"{config_path}: base_model_name_or_path: missing; pass --base-model")
    refuse_folder_code(base)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            base, dtype=dtype or torch.float32, local_files_only=True, trust_remote_code=False
        )
    except (OSError, ValueError) as exc:  # not cached, weights missing, not a causal LM
        raise CurateError(f"{base}: cannot load the base model: {first_line(exc)}") from exc
    return PeftModel.from_pretrained(model, str(adapter_dir)).to(device).eval()


def merge_adapter(adapter_dir: str | Path, out_dir: str | Path, base_model: str | None = None, dtype: str = "bfloat16") -> Path:
    """Fold the adapter into the base weights and save a plain model (default bf16) with the tokenizer.

    The merge is done in float32 and cast once at the end, so bf16 rounding happens once per weight rather
    than on the base and again on the sum.
    """
    import torch

    adapter_dir, out_dir = Path(adapter_dir), Path(out_dir)
    model = load_adapter_model(adapter_dir, base_model, dtype=torch.float32)
    merged = model.merge_and_unload()
    merged = merged.to(getattr(torch, dtype))
    out_dir.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(str(out_dir), safe_serialization=True)
    copied = _copy_tokenizer_folder(adapter_dir, out_dir)
    if not copied:
        raise CurateError(f"{adapter_dir}: no tokenizer files to copy beside the merged model")
    return out_dir
