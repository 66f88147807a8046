"""Conversation -> token ids and trained-token mask: the one truth for tokens (DESIGN.md, principle 4).

Used by the token-budget stage (curator/stages/tokens.py) and by the trainer (finetune/), so the
length the report shows is the length the trainer sees.

    tok = ChatTokenizer.load()                       # mistral-7b-instruct-v0.2, offline
    enc = tok.encode([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}])
    enc.ids, enc.trained, enc.turn_tokens            # [1, 733, 16289, ...], [False, ..., True], [8, 4]

Mistral-7B-Instruct-v0.2 (`mistral-v1` chat format)
---------------------------------------------------
The reference is mistral-common's `MistralTokenizer.v1()` chat-completion encoding
(`InstructRequestNormalizer` + `InstructTokenizerV1`, mistral-common 1.13); this module reproduces it
id for id (tests/test_tokenize_chat.py checks every record of ../shared/data/chat). What the
reference does, and so what we do:

- The sequence is BOS, then one segment per turn, each encoded by SentencePiece *on its own*
  (so each segment gets its own dummy-prefix "▁"): a user turn is the text `[INST] {content} [/INST]`,
  an assistant turn is `{content}` followed by EOS. Rendering the whole template as one string and
  tokenizing it gives different ids at turn boundaries (`[/INST]The` vs `[/INST]` + `▁The`), which is
  why we encode per segment.
- System prompts: every non-empty system message, wherever it stands, is joined with "\\n\\n" and
  prepended to the FIRST user turn as `{system}\\n\\n{user}` (InstructTokenizerV1.encode_user_message,
  `is_first`); system messages produce no segment of their own.
- Consecutive messages of the same role (and, for assistant turns, the same weight) are merged
  into one turn, their non-empty contents joined with "\\n\\n"; a system message between two user
  messages keeps them apart (InstructRequestNormalizer._aggregate_messages).
- A conversation that does not start with a user turn gets an empty user turn first
  (`[INST]  [/INST]`).
- `weight` (0/1) does not change the ids; a weight-0 assistant turn is not trained.

Structures the v1 reference refuses, and the encoding we give them instead (one rendering, used by
training, by token counting and by the exported chat template, `MISTRAL_V1_CHAT_TEMPLATE` below):

- assistant `tool_calls` (the OpenAI list `[{"id", "type": "function", "function": {"name",
  "arguments"}}]`, or its JSON text): v1 raises "Tools not implemented for tokenizer V1". The turn's
  text is its content, then "\\n\\n", then the calls (the calls alone when the content is empty),
  trained like any answer, EOS included. The calls are one line each (`render_tool_calls`):

      {"name": <json.dumps(name, ensure_ascii=False)>, "arguments": <the arguments string, verbatim>}

  (arguments that are not a string, as older records have them, are `json.dumps(..., ensure_ascii=False)`
  of their value; a call without a `function` object is read as the function itself). The Jinja template
  writes the same text with `'{"name": ' ~ (name | tojson) ~ ', "arguments": ' ~ arguments ~ '}'`
  (transformers' `tojson` is `json.dumps` with ensure_ascii=False and default separators).
- `tool` turns (tool results): v1 raises. We encode a tool turn as a user turn
  (`[INST] {tool output} [/INST]`, not trained): exactly the reference encoding of the same
  conversation with the tool turns relabelled `user`, which the tests check.
- tool definitions (a record's top-level `tools`, TRL's `[{"type": "function", "function": {"name",
  "description", "parameters"}}]`): rendered once, as plain text (v1 has no tool tokens), at the start of
  the first user turn, before the system prompt, and not trained:
  `[INST] [AVAILABLE_TOOLS] {json.dumps(tools, ensure_ascii=False)} [/AVAILABLE_TOOLS]\\n\\n{system}\\n\\n{user} [/INST]`
  (`render_tools`). A record without tools (or with an empty list) renders as before.
- an empty assistant turn: v1 raises; we encode it as EOS alone (trained unless weight 0).
- a conversation ending in a user or tool turn: the reference's finetuning validator refuses it;
  we encode it all the same (its last turn is simply not trained).

Records without tools and without tool calls are encoded exactly as mistral-common encodes them.
The exported template marks the trained tokens of each trained assistant turn (its text and EOS) with
`{% generation %}...{% endgeneration %}`, so `apply_chat_template(..., return_assistant_tokens_mask=True)`
(TRL's `assistant_only_loss=True`) trains what curator trains.

`turn_tokens[i]` counts the tokens attributed to message i; they sum to `n_tokens`. Each token of
a segment goes to the message whose text it starts in (by character offsets); the segment's
template text goes to the message it wraps: `[INST] ` (and the tool definitions) to the first message
inside the segment (the system message when the system prompt is folded in), ` [/INST]` to the last,
EOS to the assistant turn. The BOS and an inserted empty user turn go to message 0.

Other models
------------
`llama-2`, `phi-3` and `hf-template` formats render the model's Jinja chat template, as
`transformers`' `apply_chat_template` does, and tokenize the result with the model's
`tokenizer.json`; per-message spans come from rendering each prefix of the conversation, and an
assistant turn is trained from the start of its content to the end of its span (so its closing
`</s>` or `<|end|>` is trained, its header is not). Tool calls reach the template as the OpenAI list and
tool definitions as `tools`, as `apply_chat_template` passes them; what the template does with them is
the model's own rendering. `ChatTokenizer.chat_template` is the template of a profile: `curate run`
writes it to OUT/chat_template.jinja.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from bisect import bisect_right
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

from tokenizers import Tokenizer, decoders, models, normalizers

from curator.errors import CurateError
from curator.model_profiles import DEFAULT_MODEL, ModelProfile, resolve_profile

__all__ = [
    "ChatFormatError",
    "ChatTokenizer",
    "EncodedChat",
    "MISTRAL_V1_CHAT_TEMPLATE",
    "mistral_v1_model_file",
    "render_tool_calls",
    "render_tools",
]


@dataclass(frozen=True)
class EncodedChat:
    """One conversation as the trainer sees it."""

    ids: list[int]  # full sequence, starting with BOS
    trained: list[bool]  # same length; True on assistant-turn tokens and their EOS (weight-0 turns: False)
    turn_tokens: list[int]  # tokens attributed to each message, in message order; sums to n_tokens

    @property
    def n_tokens(self) -> int:
        return len(self.ids)

    @property
    def n_trained(self) -> int:
        return sum(self.trained)


class ChatFormatError(ValueError):
    """The chat template refused a conversation (e.g. roles that do not alternate)."""


def mistral_v1_model_file() -> Path:
    """The Mistral-7B-Instruct-v0.2 SentencePiece model shipped inside the mistral-common wheel."""
    import mistral_common

    path = Path(mistral_common.__file__).parent / "data" / "tokenizer.model.v1"
    if not path.is_file():
        raise CurateError(f"{path} not found: reinstall mistral-common (it ships the Mistral v1 tokenizer)")
    return path


# --- the fast tokenizer, built from the SentencePiece model --------------------------------------


def tokenizer_from_sentencepiece(model_file: Path) -> Tokenizer:
    """A `tokenizers` BPE equal to the SentencePiece BPE model in `model_file`.

    Same construction as transformers' LlamaConverter / SentencePieceExtractor: the vocab is
    SentencePiece's pieces with their ids; a merge (l, r) exists for every split of a normal piece
    into two normal pieces, ranked by the merged piece's score (SentencePiece BPE applies the
    highest-scoring pair first), ties by id; unknown characters fall back to <0xNN> byte pieces.
    The normalizer is SentencePiece's `identity` rule with `add_dummy_prefix` (a leading "▁") and
    spaces as "▁" (checked for tokenizer.model.v1: name identity, add_dummy_prefix true,
    remove_extra_whitespaces false). Control pieces (<s>, </s>) are *not* added as special tokens,
    because SentencePiece never produces them from text: "<s>" in a message is three characters.
    """
    import sentencepiece as spm  # the SentencePiece reader; only needed on this (cached) path

    sp = spm.SentencePieceProcessor(model_file=str(model_file))
    n = sp.get_piece_size()
    vocab = {sp.id_to_piece(i): i for i in range(n)}
    normal = {
        sp.id_to_piece(i)
        for i in range(n)
        if not (sp.is_byte(i) or sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i))
    }
    ranked: list[tuple[float, int, int, int, tuple[str, str]]] = []
    for i in range(n):
        piece = sp.id_to_piece(i)
        if piece not in normal or len(piece) < 2:
            continue
        for k in range(1, len(piece)):
            left, right = piece[:k], piece[k:]
            if left in normal and right in normal:
                ranked.append((-sp.get_score(i), i, vocab[left], vocab[right], (left, right)))
    ranked.sort()
    bpe = models.BPE(
        vocab=vocab,
        merges=[pair for *_, pair in ranked],
        unk_token=sp.id_to_piece(sp.unk_id()),
        fuse_unk=True,
        byte_fallback=True,
    )
    tok = Tokenizer(bpe)
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    return tok


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "curator" / "tokenizers"


def _cached_fast_tokenizer(model_file: Path) -> Tokenizer:
    """tokenizer_from_sentencepiece, cached as tokenizer.json keyed by the model file's sha256.

    Conversion reads 32k pieces and derives ~59k merges (seconds on a busy 2-core box); loading the
    cached JSON is several times faster. An unwritable cache only costs the conversion.
    """
    digest = hashlib.sha256(model_file.read_bytes()).hexdigest()
    path = _cache_dir() / f"{digest}.{_CONVERTER_VERSION}.tokenizer.json"
    if path.is_file():
        try:
            return Tokenizer.from_file(os.fspath(path))
        except Exception:  # a truncated or foreign file: rebuild it
            pass
    tok = tokenizer_from_sentencepiece(model_file)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tok.save(os.fspath(tmp))
        os.replace(tmp, path)
    except OSError:
        pass
    return tok


_CONVERTER_VERSION = "v1"  # bump when tokenizer_from_sentencepiece changes what it builds


# --- segment plans ---------------------------------------------------------------------------------


@dataclass
class _Segment:
    """One separately tokenized piece of a conversation."""

    text: str
    assistant: bool  # followed by EOS
    trained: bool
    # (message index, char offset from which tokens count for it), offsets ascending
    parts: list[tuple[int, int]] = field(default_factory=list)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _json_value(value: Any) -> Any:
    """A list (or other JSON value) as it is; JSON text parsed; text that is not JSON stays text."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _render_call(call: Any) -> str:
    if not isinstance(call, dict):
        return json.dumps(call, ensure_ascii=False)
    fn = call["function"] if isinstance(call.get("function"), dict) else call
    args = fn.get("arguments")
    if not isinstance(args, str):
        args = json.dumps({} if args is None else args, ensure_ascii=False)
    return '{"name": ' + json.dumps(fn.get("name"), ensure_ascii=False) + ', "arguments": ' + args + "}"


def render_tool_calls(calls: Any) -> str:
    """The trained text of an assistant turn's tool calls (a list, or its JSON text): one call a line.

    Each line is `{"name": <name as JSON>, "arguments": <the arguments string verbatim>}`; text that is
    not JSON is its own rendering. See the module docstring.
    """
    calls = _json_value(calls)
    if isinstance(calls, str):
        return calls
    if not calls:
        return ""
    if not isinstance(calls, list):
        calls = [calls]
    return "\n".join(_render_call(call) for call in calls)


def render_tools(tools: Any) -> str:
    """The tool definitions' text at the start of the first user turn ("" when there are none)."""
    tools = _json_value(tools)
    if not tools:
        return ""
    text = tools if isinstance(tools, str) else json.dumps(tools, ensure_ascii=False)
    return f"[AVAILABLE_TOOLS] {text} [/AVAILABLE_TOOLS]\n\n"


def _assistant_text(msg: dict) -> str:
    """What an assistant turn trains on (before its EOS): content, then its tool calls."""
    content = _text(msg.get("content"))
    calls = render_tool_calls(msg.get("tool_calls")) if msg.get("tool_calls") else ""
    if calls:
        return f"{content}\n\n{calls}" if content else calls
    return content


_JOIN = "\n\n"  # mistral_common InstructRequestNormalizer._msg_join_str


def _plan_mistral_v1(messages: Sequence[dict], tools: Any = None) -> list[_Segment]:
    """The segments of one conversation (see the module docstring); `tools` as a list or JSON text."""
    system = [(i, _text(m.get("content"))) for i, m in enumerate(messages) if m.get("role") == "system"]
    system = [(i, c) for i, c in system if c]
    # runs of the same (role, weight); tool turns count as user turns (see module docstring)
    runs: list[tuple[str, Any, list[tuple[int, str]]]] = []
    key = None
    for i, msg in enumerate(messages):
        role = msg.get("role")
        if role == "tool":
            role = "user"
        weight = msg.get("weight") if role == "assistant" else None
        if (role, weight) != key:
            runs.append((role, weight, []))
            key = (role, weight)
        if role == "assistant":
            runs[-1][2].append((i, _assistant_text(msg)))
        elif role == "user":
            runs[-1][2].append((i, _text(msg.get("content"))))
    runs = [r for r in runs if r[0] != "system"]
    if not runs or runs[0][0] != "user":
        runs.insert(0, ("user", None, []))

    segments: list[_Segment] = []
    first_user = True
    for role, weight, items in runs:
        if role == "user":
            pieces: list[tuple[int, str]] = []
            head = ""
            if first_user:
                head = render_tools(tools)
                if system:
                    pieces.extend(system)
                    pieces.append((-1, ""))  # marks the "\n\n" that always follows the system prompt
            first_user = False
            pieces.extend(items)
            text, parts = _join_parts(pieces, start=len("[INST] ") + len(head))
            segments.append(_Segment(f"[INST] {head}{text} [/INST]", False, False, parts))
        else:
            text, parts = _join_parts(items, start=0)
            segments.append(_Segment(text, True, weight != 0, parts))
    return segments


def _join_parts(pieces: list[tuple[int, str]], start: int) -> tuple[str, list[tuple[int, int]]]:
    """Join non-empty texts with "\\n\\n" and note where each message's text starts.

    The (-1, "") marker stands for the system prompt's separator, which the reference writes even
    when the user text after it is empty.
    """
    out: list[str] = []
    parts: list[tuple[int, int]] = []
    pos = start
    has_text = False  # a text since the start or the system separator: the next one is joined to it
    for idx, text in pieces:
        if idx == -1:
            out.append(_JOIN)
            pos += len(_JOIN)
            has_text = False
            continue
        if text and has_text:  # empty contents are skipped, as mistral-common's aggregation does
            out.append(_JOIN)
            pos += len(_JOIN)
        parts.append((idx, pos))
        out.append(text)
        pos += len(text)
        has_text = has_text or bool(text)
    if parts:
        parts[0] = (parts[0][0], 0)  # the segment's leading template text goes to its first message
    return "".join(out), parts


# --- the tokenizer -----------------------------------------------------------------------------------


class ChatTokenizer:
    """Turns conversations into `EncodedChat`s for one model profile."""

    def __init__(
        self,
        profile: ModelProfile,
        tokenizer: Tokenizer,
        bos_id: int,
        eos_id: int,
        pad_id: int,
        special_ids: frozenset[int] = frozenset(),
    ) -> None:
        self.profile = profile
        self.tokenizer = tokenizer
        self.bos_id = bos_id
        self.eos_id = eos_id
        self.pad_id = pad_id
        self._special_ids = special_ids
        self._bos_token = tokenizer.id_to_token(bos_id)
        self._eos_token = tokenizer.id_to_token(eos_id)
        self._template = None
        if profile.chat_format != "mistral-v1":
            self._template = _compile_template(profile.chat_template or "")

    @classmethod
    def load(
        cls,
        model: str = DEFAULT_MODEL,
        *,
        tokenizer_path: str | None = None,
        context_length: int | None = None,
    ) -> "ChatTokenizer":
        """The tokenizer of a profile name (see curator/model_profiles.py) or of a Hugging Face folder.

        `tokenizer_path` gives a named profile other than Mistral its tokenizer folder;
        `context_length` overrides the profile's context. Loads nothing from the network.
        Memoised: the stage and the trainer share one instance per argument set.
        """
        return _load(model, None if tokenizer_path is None else str(tokenizer_path), context_length)

    # -- encoding --

    def encode(self, messages: list[dict], tools: Any = None) -> EncodedChat:
        """One conversation; messages are dicts with role, content, optional weight/tool_calls/tool_call_id;
        `tools` the record's tool definitions (a list or its JSON text), or None."""
        return self.encode_batch([messages], [tools])[0]

    def encode_batch(self, conversations: list[list[dict]], tools: Sequence[Any] | None = None) -> list[EncodedChat]:
        """Many conversations in one batched `tokenizers` call (parallel over all cores).

        `tools`, when given, holds each conversation's tool definitions (None where it has none).
        Raises ChatFormatError (naming the conversation's index) when a chat template refuses one;
        the Mistral format gives every conversation an encoding.
        """
        results = self.encode_batch_or_errors(conversations, tools)
        for i, res in enumerate(results):
            if isinstance(res, str):
                raise ChatFormatError(f"conversation {i}: {res}")
        return results  # type: ignore[return-value]

    def encode_batch_or_errors(
        self, conversations: list[list[dict]], tools: Sequence[Any] | None = None
    ) -> list[EncodedChat | str]:
        """Like encode_batch, but a refused conversation yields its error text instead of raising."""
        for i, conv in enumerate(conversations):
            if not conv:
                raise ChatFormatError(f"conversation {i}: a conversation needs at least one message")
        if tools is None:
            tools = [None] * len(conversations)
        elif len(tools) != len(conversations):
            raise ValueError(f"tools: {len(tools)} entries for {len(conversations)} conversations")
        if self._template is None:
            return list(self._encode_mistral_v1(conversations, tools))
        return self._encode_template(conversations, tools)

    @property
    def chat_template(self) -> str:
        """The Jinja chat template that renders this profile's encoding (what OUT/chat_template.jinja holds)."""
        if self._template is None:
            return MISTRAL_V1_CHAT_TEMPLATE
        return self.profile.chat_template or ""

    def decode(self, ids: list[int]) -> str:
        """Text of `ids`, special tokens (BOS, EOS, ...) left out."""
        return self.tokenizer.decode([i for i in ids if i not in self._special_ids], skip_special_tokens=True)

    def _encode_mistral_v1(self, conversations: list[list[dict]], tools: Sequence[Any]) -> list[EncodedChat]:
        plans = [_plan_mistral_v1(conv, t) for conv, t in zip(conversations, tools)]
        single: list[str] = []  # segments owned by one message: no offsets needed (faster call)
        multi: list[str] = []
        for plan in plans:
            for seg in plan:
                (single if len(seg.parts) <= 1 else multi).append(seg.text)
        # A segment's ids do not depend on its neighbours, so each distinct text is encoded once
        # (repeated system prompts, answers shared by near-duplicate records, "[INST]  [/INST]" ...).
        unique = list(dict.fromkeys(single))
        encoded = self.tokenizer.encode_batch_fast(unique, add_special_tokens=False) if unique else []
        by_text = {text: enc.ids for text, enc in zip(unique, encoded)}
        enc_multi = self.tokenizer.encode_batch(multi, add_special_tokens=False) if multi else []
        it_single, it_multi = iter(single), iter(enc_multi)
        bos, eos = self.bos_id, self.eos_id
        out: list[EncodedChat] = []
        for conv, plan in zip(conversations, plans):
            ids = [bos]
            trained = [False]
            turns = [0] * len(conv)
            turns[0] = 1
            for seg in plan:
                if len(seg.parts) <= 1:
                    seg_ids = by_text[next(it_single)]
                    owner = seg.parts[0][0] if seg.parts else 0
                    turns[owner] += len(seg_ids)
                else:
                    enc = next(it_multi)
                    seg_ids = enc.ids
                    starts = [p[1] for p in seg.parts]
                    for start, _end in enc.offsets:
                        turns[seg.parts[max(bisect_right(starts, start) - 1, 0)][0]] += 1
                    owner = seg.parts[-1][0]
                ids.extend(seg_ids)
                trained.extend([seg.trained] * len(seg_ids))
                if seg.assistant:
                    ids.append(eos)
                    trained.append(seg.trained)
                    turns[owner] += 1
            out.append(EncodedChat(ids, trained, turns))
        return out

    def _encode_template(self, conversations: list[list[dict]], tools: Sequence[Any]) -> list[EncodedChat | str]:
        rendered: list[tuple[str, list[int], list[int], list[bool]] | str] = []
        for conv, conv_tools in zip(conversations, tools):
            try:
                rendered.append(self._render_spans(conv, conv_tools))
            except ChatFormatError as exc:
                rendered.append(str(exc))
        texts = [r[0] for r in rendered if not isinstance(r, str)]
        encs = iter(self.tokenizer.encode_batch(texts, add_special_tokens=False) if texts else [])
        out: list[EncodedChat | str] = []
        for conv, r in zip(conversations, rendered):
            if isinstance(r, str):
                out.append(r)
                continue
            _text_, bounds, train_from, trainable = r
            enc = next(encs)
            turns = [0] * len(conv)
            trained: list[bool] = []
            for start, end in enc.offsets:
                k = min(bisect_right(bounds, start), len(conv) - 1)
                turns[k] += 1
                # a token that reaches into the content is trained ("▁A" of " A" in Llama-2's " {answer}")
                trained.append(trainable[k] and end > train_from[k])
            out.append(EncodedChat(list(enc.ids), trained, turns))
        return out

    def _render_spans(self, conv: list[dict], tools: Any = None) -> tuple[str, list[int], list[int], list[bool]]:
        """The rendered text, the end offset of each message's span, where training starts in it."""
        msgs = [_template_message(m) for m in conv]
        tools = _json_value(tools) or None
        full = self._render(msgs, tools)
        bounds: list[int] = []
        train_from: list[int] = []
        trainable: list[bool] = []
        prev = 0
        for k in range(1, len(msgs) + 1):
            prefix = full if k == len(msgs) else self._render(msgs[:k], tools)
            if not full.startswith(prefix):
                raise ChatFormatError(
                    f"the chat template of {self.profile.name} renders message {k - 1} differently "
                    "depending on what follows it; per-turn masks cannot be derived"
                )
            msg = msgs[k - 1]
            is_trained = msg["role"] == "assistant" and conv[k - 1].get("weight") != 0
            content = msg["content"].strip()
            found = full.find(content, prev, len(prefix)) if content else -1
            train_from.append(found if found >= 0 else prev)
            trainable.append(is_trained)
            bounds.append(len(prefix))
            prev = len(prefix)
        return full, bounds, train_from, trainable

    def _render(self, msgs: list[dict], tools: Any = None) -> str:
        from jinja2.exceptions import TemplateError

        try:
            return self._template.render(  # type: ignore[union-attr]
                messages=msgs,
                tools=tools,
                bos_token=self._bos_token,
                eos_token=self._eos_token,
                add_generation_prompt=False,
            )
        except TemplateError as exc:
            raise ChatFormatError(f"chat template of {self.profile.name}: {exc}") from None


# The chat template of the `mistral-v1` rendering (module docstring), as transformers' apply_chat_template
# runs it: it gives the ids `ChatTokenizer.encode` gives (tested on every record of ../shared/data/chat and on
# tool-call records) with the tokenizer folder of finetune.export, and `{% generation %}` wraps exactly the
# trained text of each trained assistant turn (its content, its calls, EOS), so return_assistant_tokens_mask
# equals `EncodedChat.trained`. Training encodes each turn as its own SentencePiece segment; here the leading
# space of " [INST]" and of " {answer}" is that segment's dummy prefix "▁" (the tokenizer.json prepends "▁"
# only at the start of the text, never after <s> or </s>), and no SentencePiece piece holds "▁" after another
# character, so the one-string tokenization equals the per-segment one. No macros: transformers locates a
# generation block by what the template has yielded so far, which a macro's output is not yet part of.
# `tool_calls` must be the list (as train.jsonl and the OpenAI API give it): Jinja cannot parse JSON text.
MISTRAL_V1_CHAT_TEMPLATE = (
    "{#- curator mistral-v1: the rendering of curator.tokenize_chat (mistral-common v1 for plain chats) -#}\n"
    "{%- set ns = namespace(system='', head='', buf='', has_text=false, fresh=true, first=true) -%}\n"
    "{%- for m in messages -%}\n"
    "    {%- if m['role'] == 'system' and m['content'] is string and m['content'] -%}\n"
    "        {%- set ns.system = ns.system ~ ('\\n\\n' if ns.system else '') ~ m['content'] -%}\n"
    "    {%- endif -%}\n"
    "{%- endfor -%}\n"
    "{%- if tools -%}\n"
    "    {%- set ns.head = '[AVAILABLE_TOOLS] ' ~ (tools | tojson) ~ ' [/AVAILABLE_TOOLS]\\n\\n' -%}\n"
    "{%- endif -%}\n"
    "{%- if ns.system -%}\n"
    "    {%- set ns.head = ns.head ~ ns.system ~ '\\n\\n' -%}\n"
    "{%- endif -%}\n"
    "{{- bos_token -}}\n"
    "{%- for m in messages -%}\n"
    "    {%- set role = 'user' if m['role'] == 'tool' else m['role'] -%}\n"
    "    {%- if role not in ['system', 'user', 'assistant'] -%}\n"
    "        {{- raise_exception('roles are system, user, assistant and tool, got ' ~ (m['role'] | string)) -}}\n"
    "    {%- endif -%}\n"
    "    {%- set weight = (m['weight'] if m['weight'] is defined else none) if role == 'assistant' else none -%}\n"
    "    {%- if role != 'system' -%}\n"
    "        {%- if ns.fresh -%}\n"
    "            {%- set ns.fresh = false -%}\n"
    "            {%- set ns.buf = '' -%}\n"
    "            {%- set ns.has_text = false -%}\n"
    "            {%- if ns.first -%}\n"
    "                {%- set ns.first = false -%}\n"
    "                {%- if role == 'user' -%}\n"
    "                    {%- set ns.buf = ns.head -%}\n"
    "                {%- else -%}\n"
    "                    {{- ' [INST] ' ~ ns.head ~ ' [/INST]' -}}\n"
    "                {%- endif -%}\n"
    "            {%- endif -%}\n"
    "        {%- endif -%}\n"
    "        {%- set text = m['content'] if m['content'] is string else '' -%}\n"
    "        {%- if role == 'assistant' and m['tool_calls'] is defined and m['tool_calls'] -%}\n"
    "            {%- if m['tool_calls'] is string -%}\n"
    "                {{- raise_exception('tool_calls must be a list of calls, not JSON text') -}}\n"
    "            {%- endif -%}\n"
    "            {%- set calls = namespace(text='') -%}\n"
    "            {%- for call in m['tool_calls'] -%}\n"
    "                {%- if call is mapping -%}\n"
    "                    {%- set f = call['function'] if call['function'] is defined and call['function'] is mapping else call -%}\n"
    "                    {%- set args = f['arguments'] if f['arguments'] is defined and f['arguments'] is not none else {} -%}\n"
    "                    {%- set line = '{\"name\": ' ~ ((f['name'] if f['name'] is defined else none) | tojson) ~ ', \"arguments\": ' ~ (args if args is string else (args | tojson)) ~ '}' -%}\n"
    "                {%- else -%}\n"
    "                    {%- set line = call | tojson -%}\n"
    "                {%- endif -%}\n"
    "                {%- set calls.text = calls.text ~ ('\\n' if not loop.first else '') ~ line -%}\n"
    "            {%- endfor -%}\n"
    "            {%- set text = text ~ '\\n\\n' ~ calls.text if text else calls.text -%}\n"
    "        {%- endif -%}\n"
    "        {%- if text and ns.has_text -%}\n"
    "            {%- set ns.buf = ns.buf ~ '\\n\\n' -%}\n"
    "        {%- endif -%}\n"
    "        {%- set ns.buf = ns.buf ~ text -%}\n"
    "        {%- set ns.has_text = ns.has_text or text != '' -%}\n"
    "    {%- endif -%}\n"
    "    {#- a turn ends where the next message has another role (tool counts as user) or weight -#}\n"
    "    {%- set nxt = none if loop.last else loop.nextitem -%}\n"
    "    {%- set next_role = none if nxt is none else ('user' if nxt['role'] == 'tool' else nxt['role']) -%}\n"
    "    {%- set next_weight = (nxt['weight'] if nxt['weight'] is defined else none) if next_role == 'assistant' else none -%}\n"
    "    {%- if role != 'system' and (next_role != role or next_weight != weight) -%}\n"
    "        {%- set ns.fresh = true -%}\n"
    "        {%- if role == 'user' -%}\n"
    "            {{- ' [INST] ' ~ ns.buf ~ ' [/INST]' -}}\n"
    "        {%- elif weight == 0 -%}\n"
    "            {{- (' ' ~ ns.buf if ns.buf else '') ~ eos_token -}}\n"
    "        {%- else -%}\n"
    "            {%- generation -%}\n"
    "                {{- (' ' ~ ns.buf if ns.buf else '') ~ eos_token -}}\n"
    "            {%- endgeneration -%}\n"
    "        {%- endif -%}\n"
    "    {%- endif -%}\n"
    "{%- endfor -%}\n"
    "{%- if ns.first -%}\n"
    "    {{- ' [INST] ' ~ ns.head ~ ' [/INST]' -}}\n"
    "{%- endif -%}\n"
)


def _template_message(msg: dict) -> dict:
    out = {"role": msg.get("role"), "content": _text(msg.get("content"))}
    calls = msg.get("tool_calls")
    if calls:
        out["tool_calls"] = _json_value(calls)
    if msg.get("tool_call_id"):
        out["tool_call_id"] = msg["tool_call_id"]
    return out


def has_generation_markers(template: str) -> bool:
    """Whether a chat template marks trained text with `{% generation %}` (the test TRL applies)."""
    return re.search(r"\{%-?\s*generation\s*-?%\}", template) is not None


def _compile_template(source: str):
    """Compile a chat template the way transformers does (sandboxed, trim/lstrip blocks, tojson).

    `{% generation %}` blocks render their body: the masks here come from the spans of the messages.
    """
    from jinja2 import nodes
    from jinja2.ext import Extension, loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class _Generation(Extension):
        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return nodes.Scope(body).set_lineno(lineno)

    def raise_exception(message: str) -> None:
        from jinja2.exceptions import TemplateError

        raise TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):  # transformers' filter
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols, _Generation]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    return env.from_string(source)


def _special_token(cfg: dict, name: str) -> str | None:
    value = cfg.get(name)
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


@lru_cache(maxsize=8)
def _load(model: str, tokenizer_path: str | None, context_length: int | None) -> ChatTokenizer:
    profile = resolve_profile(model, tokenizer_path, context_length)
    if profile.chat_format == "mistral-v1" and profile.tokenizer_path is None:
        tok = _cached_fast_tokenizer(mistral_v1_model_file())
        # Mistral has no pad token; padding positions are masked out, so EOS serves (as in mistral-finetune)
        return ChatTokenizer(profile, tok, bos_id=1, eos_id=2, pad_id=2, special_ids=frozenset({0, 1, 2}))
    if profile.tokenizer_path is None:
        raise CurateError(
            f"tokens.model: profile {profile.name!r} needs its tokenizer on disk: put the tokenizer files of "
            f"{profile.hf_repo} (tokenizer.json, tokenizer_config.json) in a folder and set "
            "tokens.tokenizer_path to it (nothing is downloaded)"
        )
    folder = Path(profile.tokenizer_path)
    tok_file = folder / "tokenizer.json"
    if not tok_file.is_file():
        raise CurateError(f"tokens.tokenizer_path: {tok_file} not found")
    try:
        tok = Tokenizer.from_file(os.fspath(tok_file))
    except Exception as exc:  # tokenizers raises a bare Exception ("expected value at line 1 column 1")
        raise CurateError(f"{tok_file}: not a valid tokenizer.json: {exc}") from exc
    cfg_file = folder / "tokenizer_config.json"
    cfg = json.loads(cfg_file.read_text(encoding="utf-8")) if cfg_file.is_file() else {}
    ids: dict[str, int] = {}
    for name in ("bos_token", "eos_token"):
        token = _special_token(cfg, name)
        tid = tok.token_to_id(token) if token else None
        if tid is None:
            raise CurateError(f"{cfg_file}: field {name} missing or not in {tok_file}'s vocabulary")
        ids[name] = tid
    pad = _special_token(cfg, "pad_token")
    pad_id = tok.token_to_id(pad) if pad else None
    specials = frozenset(i for i, t in tok.get_added_tokens_decoder().items() if t.special) | {
        ids["bos_token"],
        ids["eos_token"],
    }
    return ChatTokenizer(
        profile,
        tok,
        bos_id=ids["bos_token"],
        eos_id=ids["eos_token"],
        pad_id=ids["eos_token"] if pad_id is None else pad_id,
        special_ids=specials,
    )
