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
