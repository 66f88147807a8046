"""Programming-language tagging: alias table, tree-sitter detection, mismatch flags, the stage
(curator/stages/code_language.py) and its diversity gate."""

import json
from collections import Counter
from pathlib import Path

import polars as pl
import pytest

from curator import columns as C
from curator.code_langs import GRAMMARS, classify_block, detect_language, normalize_label, parse_error_frac
from curator.config import CurateConfig
from curator.stages import code_language
from curator.stages.base import StageContext
from tests.conftest import messages_frame

CHAT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "chat"


@pytest.mark.parametrize(
    "label, lang",
    [
        ("py", "python"), ("python3", "python"), ("Python", "python"), ("js", "javascript"),
        ("node", "javascript"), ("ts", "typescript"), ("c++", "cpp"), ("cpp", "cpp"), ("cc", "cpp"),
        ("sh", "bash"), ("shell", "bash"), ("zsh", "bash"), ("console", "bash"), ("golang", "go"),
        ("rs", "rust"), ("cs", "csharp"), ("csharp", "csharp"), ("c#", "csharp"), ("postgresql", "sql"),
        ("mysql", "sql"), ("sqlite", "sql"), ("rb", "ruby"), ("php", "php"), ("c", "c"), ("java", "java"),
        ("{.python}", "python"), ("language-js", "javascript"), ("python title=a.py", "python"),
        ("json", "json"), ("kotlin", "kotlin"), ("plaintext", "text"), ("text", "text"),
    ],
)
def test_alias_table(label, lang):
    assert normalize_label(label) == lang


@pytest.mark.parametrize("label", [None, "", "exercism/note", "Starter", "# Instructions"])
def test_unknown_labels_normalise_to_none(label):
    assert normalize_label(label) is None


def test_every_grammar_loads_and_parses_cleanly():
    snippets = {
        "python": "def f(x):\n    return x + 1\n",
        "javascript": "const f = (x) => x + 1;\n",
        "typescript": "const f = (x: number): number => x + 1;\n",
        "java": "class A { int f(int x) { return x + 1; } }\n",
        "c": "int f(int x) { return x + 1; }\n",
        "cpp": "int f(int x) { return x + 1; }\n",
        "csharp": "class A { int F(int x) { return x + 1; } }\n",
        "go": "package main\nfunc f(x int) int { return x + 1 }\n",
        "rust": "fn f(x: i32) -> i32 { x + 1 }\n",
        "bash": "echo hello | wc -c\n",
        "sql": "SELECT a FROM t WHERE b = 1;\n",
        "ruby": "def f(x)\n  x + 1\nend\n",
        "php": "function f($x) { return $x + 1; }\n",
    }
    assert set(snippets) == set(GRAMMARS)
    for lang, code in snippets.items():
        assert parse_error_frac(code, lang) == 0.0, lang


@pytest.mark.parametrize(
    "code, lang",
    [
        ("import os\n\ndef main():\n    for name in os.listdir('.'):\n        print(name)\n", "python"),
        ("const xs = [1, 2, 3];\nxs.forEach((x) => console.log(x));\n", "javascript"),
        ("interface P { name: string }\nconst p: P = { name: 'a' };\n", "typescript"),
        ('public class Main {\n  public static void main(String[] args) {\n    System.out.println("hi");\n  }\n}\n', "java"),
        ('#include <stdio.h>\nint main(void) {\n  printf("%d\\n", 1);\n  return 0;\n}\n', "c"),
        ("#include <iostream>\nint main() {\n  std::cout << 1 << std::endl;\n}\n", "cpp"),
        ('using System;\nclass P {\n  static void Main() {\n    Console.WriteLine("hi");\n  }\n}\n', "csharp"),
        ('package main\n\nimport "fmt"\n\nfunc main() {\n\tx := 1\n\tfmt.Println(x)\n}\n', "go"),
        ('fn main() {\n    let mut v: Vec<i32> = Vec::new();\n    v.push(1);\n    println!("{:?}", v);\n}\n', "rust"),
        ("#!/bin/bash\nfor f in *.txt; do\n  echo \"$f\"\ndone\n", "bash"),
        ("SELECT name, COUNT(*) FROM users\nWHERE age > 30\nGROUP BY name;\n", "sql"),
        ("class Dog\n  attr_reader :name\n  def bark\n    puts \"Woof\"\n  end\nend\n", "ruby"),
        ("<?php\n$items = array(1, 2);\nforeach ($items as $i) {\n  echo $i;\n}\n", "php"),
    ],
)
def test_detects_each_language(code, lang):
    assert detect_language(code).lang == lang


def test_ties_break_to_the_subset_language_without_superset_cues():
    c_code = '#include <stdio.h>\nint main(void) {\n  int x = 1;\n  printf("%d", x);\n  return 0;\n}\n'
    assert parse_error_frac(c_code, "c") == parse_error_frac(c_code, "cpp") == 0.0  # both grammars parse it: a tie
    assert detect_language(c_code).lang == "c"
    js = "function add(a, b) {\n  return a + b;\n}\nconsole.log(add(1, 2));\n"
    assert parse_error_frac(js, "javascript") == parse_error_frac(js, "typescript") == 0.0
    assert detect_language(js).lang == "javascript"
    ts = "function add(a: number, b: number): number {\n  return a + b;\n}\n"
    assert detect_language(ts).lang == "typescript"


def test_label_mismatch_is_flagged_and_the_content_wins():
    code = "def greet(name):\n    if name is None:\n        return 'hi'\n    return f'hi {name}'\n"
    res = classify_block(code, "javascript")
    assert (res.lang, res.decided_by, res.label_mismatch, res.parse_error_frac) == ("python", "detected", True, 0.0)


def test_clean_label_is_confirmed_and_broken_code_keeps_its_label():
    assert classify_block("x = [1, 2]\nprint(x)\n", "py") == code_language.classify_block(
        "x = [1, 2]\nprint(x)\n", "python"
    )
    res = classify_block("x = [1, 2]\nprint(x)\n", "py")
    assert (res.lang, res.decided_by, res.label_mismatch, res.parse_error_frac) == ("python", "both", False, 0.0)
    # broken python that parses nowhere cleanly: the label stands, with its error fraction
    res = classify_block("def f(:\n    return )\n", "python")
    assert (res.lang, res.decided_by, res.label_mismatch) == ("python", "label", False)
    assert res.parse_error_frac == 1.0


def test_labels_without_grammar_and_text_are_kept_unparsed():
    assert classify_block('{"a": 1}', "json") == code_language.classify_block('{"a": 1}', "json")
    res = classify_block('{"a": 1}', "json")
    assert (res.lang, res.decided_by, res.parse_error_frac) == ("json", "label", None)
    assert classify_block("Input: 3\nOutput: 6", "text").lang == "text"


def test_prose_and_repl_transcripts():
    prose = "The plaintext should be organized into a rectangle as square as possible."
    assert classify_block(prose, None).lang is None
    repl = ">>> x = [1, 2]\n>>> len(x)\n2\n"
    assert parse_error_frac(repl, "python") == 0.0
    assert classify_block(repl, None).lang == "python"


_frame = messages_frame


def _ctx(**overrides):
    return StageContext(config=CurateConfig.model_validate({"code_language": overrides}))


def test_stage_columns_on_inline_rows():
    df = _frame(
        [
            [("user", "Fix:\n```js\nlet x = 1\n```"), ("assistant", "```python\nx = 1\nprint(x)\n```\n```text\nok\n```")],
            [("user", "hi"), ("assistant", "hello")],
            [("user", "q"), ("assistant", "```javascript\ndef f(a):\n    if a:\n        return a\n```")],
        ]
    )
    ctx = _ctx()
    out = code_language.run(df, ctx)
    assert out["code_langs"].to_list() == [["javascript", "python"], [], ["python"]]
    assert out["has_code"].to_list() == [True, False, True]
    assert out["code_parse_error_frac"].to_list() == [0.0, None, 0.0]
    assert out["code_label_mismatch"].to_list() == [False, False, True]
    first = out["code_blocks"][0].to_list()
    assert [(b["turn"], b["role"], b["label"], b["lang"], b["decided_by"], b["n_lines"]) for b in first] == [
        (0, "user", "js", "javascript", "both", 1),
        (1, "assistant", "python", "python", "both", 2),
        (1, "assistant", "text", "text", "label", 1),
    ]
    assert out.schema["code_blocks"] == pl.List(code_language.BLOCK)
    assert out[C.REJECT_REASONS].to_list() == [[], [], []]
    assert ctx.summaries["code_language"]["label_mismatch_blocks"] == 1


def test_stage_rejects_mismatch_when_configured():
    df = _frame([[("user", "q"), ("assistant", "```javascript\ndef f(a):\n    if a:\n        return a\n```")]])
    out = code_language.run(df, _ctx(label_mismatch="reject"))
    assert out[C.REJECT_REASONS].to_list() == [["code.label_mismatch"]]
    assert out[C.REJECT_DETAILS].to_list() == [["turn 1: labelled 'javascript', parses as python"]]


def _kept(langs_per_row):
    return pl.DataFrame({"code_langs": langs_per_row}, schema={"code_langs": pl.List(pl.Utf8)})


def test_gate_passes_with_five_languages_over_the_share():
    kept = _kept([["python"], ["go"], ["rust"], ["java"], ["cpp", "json"], [], ["text"]])
    (gate,) = code_language.gates(kept, _ctx())
    assert (gate.name, gate.passed, gate.value, gate.threshold) == ("code.language_diversity", True, 5.0, 5.0)
    ctx = _ctx()
    code_language.gates(kept, ctx)
    assert ctx.summaries["code_language"]["kept_language_shares"] == {
        "cpp": 0.2, "go": 0.2, "java": 0.2, "python": 0.2, "rust": 0.2
    }


def test_gate_fails_when_a_language_is_below_the_share():
    kept = _kept([["python"]] * 60 + [["go"]] * 20 + [["rust"]] * 10 + [["java"]] * 9 + [["cpp"]])
    (gate,) = code_language.gates(kept, _ctx(min_share=0.02))
    assert (gate.passed, gate.value) == (False, 4.0)
    assert "below the share: cpp" in gate.message
    (gate,) = code_language.gates(kept, _ctx(min_share=0.01))
    assert (gate.passed, gate.value) == (True, 5.0)
    assert code_language.gates(kept, _ctx(min_languages=None)) == []


def test_real_exercism_records_carry_their_language():
    """Exercism records name their language in meta; the stage finds it in every record's blocks."""
    expected = {"exercism_go.chat.jsonl": "go", "exercism_rust.chat.jsonl": "rust", "exercism_sqlite.chat.jsonl": "sql"}
    for name, lang in expected.items():
        records = [json.loads(line) for line in (CHAT / name).read_text(encoding="utf-8").splitlines()[:15]]
        df = _frame([[(m["role"], m["content"]) for m in r["messages"]] for r in records])
        out = code_language.run(df, _ctx())
        assert all(lang in langs for langs in out["code_langs"].to_list()), name


def test_cue_prefilter_gives_the_scores_of_running_every_regex():
    """`required_literals` only skips regexes that cannot match: same scores as scanning with all."""
    import re

    from curator.code_langs import CUES, cue_scores, required_literals

    assert required_literals(r"\bconsole\.(log|error)\(") == (frozenset({"console."}), False)
    assert required_literals(r"(?i)\bselect\b[\s\S]*?\bfrom\b") == (frozenset({"select"}), True)
    assert required_literals(r"\b(async|await)\b") == (frozenset({"sync", "wait"}), False)  # common prefix factored
    assert required_literals(r"^\s*\w+$") is None
    snippets = [
        "SeLeCt a FrOm t",
        "fn main() { let mut v = vec![1]; v.push(2); }",
        'package main\nimport "fmt"\nfunc main() { fmt.Println(strings.ToUpper("a")) }',
        "#include <vector>\nstd::vector<int> v; for (int i = 0; i < 3; i++) {}",
        "export interface P { name: string }\nconst p: P = { name: `x${1}` };",
        "class A:\n    def f(self):\n        return None\n",
    ]
    for code in snippets:
        brute = {lang: sum(w for p, w in pats if re.search(p, code, re.MULTILINE)) for lang, pats in CUES.items()}
        assert cue_scores(code) == brute, code


@pytest.mark.parametrize(
    "code, lang",
    [
        ('Welcome("Christiane")\n// => Welcome to my party, Christiane!\n', "go"),  # exported call, no `;`
        ("var p *int\np = &a\n", "go"),
        ('re := regexp.MustCompile(`[a-z]+`)\n', "go"),
        ('BirdWatcher.getLastWeek();\n// => [0, 2, 5, 3, 7, 8, 4]\n', "java"),  # static call on a class
        ("enum Result {\n    WIN,\n    DRAW,\n    LOSS\n}\n", "java"),
        ("Math.floor(234.34);\n", "javascript"),  # JavaScript's built-ins are not Java classes
        ("let pr: String = text.chars().rev().collect();\n", "rust"),
        ("UPDATE t\nSET\n  result = REPLACE(dna, 'A', 'U');\n", "sql"),  # upper-case SQL calls are not Go's
        ('# a 2-student roster\nGarden("VRCC\\nVCGG", students=["Valorie", "Raven"])\n', "python"),
    ],
)
def test_one_line_examples_of_exercism_style(code, lang):
    assert detect_language(code).lang == lang


def test_labelled_block_with_few_errors_keeps_its_label_without_full_detection():
    # one broken line of five: under mismatch_min_error (0.3), so the label stands; python's cues
    # rank first, so the content agrees (`both`)
    code = "def f(x):\n    y = x +\n    return x\n\nprint(f(1))\n"
    res = classify_block(code, "python")
    assert (res.lang, res.decided_by, res.label_mismatch) == ("python", "both", False)
    assert 0 < res.parse_error_frac < 0.3
    # the same kind of block whose cues point elsewhere keeps the label alone
    js = "const x = 1;\nconsole.log(x);\nlet y = ;\nconsole.log(x === 1);\nconst z = [1].map((v) => v);\n"
    res = classify_block(js, "typescript")
    assert res.lang == "typescript" and res.label_mismatch is False


def test_language_shares_of_code_langs_rows_count_programming_languages_only():
    from curator.code_langs import is_programming, language_counts, language_shares

    assert [is_programming(x) for x in ("python", "sql", "json", "html", "css", "yaml", "text", None)] == [
        True, True, False, False, False, False, False, False]
    rows = [["json", "python"], ["json"], ["css", "html"], [], None, ["go", "python"], ["go", "go"]]
    # code examples: rows 0, 5 and 6 (a row of data/markup blocks only is not one); go counts once in row 6
    assert language_counts(rows) == (3, {"python": 2, "go": 2})
    n, shares = language_shares(rows)
    assert (n, list(shares.items())) == (3, [("go", 2 / 3), ("python", 2 / 3)])
    assert language_shares([]) == (0, {}) and language_shares([["json"], None]) == (0, {})
    # the stage uses the very same functions
    assert code_language.language_shares is language_shares and code_language.is_programming is is_programming


@pytest.mark.parametrize(
    "code", ["Sum: 15 (even)", "Output: (1, 2, 3)", "(1, 2)", "add(2, 3)", "x <- c(1,2,3)",
             "Sum: 15 (even)\nProduct: 120 (even)\nDone: (3 values)"],
)
def test_program_output_tuples_and_lone_calls_are_no_language(code):
    res = classify_block(code, None)
    assert (res.lang, res.decided_by) == (None, None)


def test_unlabelled_json_is_json_and_not_counted_by_the_gate():
    from curator.code_langs import language_counts

    for code in ['{"name": "Bob", "age": 3}', "[1, 2, 3]", '{\n  "a": [1, {"b": null}]\n}']:
        res = classify_block(code, None)
        assert (res.lang, res.decided_by, res.parse_error_frac, res.label_mismatch) == ("json", "detected", None, False)
    assert language_counts([["json"], ["json", "python"]]) == (1, {"python": 1})
    # statement-shaped code without cues still falls back to a grammar
    assert classify_block("foo();", None).lang == "javascript"
    assert classify_block("{ a: 1 }", None).lang == "javascript"  # not JSON (unquoted key)


def test_cpp_statements_outside_a_function_are_cpp():
    code = 'std::cout << "hi" << std::endl;'
    assert detect_language(code).lang == "cpp"
    res = classify_block(code, "cpp")
    assert (res.lang, res.decided_by, res.label_mismatch) == ("cpp", "both", False)
    assert parse_error_frac(code, "cpp") == 0.0


@pytest.mark.parametrize(
    "label, lang",
    [("python{cmd=true}", "python"), ("js{1,3}", "javascript"), ("python3.11", "python"), ("php-8.2", "php"),
     ("node18", "javascript")],
)
def test_info_strings_with_attributes_and_versions(label, lang):
    assert normalize_label(label) == lang


# --- which parses judge the code (the quality stage's unparsable_code reads only these) ----------

TSX = """import React, { useState } from 'react';

interface Props {
  title: string;
}

const Header: React.FC<Props> = ({ title }) => {
  const [open, setOpen] = useState<boolean>(false);
  return (
    <div className="header" onClick={() => setOpen(!open)}>
      <h1>{title}</h1>
    </div>
  );
};

export default Header;"""
TSQL = """DECLARE @StartDate DATE = '2023-01-01';
SELECT TOP 10 c.CustomerID, SUM(o.Total) AS Total
FROM dbo.Customers c
INNER JOIN dbo.Orders o ON o.CustomerID = c.CustomerID
WHERE o.OrderDate >= @StartDate
GROUP BY c.CustomerID
ORDER BY Total DESC;
GO"""
PLPGSQL = """CREATE OR REPLACE FUNCTION touch()
RETURNS TRIGGER AS $$
BEGIN
    NEW.modified = now();
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;"""
DART = """import 'package:flutter/material.dart';

void main() {
  runApp(MyApp());
}

class MyApp extends StatelessWidget {
  @override
  Widget build(BuildContext context) {
    return MaterialApp(
      home: Scaffold(
        appBar: AppBar(title: Text('Hello')),
        body: Center(child: Text('Hello World')),
      ),
    );
  }
}"""


@pytest.mark.parametrize("label", ["tsx", "typescript", "ts", None])
def test_tsx_is_read_with_the_tsx_grammar(label):
    assert parse_error_frac(TSX, "typescript") > 0.5  # JSX is no TypeScript ...
    res = classify_block(TSX, label)
    assert (res.lang, res.parse_error_frac) == ("typescript", 0.0)  # ... but valid TSX


@pytest.mark.parametrize(("code", "label"), [(TSQL, "sql"), (TSQL, "tsql"), (TSQL, None), (PLPGSQL, "sql"),
                                             (PLPGSQL, "plpgsql"), (PLPGSQL, None), ("SELECT 1;", "t-sql")])
def test_sql_dialects_the_grammar_lacks_are_not_judged(code, label):
    res = classify_block(code, label)
    assert (res.lang, res.judged) == ("sql", False)


def test_plain_sql_is_judged():
    res = classify_block("SELECT name FROM users WHERE id = 1;", "sql")
    assert (res.lang, res.decided_by, res.parse_error_frac, res.judged) == ("sql", "both", 0.0, True)
    res = classify_block("SELECT name FROM users WHERE id = = 1 GROUP;", "sql")
    assert (res.lang, res.judged) == ("sql", True) and res.parse_error_frac == 1.0


def test_a_detection_other_grammars_read_better_is_not_judged():
    # Dart has no grammar here: C++ cues win the detection, but Java's grammar reads it better
    res = classify_block(DART, None)
    assert (res.lang, res.decided_by, res.judged) == ("cpp", "detected", False)
    assert res.parse_error_frac > 0.1


def test_a_label_the_content_does_not_agree_with_is_not_judged():
    table = "| Task | Start Date | End Date |\n|------|------------|----------|\n| Design | 01-Jan | 10-Jan |"
    res = classify_block(table, "sql")  # ShareGPT's labels are an editor's guesses
    assert (res.lang, res.decided_by, res.parse_error_frac, res.judged) == ("sql", "label", 1.0, False)


def test_broken_code_in_its_labelled_or_confidently_detected_language_is_judged():
    broken = "function f(a, b) {\n  return a +;\n}\nconsole.log(f(1, 2);\n"
    res = classify_block(broken, "javascript")
    assert (res.lang, res.decided_by, res.parse_error_frac, res.judged) == ("javascript", "both", 0.5, True)
    py = "import os\n\ndef main(path):\n    for name in os.listdir(path):\n        print(name\n\nmain('.')\n"
    res = classify_block(py, None)
    assert (res.lang, res.decided_by, res.judged) == ("python", "detected", True) and res.parse_error_frac > 0.1


def test_stage_worst_error_reads_judged_blocks_only():
    table = "| Task | Start Date |\n|------|------------|\n| Design | 01-Jan |"
    df = _frame([
        [("user", "q"), ("assistant", f"```tsx\n{TSX}\n```\n```sql\n{TSQL}\n```\n```sql\n{table}\n```")],
        [("user", "q"), ("assistant", "```javascript\nfunction f(a, b) {\n  return a +;\n}\n"
                                      "console.log(f(1, 2);\n```")],
    ])
    out = code_language.run(df, _ctx())
    assert out["code_parse_error_frac"].to_list() == [0.0, 0.5]
    blocks = out["code_blocks"][0].to_list()
    assert [(b["lang"], b["parse_judged"]) for b in blocks] == [("typescript", True), ("sql", False), ("sql", False)]


# --- code outside fences --------------------------------------------------------------------

BARE_PYTHON = "def factorial(n):\n    if n <= 1:\n        return 1\n    return n * factorial(n - 1)\n\nprint(factorial(5))"
BARE_JAVA = (
    "public class Greeter {\n    private final String name;\n\n    public Greeter(String name) {\n"
    "        this.name = name;\n    }\n\n    public String greet() {\n        return \"Hello, \" + name;\n    }\n}"
)
INDENTED_AFTER_COLON = "Here is the code:\n\n    def add(a, b):\n        return a + b\n\n    print(add(2, 3))\n\nIt prints 5."
GSM8K = ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips altogether in April "
         "and May.\n#### 72")
ROLEPLAY = ("*adjusts hat* Ahoy! I am the captain of this ship; welcome aboard.\nThe plan is simple: we sail at dawn, "
            "we find the island, and we return with the treasure.\nWhat brings you here, stranger?")
PROSE_CALLS = ("print() writes its arguments to the console.\nif you need the size of a list, call len() on it.\n"
               "len() returns 3 for [1, 2, 3].")


def _blocks(out, row=0):
    return [(b["turn"], b["role"], b["label"], b["lang"], b["decided_by"], b["n_lines"]) for b in out["code_blocks"][row]]


def test_unfenced_answers_get_their_language():
    df = _frame([[("user", "Write it."), ("assistant", text)] for text in (BARE_PYTHON, BARE_JAVA, INDENTED_AFTER_COLON)])
    out = code_language.run(df, _ctx())
    assert [_blocks(out, i) for i in range(3)] == [
        [(1, "assistant", None, "python", "unfenced", 6)],
        [(1, "assistant", None, "java", "unfenced", 11)],
        [(1, "assistant", None, "python", "unfenced", 4)],
    ]
    assert out["code_langs"].to_list() == [["python"], ["java"], ["python"]]
    assert out["has_code"].to_list() == [True, True, True]
    assert [b["parse_error_frac"] for b in out["code_blocks"][1]] == [0.0]
    assert ctx_blocks_decided(df) == {"unfenced": 3}


def ctx_blocks_decided(df):
    ctx = _ctx()
    code_language.run(df, ctx)
    return ctx.summaries["code_language"]["blocks_decided_by"]


def test_prose_answers_get_no_code():
    df = _frame([[("user", "Question?"), ("assistant", text)] for text in (GSM8K, ROLEPLAY, PROSE_CALLS)])
    out = code_language.run(df, _ctx())
    assert out["code_blocks"].to_list() == [[], [], []]
    assert out["code_langs"].to_list() == [[], [], []]
    assert out["has_code"].to_list() == [False, False, False]


def test_unfenced_code_can_be_switched_off_and_other_roles_are_not_searched():
    df = _frame([[("system", BARE_PYTHON), ("user", "Write it."), ("assistant", BARE_JAVA)]])
    assert code_language.run(df, _ctx(unfenced=False))["code_langs"].to_list() == [[]]
    assert code_language.run(df, _ctx())["code_langs"].to_list() == [["java"]]
    assert code_language.run(df, _ctx(unfenced_roles=["system"]))["code_langs"].to_list() == [["python"]]


def test_a_fenced_block_is_not_counted_twice():
    text = ("Use this:\n```python\nx = [1, 2]\nprint(len(x))\n```\nOr in JavaScript:\n\nconst x = [1, 2];\n"
            "console.log(x.length);\n")
    out = code_language.run(_frame([[("user", "How?"), ("assistant", text)]]), _ctx())
    assert _blocks(out) == [
        (1, "assistant", "python", "python", "both", 2),
        (1, "assistant", None, "javascript", "unfenced", 2),
    ]
    assert out["code_langs"].to_list() == [["javascript", "python"]]


def test_unfenced_blocks_leave_the_parse_error_signal_to_fenced_code():
    # the quality rule `unparsable_code` reads code_parse_error_frac: broken fenced code still
    # shows; an unfenced span (kept because it parses) neither adds to it nor masks it
    broken = "```python\nimport os\n\ndef main(path):\n    for name in os.listdir(path):\n        print(name\n\nmain('.')\n```"
    df = _frame([[("user", "q"), ("assistant", BARE_PYTHON)],
                 [("user", "q"), ("assistant", broken + "\n\n" + BARE_JAVA)]])
    out = code_language.run(df, _ctx())
    worst = out["code_parse_error_frac"].to_list()
    assert worst[0] is None and worst[1] > 0.1  # the broken fenced block, judged
    assert [(b["decided_by"], b["parse_judged"]) for b in out["code_blocks"][1]] == [("both", True), ("unfenced", False)]


def test_code_langs_and_the_gate_count_unfenced_code():
    answers = {
        "python": BARE_PYTHON,
        "java": BARE_JAVA,
        "javascript": "function add(a, b) {\n  return a + b;\n}\nconsole.log(add(1, 2));",
        "go": 'package main\n\nimport "fmt"\n\nfunc main() {\n\tfmt.Println("hi")\n}',
        "sql": "Run this query:\nSELECT name, COUNT(*) FROM users\nWHERE age > 30\nGROUP BY name;",
    }
    df = _frame([[("user", "Write it."), ("assistant", text)] for text in answers.values()] + [[("user", "hi"),
                                                                                                 ("assistant", GSM8K)]])
    out = code_language.run(df, _ctx())
    assert out["code_langs"].to_list() == [[lang] for lang in answers] + [[]]
    ctx = _ctx()
    (gate,) = code_language.gates(out, ctx)
    assert (gate.passed, gate.value) == (True, 5.0)
    assert gate.message.startswith("5 programming languages with >= 2.0% of 5 code examples")
    # the same answers without unfenced detection: no code example, the gate fails
    off = code_language.run(df, _ctx(unfenced=False))
    (gate,) = code_language.gates(off, _ctx(unfenced=False))
    assert (gate.passed, gate.value) == (False, 0.0)


def test_classify_unfenced_needs_a_clean_parse_and_rejects_data():
    from curator.code_langs import classify_unfenced

    assert classify_unfenced(BARE_PYTHON) == code_language.classify_unfenced(BARE_PYTHON)
    res = classify_unfenced(BARE_PYTHON)
    assert (res.lang, res.decided_by, res.parse_error_frac, res.label_mismatch) == ("python", "unfenced", 0.0, False)
    for data in ('{\n  "name": "Bob",\n  "age": 30\n}', "Sum: 15\nProduct: 120"):
        assert classify_unfenced(data).lang is None
    # half the lines broken and no strong cue: not code we can vouch for (fenced, it would be python)
    broken = "def f(x):\n    return x +\nwhile True\n    pass"
    assert classify_unfenced(broken).lang is None
    assert classify_block(broken, None).lang == "python"
    # a permissive grammar needs its cues: words parse as a bash command (a flag is one weak cue)
    words = "read the docs --help first\nthen ask a friend"
    assert (detect_language(words).lang, classify_unfenced(words).lang) == ("bash", None)


@pytest.mark.parametrize("name", ["gsm8k_train.jsonl", "gpteacher_roleplay.jsonl"])
def test_real_prose_answers_hold_no_unfenced_code(name):
    path = CHAT / name
    if not path.exists():
        pytest.skip("../shared/data/chat is not available")
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()[:300]]
    df = _frame([[(m["role"], m["content"]) for m in r["messages"]] for r in records])
    assert code_language.run(df, _ctx())["code_langs"].to_list() == [[]] * len(records)


def test_real_bare_code_answers_get_a_language():
    """CodeAlpaca answers with bare code: the first 40 records' assistant turns, fences absent."""
    path = CHAT / "codealpaca_2k.jsonl"
    if not path.exists():
        pytest.skip("../shared/data/chat is not available")
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()[:40]]
    df = _frame([[(m["role"], m["content"]) for m in r["messages"] if m["role"] == "assistant"] for r in records])
    out = code_language.run(df, _ctx())
    found = Counter(lang for langs in out["code_langs"].to_list() for lang in langs)
    assert sum(1 for langs in out["code_langs"].to_list() if langs) == EXPECTED_CODEALPACA_40[0]
    assert dict(found) == EXPECTED_CODEALPACA_40[1]


# The first 40 CodeAlpaca answers, read one by one: the 9 without a language are prose (6) and
# HTML (3, no grammar here); every language found is the one the prompt asks for, except a C#
# method read as Java (`public static int ... { ... }` is valid Java).
EXPECTED_CODEALPACA_40 = (
    31, {"javascript": 10, "java": 6, "sql": 6, "python": 5, "bash": 1, "cpp": 1, "php": 1, "ruby": 1}
)


def test_batch_cue_scores_equal_the_per_block_scores():
    """cue_scores_many runs the cues in Polars (Rust regex, ASCII word boundaries on ASCII text):
    the same scores as cue_scores, a look-ahead cue (Java's static call) included."""
    from curator.code_langs import cue_scores, cue_scores_many

    samples = [
        "SeLeCt a FrOm t", BARE_PYTHON, BARE_JAVA, "BirdWatcher.getLastWeek();\nMath.floor(1.5);",
        "let café = 1;\nconsole.log(café === 1);",  # non-ASCII: Unicode word boundaries
        "nilé = 1\nputs nil", "", "fn main() { let mut v = vec![1]; v.push(2); }",
    ]
    assert cue_scores_many(samples) == [cue_scores(s) for s in samples]
    assert cue_scores_many([]) == []
