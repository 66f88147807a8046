"""Per-row quality signals as Polars expressions, tuned for assistant answers.

A *signal* is one number per row measured over the turns a rule selects (`assistant`, `user`,
`system` or `all`); a rule in rules/*.yaml (curator/rules.py) compares it to `min_<signal>` /
`max_<signal>` thresholds. The classic web-text heuristics (Gopher, C4, RefinedWeb) are written
for pages; here they are measured on what a chat model is trained to produce:

- the text of a scope is its turns joined with a blank line, but repetition (duplicate lines and
  paragraphs, top n-grams) is measured within each turn and the worst turn counts: a conversation
  that edits a text repeats its lines from turn to turn by design, while a looping answer repeats
  itself inside the turn;
- prose signals (symbols, alphabetic words, unfenced code) read the text with fenced code blocks and
  inline code removed (`curator.code_blocks.strip_code`), so an answer made of code is not judged
  as a page of gibberish;
- signals another stage owns are read from its column: `n_assistant_tokens` (tokens),
  `user_lang`/`assistant_lang` (language), `code_parse_error_frac` (code_language),
  `secret_findings` (secrets).

A signal that does not apply to a row (no turn in the scope, too few words to judge repetition, no
code) is null, and a rule never fires on null.

Sources of the measures and their web-text defaults:
- Gopher: Rae et al. 2021, "Scaling Language Models: Methods, Analysis & Insights from Training
  Gopher", appendix A.1.1 (word count 50..100,000, mean word length 3..10, symbol-to-word ratio
  <= 0.1 for `#` and `...`, >= 80% of words with an alphabetic character, duplicate-line fraction
  <= 0.30, duplicate-paragraph fraction <= 0.30, top 2/3/4-gram character fraction <= 0.20/0.18/0.16).
- C4: Raffel et al. 2020, section 2.2 (drop pages with "lorem ipsum", with `{`, lines without
  terminal punctuation).
- RefinedWeb: Penedo et al. 2023, appendix G (line-wise corrections, URL-heavy lines).
- data-juicer (modelscope/data-juicer) and NeMo Curator (NVIDIA) heuristic filters: the same
  measures as operators (`word_repetition_filter`, `special_characters_filter`,
  `RepeatingTopNGramsFilter`, `UrlsFilter`, `BoilerPlateStringFilter`), used here as references
  for how they are counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import polars as pl

from curator import columns as C
from curator.code_blocks import extract_code_blocks, strip_code

TURN_SCOPES = ("assistant", "user", "system", "all")
_ROLES = {"assistant": ("assistant",), "user": ("user",), "system": ("system",), "all": None}

# Answers shorter than this many words are not judged for n-gram repetition: Gopher applies
# its repetition filters to documents of at least 50 words, where one repeated phrase is not
# already a large share of the text.
MIN_WORDS_FOR_NGRAMS = 50

# --- phrase lists ------------------------------------------------------------------------------
# Refusals: the assistant declines the task. Collected from the phrase lists the open SFT sets
# were cleaned with (the "unfiltered" ShareGPT/WizardLM releases by ehartford, and the
# refusal lists of the OpenHermes/Dolphin cleaning scripts): an answer built around one of these
# teaches the model to decline.
REFUSAL_PATTERN = (
    r"(?i)(?:"
    r"\bI(?:'m| am) (?:sorry|afraid),? (?:but )?I (?:can(?:'t|not)|am (?:not able|unable)|won't)\b"
    r"|\bI (?:can(?:'t|not)|am unable to|am not able to|won't) (?:help|assist|comply|fulfil+|provide|do that|"
    r"create|generate|write|answer|engage|support|complete) (?:with )?(?:that|this|your|you|such|the|it)\b"
    r"|\bI must (?:decline|refuse)\b"
    r"|\bI (?:won't|will not|wouldn't|would not) be able to (?:help|assist|provide|do|write|create|answer|complete)\b"
    r"|\bI(?:'m| am) unable to (?:help|assist|provide|do|write|create|answer|complete|fulfil+|comply)\b"
    r"|\bI(?:'m| am) not (?:able|allowed|permitted) to (?:help|assist|provide|do)\b"
    r"|\bas an AI(?: language model| assistant)?,? I (?:can(?:'t|not)|am (?:not able|unable)|won't|must decline)\b"
    r"|\b(?:it|this) (?:is|would be) (?:not appropriate|inappropriate|unethical) (?:for me )?to\b"
    r"|\bagainst (?:my|OpenAI's) (?:programming|guidelines|policies|policy|content policy)\b"
    r")"
)
# Disclaimers: boilerplate that talks about the model instead of answering ("As an AI language
# model, I don't have personal opinions ..."). Same sources as above.
DISCLAIMER_PATTERN = (
    r"(?i)(?:"
    r"\bas an? (?:AI|artificial intelligence)(?: language model| model| assistant| chatbot)?\b"
    r"|\bI(?:'m| am) (?:just |only )?an? (?:AI|artificial intelligence)(?: language model| model| assistant)?\b"
    r"|\bI (?:do not|don't) have (?:personal )?(?:opinions|feelings|emotions|beliefs|preferences|"
    r"personal experiences|the ability to browse|access to real-time|real-time)\b"
    r"|\bmy (?:knowledge|training data) (?:cutoff|cut-off)\b"
    r"|\bas of my (?:last )?(?:knowledge|training) (?:update|cutoff|cut-off)\b"
    r")"
)
# Placeholder text: lorem ipsum (C4 drops any page containing it), unfilled template variables
# such as `{{name}}` (LLaMA-Factory's identity sets ship them), and fill-in markers.
PLACEHOLDER_PATTERN = (
    r"(?i)(?:"
    r"\blorem ipsum\b"
    r"|\{\{\s*[A-Za-z_][A-Za-z0-9_.]*\s*\}\}"
    r"|\[(?:insert|your|add|enter|put) [^\]\n]{1,40}\]"
    r"|<(?:insert|your|add|enter) [^>\n]{1,40}>"
    r")"
)
# A line that looks like source code (statement ends, block openers, declarations, imports,
# comments). Used on prose only, to find code an answer did not put in a fence.
CODE_LINE_PATTERN = (
    r"(?m)^[ \t]*(?:"
    r"(?:def|class|import|from \S+ import|return|if|elif|else|for|while|try|except|catch|switch|case|"
    r"public|private|protected|static|func|fn|let|const|var|int|void|package|using|struct|impl|#include|"
    r"SELECT|INSERT|UPDATE|CREATE|console\.log|print|puts|end|End|done|fi|esac|Next|Loop|Wend|FROM|WHERE|"
    r"ls|cd|echo|find|du|tar|grep|sudo|pip|npm|git|python|mkdir|rm|cp|mv|chmod|curl|wget)\b[^\n]*"
    r"|[^\n]*[;{}][ \t]*"
    r"|[^\n]*\)[ \t]*:[ \t]*"
    r"|//[^\n]*"
    r")$"
)
URL_PATTERN = r"(?i)\b(?:https?://|ftp://|www\.)[^\s<>\"')\]]+"
# An address the secrets stage redacted still counts: the rule judges the text, whatever the
# secrets policy did to the addresses in it.
EMAIL_PATTERN = r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b|\[REDACTED:email\]"
# A cut-off answer stops after a word: its last line is prose (not indented, at least
# MIN_CUT_LINE_WORDS words, not a line of code such as `done`, `End Sub` or `return x`) and ends in
# a letter, a comma, an opening bracket or an operator (GSM8K's "She put", "$50 * 2 ="). Sentence
# punctuation, closing brackets and quotes, digits (GSM8K's "#### 72"), emoji and closing fences
# all end an answer properly.
MIN_CUT_LINE_WORDS = 2
_CUT_END = r"[\p{L},(\[{–—=+*/&-]$"
# A short last line that is a list item, a heading, a table row or a key: value pair ends without
# a period by convention ("- Flour", "## Summary"), so it is not taken as cut off; a list item of
# more than MAX_STRUCTURED_WORDS words is a sentence and is judged like one.
_STRUCTURED_LAST_LINE = r"^(?:[-*+•]\s|\d+[.)]\s|#{1,6}\s|\||[A-Za-z][\w ]{0,30}:\s)"
MAX_STRUCTURED_WORDS = 8
# Prose signals (symbols, alphabetic words) are not judged on fewer prose words than this: the
# one-line caption of a code answer says nothing about the answer's prose.
MIN_PROSE_WORDS = 10


@dataclass
class Scope:
    """Helper columns a set of signals needs, materialised once before the rules are evaluated."""

    columns: dict[str, pl.Expr] = field(default_factory=dict)  # from `messages`
    frame: dict[str, Callable[[pl.DataFrame], pl.Series]] = field(default_factory=dict)  # whole-frame passes
    derived: dict[str, pl.Expr] = field(default_factory=dict)  # from the above, added after them

    def text(self, turns: str) -> pl.Expr:
        """The turns of `turns` joined with a blank line; null when the row has no such turn."""
        name = f"__text_{turns}"
        if name not in self.columns:
            contents = turn_contents(turns)
            self.columns[name] = pl.when(contents.list.len() > 0).then(contents.list.join("\n\n")).otherwise(None)
        return pl.col(name)

    def n_words(self, turns: str, prose: bool = False) -> pl.Expr:
        """Whitespace-separated words of the text (or of its prose), counted once per scope."""
        name = f"__nwords_{'prose' if prose else 'text'}_{turns}"
        if name not in self.derived:
            self.derived[name] = _words(self.prose(turns) if prose else self.text(turns))
        return pl.col(name)

    def last(self, turns: str) -> pl.Expr:
        """The content of the last turn of `turns`."""
        name = f"__last_{turns}"
        if name not in self.columns:
            self.columns[name] = turn_contents(turns).list.last()
        return pl.col(name)

    def turns(self, turns: str) -> pl.Expr:
        """The contents of the turns of `turns`, one list item per turn."""
        name = f"__turns_{turns}"
        if name not in self.columns:
            self.columns[name] = turn_contents(turns)
        return pl.col(name)

    def turn_words(self, turns: str) -> pl.Expr:
        """Per turn, the lowercased words (`\\w+`) of the turn, hashed to UInt64, in order."""
        name = f"__turnwords_{turns}"
        if name not in self.derived:
            words = pl.element().str.to_lowercase().str.extract_all(r"\w+").list.eval(pl.element().hash(seed=0))
            self.derived[name] = self.turns(turns).list.eval(words)
        return pl.col(name)

    def code(self, turns: str, item: str) -> pl.Expr:
        """A field of the fenced-code analysis of the turns (see `code_analysis`)."""
        name = f"__code_{turns}"
        if name not in self.frame:
            self.frame[name] = lambda df: code_analysis(df.select(turn_contents(turns)).to_series())
        return pl.col(name).struct.field(item)

    def echo(self) -> pl.Expr:
        """1.0 when an assistant turn repeats its user turn (see `echo_of_prompt`)."""
        if "__echo" not in self.frame:
            self.frame["__echo"] = echo_of_prompt
        return pl.col("__echo")

    def prose(self, turns: str) -> pl.Expr:
        """The text of the turns without fenced code blocks and inline code."""
        return self.code(turns, "prose")


def turn_contents(turns: str) -> pl.Expr:
    """List of the contents of the turns in scope `turns` (assistant | user | system | all)."""
    roles = _ROLES[turns]
    msgs = pl.col("messages")
    if roles is None:
        return msgs.list.eval(pl.element().struct.field("content").fill_null(""))
    return msgs.list.eval(
        pl.element().filter(pl.element().struct.field("role").is_in(list(roles))).struct.field("content").fill_null("")
    )


# A one-line `inline code` span (single or double backticks), as strip_code removes them.
_INLINE_CODE_SPAN = r"``[^`\n]+``|`[^`\n]+`"

CODE_ANALYSIS = pl.Struct(
    {"prose": pl.Utf8, "n_blocks": pl.Int64, "n_unclosed": pl.Int64, "n_glued": pl.Int64, "n_todo_only": pl.Int64}
)
# A code body made only of these lines is a stub: comments, TODO/FIXME markers, `pass`, `...`,
# empty braces (rule todo_only_code): an answer that hands back a stub did not do the task.
_STUB_LINE = (
    r"^\s*(?:(?:#|//|--|/\*|\*|<!--)\s*.*|pass|\.\.\.|\{\s*\}|\}|\{|"
    r"(?:raise NotImplementedError|throw new Error|todo!|unimplemented!|panic!)\b.*|)\s*$"
)


def code_analysis(turn_texts: pl.Series) -> pl.Series:
    """Per row, over its list of turn texts: prose without code, and counts of code blocks.

    Runs `curator.code_blocks.extract_code_blocks` (the project's one fence parser) per turn, so an
    unclosed fence in one turn is not closed by the next turn's opening fence. Rows whose turns hold
    no fence are answered without Python: their prose is their text without `inline code` spans.
    """
    import re

    stub_line = re.compile(_STUB_LINE)
    todo = re.compile(r"(?i)\b(?:TODO|FIXME|XXX|implement (?:me|this|here)|your code here)\b")
    frame = turn_texts.to_frame("t").with_columns(
        has=pl.col("t").list.join("\n").str.contains(r"```|~~~").fill_null(False),
    )
    python: list[dict | None] = [None] * frame.height
    idx = frame.get_column("has").arg_true().to_list()
    for i, turns in zip(idx, frame.get_column("t").gather(idx).to_list()):
        prose_parts, n_blocks, n_unclosed, n_glued, n_todo = [], 0, 0, 0, 0
        for text in turns:
            text = text or ""
            blocks = extract_code_blocks(text)
            n_blocks += len(blocks)
            for b in blocks:
                if not b.closed:
                    # "}```": the closing fence glued to the last line; Markdown leaves the block
                    # open, but the answer is complete, unlike one cut inside its code
                    if b.code.rstrip().endswith(b.fence[0] * 3):
                        n_glued += 1
                    else:
                        n_unclosed += 1
                if todo.search(b.code):
                    # at most one line of real code (the signature the stub sits in)
                    lines = [ln for ln in b.code.split("\n") if ln.strip()]
                    substantive = [ln for ln in lines if not (stub_line.match(ln) or todo.search(ln))]
                    n_todo += len(substantive) <= 1
            prose_parts.append(strip_code(text, blocks))
        python[i] = {
            "prose": "\n\n".join(prose_parts),
            "n_blocks": n_blocks,
            "n_unclosed": n_unclosed,
            "n_glued": n_glued,
            "n_todo_only": n_todo,
        }
    t = pl.col("t")
    native = pl.when(t.list.len() > 0).then(
        pl.struct(
            t.list.join("\n\n").str.replace_all(_INLINE_CODE_SPAN, " ").alias("prose"),
            pl.lit(0, pl.Int64).alias("n_blocks"),
            pl.lit(0, pl.Int64).alias("n_unclosed"),
            pl.lit(0, pl.Int64).alias("n_glued"),
            pl.lit(0, pl.Int64).alias("n_todo_only"),
        )
    )
    return frame.with_columns(py=pl.Series(python, dtype=CODE_ANALYSIS)).select(
        pl.when(pl.col("has")).then(pl.col("py")).otherwise(native).alias(turn_texts.name)
    ).to_series()


# --- the signals -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Signal:
    """One measure. `build(scope, turns)` returns a Float64 expression (null = not applicable)."""

    name: str
    description: str
    turns: tuple[str, ...]
    build: Callable[[Scope, str], pl.Expr]
    needs: tuple[str, ...] = ()  # columns written by earlier stages


def _words(text: pl.Expr) -> pl.Expr:
    return text.str.count_matches(r"\S+").cast(pl.Float64)


def _dup_frac(text: pl.Expr, sep: str, min_chars: int) -> pl.Expr:
    """Fraction of the units (lines or paragraphs) that repeat an earlier unit (Gopher).

    Only units with at least `min_chars` non-space characters count: a closing brace or a blank
    line repeats in every piece of code and says nothing about a looping answer.
    """
    units = text.str.split(sep).list.eval(
        pl.element().str.strip_chars().filter(pl.element().str.strip_chars().str.len_chars() >= min_chars)
    )
    n = units.list.len()
    return pl.when(n >= 2).then((n - units.list.n_unique()).cast(pl.Float64) / n).otherwise(None)


def _worst_turn(turns: pl.Expr, measure: Callable[[pl.Expr], pl.Expr]) -> pl.Expr:
    """The largest value of `measure` over the items of `turns` (one per turn); null when it applies to none."""
    return turns.list.eval(measure(pl.element())).list.max()


def _top_ngram_frac(words: pl.Expr, n: int) -> pl.Expr:
    """Share of the words covered by the most frequent word n-gram (Gopher's top n-gram fraction,
    counted in words rather than characters). Null under MIN_WORDS_FOR_NGRAMS words (of one turn).

    `words` are hashed words (`Scope.words`); an n-gram is the polynomial hash of n consecutive
    word hashes, so the n-grams of all rows are counted in one vectorised pass.
    """
    gram = pl.element()
    for k in range(1, n):
        gram = gram * _NGRAM_BASE + pl.element().shift(-k)
    top = words.list.eval(gram.drop_nulls().unique_counts().max()).list.first()
    count = words.list.len()
    # overlapping occurrences ("a a a a" holds "a a" three times) can cover more than every word
    share = (top.cast(pl.Float64) * n / count).clip(upper_bound=1.0)
    return pl.when(count >= MIN_WORDS_FOR_NGRAMS).then(share).otherwise(None)


# odd multiplier for combining word hashes into n-gram hashes (wrapping u64 arithmetic)
_NGRAM_BASE = 1_000_003


def _ends_mid_sentence(last: pl.Expr) -> pl.Expr:
    """1.0 when the last turn stops after a word with no terminal mark (C4 keeps only lines that
    end in terminal punctuation; here only the answer's end is judged, since a cut-off answer is
    the defect). Null on an empty turn."""
    stripped = last.str.strip_chars_end()
    last_line = stripped.str.extract(r"([^\n]*)$", 1)
    n_words = last_line.str.count_matches(r"\S+")
    cut = (
        last_line.str.contains(_CUT_END)
        & ~last_line.str.contains(r"^\s")
        & (n_words >= MIN_CUT_LINE_WORDS)
        & ~(last_line.str.contains(_STRUCTURED_LAST_LINE) & (n_words <= MAX_STRUCTURED_WORDS))
        & ~last_line.str.contains(CODE_LINE_PATTERN)
    )
    return pl.when(stripped.str.len_chars() > 0).then(cut.cast(pl.Float64)).otherwise(None)


def _unclosed_brackets(last: pl.Expr) -> pl.Expr:
    """Brackets opened and never closed in the last turn, summed over (), [] and {}: code or data
    cut off mid-way leaves them open. Extra closers (list markers like "1)", smileys) do not count."""
    total = pl.lit(0, dtype=pl.Int64)
    for o, c in (("(", ")"), ("[", "]"), ("{", "}")):
        opens = last.str.count_matches(o, literal=True).cast(pl.Int64)
        closes = last.str.count_matches(c, literal=True).cast(pl.Int64)
        total = total + (opens - closes).clip(lower_bound=0)
    return total.cast(pl.Float64)


# An answer shorter than this is not judged as an echo: "Yes", "42" or a one-word edit of the
# question may legitimately appear inside it.
MIN_ECHO_CHARS = 20


def echo_of_prompt(df: pl.DataFrame) -> pl.Series:
    """Per row, 1.0 when some assistant turn (at least MIN_ECHO_CHARS long) is contained verbatim
    in the user turn before it, 0.0 otherwise, null without such a pair.

    Catches answers that hand the question back instead of answering (and "fixed" code identical to
    the code given), the echo/copy checks of data-juicer and NeMo Curator, done on the turn pairs.
    Case is kept: an answer that only changes case did change the text.
    """
    turns = (
        df.select(pl.int_range(pl.len(), dtype=pl.UInt32).alias("__r"), pl.col("messages"))
        .explode("messages")
        .select("__r", pl.col("messages").struct.field("role"), pl.col("messages").struct.field("content").str.strip_chars())
    )
    prev_user = pl.when(pl.col("role") == "user").then(pl.col("content")).otherwise(None).forward_fill().shift(1)
    pairs = turns.with_columns(prev_user.over("__r").alias("__u")).filter(
        pl.col("role") == "assistant", pl.col("__u").is_not_null()
    )
    hit = (pl.col("content").str.len_chars() >= MIN_ECHO_CHARS) & pl.col("__u").str.contains(pl.col("content"), literal=True)
    per_row = pairs.group_by("__r").agg(hit.cast(pl.Float64).max().alias("echo"))
    return (
        pl.DataFrame({"__r": pl.int_range(df.height, dtype=pl.UInt32, eager=True)})
        .join(per_row, on="__r", how="left", maintain_order="left")
        .get_column("echo")
    )


def _per_100_words(count: pl.Expr, words: pl.Expr) -> pl.Expr:
    return pl.when(words > 0).then(count.cast(pl.Float64) * 100.0 / words).otherwise(None)


def _lang_mismatch(scope: Scope, turns: str) -> pl.Expr:
    u, a = pl.col(C.USER_LANG), pl.col(C.ASSISTANT_LANG)
    known = u.is_not_null() & a.is_not_null() & (u != "und") & (a != "und")
    return pl.when(known).then((u != a).cast(pl.Float64)).otherwise(None)


def _symbol_ratio(prose: pl.Expr, n: pl.Expr) -> pl.Expr:
    # Gopher counts the hash symbol and the ellipsis per word.
    symbols = prose.str.count_matches(r"#+|\.\.\.|…")
    return pl.when(n >= MIN_PROSE_WORDS).then(symbols.cast(pl.Float64) / n).otherwise(None)


def _alpha_word_frac(prose: pl.Expr, n: pl.Expr) -> pl.Expr:
    alpha = prose.str.count_matches(r"\S*\p{L}\S*").cast(pl.Float64)
    return pl.when(n >= MIN_PROSE_WORDS).then(alpha / n).otherwise(None)


def _unfenced_code_frac(prose: pl.Expr) -> pl.Expr:
    lines = prose.str.count_matches(r"(?m)^[ \t]*\S[^\n]*$")
    code = prose.str.count_matches(CODE_LINE_PATTERN)
    return pl.when(lines >= 3).then(code.cast(pl.Float64) / lines.cast(pl.Float64)).otherwise(None)


SIGNALS: dict[str, Signal] = {
    s.name: s
    for s in [
        Signal("words", "number of whitespace-separated words", TURN_SCOPES, lambda sc, t: sc.n_words(t).fill_null(0.0)),
        Signal(
            "tokens",
            "trained tokens of the example (n_assistant_tokens, Mistral-7B-Instruct-v0.2 tokenizer)",
            ("assistant",),
            lambda sc, t: pl.col(C.N_ASSISTANT_TOKENS).cast(pl.Float64),
            (C.N_ASSISTANT_TOKENS,),
        ),
        Signal("dup_line_frac", "fraction of a turn's lines (>= 10 characters) repeating an earlier line of it; "
               "the worst turn", TURN_SCOPES, lambda sc, t: _worst_turn(sc.turns(t), lambda x: _dup_frac(x, "\n", 10))),
        Signal("dup_para_frac", "fraction of a turn's paragraphs (>= 10 characters) repeating an earlier one of it; "
               "the worst turn", TURN_SCOPES,
               lambda sc, t: _worst_turn(sc.turns(t), lambda x: _dup_frac(x, "\n\n", 10))),
        Signal("top_2gram_frac", "share of a turn's words in its most frequent word 2-gram; the worst turn",
               TURN_SCOPES, lambda sc, t: _worst_turn(sc.turn_words(t), lambda w: _top_ngram_frac(w, 2))),
        Signal("top_3gram_frac", "share of a turn's words in its most frequent word 3-gram; the worst turn",
               TURN_SCOPES, lambda sc, t: _worst_turn(sc.turn_words(t), lambda w: _top_ngram_frac(w, 3))),
        Signal("top_4gram_frac", "share of a turn's words in its most frequent word 4-gram; the worst turn",
               TURN_SCOPES, lambda sc, t: _worst_turn(sc.turn_words(t), lambda w: _top_ngram_frac(w, 4))),
        Signal("symbol_ratio", "'#' runs and ellipses per word of prose", TURN_SCOPES,
               lambda sc, t: _symbol_ratio(sc.prose(t), sc.n_words(t, prose=True))),
        Signal("alpha_word_frac", "fraction of prose words holding a letter", TURN_SCOPES,
               lambda sc, t: _alpha_word_frac(sc.prose(t), sc.n_words(t, prose=True))),
        Signal("refusals", "refusal phrases", TURN_SCOPES,
               lambda sc, t: sc.text(t).str.count_matches(REFUSAL_PATTERN).cast(pl.Float64)),
        Signal("disclaimers", "'as an AI language model' style disclaimers", TURN_SCOPES,
               lambda sc, t: sc.text(t).str.count_matches(DISCLAIMER_PATTERN).cast(pl.Float64)),
        Signal("ends_mid_sentence", "1 when the last turn stops after a word without a terminal mark", TURN_SCOPES,
               lambda sc, t: _ends_mid_sentence(sc.last(t))),
        Signal("unclosed_brackets", "brackets opened and not closed in the last turn", TURN_SCOPES,
               lambda sc, t: _unclosed_brackets(sc.last(t))),
        Signal("unclosed_fences", "code fences never closed (a glued closing fence aside)", TURN_SCOPES,
               lambda sc, t: sc.code(t, "n_unclosed").cast(pl.Float64)),
        Signal("glued_fences", "code blocks closed by a fence glued to the code line (\"}```\")", TURN_SCOPES,
               lambda sc, t: sc.code(t, "n_glued").cast(pl.Float64)),
        Signal("echo", "1 when an assistant turn is contained verbatim in the user turn before it", ("assistant",),
               lambda sc, t: sc.echo()),
        Signal("placeholders", "lorem ipsum, {{template}} variables, [insert ...] markers", TURN_SCOPES,
               lambda sc, t: sc.text(t).str.count_matches(PLACEHOLDER_PATTERN).cast(pl.Float64)),
        Signal("todo_only_blocks", "code blocks holding only comments, TODO and stubs", TURN_SCOPES,
               lambda sc, t: sc.code(t, "n_todo_only").cast(pl.Float64)),
        Signal("unfenced_code_frac", "fraction of prose lines that look like source code (code outside a fence)",
               TURN_SCOPES, lambda sc, t: _unfenced_code_frac(sc.prose(t))),
        Signal("lang_mismatch", "1 when user and assistant languages are known and differ", ("assistant",),
               _lang_mismatch, (C.USER_LANG, C.ASSISTANT_LANG)),
        Signal(C.CODE_PARSE_ERROR_FRAC, "largest share of error nodes in an assistant code block (tree-sitter)",
               ("assistant",), lambda sc, t: pl.col(C.CODE_PARSE_ERROR_FRAC).cast(pl.Float64),
               (C.CODE_PARSE_ERROR_FRAC,)),
        Signal("urls_per_100_words", "URLs per 100 words", TURN_SCOPES,
               lambda sc, t: _per_100_words(sc.text(t).str.count_matches(URL_PATTERN), sc.n_words(t))),
        Signal("emails_per_100_words", "e-mail addresses per 100 words", TURN_SCOPES,
               lambda sc, t: _per_100_words(sc.text(t).str.count_matches(EMAIL_PATTERN), sc.n_words(t))),
        Signal(C.SECRET_FINDINGS, "secrets and PII found by the secrets stage (any action)", ("all",),
               lambda sc, t: pl.col(C.SECRET_FINDINGS).list.len().cast(pl.Float64), (C.SECRET_FINDINGS,)),
    ]
}
