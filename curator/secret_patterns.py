"""The secret and PII detectors as data: one pattern per kind, shared by the secrets stage (Rust regexes
inside Polars) and `curate validate` (Python's re, for the text of its own findings), with no heavy import."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Detector:
    """One kind: `pattern` finds it; `redact_pattern` (default: `pattern`) is replaced by
    `replacement` (default: the typed placeholder) when the policy is `redact`."""

    kind: str
    pattern: str
    redact_pattern: str | None = None
    replacement: str | None = None

    @property
    def placeholder(self) -> str:
        return f"[REDACTED:{self.kind}]"


# Letters of any script but the CJK ones (IDN addresses such as jürgen@bücher.de are found; CJK prose
# has no spaces, so taking Han would swallow the words around an address).
_NOT_CJK = r"[^\p{Han}\p{Hiragana}\p{Katakana}\p{Hangul}]"
_EMAIL = (
    rf"[[\w.%+\-]&&{_NOT_CJK}]+@[[\w\-]&&{_NOT_CJK}]+(?:\.[[\w\-]&&{_NOT_CJK}]+)*\.[\p{{L}}&&{_NOT_CJK}]{{2,}}"
)
# Characters that render as nothing (zero-width spaces and joiners, word joiner, soft hyphen, BOM,
# bidi marks and controls, combining grapheme joiner, variation selectors, Hangul and Khmer fillers):
# a key with one inside still works once pasted, so detectors read through them.
INVISIBLE = (
    "[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e\u2060-\u2064"
    "\u2066-\u2069\u3164\ufe00-\ufe0f\ufeff\uffa0]"
)
WITHHELD = "[withheld: holds a secret that could not be redacted in place]"
_PRIVATE_KEY_HEAD = r"-----BEGIN[ A-Z0-9_-]{0,100}PRIVATE KEY(?: BLOCK)?-----"

# Boundaries are ASCII word boundaries, (?-u:\b): Chinese and Japanese put a key right after a word
# with no space ("密钥是AKIA..."), and to a Unicode \b those letters are word characters too.
DETECTORS: dict[str, Detector] = {
    d.kind: d
    for d in [
        # gitleaks aws-access-token: access key ids (AKIA long-term, ASIA temporary, ...)
        Detector("aws_access_key", r"(?-u:\b)(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16}(?-u:\b)"),
        # the 40-character secret access key is only recognisable next to its name
        Detector(
            "aws_secret_key",
            r"(?i)aws_?(?:secret)?_?(?:access)?_?key[\"'`]?(?:\s*[:=]\s*|\s+)[\"'`]?[A-Za-z0-9/+]{40}(?:[^A-Za-z0-9/+]|$)",
            redact_pattern=r"(?i)(aws_?(?:secret)?_?(?:access)?_?key[\"'`]?(?:\s*[:=]\s*|\s+)[\"'`]?)[A-Za-z0-9/+]{40}",
            replacement="${1}[REDACTED:aws_secret_key]",
        ),
        # (also `aws configure set aws_secret_access_key VALUE`: the name, whitespace, the key)
        # gitleaks github-pat / github-oauth / github-app-token / github-refresh-token / fine-grained
        Detector("github_token", r"(?-u:\b)(?:gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{22,255})(?-u:\b)"),
        # gitleaks openai-api-key (the T3BlbkFJ marker), project/service keys, legacy 48-char keys
        Detector(
            "openai_key",
            r"(?-u:\b)sk-(?:(?:proj|svcacct|admin)-[A-Za-z0-9_-]{40,}|[A-Za-z0-9_-]{20,}T3BlbkFJ[A-Za-z0-9_-]{20,}|[A-Za-z0-9]{48})(?-u:\b)",
        ),
        # gitleaks slack-bot-token / slack-user-token / slack-app-token / slack-webhook-url
        Detector(
            "slack_token",
            r"(?-u:\b)xox[abposre]-[0-9A-Za-z-]{10,}|(?-u:\b)xapp-\d-[A-Z0-9]+-\d+-[a-z0-9]+|hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9+/]{20,}",
        ),
        # gitleaks private-key: PEM and OpenSSH blocks; the whole block is redacted
        Detector(
            "private_key",
            _PRIVATE_KEY_HEAD,
            redact_pattern=r"(?s)" + _PRIVATE_KEY_HEAD + r".*?(?:-----END[ A-Z0-9_-]{0,100}PRIVATE KEY(?: BLOCK)?-----|$)",
        ),
        # gitleaks jwt: header.payload.signature, both JSON parts base64url of "{". gitleaks also takes
        # "/" and "\\" (JSON-escaped text); base64url has neither, and taking them ate the "\\" of a
        # following "\\n" in code
        Detector("jwt", r"(?-u:\b)ey[A-Za-z0-9_-]{17,}\.ey[A-Za-z0-9_-]{17,}\.[A-Za-z0-9_-]{10,}={0,2}"),
        Detector("email", _EMAIL),
        Detector(
            "phone",
            r"(?:\+1[ .-]?)?(?:\(\d{3}\)[ .-]?|(?-u:\b)\d{3}[ .-])\d{3}[ .-]\d{4}(?-u:\b)(?:[^-]|$)"
            r"|\+\d{1,3}[ .-]\(?\d{1,4}\)?(?:[ .-]\d{2,4}){2,3}(?-u:\b)",
            redact_pattern=r"(?:\+1[ .-]?)?(?:\(\d{3}\)[ .-]?|(?-u:\b)\d{3}[ .-])\d{3}[ .-]\d{4}(?-u:\b)"
            r"|\+\d{1,3}[ .-]\(?\d{1,4}\)?(?:[ .-]\d{2,4}){2,3}(?-u:\b)",
        ),
    ]
}


# Python's re has no class intersection: the same addresses, CJK letters included, for `curate validate`.
_EMAIL_PY = r"[\w.%+-]+@[\w-]+(?:\.[\w-]+)*\.[^\W\d_]{2,}"
_PYTHON_PATTERNS: list[re.Pattern] | None = None


def _python_regex(pattern: str) -> str:
    """A detector's pattern in Python's syntax (its ASCII word boundary is spelled differently)."""
    return pattern.replace("(?-u:\\b)", "(?a:\\b)")


def redact_text(text: str) -> str:
    """`text` with every match of every kind replaced by its placeholder (Python's re; findings of
    `curate validate` quote field names and values from the data, and land in CI logs)."""
    global _PYTHON_PATTERNS
    if _PYTHON_PATTERNS is None:
        _PYTHON_PATTERNS = [
            (re.compile(_python_regex(_EMAIL_PY if d.kind == "email" else d.redact_pattern or d.pattern)), d.placeholder)
            for d in DETECTORS.values()
        ]
    visible = re.sub(INVISIBLE, "", text)
    for pattern, placeholder in _PYTHON_PATTERNS:
        visible = pattern.sub(placeholder, visible)
    return visible if visible != re.sub(INVISIBLE, "", text) else text


# `curate validate --secrets`: keys that grant access fail the hook; contact details (often invented
# examples in chat data) are only warned about.
WARNING_KINDS = frozenset({"email", "phone"})
_FIND_PATTERNS: list[tuple[str, re.Pattern]] | None = None


def find_kinds(text: str) -> list[str]:
    """The kinds of secret found in `text` (Python's re, read through invisible characters), in
    DETECTORS order, each once."""
    global _FIND_PATTERNS
    if _FIND_PATTERNS is None:
        _FIND_PATTERNS = [
            (d.kind, re.compile(_python_regex(_EMAIL_PY if d.kind == "email" else d.pattern))) for d in DETECTORS.values()
        ]
    visible = re.sub(INVISIBLE, "", text)
    return [kind for kind, pattern in _FIND_PATTERNS if pattern.search(visible)]
