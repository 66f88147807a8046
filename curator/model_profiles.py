"""Model profiles: the context length and chat format of each model a dataset can be curated for.

A profile is chosen with `--model` / `tokens.model`. The three named profiles come from the
project's model-selection guide; any other model is given as a path to a Hugging Face tokenizer
folder (`tokenizer.json` + `tokenizer_config.json` with a `chat_template`).

| profile                    | context | chat format  | tokenizer                                        |
|----------------------------|--------:|--------------|--------------------------------------------------|
| mistral-7b-instruct-v0.2   |   8,192 | mistral-v1   | `tokenizer.model.v1` inside the mistral-common wheel (offline) |
| codellama-13b-instruct     |  16,384 | llama-2      | codellama/CodeLlama-13b-Instruct-hf, given as a local folder |
| phi-3-mini-4k-instruct     |   4,096 | phi-3        | microsoft/Phi-3-mini-4k-instruct, given as a local folder    |

Chat formats:
- `mistral-v1`: `<s>[INST] {system}\\n\\n{user} [/INST] {assistant}</s>[INST] ...`, encoded segment by
  segment exactly as mistral-common's `InstructTokenizerV1` does (see curator/tokenize_chat.py).
- `llama-2`: `<s>[INST] <<SYS>>\\n{system}\\n<</SYS>>\\n\\n{user} [/INST] {assistant} </s><s>[INST] ...`,
  the chat template of codellama/CodeLlama-*-Instruct-hf (tokenizer_config.json).
- `phi-3`: `<s><|user|>\\n{user}<|end|>\\n<|assistant|>\\n{assistant}<|end|>\\n...`, the chat template of
  microsoft/Phi-3-mini-4k-instruct (tokenizer_config.json, system turns as in its later revision).
- `hf-template`: whatever `chat_template` the tokenizer folder ships.

Nothing here is downloaded: the Mistral tokenizer ships with mistral-common; the others must be
present on disk (`tokens.tokenizer_path`), because the toolkit never reaches a model hub. A tokenizer folder
whose tokenizer_config.json names Python classes of its own (`auto_map`) is refused: curator never runs code
from a model folder, and without that code the folder's tokenization is unknown.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from curator.errors import CurateError

DEFAULT_MODEL = "mistral-7b-instruct-v0.2"

# The Llama-2 chat template as shipped in codellama/CodeLlama-13b-Instruct-hf/tokenizer_config.json
# (system prompt folded into the first user turn inside <<SYS>> markers; one BOS per exchange).
LLAMA2_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}"
    "{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}"
    "{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content | trim + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content | trim + ' ' + eos_token }}{% endif %}"
    "{% endfor %}"
)

# The Phi-3 chat template of microsoft/Phi-3-mini-4k-instruct/tokenizer_config.json (the revision
# that accepts system turns); every turn ends with <|end|>, which is what the model learns to emit.
PHI3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{'<|system|>\\n' + message['content'] + '<|end|>\\n'}}"
    "{% elif message['role'] == 'user' %}{{'<|user|>\\n' + message['content'] + '<|end|>\\n'}}"
    "{% elif message['role'] == 'assistant' %}{{'<|assistant|>\\n' + message['content'] + '<|end|>\\n'}}"
    "{% endif %}{% endfor %}"
)


@dataclass(frozen=True)
class ModelProfile:
    """What the token budget needs to know about a model."""

    name: str
    context_length: int  # tokens per training example the trainer accepts
    chat_format: str  # mistral-v1 | llama-2 | phi-3 | hf-template
    hf_repo: str | None = None  # where its tokenizer is published (named in errors; never downloaded)
    chat_template: str | None = None  # Jinja template for template-based formats
    tokenizer_path: str | None = None  # local folder holding the tokenizer, when not built in
    n_params: float | None = None  # parameter count, for the training cost estimate (curator/cost.py)
    model_type: str | None = None  # the family's `model_type` in config.json: a base model to train must match it


PROFILES: dict[str, ModelProfile] = {
    "mistral-7b-instruct-v0.2": ModelProfile(
        name="mistral-7b-instruct-v0.2",
        context_length=8192,
        chat_format="mistral-v1",
        hf_repo="mistralai/Mistral-7B-Instruct-v0.2",
        n_params=7.24e9,  # Mistral 7B announcement / model card: 7.3B (7,241,732,096 weights)
        model_type="mistral",
    ),
    "codellama-13b-instruct": ModelProfile(
        name="codellama-13b-instruct",
        context_length=16384,
        chat_format="llama-2",
        hf_repo="codellama/CodeLlama-13b-Instruct-hf",
        chat_template=LLAMA2_TEMPLATE,
        n_params=13.0e9,  # Code Llama paper (Rozière et al. 2023): 7B, 13B, 34B sizes
        model_type="llama",
    ),
    "phi-3-mini-4k-instruct": ModelProfile(
        name="phi-3-mini-4k-instruct",
        context_length=4096,
        chat_format="phi-3",
        hf_repo="microsoft/Phi-3-mini-4k-instruct",
        chat_template=PHI3_TEMPLATE,
        n_params=3.8e9,  # Phi-3 technical report (Abdin et al. 2024): phi-3-mini, 3.8B parameters
        model_type="phi3",
    ),
}

NO_FOLDER_CODE = "curator never runs code from a model folder"

# Hugging Face writes a huge sentinel (int(1e30)) into model_max_length when a model sets none.
_NO_LIMIT = 10_000_000


def _read_tokenizer_config(folder: Path) -> dict:
    cfg_path = folder / "tokenizer_config.json"
    if not cfg_path.is_file():
        return {}
    try:
        return json.loads(cfg_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CurateError(f"{cfg_path}:{exc.lineno}: not valid JSON: {exc.msg}") from None


def refuse_folder_code(folder: Path) -> None:
    """Refuse a tokenizer folder whose tokenizer_config.json has `auto_map`: its tokenizer is Python code."""
    if "auto_map" in _read_tokenizer_config(folder):
        raise CurateError(f"{folder / 'tokenizer_config.json'}: needs its own Python code (auto_map); {NO_FOLDER_CODE}")


def folder_chat_template(folder: Path) -> str | None:
    """The chat template a Hugging Face tokenizer folder ships (chat_template.jinja or tokenizer_config)."""
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    template = _read_tokenizer_config(folder).get("chat_template")
    if isinstance(template, list):  # named templates: [{"name": "default", "template": ...}, ...]
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    return template if isinstance(template, str) else None


def resolve_profile(model: str, tokenizer_path: str | None = None, context_length: int | None = None) -> ModelProfile:
    """The profile named `model`, or one built from the Hugging Face tokenizer folder at path `model`.

    `tokenizer_path` gives a named profile its tokenizer folder (needed for every profile but the
    Mistral one, whose tokenizer ships with mistral-common). `context_length` overrides the
    profile's (and is required for a folder whose tokenizer_config.json gives no model_max_length).
    """
    if model in PROFILES:
        profile = PROFILES[model]
        changes: dict = {}
        if tokenizer_path is not None:
            refuse_folder_code(Path(tokenizer_path))
            changes["tokenizer_path"] = str(tokenizer_path)
        if context_length is not None:
            changes["context_length"] = int(context_length)
        return replace(profile, **changes) if changes else profile
    folder = Path(model)
    if not folder.is_dir():
        raise CurateError(
            f"tokens.model: {model!r} is neither a profile ({', '.join(PROFILES)}) "
            "nor a folder holding a Hugging Face tokenizer"
        )
    if not (folder / "tokenizer.json").is_file():
        raise CurateError(f"tokens.model: {folder / 'tokenizer.json'} not found (a fast tokenizer file is required)")
    refuse_folder_code(folder)
    template = folder_chat_template(folder)
    if template is None:
        raise CurateError(
            f"tokens.model: {folder / 'tokenizer_config.json'} has no chat_template "
            "(and there is no chat_template.jinja); the chat format cannot be known"
        )
    max_len = context_length or _read_tokenizer_config(folder).get("model_max_length")
    if not isinstance(max_len, int | float) or max_len <= 0 or max_len >= _NO_LIMIT:
        raise CurateError(
            f"tokens.model: {folder / 'tokenizer_config.json'} gives no usable model_max_length; "
            "set tokens.context_length"
        )
    return ModelProfile(
        name=folder.name,
        context_length=int(max_len),
        chat_format="hf-template",
        chat_template=template,
        tokenizer_path=str(folder),
    )
