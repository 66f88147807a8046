"""Programming language of a code block: fence-label aliases and tree-sitter detection.

- `normalize_label(info)`: a fence's info string -> canonical language name through `ALIASES`
  (the names and aliases are those of GitHub Linguist's languages.yml and highlight.js, the two
  tables chat models learned their fence labels from; `console`/`shell-session` are shell
  transcripts, counted as bash as the issue asks).
- `classify_block(code, label)`: the block's language, how it was decided (label, detected,
  both), its parse-error fraction under that language and whether the label is contradicted by
  the content.

Detection parses the block with the individual tree-sitter grammar packages (13 languages, see
`GRAMMARS`) and keeps the language whose grammar parses it with the fewest error lines.
Grammars are permissive in different ways (a C++ grammar parses C, TypeScript parses JavaScript,
bash parses almost any line of words as a command), so cheap lexical cues (`CUES`) do two jobs:
they pick which grammars to try first (a block whose best cue-ranked candidates already parse
cleanly is not parsed with the other grammars: the fast path), and they break ties between
grammars that parse a block equally well. This is the approach of GitHub Linguist's heuristics
(strategy order: extension/label, then heuristics, then a classifier) with a parser in place of
the classifier, as in guesslang-style evaluation of parse success.

The parse-error fraction of a block under a grammar is the share of its non-blank lines touched
by an ERROR or MISSING node of the tree-sitter tree (tree-sitter's error recovery marks exactly
the spans it could not fit into the grammar).
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata

from tree_sitter import Language, Parser

# canonical name -> (python module of the grammar package, function returning the language)
GRAMMARS: dict[str, tuple[str, str]] = {
    "python": ("tree_sitter_python", "language"),
    "javascript": ("tree_sitter_javascript", "language"),
    "typescript": ("tree_sitter_typescript", "language_typescript"),
    "java": ("tree_sitter_java", "language"),
    "c": ("tree_sitter_c", "language"),
    "cpp": ("tree_sitter_cpp", "language"),
    "csharp": ("tree_sitter_c_sharp", "language"),
    "go": ("tree_sitter_go", "language"),
    "rust": ("tree_sitter_rust", "language"),
    "bash": ("tree_sitter_bash", "language"),
    "sql": ("tree_sitter_sql", "language"),
    "ruby": ("tree_sitter_ruby", "language"),
    # php_only: PHP without the surrounding HTML; the full grammar reads any text outside
    # `<?php` as HTML and so parses prose without a single error.
    "php": ("tree_sitter_php", "language_php_only"),
}
PACKAGES = {name: mod.replace("_", "-") for name, (mod, _) in GRAMMARS.items()}

# Labels that say "this is not code": output, transcripts of prose, diagrams.
TEXT = "text"

# Canonical names of languages without a grammar here but known as labels; a block labelled with
# one keeps that language (decided_by="label") without a parse.
ALIASES: dict[str, str] = {}


def _alias(canonical: str, *names: str) -> None:
    for name in (canonical, *names):
        ALIASES[name] = canonical


_alias("python", "py", "python3", "py3", "python2", "py2", "pyw", "gyp", "ipython", "sage", "pycon", "pyi")
_alias("javascript", "js", "node", "nodejs", "jsx", "mjs", "cjs", "ecmascript", "es6", "javascriptreact")
_alias("typescript", "ts", "tsx", "mts", "cts", "typescriptreact")
_alias("java")
_alias("c", "h", "ansi-c")
_alias("cpp", "c++", "cc", "cxx", "hpp", "hxx", "hh", "h++", "cplusplus", "cuda", "cu", "arduino", "ino")
_alias("csharp", "cs", "c#", "dotnet", "cake", "csx")
_alias("go", "golang")
_alias("rust", "rs")
_alias(
    "bash", "sh", "shell", "zsh", "ksh", "console", "shell-session", "shellsession", "terminal", "bash-session",
    "shell-script", "shellscript", "command", "cmd-line", "fish",
)
_alias(
    "sql", "mysql", "postgresql", "postgres", "psql", "pgsql", "plpgsql", "sqlite", "sqlite3", "tsql", "t-sql",
    "plsql", "pl/sql", "mssql", "sqlserver", "mariadb", "hive", "hiveql", "bigquery", "snowflake", "sparksql",
    "oracle", "db2", "ansi-sql",
)
_alias("ruby", "rb", "jruby", "erb", "rake", "gemspec", "irb")
_alias("php", "php3", "php4", "php5", "php7", "php8", "phtml")
# languages without a grammar package here: recognised labels, never detected
_alias("kotlin", "kt", "kts")
_alias("swift")
_alias("scala", "sc")
_alias("r", "rscript", "splus")
_alias("perl", "pl", "pm")
_alias("lua")
_alias("haskell", "hs")
_alias("dart")
_alias("elixir", "ex", "exs")
_alias("erlang", "erl")
_alias("clojure", "clj", "cljs", "edn")
_alias("fsharp", "f#", "fs")
_alias("ocaml", "ml")
_alias("julia", "jl")
_alias("matlab", "octave")
_alias("objectivec", "objc", "objective-c", "obj-c", "mm")
_alias("vb", "vbnet", "vb.net", "visualbasic", "vba", "vbscript")
_alias("powershell", "ps", "ps1", "pwsh", "posh")
_alias("batch", "bat", "cmd", "dos", "batchfile")
_alias("assembly", "asm", "nasm", "x86asm", "armasm", "s")
_alias("fortran", "f90", "f95", "f77")
_alias("pascal", "delphi", "pas")
_alias("groovy", "gradle")
_alias("solidity", "sol")
_alias("zig")
_alias("nim")
_alias("lisp", "commonlisp", "common-lisp", "elisp", "emacs-lisp", "scheme", "racket")
_alias("prolog")
_alias("cobol")
_alias("html", "htm", "xhtml", "vue", "svelte")
_alias("css", "scss", "sass", "less")
_alias("xml", "svg", "xsl", "xslt", "plist", "wsdl")
_alias("json", "jsonc", "json5", "jsonl", "ndjson", "geojson")
_alias("yaml", "yml")
_alias("toml")
_alias("ini", "cfg", "conf", "properties", "dotenv", "env")
_alias("markdown", "md", "mdx", "rmd")
_alias("latex", "tex")
_alias("dockerfile", "docker", "containerfile")
_alias("makefile", "make", "mk", "mak")
_alias("cmake")
_alias("graphql", "gql")
_alias("protobuf", "proto", "proto3")
_alias("diff", "patch", "udiff")
_alias("csv", "tsv")
_alias("regex", "regexp")
_alias("nginx", "nginxconf")
_alias("terraform", "hcl", "tf")
_alias("mermaid")
_alias(TEXT, "txt", "plaintext", "plain", "plain-text", "output", "out", "none", "nohighlight", "raw", "log",
       "stdout", "result", "results", "example", "ascii", "math")

# Languages the diversity gate counts: general-purpose and query languages, not data or markup.
NOT_PROGRAMMING = frozenset(
    {TEXT, "html", "css", "xml", "json", "yaml", "toml", "ini", "markdown", "latex", "csv", "diff", "regex",
     "mermaid", "nginx", "protobuf", "dockerfile", "makefile", "cmake", "graphql", "terraform"}
)


def normalize_label(info: str | None) -> str | None:
    """Canonical language for a fence's info string, or None when it names none we know.

    The first word of the info string names the language (CommonMark); `{.python}` (Pandoc),
    `language-python` (HTML class) and `python:main.py` (file-name suffixes some chats add) are
    accepted; case is ignored.
    """
    if not info:
        return None
    word = info.strip().split(None, 1)[0].lower().strip("{}.")
    if word.startswith("language-"):
        word = word[len("language-"):]
    if word in ALIASES:
        return ALIASES[word]
    for sep in (":", ",", "="):
        head = word.split(sep, 1)[0]
        if head in ALIASES:
            return ALIASES[head]
    return None


# --- tree-sitter ---------------------------------------------------------------------------


@lru_cache(maxsize=None)
def parser_for(lang: str) -> Parser:
    """One cached parser per grammar; building a Language costs more than parsing a block."""
    module_name, fn = GRAMMARS[lang]
    module = importlib.import_module(module_name)
    return Parser(Language(getattr(module, fn)()))


def grammar_versions() -> dict[str, str]:
    """Installed version of every grammar package, for the manifest."""
    out = {}
    for lang, pkg in PACKAGES.items():
        try:
            out[lang] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[lang] = "missing"
    out["tree-sitter"] = metadata.version("tree-sitter")
    return out


def parse_error_frac(code: str, lang: str) -> float:
    """Share of the non-blank lines of `code` touched by an ERROR or MISSING node under `lang`."""
    lines = code.split("\n")
    nonblank = [i for i, line in enumerate(lines) if line.strip()]
    if not nonblank:
        return 0.0
    tree = parser_for(lang).parse(code.encode("utf-8"))
    root = tree.root_node
    if not root.has_error:
        return 0.0
    bad: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if node.is_error or node.is_missing:
            r0 = node.start_point.row
            r1 = node.end_point.row
            if r1 > r0 and node.end_point.column == 0:
                r1 -= 1  # a span ending at column 0 does not touch that line
            bad.update(range(r0, r1 + 1))
            continue
        if node.has_error:
            stack.extend(node.children)
    return sum(1 for i in nonblank if i in bad) / len(nonblank)
