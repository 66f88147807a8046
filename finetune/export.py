"""Export: the PEFT adapter with its tokenizer and chat template, and a merged bf16 model.

The adapter folder is what vLLM (`--enable-lora --lora-modules name=DIR`) and TGI (`LORA_ADAPTERS=DIR`) load:
`adapter_config.json` + `adapter_model.safetensors` as written by peft's `save_pretrained`, next to the
tokenizer files (`tokenizer_config.json` carrying the chat template) so a server renders prompts the way the
model was trained. `curate export ADAPTER_DIR --merge OUT_DIR` folds the adapter into the base weights
(peft `merge_and_unload`, W + (alpha / r) B A) and saves a plain transformers model in bf16 that needs no
peft at inference.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from curator.errors import CurateError

# Files of a transformers tokenizer folder, copied as they are when the base model folder has them.
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
    "added_tokens.json",
)

# Mistral-7B-Instruct-v0.2's own chat template (tokenizer_config.json of mistralai/Mistral-7B-Instruct-v0.2,
# current revision): an optional system message is folded into the first user turn, as mistral-common's v1
# tokenizer does, which is how curator.tokenize_chat renders training examples.
MISTRAL_V02_CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}\n"
    "    {%- set system_message = messages[0]['content'] %}\n"
    "    {%- set loop_messages = messages[1:] %}\n"
    "{%- else %}\n"
    "    {%- set loop_messages = messages %}\n"
    "{%- endif %}\n\n"
    "{{- bos_token }}\n"
    "{%- for message in loop_messages %}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}\n"
    "        {{- raise_exception('After the optional system message, conversation roles must alternate "
    "user/assistant/user/assistant/...') }}\n"
    "    {%- endif %}\n"
    "    {%- if message['role'] == 'user' %}\n"
    "        {%- if loop.first and system_message is defined %}\n"
    "            {{- ' [INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}\n"
    "        {%- else %}\n"
    "            {{- ' [INST] ' + message['content'] + ' [/INST]' }}\n"
    "        {%- endif %}\n"
    "    {%- elif message['role'] == 'assistant' %}\n"
    "        {{- ' ' + message['content'] + eos_token}}\n"
    "    {%- else %}\n"
    "        {{- raise_exception('Only user and assistant roles are supported, with the exception of an "
    "initial optional system message!') }}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
)


def _copy_tokenizer_folder(source: Path, out_dir: Path) -> list[str]:
    copied = []
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, out_dir / name)
            copied.append(name)
    return copied


def save_tokenizer(tokenizer, base_model: str | None, out_dir: Path) -> list[str]:
    """Tokenizer files with a chat template into out_dir; returns the file names written.

    Preference: the base model folder's own tokenizer files (exactly what the server would use), then the
    cached hub tokenizer, then the files of the ChatTokenizer the run trained with.
    """
    written: list[str] = []
    if base_model and Path(base_model).is_dir():
        written = _copy_tokenizer_folder(Path(base_model), out_dir)
    if not written and base_model:
        try:
            from transformers import AutoTokenizer

            AutoTokenizer.from_pretrained(base_model, local_files_only=True).save_pretrained(str(out_dir))
            written = [p.name for p in out_dir.iterdir() if p.name in TOKENIZER_FILES]
        except (OSError, ValueError):
            written = []
    if not written:
        written = _save_chat_tokenizer(tokenizer, out_dir)
    config_path = out_dir / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    has_template = bool(config.get("chat_template")) or (out_dir / "chat_template.jinja").is_file()
    if not has_template:
        config["chat_template"] = MISTRAL_V02_CHAT_TEMPLATE
        config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")
        if "tokenizer_config.json" not in written:
            written.append("tokenizer_config.json")
    return written


def _save_chat_tokenizer(tokenizer, out_dir: Path) -> list[str]:
    """The ChatTokenizer's own files: its profile's tokenizer folder, or for the built-in Mistral profile the
    SentencePiece model shipped by mistral-common with a tokenizer_config.json in the layout of the
    mistralai/Mistral-7B-Instruct-v0.2 repository (LlamaTokenizer, <s>/</s>, BOS added, the chat template)."""
    profile = tokenizer.profile
    if profile.tokenizer_path:
        written = _copy_tokenizer_folder(Path(profile.tokenizer_path), out_dir)
        if written:
            return written
    if profile.chat_format == "mistral-v1":
        from curator.tokenize_chat import mistral_v1_model_file

        shutil.copy2(mistral_v1_model_file(), out_dir / "tokenizer.model")
        config = {
            "tokenizer_class": "LlamaTokenizer",
            "bos_token": "<s>",
            "eos_token": "</s>",
            "unk_token": "<unk>",
            "add_bos_token": True,
            "add_eos_token": False,
            "legacy": False,
            "model_max_length": profile.context_length,
            "chat_template": MISTRAL_V02_CHAT_TEMPLATE,
        }
        (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
        return ["tokenizer.model", "tokenizer_config.json"]
    raise CurateError(
        f"no tokenizer files for profile {profile.name}: give --model a folder that holds its tokenizer"
    )


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

    adapter_dir = Path(adapter_dir)
    config_path = adapter_dir / "adapter_config.json"
    if not config_path.is_file():
        raise CurateError(f"{config_path}: missing (not an adapter folder written by `curate train`)")
    base = base_model or json.loads(config_path.read_text(encoding="utf-8")).get("base_model_name_or_path")
    if not base:
        raise CurateError(f"{config_path}: base_model_name_or_path: missing; pass --base-model")
    try:
        model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype or torch.float32, local_files_only=True)
    except OSError as exc:
        raise CurateError(f"{base}: cannot load the base model: {exc}") from exc
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
