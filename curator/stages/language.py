"""Natural language of each example and of its user and assistant turns: Chinese, Japanese and
Korean by script, the others with langdetect.

Reads: `messages`. Writes:
- `user_lang`, `assistant_lang` Utf8: ISO 639-1 code of the prose of the user's (assistant's)
  turns, or "und";
- `lang` Utf8, `lang_confidence` Float64, `lang_reason` Utf8: the example's language (system,
  user and assistant prose), its confidence, and why it is "und" (null otherwise).

Prose is a turn's text without fenced code blocks, inline code, URLs and e-mail addresses (code
and links are not the language of the conversation). A role's turns are joined and cut to
`max_sample_chars`: langdetect samples random character n-grams of the text until its estimate
converges, so a kilobyte of prose says as much as the whole text, and a bounded sample keeps the
cost per example flat (langdetect itself reads at most 10,000 characters, Detector.max_text_length).

Short text: langdetect's README warns that on text "either too short or too ambiguous" its answer
is not reliable, so a sample with fewer than `min_letters` letters is "und" with reason
`too_short` (`no_text` when the role wrote no prose at all); an estimate whose probability is
below `min_confidence` is "und" with reason `low_confidence`. The default of 20 letters is where
accuracy on the UDHR set rises above 0.8 (bench/language_bench.py). A Han, Kana or Hangul
character counts as `cjk_letter_weight` (2.5) letters: Chinese and Japanese put no spaces between
words, a Chinese word is about two characters where an English one is about five letters, so N
such characters say about as much as N/2 words (a Hangul block spells two or three sounds).

Script first: Chinese, Japanese and Korean are told apart by their writing systems, which
langdetect's n-gram profiles do not do reliably on short text (Chinese Alpaca came out as `ko`,
`vi`, or `no` when a few brand names were in it). When Han, Kana and Hangul characters (weighted as
above) make at least `script_min_share` of a sample's letters, the sample is Korean when Hangul is
at least half of them, Japanese when Kana is at least `kana_min_share` of the Han and Kana (a lone
`の` in a Chinese shop name is not Japanese; Japanese prose is 40-70% Kana), else Chinese; its
confidence is that share. Latin brand names and identifiers inside CJK prose only lower the share;
code blocks are not in the sample at all. Simplified and Traditional Chinese are both `zh`: the
stage gives ISO 639-1 codes (langdetect's zh-cn/zh-tw were folded the same way), and telling them
apart needs a character table the stage does not ship.

Fast path: text whose letters are ASCII (at most `fast_max_non_ascii` of them outside it: the
`é` of a borrowed `café`, a name like `Saint-Rémy`), with at least `fast_min_words` words of
which at least `fast_min_share` are frequent English words (`EN_COMMON_WORDS`, function words
and everyday words, no tech loanwords) and fewer than two (or than `fast_max_foreign` of them)
frequent words of other languages (`FOREIGN_COMMON_WORDS`: Indonesian `yang`, Spanish `para`,
German `und` ...), is English without asking langdetect, with confidence `FAST_CONFIDENCE`. No
UDHR paragraph of the 25 other languages reaches 24% of these words, English paragraphs of 20+
words there are at 37% or more and hold none of the foreign words, and on the real chat data
langdetect agrees with the fast path on 99.7% of the texts it takes (bench/language_bench.py,
figures in bench/RESULTS.md). The verdicts that need no langdetect (no text, too short, script,
fast path) are Polars expressions over all samples at once. Repeated samples (data collected
twice) are detected once, and the rest go to langdetect in one batch, over `workers` processes.
The stage's summary counts the distinct samples by how they were decided
(`distinct_samples_by_decision`: `script`, `fast_path`, `langdetect`, or the reason of an `und`).

Determinism: langdetect draws random n-grams; a private DetectorFactory seeded with the run's
`seed` gives the same answer for the same text on every run.

Example language: the user's and the assistant's language when they agree (or when one of them is
"und"); when they differ, langdetect on the joined prose of the whole example.
"""

from __future__ import annotations

import os
from collections import Counter
from functools import lru_cache
from importlib import metadata

import polars as pl

from curator import columns as C
from curator.code_blocks import strip_code
from curator.stages.base import StageContext
from curator.stage_configs import LanguageConfig as Config  # noqa: F401  (re-exported: the stage's settings)

NAME = "language"
UND = "und"
REASON_NO_TEXT = "no_text"
REASON_TOO_SHORT = "too_short"
REASON_LOW_CONFIDENCE = "low_confidence"
FAST_CONFIDENCE = 0.99
DECIDED_BY_SCRIPT = "script"

# Frequent English words: Fry's list of the 100 most common words of English text (Fry, Kress &
# Fountoukidis, "The Reading Teacher's Book of Lists") and the words that chat instructions
# are made of. Words that other languages share or borrow are left out: the tech loanwords that
# Indonesian, Spanish or German coding prose is full of (function, program, code, list, array,
# string, return, value, number, total, class, object, method, result, example, using, data,
# text, input, user, design), Fry's `number`, words of Italian (`create`, `generate`,
# `calculate`, `compose`, `per`, `file`), German/Dutch/Scandinavian (`also`, `most`, `name`,
# `just`) and French (`question`, `main`, `large`).
EN_COMMON_WORDS = frozenset(
    """the of and to a in is you that it he was for on are as with his they i at be this have from or
    one had by word but not what all were we when your can said there use an each which she do how
    their if will up other about out many then them these so some her would make like him into time
    has look two more write go see no way could people my than first water been call who its
    now find long down day did get come made may part given find new second much""".split()
) | frozenset(
    """following describe explain give provide based sentence answer please should would
    about below above identify short best good different between three four five ten why because
    before know think only very through where any same our us years work help want need paragraph
    write rewrite summarize suggest classify develop solve every more such
    well first last next small big great little thing things ways days time times year world life
    food money book books city country company people story words""".split()
)

# Frequent function words of other languages written in Latin letters (Indonesian/Malay,
# Spanish, Portuguese, French, Italian, German, Dutch, Tagalog, Scandinavian, Turkish) that are
# not English words: a sample with `fast_max_foreign` of them (at least two) leaves the fast path
# for langdetect, however many English (loan)words it holds.
FOREIGN_COMMON_WORDS = frozenset(
    """yang dan untuk dengan ini itu ada tidak saya akan dalam pada adalah atau bisa dari sebuah
    bagaimana cara apa kamu anda kita mereka juga sudah karena jika tetapi
    el la los las del que una por para como pero esta este tiene puedo hacer quiero cuando donde
    os uma não em com uma são isso ela ele seu sua fazer quero
    le les des et est une pour dans qui pas sur avec je vous nous ce cette sont fait
    il di che della delle sono questo questa anche nel alla voglio
    der das und ist nicht ein eine ich zu mit dem auf sie wie auch oder wird werden
    het een van niet ik zijn voor op wil hoe
    ang ng sa mga ako ay ko kong ito
    och att det som jag inte og er til ikke jeg
    bir ve bu için ile""".split()
)


@lru_cache(maxsize=4)
def _factory(seed: int):
    """A private, seeded langdetect factory (the module-level one is global state)."""
    from langdetect.detector_factory import PROFILES_DIRECTORY, DetectorFactory

    factory = DetectorFactory()
    factory.load_profile(PROFILES_DIRECTORY)
    factory.set_seed(seed)
    return factory


# URLs and e-mail addresses (the same pattern runs in Polars' Rust regex engine and in `re`)
_URL_RE = r"https?://\S+|www\.\S+|\S+@\S+\.\w+"
# A plain word as a whole whitespace-separated token, with its punctuation. Polars' regex engine
# has no lookaround, so tokens are counted on the line with every whitespace run doubled and a
# space at each end: each token then has a space of its own on both sides, and a match (which
# holds no space inside) is exactly one token. Punctuation is Unicode's (\p{P}: `¿`, `«»`, `„“`,
# `。`, `？`) less the characters of code (`;`, braces, brackets, `@#/\%&`), and no `(` after a
# word or `)` before one (a call `f()` is not a word). A token holding a Chinese or Japanese
# character is a word when it is made of letters, digits and punctuation. Those scripts put no
# spaces between words, so before counting, every one or two of their characters start a token
# of their own (`如何在Python中对列表进行排序？` is 7 words): N characters count as N/2 words, and
# a number or a Latin name between them (`于 1830 年代`, `(AI)`) weighs as little as in English.
_PUNCT = r"[\p{P}&&[^;{}\[\]@#/\\%&]]"
_PUNCT_BEFORE = r"[\p{P}&&[^;{}\[\]@#/\\%&)]]"
_PUNCT_AFTER = r"[\p{P}&&[^;{}\[\]@#/\\%&(]]"
_HAN = r"\p{Han}"
_KANA = r"[\p{Hiragana}\p{Katakana}ー]"
_HANGUL = r"\p{Hangul}"
_CJK = r"[\p{Han}\p{Hiragana}\p{Katakana}ー]"
# code identifiers are not written in these scripts: `人工智能 (AI) 是...` is not a call
_NOT_CJK = r"[^\p{Han}\p{Hiragana}\p{Katakana}ー\p{Hangul}]"
_PROSE_TOKEN = (
    rf" (?:{_PUNCT_BEFORE}*[^\W\d_]+(?:['’-][^\W\d_]+)*{_PUNCT_AFTER}*"
    rf"|(?:[\p{{L}}\p{{M}}\p{{N}}]|{_PUNCT})*{_CJK}(?:[\p{{L}}\p{{M}}\p{{N}}]|{_PUNCT})*) "
)
# Statement shapes no sentence has (each a Polars regex, a line matching any of them is code):
# `;`/`{`/`}` at the end; a line that starts with a call (`print(x)`, `console.log(`), an
# assignment (`total += x`) or ends with one (`x.sort()`); an upper-case SQL statement; a keyword
# leading the line followed by code (`=`, a bracket, `<>|&$`, `keyword(`, a call, a colon ending a
# short line: `for x in xs:`, an operator, a `--flag`) or by at most one word (`import os`,
# `return x`), a quoted string after `echo`/`print`, a package manager's command, and the
# import forms `import a.b as c`, `from a import b`. A lower-case sentence that starts with a keyword
# (`if i have 3 apples ...`, `print the numbers ...`, `from the list below ...`) or mentions a
# call in passing (`What does len() do?`) stays prose.
# Names of calls and assignments hold no Han, Kana or Hangul (`总和 = 5` is a sentence's formula).
_KEYWORDS = (
    "import|from|return|public|private|protected|static|def|class|function|const|let|var|#include|using|"
    "package|print|echo|if|elif|else|for|foreach|while|do|switch|case|try|catch|except|with|fn|func|struct|"
    "impl|async|await|yield|raise|throw|new|delete|local|puts|sudo|cd|pip|npm"
)
_CODE_LINES = [
    r"[;{}]\s*$",
    rf"^\s*[\w.$&&{_NOT_CJK}]+\s*\(",
    rf"^\s*[\w.$\[\]'\x22&&{_NOT_CJK}]+\s*([-+*/%|&^]|\*\*|//|<<|>>)?=[^=]",
    rf"[\w&&{_NOT_CJK}]\([^()]*\)[;:]?\s*$",
    r"^\s*(SELECT|INSERT|UPDATE|CREATE|DELETE|ALTER|DROP)\b[^.?!]*$",
    rf"^\s*({_KEYWORDS})\b.*([=\[\]<>|&$]|\w\(|\s[-+*/%]\s|\s--?[a-z])",
    r"^\s*(echo|print|puts|printf)\s+[\x22']",
    r"^\s*(sudo\s+)?(pip3?|npm|npx|yarn|apt|apt-get|brew|git|docker|conda|cargo|gem|composer|dotnet|mvn|gradle)\s+"
    r"(install|add|remove|uninstall|run|init|clone|build|get|commit|push|pull|checkout|status|test|update|upgrade|"
    r"start|exec|new)\b",
    rf"^\s*({_KEYWORDS})\s*\(",
    rf"^\s*({_KEYWORDS})(\s+\S+){{0,3}}:\s*$",
    rf"^\s*({_KEYWORDS})(\s+\S+)?\s*$",
    r"^\s*import [\w.]+( as \w+)?(\s*,\s*[\w.]+( as \w+)?)*\s*$",
    r"^\s*from [\w.]+ import\b",
]
_CODE_LINE = "|".join(f"(?:{p})" for p in _CODE_LINES)
_LETTER_RE = r"[^\W\d_]"
_WORD_RE = r"[^\W\d_]+"
_NON_ASCII_LETTER = r"[[^\W\d_]&&[^\x00-\x7F]]"


def _strip_code(texts: pl.Series) -> pl.Series:
    """Fenced blocks and inline code cut out (code_blocks.strip_code, the CommonMark rules);
    only turns holding a backtick or a tilde fence go through Python."""
    mask = texts.str.contains("`", literal=True) | texts.str.contains("~~~", literal=True)
    hits = mask.fill_null(False).arg_true()
    if len(hits) == 0:
        return texts
    # scatter writes in place: on a clone, so the caller's column is left as it was
    return texts.clone().scatter(hits, [strip_code(t) for t in texts.gather(hits).to_list()])


def prose_of_turns(texts: pl.Series, limit: int | None = None) -> pl.DataFrame:
    """The natural-language part of each turn: no code (fenced, inline, or lines of unfenced
    code), URLs or e-mails; a turn's lines are read until `limit` characters of prose are found.

    A line is prose when plain words (`_PROSE_TOKEN`; two Chinese or Japanese characters make
    one) make at least 60% of its tokens (at least 3 of them; all of them on a line of one or two
    tokens) and it has no statement shape (`_CODE_LINES`). A GSM8K step with its `<<48/2=24>>` calculator note stays prose; answers that
    are code without fences (GPTeacher Codegen) would otherwise be read as Romanian or Catalan.

    All rows at once, as Polars string expressions (per-line Python was the stage's main cost).
    Returns one row per turn: `prose` (the prose lines as written, joined by newlines), `size`
    (its length in characters) and `flat` (the same words with every whitespace run made one
    space: what langdetect is given).
    """
    texts = _strip_code(texts.cast(pl.Utf8).fill_null("")).str.replace_all(_URL_RE, " ")
    ids = pl.int_range(len(texts), dtype=pl.Int64, eager=True)
    flat = pl.col("line").str.replace_all(r"\s+", " ").str.strip_chars()
    # cheap filters first, so the costlier expressions see fewer lines
    lines = (
        pl.DataFrame({"_t": ids, "line": texts.str.split("\n")})
        .explode("line")
        .filter(pl.col("line").str.len_bytes() > 0)
        .filter(~pl.col("line").str.contains(_CODE_LINE))
        .with_columns(flat.alias("flat"))
        .filter(pl.col("flat") != "")
        .with_columns(
            tokens=(" " + pl.col("flat").str.replace_all(" ", "  ", literal=True) + " ").str.replace_all(
                f"{_CJK}{{1,2}}", "  $0"
            )
        )
        .with_columns(
            n=pl.col("tokens").str.count_matches(r"\S+"),
            words=pl.col("tokens").str.count_matches(_PROSE_TOKEN),
        )
        .filter(
            pl.when(pl.col("n") < 3)
            .then(pl.col("words") == pl.col("n"))
            .otherwise((pl.col("words") >= 3) & (pl.col("words") >= 0.6 * pl.col("n")))
        )
        .with_columns(size=pl.col("line").str.len_chars() + 1)
    )
    if limit is not None:
        lines = lines.filter((pl.col("size").cum_sum() - pl.col("size")).over("_t") < limit)
    joined = lines.group_by("_t").agg(
        pl.col("line").str.join("\n").alias("prose"),
        (pl.col("size").sum() - 1).alias("size"),
        pl.col("flat").str.join(" "),
    )
    return (
        pl.DataFrame({"_t": ids})
        .join(joined, on="_t", how="left", maintain_order="left")
        .select(pl.col("prose", "flat").fill_null(""), pl.col("size").fill_null(0))
    )


def prose(text: str | None, limit: int | None = None) -> str:
    """`prose_of_turns` of one text."""
    return prose_of_turns(pl.Series([text], dtype=pl.Utf8), limit)["prose"][0]


def _cut(text: pl.Expr, max_chars: int) -> pl.Expr:
    """Cut a flattened sample at the last space before `max_chars` (or at `max_chars` when there
    is no space there)."""
    return (
        pl.when(text.str.len_chars() > max_chars)
        .then(text.str.slice(0, max_chars).str.replace(r" [^ ]*$", ""))
        .otherwise(text)
    )


def _langdetect(sample: str, seed: int, min_confidence: float) -> tuple[str, float | None, str | None]:
    from langdetect.lang_detect_exception import LangDetectException

    detector = _factory(seed).create()
    detector.append(sample)
    try:
        best = detector.get_probabilities()[0]
    except (LangDetectException, IndexError):  # no n-gram langdetect knows
        return UND, None, REASON_TOO_SHORT
    if best.prob < min_confidence:
        return UND, float(best.prob), REASON_LOW_CONFIDENCE
    return best.lang.split("-")[0], float(best.prob), None  # zh-cn / zh-tw -> zh (ISO 639-1)


def _langdetect_chunk(args: tuple[list[str], int, float]) -> list[tuple[str, float | None, str | None]]:
    samples, seed, min_confidence = args
    return [_langdetect(x, seed, min_confidence) for x in samples]


class Detector:
    """Detects the language of prose samples; one per run (holds the cache and the counters).

    `detect_all` answers a batch: cheap verdicts (no text, too short, script, fast path) first,
    then one langdetect call per distinct remaining sample, in a process pool when there are many.
    """

    def __init__(self, cfg: Config, seed: int) -> None:
        self.cfg = cfg
        self.seed = seed
        self.cache: dict[str, tuple[str, float | None, str | None]] = {}
        self.counts: Counter[str] = Counter()

    def cheap_all(self, samples: list[str]) -> list[tuple[str, float | None, str | None] | None]:
        """The verdict of each sample when langdetect is not needed, else None (see `decide_all`)."""
        return [verdict for verdict, _ in self.decide_all(samples)]

    def decide_all(self, samples: list[str]) -> list[tuple[tuple[str, float | None, str | None] | None, str]]:
        """(verdict or None, how it was decided) of each sample without langdetect; all samples at
        once, as Polars expressions: no prose (`no_text`), fewer than `min_letters` letters, Han,
        Kana and Hangul weighted (`too_short`), the script (`script`: zh/ja/ko, see `_by_script`),
        or the English fast path (`fast_path`: at most `fast_max_non_ascii` of the letters outside
        ASCII, at least `fast_min_words` words, at least `fast_min_share` of them in
        `EN_COMMON_WORDS`, fewer than two or than `fast_max_foreign` of them in
        `FOREIGN_COMMON_WORDS`); None with `langdetect` for the rest."""
        cfg = self.cfg
        x = pl.col("s")
        words = x.str.to_lowercase().str.extract_all(_WORD_RE)
        common = pl.Series(sorted(EN_COMMON_WORDS), dtype=pl.Utf8)
        foreign = pl.Series(sorted(FOREIGN_COMMON_WORDS), dtype=pl.Utf8)
        frame = pl.DataFrame({"s": samples}, schema={"s": pl.Utf8}).select(
            blank=x.str.strip_chars() == "",
            letters=x.str.count_matches(_LETTER_RE),
            non_ascii=x.str.count_matches(_NON_ASCII_LETTER),
            n_words=words.list.len(),
            n_common=words.list.eval(pl.element().is_in(common.implode())).list.sum(),
            n_foreign=words.list.eval(pl.element().is_in(foreign.implode())).list.sum(),
            han=x.str.count_matches(_HAN),
            kana=x.str.count_matches(_KANA),
            hangul=x.str.count_matches(_HANGUL),
        )
        out: list[tuple[tuple[str, float | None, str | None] | None, str]] = []
        for blank, letters, non_ascii, n_words, n_common, n_foreign, han, kana, hangul in frame.iter_rows():
            cjk = han + kana + hangul
            weighted = letters + (cfg.cjk_letter_weight - 1) * cjk
            if blank:
                out.append(((UND, None, REASON_NO_TEXT), REASON_NO_TEXT))
            elif weighted < cfg.min_letters:
                out.append(((UND, None, REASON_TOO_SHORT), REASON_TOO_SHORT))
            elif cjk and cfg.cjk_letter_weight * cjk >= cfg.script_min_share * weighted:
                share = cfg.cjk_letter_weight * cjk / weighted
                out.append(((self._by_script(han, kana, hangul), share, None), DECIDED_BY_SCRIPT))
            elif (
                cfg.fast_path and non_ascii <= cfg.fast_max_non_ascii * letters and n_words >= cfg.fast_min_words
                and n_common >= cfg.fast_min_share * n_words
                and (n_foreign < 2 or n_foreign < cfg.fast_max_foreign * n_words)
            ):
                out.append((("en", FAST_CONFIDENCE, None), "fast_path"))
            else:
                out.append((None, "langdetect"))
        return out

    def _by_script(self, han: int, kana: int, hangul: int) -> str:
        """ko when Hangul is at least half of the CJK letters, ja when Kana is at least
        `kana_min_share` of the Han and Kana, else zh (Hangul first: a Korean text quoting a
        Japanese word is Korean)."""
        if 2 * hangul >= han + kana + hangul:
            return "ko"
        if kana and kana >= self.cfg.kana_min_share * (han + kana):
            return "ja"
        return "zh"

    def cheap(self, sample: str) -> tuple[str, float | None, str | None] | None:
        """`cheap_all` of one sample."""
        return self.cheap_all([sample])[0]

    def detect_all(self, samples: list[str]) -> list[tuple[str, float | None, str | None]]:
        new = [x for x in dict.fromkeys(samples) if x not in self.cache]
        todo: list[str] = []
        for x, (verdict, decision) in zip(new, self.decide_all(new)):
            if verdict is None:
                todo.append(x)
            else:
                self.cache[x] = verdict
                self.counts[decision] += 1
        if todo:
            self.counts["langdetect"] += len(todo)
            for x, verdict in zip(todo, self._langdetect_many(todo)):
                self.cache[x] = verdict
        return [self.cache[x] for x in samples]

    def detect(self, sample: str) -> tuple[str, float | None, str | None]:
        return self.detect_all([sample])[0]

    def _langdetect_many(self, todo: list[str]) -> list[tuple[str, float | None, str | None]]:
        workers = min(self.cfg.workers, os.cpu_count() or 1)
        if workers <= 1 or len(todo) < self.cfg.pool_min_samples:
            return _langdetect_chunk((todo, self.seed, self.cfg.min_confidence))
        import multiprocessing as mp

        # spawn, not fork: the parent holds Polars' thread pool, which fork can leave locked
        size = -(-len(todo) // (workers * 4))
        chunks = [(todo[i : i + size], self.seed, self.cfg.min_confidence) for i in range(0, len(todo), size)]
        with mp.get_context("spawn").Pool(workers) as pool:
            return [v for part in pool.map(_langdetect_chunk, chunks) for v in part]


def _combine(user: tuple, assistant: tuple) -> tuple[str, float | None, str | None] | None:
    """The example's language from its roles' (see module docstring); None: ask the whole text."""
    (ul, uc, ur), (al, ac, ar) = user, assistant
    if ul == al:
        if ul == UND:
            return UND, None, ur if ur == ar else (ur or ar)
        return ul, max(uc or 0.0, ac or 0.0), None
    if ul == UND:
        return al, ac, None
    if al == UND:
        return ul, uc, None
    return None


_ROLES = ("system", "user", "assistant")


def role_parts(df: pl.DataFrame, max_chars: int) -> pl.DataFrame:
    """The prose of every turn that reaches its role's sample: (`_idx`, `_rank` of the role in
    system/user/assistant, `_turn`, `role`, `flat`).

    A role's turns are read in order while its prose so far is under `max_chars` (the later
    ones cannot reach the sample)."""
    turns = (
        df.select(pl.int_range(pl.len(), dtype=pl.Int64).alias("_idx"), pl.col(C.MESSAGES))
        .explode(C.MESSAGES)
        .with_columns(pl.int_range(pl.len(), dtype=pl.Int32).over("_idx").alias("_turn"))
        .unnest(C.MESSAGES)
        .filter(pl.col("role").is_in(_ROLES) & (pl.col("content").str.len_bytes() > 0))
        .select("_idx", "_turn", "role", "content")
    )
    turns = pl.concat([turns, prose_of_turns(turns["content"], max_chars)], how="horizontal")
    return turns.filter((pl.col("size").cum_sum() - pl.col("size")).over("_idx", "role") < max_chars).select(
        "_idx",
        pl.col("role").replace_strict({r: i for i, r in enumerate(_ROLES)}, return_dtype=pl.Int8).alias("_rank"),
        "_turn",
        "role",
        "flat",
    )


def samples_of(parts: pl.DataFrame, n_rows: int, max_chars: int, roles: tuple[str, ...] | None) -> pl.Series:
    """Per row (0..n_rows-1): the sample of `roles`' parts (None: of all three roles, in
    system/user/assistant order), "" for a row without such prose."""
    if roles is not None:
        parts = parts.filter(pl.col("role").is_in(roles))
    joined = (
        parts.sort("_idx", "_rank", "_turn")
        .group_by("_idx")
        .agg(pl.col("flat").filter(pl.col("flat") != "").str.join(" ").alias("sample"))
        .with_columns(_cut(pl.col("sample"), max_chars))
    )
    return (
        pl.DataFrame({"_idx": pl.int_range(n_rows, dtype=pl.Int64, eager=True)})
        .join(joined, on="_idx", how="left", maintain_order="left")["sample"]
        .fill_null("")
    )


def run(df: pl.DataFrame, ctx: StageContext) -> pl.DataFrame:
    cfg: Config = getattr(ctx.config, NAME)
    det = Detector(cfg, ctx.config.seed)
    with ctx.progress.task("natural language", total=df.height) as advance:
        parts = role_parts(df, cfg.max_sample_chars)
        advance(df.height // 2)
        users = det.detect_all(samples_of(parts, df.height, cfg.max_sample_chars, ("user",)).to_list())
        assistants = det.detect_all(samples_of(parts, df.height, cfg.max_sample_chars, ("assistant",)).to_list())
        combined = [_combine(u, a) for u, a in zip(users, assistants)]
        ask = [i for i, c in enumerate(combined) if c is None]
        # the whole example's prose only where the roles disagree (a few in a thousand)
        whole = samples_of(parts.filter(pl.col("_idx").is_in(ask)), df.height, cfg.max_sample_chars, None)
        wholes = det.detect_all(whole.gather(ask).to_list() if ask else [])
        for i, verdict in zip(ask, wholes):
            combined[i] = verdict
        advance(df.height - df.height // 2)
    langs = [c[0] for c in combined]
    reasons = [c[2] for c in combined]
    df = df.with_columns(
        pl.Series("lang", langs, dtype=pl.Utf8),
        pl.Series(C.LANG_CONFIDENCE, [c[1] for c in combined], dtype=pl.Float64),
        pl.Series(C.LANG_REASON, reasons, dtype=pl.Utf8),
        pl.Series(C.USER_LANG, [u[0] for u in users], dtype=pl.Utf8),
        pl.Series(C.ASSISTANT_LANG, [a[0] for a in assistants], dtype=pl.Utf8),
    )
    ctx.summaries[NAME] = _summary(langs, [u[0] for u in users], [a[0] for a in assistants], reasons, dict(det.counts))
    ctx.manifest[NAME] = {
        "langdetect": metadata.version("langdetect"),
        "seed": ctx.config.seed,
        "fast_confidence": FAST_CONFIDENCE,
    }
    return df


def _summary(langs: list, users: list, assistants: list, reasons: list, decisions: dict[str, int]) -> dict:
    return {
        "lang": _counts(langs),
        C.USER_LANG: _counts(users),
        C.ASSISTANT_LANG: _counts(assistants),
        "und_reasons": _counts([r for r in reasons if r is not None]),
        "distinct_samples_by_decision": decisions,
    }


def merge_summary(out: pl.DataFrame, partials: list[dict], ctx: StageContext) -> dict:
    """The run's summary from the language columns of every row the stage saw. A detector (and its
    cache) lives for one batch, so `distinct_samples_by_decision` counts a sample once per batch it
    is in: the detector's work, summed (equal to a single pass when one batch holds every record)."""
    decisions: Counter[str] = Counter()
    for partial in partials:
        decisions.update(partial.get("distinct_samples_by_decision") or {})
    return _summary(
        out.get_column(C.LANG).to_list(),
        out.get_column(C.USER_LANG).to_list(),
        out.get_column(C.ASSISTANT_LANG).to_list(),
        out.get_column(C.LANG_REASON).to_list(),
        dict(decisions),
    )


def _counts(values: list) -> dict[str, int]:
    return dict(sorted(Counter(values).items(), key=lambda kv: (-kv[1], kv[0])))
