"""Fenced code blocks in Markdown text: ``` and ~~~ fences with their info strings.

`extract_code_blocks(text)` is the one place the project finds code in a turn; the
code_language stage (programming language per block) and the quality stage (code share,
broken code) both use it, and the language stage uses `strip_code()` to keep code out of the
prose it hands to langdetect.

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
