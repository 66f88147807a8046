"""Fenced code block extraction (curator/code_blocks.py), CommonMark 0.31 section 4.5."""

from curator.code_blocks import CodeBlock, extract_code_blocks, strip_code


def test_backtick_and_tilde_fences_with_info_strings():
    text = "Intro\n```python title=x.py\nprint(1)\n```\nmid\n~~~ruby\nputs 1\n~~~\n"
    blocks = extract_code_blocks(text)
    assert [(b.label, b.code, b.closed, b.fence) for b in blocks] == [
        ("python title=x.py", "print(1)", True, "```"),
        ("ruby", "puts 1", True, "~~~"),
    ]
    assert blocks[0].label_word == "python"
    assert text[blocks[0].start : blocks[0].end] == "```python title=x.py\nprint(1)\n```"
    assert text[blocks[1].start : blocks[1].end] == "~~~ruby\nputs 1\n~~~"


def test_no_label_is_none_and_empty_block():
    assert extract_code_blocks("```\n```") == [CodeBlock(None, "", 0, 7, True, "```")]
    assert extract_code_blocks("no fences here") == []
    assert extract_code_blocks(None) == []


def test_unclosed_fence_runs_to_end_of_text():
    text = "See:\n```js\nconst a = 1;\nconst b = 2;"
    (block,) = extract_code_blocks(text)
    assert block.closed is False
    assert block.code == "const a = 1;\nconst b = 2;"
    assert block.end == len(text)
    assert block.n_lines == 2


def test_closing_fence_must_match_character_and_length():
    # a ~~~~ note holding a ``` example (Exercism's shape), and a ```` block quoting ```
    text = "~~~~exercism/note\nUse:\n```py\nx\n```\n~~~~\n````md\n```\ninner\n```\n````"
    blocks = extract_code_blocks(text)
    assert [(b.label, b.code) for b in blocks] == [
        ("exercism/note", "Use:\n```py\nx\n```"),
        ("md", "```\ninner\n```"),
    ]


def test_backtick_info_string_with_backtick_is_inline_code_not_a_fence():
    assert extract_code_blocks("```x``` is inline\nmore") == []


def test_indented_fence_in_a_list_item_is_dedented():
    text = "1. Run:\n   ```bash\n   pip install x\n     --upgrade\n   ```\n2. Done"
    (block,) = extract_code_blocks(text)
    assert block.label == "bash"
    assert block.code == "pip install x\n  --upgrade"


def test_strip_code_removes_blocks_and_inline_code():
    text = "Call `f(x)` here.\n```py\nf(1)\n```\nThen stop."
    assert strip_code(text) == "Call   here.\n\n\nThen stop."
    assert strip_code(text, inline=False) == "Call `f(x)` here.\n\n\nThen stop."


# --- code outside fences --------------------------------------------------------------------

import pytest  # noqa: E402

from curator.code_blocks import CODE, COMMENT, OTHER, PROSE, line_kind, line_kinds, unfenced_candidates  # noqa: E402


@pytest.mark.parametrize(
    "line, kind",
    [
        ("def f(x):", CODE),
        ("    return x + 1", CODE),
        ("for item in items:", CODE),  # a Python header, though every token is a word
        ("console.log(arr); // Output: [1, 2]", CODE),  # the `;` before a trailing comment
        ("myset = set(my_list)", CODE),
        ("SELECT name FROM users;", CODE),
        ("}", CODE),
        ("What does len() do?", PROSE),
        ("if you want to print the list, call print() on it.", PROSE),
        ("print the numbers from 1 to 10", PROSE),
        ("Here is the code:", PROSE),
        ("`main.py`:", PROSE),  # a caption ending in ":" separates spans
        ("1. Call strip() on each line;", PROSE),  # a list item
        ("| x = 1 | y = 2 |", PROSE),  # a table row
        ("x = 4", OTHER),  # an equation: one-letter names
        ("cos(ABC) = (AB^2 + BC^2 - AC^2)/(2 * AB * BC)", OTHER),
        ("x + 4 - 4 = 10 - 4", OTHER),
        ("i += 1", CODE),  # a compound assignment is no equation
        ("7", OTHER),
        ("#### 72", COMMENT),
        ("// set up", COMMENT),
    ],
)
def test_line_kind(line, kind):
    assert line_kind(line) == kind


def test_block_comment_and_docstring_lines_are_comments():
    lines = ["/*", "Return the decimal part.", "*/", "def f():", '    """Return the value.', "    More words here.",
             '    """', "    return 1"]
    assert line_kinds(lines) == [COMMENT, COMMENT, COMMENT, CODE, COMMENT, COMMENT, COMMENT, CODE]


def test_whole_text_of_code_is_one_span():
    text = "def f(x):\n    return x + 1\n\nprint(f(2))"
    (block,) = unfenced_candidates(text)
    assert (block.label, block.code, block.start, block.end, block.fence, block.fenced) == (
        None, text, 0, len(text), "", False)
    assert block.n_lines == 4


def test_indented_block_after_a_colon_line_is_dedented():
    text = "Here is the function:\n\n    def add(a, b):\n        return a + b\n\nCall it with two numbers."
    (block,) = unfenced_candidates(text)
    assert block.code == "def add(a, b):\n    return a + b"
    assert text[block.start : block.end] == "    def add(a, b):\n        return a + b"


def test_one_code_line_counts_only_when_introduced():
    # after a line ending in ":" one line is enough; amid prose a span needs two
    assert [b.code for b in unfenced_candidates("Run this query:\nSELECT name FROM users;")] == [
        "SELECT name FROM users;"]
    assert unfenced_candidates("We could write\nSELECT name FROM users;\nbut it is slow.") == []
    two = "We could write\nconst a = 1;\nconsole.log(a);\nbut it is slow."
    assert [b.code for b in unfenced_candidates(two)] == ["const a = 1;\nconsole.log(a);"]


def test_fenced_code_is_not_a_candidate_again():
    text = ("Use this:\n```python\nx = [1, 2]\nprint(len(x))\n```\nOr in JavaScript:\n\nconst x = [1, 2];\n"
            "console.log(x.length);\n")
    (block,) = unfenced_candidates(text)
    assert block.code == "const x = [1, 2];\nconsole.log(x.length);"
    assert block.start > text.index("```\nOr")


@pytest.mark.parametrize(
    "text",
    [
        "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips altogether "
        "in April and May.\n#### 72",
        "You can use len() to get the length of a list.\nprint the numbers from 1 to 10.\n"
        "if the number is even, skip it.",
        "Steps:\n1. Open the file with open().\n2. Call strip() on each line.\n- use len(x) to count",
        "Solve for x:\n\n2x + 3 = 11\n2x = 8\nx = 4",
        "Output:\nSum: 15\nProduct: 120",
        "City = London\nMonth = March",  # values given as input
        "| name | call |\n|---|---|\n| a | f(x) |",
    ],
)
def test_prose_lists_tables_math_and_output_give_no_candidate(text):
    assert unfenced_candidates(text) == []
