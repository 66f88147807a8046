"""Code blocks in Markdown text: ``` and ~~~ fences with their info strings, and code outside fences.

`extract_code_blocks(text)` is the one place the project finds fenced code in a turn; the
code_language stage (programming language per block) and the quality stage (code share,
broken code) both use it, and the language stage uses `strip_code()` to keep code out of the
prose it hands to langdetect. `unfenced_candidates(text)` finds spans outside the fences that read
as code line by line (see "code outside fences" below); the code_language stage keeps those a
grammar parses.

The rules are those of CommonMark 0.31, section 4.5 "Fenced code blocks"
(https://spec.commonmark.org/0.31.2/#fenced-code-blocks):

- an opening fence is a run of at least three backticks or three tildes; the rest of the line
  is the info string, which for a backtick fence may not contain a backtick (so a line like
  ```` ```x``` ```` is inline code, not a fence);
- the block ends at the first closing fence made of the same character, at least as long as the
  opening one, with nothing but spaces after it; a fence of the other character, or a shorter
  one, is content (this is how a ```` ```` ```` block quotes a ```` ``` ```` example and how
  Exercism's ``~~~~exercism/note`` notes contain ``` fences);
- a fence that is never closed runs to the end of the text (`closed=False`);
- up to the opening fence's indentation is removed from each content line.

One deliberate departure: CommonMark allows at most three spaces before a fence outside list
items; chat answers put fences inside numbered steps with deeper indentation, which a full
Markdown parser accepts through its list-item rules, so any run of spaces or tabs is accepted
here (the same result for the chat data, without a container parser).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

# group 1: indentation, group 2: the fence run, group 3: the rest of the line (info string)
_FENCE = re.compile(r"^([ \t]*)(`{3,}|~{3,})(.*)$", re.MULTILINE)
_INLINE_CODE = re.compile(r"(`+)(?!`)(.+?)(?<!`)\1(?!`)", re.DOTALL)


@dataclass(frozen=True, slots=True)
class CodeBlock:
    """One fenced block of a text.

    `label` is the raw info string, stripped (null when the fence has none); `code` is the content
    without the fences; `start`/`end` are the character offsets of the whole block in the text,
    from the first fence character's line start to the end of the closing fence line (or of the
    text when `closed` is false), so `text[start:end]` is the block as written.
    """

    label: str | None
    code: str
    start: int
    end: int
    closed: bool
    fence: str  # the opening fence run, e.g. "```" or "~~~~"

    @property
    def n_lines(self) -> int:
        """Lines of content (a trailing newline does not open another line)."""
        if not self.code:
            return 0
        return self.code.count("\n") + (0 if self.code.endswith("\n") else 1)

    @property
    def fenced(self) -> bool:
        """Whether the block was written between fences (unfenced code has an empty `fence`)."""
        return bool(self.fence)

    @property
    def label_word(self) -> str | None:
        """The first word of the info string, which CommonMark says names the language."""
        if self.label is None:
            return None
        return self.label.split(None, 1)[0]


@lru_cache(maxsize=64)
def _closing_fence(char: str, size: int) -> re.Pattern[str]:
    """A line holding only a run of `char` at least `size` long (CommonMark's closing fence)."""
    return re.compile(r"^[ \t]*" + re.escape(char) + "{" + str(size) + r",}[ \t]*$", re.MULTILINE)


def _dedent(line: str, indent: int) -> str:
    """Remove up to `indent` leading spaces/tabs, as CommonMark does for fenced content."""
    i = 0
    while i < indent and i < len(line) and line[i] in " \t":
        i += 1
    return line[i:]


def _fences(text: str):
    """(opening fence match, body start, body end, block end, closed) of every fenced block."""
    pos = 0
    n = len(text)
    while pos < n:
        m = _FENCE.search(text, pos)
        if m is None:
            break
        fence, info = m.group(2), m.group(3)
        if fence[0] == "`" and "`" in info:
            # not a fence (CommonMark: a backtick fence's info string holds no backtick)
            pos = m.end() + 1
            continue
        body_start = m.end() + 1  # after the newline of the opening line
        close = _closing_fence(fence[0], len(fence)).search(text, body_start) if body_start <= n else None
        if close is None:
            yield m, body_start, n, n, False
            end = n
        else:
            yield m, body_start, close.start(), close.end(), True
            end = close.end()
        pos = end + 1


def extract_code_blocks(text: str | None) -> list[CodeBlock]:
    """All fenced code blocks of `text`, in order; empty for text without fences."""
    if not text or ("```" not in text and "~~~" not in text):
        return []
    blocks: list[CodeBlock] = []
    for m, body_start, body_end, end, closed in _fences(text):
        indent, fence, info = m.group(1), m.group(2), m.group(3)
        body = text[body_start:body_end] if body_start <= len(text) else ""
        lines = body.split("\n")
        if closed and lines and lines[-1] == "":
            lines.pop()  # the newline before the closing fence ends the last line, it opens none
        code = "\n".join(_dedent(line, len(indent)) for line in lines)
        label = info.strip() or None
        blocks.append(CodeBlock(label=label, code=code, start=m.start(), end=end, closed=closed, fence=fence))
    return blocks


def block_spans(text: str | None) -> list[tuple[int, int]]:
    """(start, end) of every fenced block of `text` (what `extract_code_blocks` would return as
    `start`/`end`), without building the blocks' code: for callers that only cut code out."""
    if not text or ("```" not in text and "~~~" not in text):
        return []
    return [(m.start(), end) for m, _, _, end, _ in _fences(text)]


def strip_code(text: str | None, blocks: list[CodeBlock] | None = None, inline: bool = True) -> str:
    """`text` without its fenced blocks (and, when `inline`, without `inline code` spans).

    Each removed span becomes a newline, so the words on either side do not run together.
    """
    if not text:
        return ""
    spans = block_spans(text) if blocks is None else [(b.start, b.end) for b in blocks]
    if spans:
        parts = []
        prev = 0
        for start, end in spans:
            parts.append(text[prev:start])
            parts.append("\n")
            prev = end
        parts.append(text[prev:])
        text = "".join(parts)
    if inline and "`" in text:
        text = _INLINE_CODE.sub(" ", text)
    return text


# --- code outside fences ---------------------------------------------------------------------
# Most chat code data is not fenced: GPTeacher Codegen and CodeAlpaca answer with bare code, and
# Markdown also knows indented code (four spaces or a tab) and code after an introducing line
# ("Here is the code:"). `unfenced_candidates` finds such spans line by line; the code_language
# stage then keeps a span only when a grammar parses it (code_langs.classify_unfenced), so the
# line rules are a first, cheap filter tuned for precision on prose.
#
# Each line is one of: "code" (a statement shape), "prose" (a sentence, a list item, a table
# row), "comment" (a comment line or the inside of a block comment or docstring, which a span
# may hold but not start with) or "other" (blank, or too short to say: `7`, `true`, `npm start`).

CODE, PROSE, COMMENT, OTHER = "code", "prose", "comment", "other"

# Statement shapes, in two groups. CERTAIN shapes are code even in a line of words (a statement
# end or block opening, a lone closer, a definition, an import, a Python block header); LIKELY
# shapes (a clause keyword, a call, an assignment, an operator of code, a shell command) are code
# only on a line that does not read as prose, since a sentence may mention `len()` or start with
# "if" or "print". Kept to Rust-regex syntax (no look-around): the stage runs the union as a
# Polars prefilter over all turns.
CERTAIN_CODE_LINES = [
    r"[;{]\s*$",
    r"^\s*[}\])]+\s*[;,)]*\s*$|^\s*\}",
    r"^\s*(pub\s+|export\s+|async\s+|static\s+|public\s+|private\s+)*(def|fn|func|function|class|struct|impl"
    r"|enum|interface|trait)\s+[A-Za-z_]\w*\s*[(:<{\[]",
    r"^\s*(import\s+[\w.]+(\s+as\s+\w+)?(\s*,\s*[\w.]+)*\s*;?\s*$|from\s+[\w.]+\s+import\s+[\w*(]|#\s*include\s*[<\x22]"
    r"|using\s+[\w.]+\s*;|package\s+[\w.]+\s*;?\s*$|#!/)",
    r"^\s*(for\s+\w+(\s*,\s*\w+)*\s+in\s+[\w.()\[\], ]+|while\s+[\w.()\[\]]+\s*[<>=!]=?\s*[\w.()]+"
    r"|(if|elif)\s+[\w.()\[\]]+\s*([<>=!]=?|\s(not\s+)?in\s|\sis\s)\s*[\w.()\[\]\x22']+"
    r"|else|try|finally|except(\s+\w+(\s+as\s+\w+)?)?)\s*:\s*(#.*)?$",
]
LIKELY_CODE_LINES = [
    r"^\s*(SELECT|INSERT\s+INTO|UPDATE|DELETE\s+FROM|CREATE\s+(TABLE|INDEX|VIEW|DATABASE|PROCEDURE|FUNCTION"
    r"|TRIGGER)|ALTER\s+TABLE|DROP\s+(TABLE|VIEW|INDEX)|FROM|WHERE|GROUP\s+BY|ORDER\s+BY|((INNER|LEFT|RIGHT|FULL"
    r"|OUTER|CROSS)\s+)*JOIN|HAVING|VALUES|LIMIT|SET|ON|UNION(\s+ALL)?|CASE|WHEN|ELSE|END|BEGIN)(\s|;?$)",
    r"^\s*(if|elif|while|for|with|def|class|match|case)\s[^.!?]*[(\[=<>][^.!?]*:\s*(#.*)?$",
    r"^\s*(end|fi|done|esac|begin|then|do|break|continue|pass|return)\s*;?\s*$",
    r"^\s*(return|yield|raise|throw)\s+[\w\[({\x22'-]",
    r"^\s*(use\s+[\w:]+|require\s*\(|require\s+['\x22])",
    r"^\s*[A-Za-z_$][\w.$]*(\[[^\]]*\])?\s*(,\s*[A-Za-z_$][\w.$]*\s*)*([-+*/%|&^]|\*\*|//|<<|>>|:)?=\s*[^=\s]",
    r"^\s*(let|const|var|auto|int|char|float|double|long|bool|boolean|String|string)\s+[A-Za-z_$][\w$]*\s*[=:;,\[]",
    r"^\s*(await\s+|new\s+)?[A-Za-z_$][\w.$]*(::\w+)*!?\s*\(.*\)\s*[;,]?\s*$",
    # a shell command: a prompt or sudo; a package manager's verb; an interpreter or compiler given a
    # file or a flag; a file command given a path, a flag or one word ("go east" is no command)
    r"^\s*(\$|sudo)\s+\S|^\s*(echo|export|printf)\s+\S"
    r"|^\s*(pip3?|npm|npx|yarn|apt|apt-get|brew|git|docker|conda|cargo|gem|composer|dotnet|mvn|gradle|go)\s+(install"
    r"|add|remove|uninstall|run|init|clone|build|get|commit|push|pull|checkout|status|test|update|upgrade|start|exec"
    r"|new|mod|fmt|vet)\b"
    r"|^\s*(python3?|node|java|javac|gcc|g\+\+|rustc|ruby|php|bash|sh)\s+(-\S|[\w./-]+\.\w+)"
    r"|^\s*(cd|mkdir|rm|cp|mv|chmod|chown|ls|cat|touch|grep|curl|wget|tar)\s+(-\S|\S*[./~$\x22'=]|\w+\s*$)",
    r"^\s*(if|while|for|switch|catch|foreach)\s*\(",
    r"^\s*[\w.$]+(\+\+|--)\s*;?\s*$",
    r"(=>|->|::|&&|\|\||!=|==|\+=|-=)",
    r"^\s*\.[A-Za-z_]\w*|^\s*(\|\||&&|\?)\s|[(\[,]\s*$",  # a continuation line, or a line a bracket leaves open
]
CODE_LINE_PATTERNS = CERTAIN_CODE_LINES + LIKELY_CODE_LINES
# A line holds one of the shapes, or code before a trailing comment (`line_kind` reads a line
# without it): the necessary condition for a code line, which the stage tests on every turn with
# Polars (Rust regex syntax, not Python's). Its word boundaries are ASCII ones, which Rust's fast
# (DFA) engines support and Unicode ones are not: 5-10x faster, and after an ASCII keyword an
# ASCII boundary holds wherever a Unicode one does, so the test stays a necessary condition.
ANY_CODE_LINE_PATTERN = "(?m)" + "|".join(
    f"(?:{p})" for p in [*CODE_LINE_PATTERNS, r"[\w)\];{}]\s+(//|#)\s"]
).replace(r"\b", r"(?-u:\b)")
_CERTAIN = re.compile("|".join(f"(?:{p})" for p in CERTAIN_CODE_LINES))
_LIKELY = re.compile("|".join(f"(?:{p})" for p in LIKELY_CODE_LINES))
_MATH_NAMES = frozenset(
    "sqrt sin cos tan log ln exp abs arcsin arccos arctan floor ceil mod gcd lcm lim max min sum det".split()
)
_NAME = re.compile(r"[A-Za-z_]\w*")
_EQUALS = re.compile(r"(?<![=!<>+\-*/%&|^:])=(?!=)")  # `=` alone, not `==`, `<=`, `+=` ...
_COMPOUND = re.compile(r"(\+\+|--|[-+*/%|&]=|:=)")
_EXPRESSION_END = re.compile(r"\s[-+*/]\s|\)$")  # left of an `=`: an expression, not a name
_POWER = re.compile(r"[\w)]\s*\^\s*[\w(]")
_BARE_ASSIGNMENT = re.compile(r"^\s*[\w.$]+\s*=\s*[^()=;{}]*$")
_TRAILING_COMMENT = re.compile(r"(?<=[\w)\];{}])\s+(//|#)\s.*$")
_LIST_ITEM = re.compile(r"^\s*([-*+•]|\d+[.)]|[a-z][.)])\s+\S")
_TABLE_ROW = re.compile(r"^\s*\|.*\|\s*$")
_COMMENT_LINE = re.compile(r"^\s*(//|/\*|\*/|#(?!include|!|define|if|endif|pragma)|--\s|<!--|%)")
_MARKUP_LINE = re.compile(r"^\s*</?[A-Za-z][\w-]*(\s[^>]*)?/?>")
_WORD = re.compile(r"^[\"'*_]*[A-Za-z][a-z]*('[a-z]+)?[\"'*_]*[.,:;!?]?[\"']*$")
# a quoted string (its words are data, not prose); a single quote after a letter is an apostrophe
_STRING = re.compile(r"\"[^\"\n]*\"|`[^`\n]*`|(?<![A-Za-z])[fbru]?'[^'\n]*'(?![A-Za-z])")
_SENTENCE_END = re.compile(r"[A-Za-z)\"'][.!?]\s*$")


def _prose_like(line: str) -> bool:
    """A sentence: plain words make most of its tokens (quoted text aside), or it ends like one."""
    tokens = _STRING.sub(" q ", line).split()
    if not tokens:
        return False
    # a one-letter token is a variable (`for e in l`), unless it is "a" or "I"
    words = sum(1 for t in tokens if _WORD.match(t) and (len(t.strip("\"'(*_.,:;!?)")) > 1 or t[0] in "aAI"))
    if words >= 4 and words >= 0.6 * len(tokens):
        return True
    return words >= 3 and words >= 0.5 * len(tokens) and bool(_SENTENCE_END.search(line))


def _math_like(line: str) -> bool:
    """An equation rather than an assignment: `x = 6`, `AB = sqrt((3 - 1)^2 + 4)`, `x + 4 = 10`,
    `cos(ABC) = -0.5`, `Kt = D(Kt, Lt)` (names of one or two letters, upper-case point names and
    math functions only, a power `^`, or an expression left of the `=`)."""
    eq = _EQUALS.search(line)
    if eq is None or any(q in line for q in "\"'`;{}[]") or "," in line[: eq.start()] or _COMPOUND.search(line):
        return False  # strings, statements, subscripts, a tuple assignment, `+=`: code
    if _POWER.search(line):
        return True
    if all(len(n) <= 2 or n.lower() in _MATH_NAMES or (n.isupper() and len(n) <= 3) for n in _NAME.findall(line)):
        return True
    return bool(_EXPRESSION_END.search(line[: eq.start()].strip()))


@lru_cache(maxsize=1 << 16)  # chat data repeats its lines (the same code, asked twice)
def line_kind(line: str) -> str:
    """`code`, `prose`, `comment` or `other` for one line outside a block comment (see above)."""
    if not line.strip():
        return OTHER
    if _TABLE_ROW.match(line):
        return PROSE
    certain = _CERTAIN.search(line)
    if _LIST_ITEM.match(line) and (not certain or _prose_like(line)):
        return PROSE
    if _COMMENT_LINE.match(line):
        return COMMENT
    if certain:
        return CODE
    line = _TRAILING_COMMENT.sub("", line)  # `console.log(x); // Output: 3` ends with its `;`
    if _CERTAIN.search(line):
        return CODE
    if _MARKUP_LINE.match(line):
        return OTHER
    if _prose_like(line):
        return PROSE
    if _math_like(line):
        return OTHER
    if _LIKELY.search(line):
        return CODE
    # a caption that introduces what follows (`main.py`:, Output:, Example:) separates spans
    return PROSE if line.rstrip().endswith(":") else OTHER


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def line_kinds(lines: list[str]) -> list[str]:
    """`line_kind` of each line, with the lines inside a block comment (`/* ... */`) or a Python
    triple-quoted string read as comments: prose there belongs to the code around it."""
    kinds = []
    closer: str | None = None  # the text that ends the comment or string we are in
    for line in lines:
        if closer is not None:
            kinds.append(COMMENT)
            if closer in line:
                closer = None
            continue
        kind = line_kind(line)
        if "/*" in line and "*/" not in line[line.index("/*") :]:
            closer = "*/"
        for quote in ('"""', "'''"):
            if line.count(quote) % 2 == 1:
                closer = quote
        if closer is not None and kind == PROSE:
            kind = COMMENT
        kinds.append(kind)
    return kinds


@dataclass(frozen=True, slots=True)
class UnfencedSettings:
    """How much code-likeness a span needs (the code_language stage's Config fills these)."""

    min_lines: int = 2  # code lines of a span amid prose
    min_lines_introduced: int = 1  # ... of a span that is the whole text, or follows a line ending in ":"
    min_code_share: float = 0.5  # code lines / (code + prose lines) of the span


def _runs(kinds: list[str], lines: list[str]):
    """(first, last) line of each run: from a code line to the last code line (or comment line
    right after it) before a prose line at the run's indentation or less; comment lines right
    before the run belong to it."""
    n = len(kinds)
    i = 0
    while i < n:
        if kinds[i] != CODE:
            i += 1
            continue
        first, base, last = i, _indent(lines[i]), i
        while first > 0 and kinds[first - 1] == COMMENT:  # blank lines inside a block comment are COMMENT too
            first -= 1
        j = i + 1
        while j < n:
            kind = kinds[j]
            if kind == PROSE and _indent(lines[j]) <= base:
                break
            if kind == CODE or (kind == COMMENT and j == last + 1 and lines[j].strip()):
                last = j
            j += 1
        yield first, last
        i = j


def unfenced_candidates(text: str | None, settings: UnfencedSettings = UnfencedSettings()) -> list[CodeBlock]:
    """Spans of `text` outside its fences that read as code line by line, dedented, in order.

    A span is a run of code lines (with the comments, blank and unclassified lines between them,
    and prose lines indented deeper than its first line: a docstring, a wrapped argument list)
    holding at least `min_lines` code lines, or `min_lines_introduced` when it is all the text
    outside fences or comes after a line ending in ":" ("Here is the code:"). Markdown's indented
    code (four spaces or a tab) is such a run too. Whether a span is code is for the parser to say
    (code_langs.classify_unfenced); the blocks have no label and an empty `fence`.
    """
    if not text:
        return []
    out: list[CodeBlock] = []
    prev = 0
    for start, end in [*block_spans(text), (len(text), len(text))]:
        out.extend(_segment_candidates(text, prev, start, settings))
        prev = end
    return out


def _segment_candidates(text: str, lo: int, hi: int, settings: UnfencedSettings) -> list[CodeBlock]:
    segment = text[lo:hi]
    if not segment.strip():
        return []
    lines = segment.split("\n")
    offsets = [lo]
    for line in lines[:-1]:
        offsets.append(offsets[-1] + len(line) + 1)
    kinds = line_kinds(lines)
    if CODE not in kinds:
        return []
    nonblank = [i for i, line in enumerate(lines) if line.strip()]
    whole = PROSE not in kinds  # all code, comments and lines too short to say: the text is the span
    out = []
    for first, last in [(nonblank[0], nonblank[-1])] if whole else _runs(kinds, lines):
        span = kinds[first : last + 1]
        n_code = span.count(CODE)
        n_prose = span.count(PROSE)
        before = next((i for i in range(first - 1, -1, -1) if lines[i].strip()), None)
        introduced = whole or (before is not None and kinds[before] != CODE and lines[before].rstrip().endswith(":"))
        need = settings.min_lines_introduced if introduced else settings.min_lines
        if n_code < need or n_code < settings.min_code_share * (n_code + n_prose):
            continue
        if all(_BARE_ASSIGNMENT.match(line) for line, k in zip(lines[first : last + 1], span) if k == CODE):
            continue  # `City = London` / `x = [1, 2]`: values given as input, not a program
        body = lines[first : last + 1]
        code = _dedent_all(body)
        out.append(CodeBlock(label=None, code=code, start=offsets[first], end=offsets[last] + len(lines[last]),
                             closed=True, fence=""))
    return out


def _dedent_all(lines: list[str]) -> str:
    """`lines` without their common leading whitespace (textwrap.dedent, blank lines ignored)."""
    indents = [_indent(line) for line in lines if line.strip()]
    cut = min(indents) if indents else 0
    return "\n".join(line[cut:] if line.strip() else "" for line in lines)
