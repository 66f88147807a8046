"""Natural language of each example and of its user and assistant turns, with langdetect (issue 5).

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
accuracy on the UDHR set rises above 0.8 (bench/language_bench.py).

Fast path: text whose letters are all ASCII, with at least `fast_min_words` words of which at
least `fast_min_share` are frequent English words (`EN_COMMON_WORDS`), is English without asking
langdetect, with confidence `FAST_CONFIDENCE`. Other languages written in plain ASCII (Dutch,
Indonesian, unaccented Spanish) stay below 19% on the UDHR set, English texts there are at 31% or
more, and on the real chat data langdetect agrees with the fast path on the texts it takes
(bench/language_bench.py, figures in bench/RESULTS.md). Repeated samples (data collected twice)
are detected once, and the rest go to langdetect in one batch, over `workers` processes.

Determinism: langdetect draws random n-grams; a private DetectorFactory seeded with the run's
`seed` gives the same answer for the same text on every run.

Example language: the user's and the assistant's language when they agree (or when one of them is
"und"); when they differ, langdetect on the joined prose of the whole example.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from functools import lru_cache
from importlib import metadata

import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from curator import columns as C
from curator.code_blocks import strip_code
from curator.stages.base import StageContext

NAME = "language"
UND = "und"
REASON_NO_TEXT = "no_text"
REASON_TOO_SHORT = "too_short"
REASON_LOW_CONFIDENCE = "low_confidence"
FAST_CONFIDENCE = 0.99

# Frequent English words: Fry's list of the 100 most common words of English text (Fry, Kress &
# Fountoukidis, "The Reading Teacher's Book of Lists") and the words that chat instructions
# are made of (function, program, number, ...). On the UDHR set no text in another language
# written in plain ASCII reaches 19% of them; English prose holds 30-50%.
EN_COMMON_WORDS = frozenset(
    """the of and to a in is you that it he was for on are as with his they i at be this have from or
    one had by word but not what all were we when your can said there use an each which she do how
    their if will up other about out many then them these so some her would make like him into time
    has look two more write go see number no way could people my than first water been call who its
    now find long down day did get come made may part function program code given list array string
    create return returns example value values using find numbers total new second much per""".split()
)
_URL = re.compile(r"https?://\S+|www\.\S+|\S+@\S+\.\w+")
_WORD = re.compile(r"[^\W\d_]+")
_LETTER = re.compile(r"[^\W\d_]")


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_sample_chars: int = Field(1000, ge=50, description="prose handed to langdetect per role, in characters")
    min_letters: int = Field(20, ge=0, description="fewer letters of prose than this: und (too_short)")
    min_confidence: float = Field(
        0.5, ge=0, le=1, description="langdetect probability below this: und (low_confidence)"
    )
    workers: int = Field(2, ge=0, description="processes for langdetect (0 or 1: in this process)")
    pool_min_samples: int = Field(
        600, ge=1, description="fewer samples than this for langdetect: no pool (starting one costs ~1 s)"
    )
    fast_path: bool = Field(True, description="decide obvious English without langdetect (see module docstring)")
    fast_min_words: int = Field(5, ge=1, description="fast path: at least this many words")
    fast_min_share: float = Field(0.25, ge=0, le=1, description="fast path: share of frequent English words")


@lru_cache(maxsize=4)
def _factory(seed: int):
    """A private, seeded langdetect factory (the module-level one is global state)."""
    from langdetect.detector_factory import PROFILES_DIRECTORY, DetectorFactory

    factory = DetectorFactory()
    factory.load_profile(PROFILES_DIRECTORY)
    factory.set_seed(seed)
    return factory


# a plain word standing as a whole whitespace-separated token, with its punctuation
_PROSE_WORD = re.compile(r"(?:^|(?<=\s))[(\"'*_]*[^\W\d_]+(?:['’-][^\W\d_]+)*[.,;:!?)\"'*_]*(?=\s|$)")
# statement shapes no sentence has: `;`/`{`/`}` at the end, a call `name(`, a keyword leading a line
_CODE_LINE = re.compile(
    r"[;{}]\s*$|\w\(|^\s*(import|from|return|public|private|protected|def|class|function|const|let|var|"
    r"#include|using|package|SELECT|INSERT|UPDATE|CREATE|print|echo|if|for|while)\b[^.?!]*$"
)


def _is_prose_line(line: str) -> bool:
    """A line of sentences, not of code: plain words make at least 60% of its tokens (at least 3 of
    them; all of them on a line of one or two tokens), and it has no statement shape
    (`_CODE_LINE`). A GSM8K step with its `<<48/2=24>>` calculator note stays prose. Answers that
    are code without fences (GPTeacher Codegen) would otherwise be read as Romanian or Catalan."""
    n = len(line.split())
    if n == 0 or _CODE_LINE.search(line):
        return False
    words = len(_PROSE_WORD.findall(line))
    return words == n if n < 3 else (words >= 3 and words >= 0.6 * n)


def prose(text: str | None, limit: int | None = None) -> str:
    """The natural-language part of a turn: no code (fenced, inline, or lines of unfenced code),
    URLs or e-mails; lines are read until `limit` characters of prose are found."""
    if not text:
        return ""
    text = _URL.sub(" ", strip_code(text))
    out: list[str] = []
    size = 0
    for line in text.split("\n"):
        if _is_prose_line(line):
            out.append(line)
            size += len(line) + 1
            if limit is not None and size >= limit:
                break
    return "\n".join(out)


def _sample(parts: list[str], max_chars: int) -> str:
    text = " ".join(" ".join(p.split()) for p in parts if p)
    if len(text) > max_chars:
        cut = text.rfind(" ", 0, max_chars)
        text = text[: cut if cut > 0 else max_chars]
    return text


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

    `detect_all` answers a batch: cheap verdicts (no text, too short, fast path) first, then one
    langdetect call per distinct remaining sample, in a process pool when there are many.
    """

    def __init__(self, cfg: Config, seed: int) -> None:
        self.cfg = cfg
        self.seed = seed
        self.cache: dict[str, tuple[str, float | None, str | None]] = {}
        self.counts: Counter[str] = Counter()

    def fast_english(self, sample: str) -> bool:
        if not sample.isascii() and any(ch.isalpha() for ch in sample if ord(ch) > 127):
            return False  # a letter outside ASCII: leave it to langdetect (punctuation is fine)
        words = _WORD.findall(sample.lower())
        if len(words) < self.cfg.fast_min_words:
            return False
        return sum(1 for w in words if w in EN_COMMON_WORDS) >= self.cfg.fast_min_share * len(words)

    def cheap(self, sample: str) -> tuple[str, float | None, str | None] | None:
        """The verdict when langdetect is not needed, else None."""
        if not sample.strip():
            return UND, None, REASON_NO_TEXT
        if len(_LETTER.findall(sample)) < self.cfg.min_letters:
            return UND, None, REASON_TOO_SHORT
        if self.cfg.fast_path and self.fast_english(sample):
            return "en", FAST_CONFIDENCE, None
        return None

    def detect_all(self, samples: list[str]) -> list[tuple[str, float | None, str | None]]:
        todo: list[str] = []
        for x in dict.fromkeys(samples):
            if x in self.cache:
                continue
            verdict = self.cheap(x)
            if verdict is None:
                todo.append(x)
            else:
                self.cache[x] = verdict
                self.counts[verdict[2] or "fast_path"] += 1
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


def run(df: pl.DataFrame, ctx: StageContext) -> pl.DataFrame:
    cfg: Config = getattr(ctx.config, NAME)
    det = Detector(cfg, ctx.config.seed)
    user_s, asst_s, whole_s = [], [], []
    with ctx.progress.task("natural language", total=df.height) as advance:
        for messages in df[C.MESSAGES].to_list():
            by_role: dict[str, list[str]] = {"system": [], "user": [], "assistant": []}
            for m in messages or []:
                parts = by_role.get(m["role"])
                if parts is not None and m["content"] and sum(map(len, parts)) < cfg.max_sample_chars:
                    parts.append(prose(m["content"], cfg.max_sample_chars))
            user_s.append(_sample(by_role["user"], cfg.max_sample_chars))
            asst_s.append(_sample(by_role["assistant"], cfg.max_sample_chars))
            whole_s.append(by_role)
        advance(df.height // 2)
        users = det.detect_all(user_s)
        assistants = det.detect_all(asst_s)
        combined = [_combine(u, a) for u, a in zip(users, assistants)]
        ask = [i for i, c in enumerate(combined) if c is None]
        wholes = det.detect_all(
            [_sample(whole_s[i]["system"] + whole_s[i]["user"] + whole_s[i]["assistant"], cfg.max_sample_chars)
             for i in ask]
        )
        for i, verdict in zip(ask, wholes):
            combined[i] = verdict
        advance(df.height - df.height // 2)
    langs = [c[0] for c in combined]
    reasons = [c[2] for c in combined]
    df = df.with_columns(
        pl.Series("lang", langs, dtype=pl.Utf8),
        pl.Series("lang_confidence", [c[1] for c in combined], dtype=pl.Float64),
        pl.Series("lang_reason", reasons, dtype=pl.Utf8),
        pl.Series("user_lang", [u[0] for u in users], dtype=pl.Utf8),
        pl.Series("assistant_lang", [a[0] for a in assistants], dtype=pl.Utf8),
    )
    ctx.summaries[NAME] = {
        "lang": _counts(langs),
        "user_lang": _counts([u[0] for u in users]),
        "assistant_lang": _counts([a[0] for a in assistants]),
        "und_reasons": _counts([r for r in reasons if r is not None]),
        "distinct_samples_by_decision": dict(det.counts),
    }
    ctx.manifest[NAME] = {
        "langdetect": metadata.version("langdetect"),
        "seed": ctx.config.seed,
        "fast_confidence": FAST_CONFIDENCE,
    }
    return df


def _counts(values: list) -> dict[str, int]:
    return dict(sorted(Counter(values).items(), key=lambda kv: (-kv[1], kv[0])))
