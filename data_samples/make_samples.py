"""Build data_samples/raw/: a small raw sample with every defect class planted.

Run from the repository root with ../shared/data beside it (the product never needs it; this
script only records how the committed sample was made):

    python data_samples/make_samples.py

Real records come from permissively licensed sources only (Exercism: MIT, GPTeacher: MIT,
GSM8K: MIT, HumanEval-X and LLaMA-Factory: Apache-2.0); the defects are written here by hand.
The expected outputs of `curate run data_samples/raw out/` are in data_samples/expected/,
checked by tests/test_golden.py (regenerate with `make golden` after an intended change).
"""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHAT = HERE.parent.parent / "shared" / "data" / "chat"
NATIVE = HERE.parent.parent / "shared" / "data" / "native"
RAW = HERE / "raw"


def take(name: str, lines: list[int]) -> list[str]:
    wanted = set(lines)
    out = {}
    with (CHAT / name).open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if number in wanted:
                out[number] = line.rstrip("\n")
    return [out[n] for n in lines]


def dumps(obj) -> str:
    return json.dumps(obj, ensure_ascii=False)


def chat(*turns: tuple[str, str], **extra) -> dict:
    record = {"messages": [{"role": r, "content": c} for r, c in turns]}
    record.update(extra)
    return record


def real_records() -> list[str]:
    rng = random.Random(7)
    lines: list[str] = []
    picks = {
        "exercism_python.chat.jsonl": 12,
        "exercism_javascript.chat.jsonl": 10,
        "exercism_typescript.chat.jsonl": 8,
        "exercism_go.chat.jsonl": 10,
        "exercism_rust.chat.jsonl": 10,
        "exercism_java.chat.jsonl": 10,
        "exercism_cpp.chat.jsonl": 8,
        "exercism_sqlite.chat.jsonl": 6,
        "humaneval_x_6lang.jsonl": 24,
        "gpteacher_codegen.jsonl": 40,
        "gpteacher_roleplay.jsonl": 20,
        "gsm8k_train.jsonl": 40,
        "fastchat_dummy_conversation.jsonl": 8,
        "llamafactory_glaive_toolcall_en_demo.jsonl": 12,
    }
    for name, n in picks.items():
        with (CHAT / name).open(encoding="utf-8") as fh:
            total = sum(1 for _ in fh)
        chosen = sorted(rng.sample(range(1, total + 1), n))
        for line in take(name, chosen):
            # keep the sample small: records over 12 KB are left to the over-budget plant below
            if len(line) <= 12_000:
                lines.append(line)
    return lines


def planted_quality_and_dups(real: list[str]) -> list[str]:
    """Exact and near duplicates, secrets, refusals, truncation, other languages, over budget."""
    out = []
    out.append(real[0])  # exact duplicate of the first real record
    out.append(real[30])  # and of another one
    near = json.loads(real[40])
    near["messages"][0]["content"] = "Please help: " + near["messages"][0]["content"]
    out.append(dumps(near))  # near duplicate: a lead-in added to the prompt
    near2 = json.loads(real[45])
    near2["messages"][-1]["content"] = near2["messages"][-1]["content"].replace("\n", "\n\n", 3)
    out.append(dumps(near2))  # near duplicate: reformatted answer
    out.append(dumps(chat(
        ("user", "How do I configure the AWS CLI on my laptop?"),
        ("assistant", "Run `aws configure` and paste your keys when asked, for example:\n\n"
         "```bash\naws configure set aws_access_key_id AKIAZ4Q7RW2HN5XK3MPL\n"
         "aws configure set aws_secret_access_key 9f2Kq8LmZx4Vb7Nc1Rt6Yh3Wj5Pd0Sa2Ge8Ui4Oo\n```\n\n"
         "Then check it with `aws sts get-caller-identity`."),
    )))
    out.append(dumps(chat(
        ("user", "Write a short poem about the sea."),
        ("assistant", "As an AI language model, I cannot write poems because I do not have feelings about the sea."),
    )))
    out.append(dumps(chat(
        ("user", "Explain what a binary search does and give its complexity."),
        ("assistant", "A binary search looks for a value in a sorted array by repeatedly halving the range it"),
    )))
    out.append(dumps(chat(
        ("user", "Give me a tip for writing clean code."),
        ("assistant", "Name things after what they do.\n\n" * 12),
    )))
    out.append(dumps(chat(
        ("user", "¿Cuál es la capital de Francia y por qué es famosa en el mundo entero?"),
        ("assistant", "La capital de Francia es París. Es famosa por la torre Eiffel, el museo del Louvre, "
         "su gastronomía y su larga historia como centro de arte, ciencia y política en Europa."),
    )))
    out.append(dumps(chat(
        ("user", "请用一句话解释什么是机器学习。"),
        ("assistant", "机器学习是让计算机从数据中自动学习规律，并用这些规律对新数据做出预测或决策的一种方法。"),
    )))
    out.append(dumps(chat(
        ("system", "You are a concise assistant who answers in one sentence."),
        ("user", "What is the boiling point of water at sea level?"),
        ("assistant", "Water boils at 100 degrees Celsius (212 °F) at sea level."),
    )))
    out.append(dumps(chat(
        ("user", "Write a Python function that returns the square of a number."),
        ("assistant", "```python\ndef square(x):\n    return x * x\n```"),
        ("user", "Now make it work for a list of numbers."),
        ("assistant", "```python\ndef squares(xs):\n    return [x * x for x in xs]\n```"),
    )))
    weighted = chat(
        ("user", "What is 2 + 2?"),
        ("assistant", "5"),
        ("user", "That is wrong, try again."),
        ("assistant", "Sorry, 2 + 2 = 4."),
    )
    weighted["messages"][1]["weight"] = 0
    out.append(dumps(weighted))
    out.append(dumps({
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "What is the capital of Italy? "}, {"type": "text", "text": "Answer briefly."}]},
            {"role": "assistant", "content": "Rome."},
        ],
        "meta": {"source": "hand-written", "note": "OpenAI content parts"},
    }))
    out.append(dumps({
        "messages": [
            {"role": "user", "content": "What's the weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp_c\": 18, \"sky\": \"cloudy\"}"},
            {"role": "assistant", "content": "It is 18 °C and cloudy in Paris."},
        ],
        "meta": {"source": "hand-written", "note": "OpenAI tool calls"},
    }))
    out.append(dumps(chat(("user", "Say hi in CRLF style.\r\nPlease."), ("assistant", "Hi!   \r\nThere.  "), id="crlf-1")))
    # Over the 8,192-token budget: the longest real Exercism Python record (10,678 tokens).
    longest = max(take("exercism_python.chat.jsonl", list(range(1, 162))), key=len)
    out.append(longest)
    out.append(dumps({
        "messages": [
            {"role": "system", "content": "You can look up the weather."},
            {"role": "user", "content": "Compare the weather in Lyon and in Nice."},
            {"role": "assistant", "content": None, "tool_calls": [
                {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Lyon"}}},
                {"type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":  \"Nice\"}"}},
            ]},
            {"role": "tool", "content": "{\"temp_c\": 14}"},
            {"role": "tool", "content": "{\"temp_c\": 19}"},
            {"role": "assistant", "content": "Nice is warmer: 19 °C against 14 °C in Lyon."},
        ],
        "tools": [{"type": "function", "function": {
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            "name": "get_weather",
            "description": "Current weather in a city",
        }}],
        "meta": {"source": "hand-written", "note": "OpenAI request style: tools at top level, parallel calls without ids"},
    }))
    return out


def defects() -> list[bytes]:
    """One line per defect class of the foundation issue, as raw bytes."""
    good = dumps(chat(("user", "ping"), ("assistant", "pong"))).encode()
    lines = [
        b"\xef\xbb\xbf" + dumps(chat(("user", "Is a BOM a problem?"), ("assistant", "Not for curator: it is removed and noted."))).encode(),
        b'{"messages": [{"role": "user", "content": "unterminated',
        b"[1, 2, 3]",
        b"42",
        b'"just a string"',
        b"null",
        b"",
        b"   ",
        b'{"messages": [{"role": "user", "content": "caf\xe9"}, {"role": "assistant", "content": "latin-1, not UTF-8"}]}',
        b"[" * 5000 + b"]" * 5000,
        b'{"messages": "hello"}',
        b'{"messages": []}',
        b'{"conversation": [{"role": "user", "content": "wrong key"}]}',
        b'{"messages": [{"role": "user", "content": 42}, {"role": "assistant", "content": "n"}]}',
        b'{"messages": [{"role": "bot", "content": "hi"}, {"role": "assistant", "content": "hello"}]}',
        b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": null}]}',
        b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "   "}]}',
        b'{"messages": [{"role": "user", "content": "nul\\u0000byte"}, {"role": "assistant", "content": "x"}]}',
        b'{"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "late system"}, {"role": "assistant", "content": "b"}]}',
        b'{"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}, {"role": "assistant", "content": "c"}]}',
        b'{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]}',
        b'{"messages": [{"role": "user", "content": "a"}, {"role": "tool", "content": "result"}, {"role": "assistant", "content": "b"}]}',
        b'{"messages": [{"role": "assistant", "content": "I speak first"}]}',
        b'{"messages": [{"content": "no role"}, {"role": "assistant", "content": "b"}]}',
        b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok", "weight": 3}]}',
        good,
        b'{"messages": [{"role": "user", "content": "extra fields are kept"}, {"role": "assistant", "content": "under meta._extra"}], "id": "x-1", "source": "forum"}',
        # tool use that does not add up
        *(dumps(record).encode() for record in bad_tool_use()),
    ]
    return lines


def bad_tool_use() -> list[dict]:
    """Records whose tool use does not add up, one per reject code (curator/tool_use.py)."""

    def asked(city: str, calls: list, *rest: dict) -> dict:
        return {"messages": [{"role": "user", "content": f"Weather in {city}?"}, {"role": "assistant", "content": None, "tool_calls": calls}, *rest]}

    def call(arguments: str) -> dict:
        return {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": arguments}}

    def answer(text: str) -> dict:
        return {"role": "assistant", "content": text}

    return [
        asked("Oslo", [call("{city: Oslo}")], {"role": "tool", "tool_call_id": "c1", "content": '{"temp_c": 4}'}, answer("4 C in Oslo.")),
        asked("Bergen", [call('{"city": "Bergen"}')], {"role": "tool", "tool_call_id": "c2", "content": '{"temp_c": 7}'}, answer("7 C in Bergen.")),
        asked("Turku", [call('{"city": "Turku"}')], {"role": "user", "content": "Never mind."}, answer("All right.")),
        chat(
            ("user", "Weather in Rome?"),
            ("assistant", dumps({"name": "get_weather", "arguments": "{'city': 'Rome'}"})),  # Python, not JSON
            ("tool", '{"temp_c": 22}'),
            ("assistant", "22 C in Rome."),
        ),
        chat(("user", "Weather in Faro?"), ("assistant", "Sunny, 25 C."), tools=[{"description": "a tool without a name"}]),
    ]


def write_native() -> None:
    """A few records in the other shapes people have, as .json arrays."""
    sharegpt = json.loads((NATIVE / "llamafactory" / "glaive_toolcall_en_demo.json").read_text(encoding="utf-8"))[:3]
    (RAW / "other_shapes").mkdir(parents=True, exist_ok=True)
    (RAW / "other_shapes" / "sharegpt_toolcall.json").write_text(json.dumps(sharegpt, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    gpteacher = json.loads((NATIVE / "gpteacher" / "codegen-instruct.json").read_text(encoding="utf-8"))[:4]
    (RAW / "other_shapes" / "gpteacher_codegen.json").write_text(json.dumps(gpteacher, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    alpaca_shape = [
        {"instruction": "Give three tips for staying healthy.", "input": "", "output": "1. Eat a balanced diet.\n2. Exercise regularly.\n3. Sleep seven to eight hours a night."},
        {"instruction": "Translate to French.", "input": "Good morning, how are you?", "output": "Bonjour, comment allez-vous ?"},
        {"instruction": "Summarise the text.", "input": "Curator validates, deduplicates and scores chat data.", "output": ""},
    ]
    (RAW / "other_shapes" / "alpaca_hand.json").write_text(json.dumps(alpaca_shape, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


def main() -> None:
    RAW.mkdir(parents=True, exist_ok=True)
    real = real_records()
    (RAW / "01_real_mix.jsonl").write_text("\n".join(real) + "\n", encoding="utf-8")
    (RAW / "02_planted.jsonl").write_text("\n".join(planted_quality_and_dups(real)) + "\n", encoding="utf-8")
    (RAW / "03_defects.jsonl").write_bytes(b"\n".join(defects()) + b"\n")
    gsm = [line for line in take("gsm8k_train.jsonl", list(range(7001, 7041))) if line not in real]
    (RAW / "04_good.jsonl.gz").write_bytes(gzip.compress(("\n".join(gsm[:5]) + "\n").encode(), mtime=0))
    # A .jsonl.gz cut short in the middle of its stream: the lines before the cut are kept.
    full = gzip.compress(("\n".join(gsm[5:35]) + "\n").encode(), mtime=0)
    (RAW / "05_truncated.jsonl.gz").write_bytes(full[: len(full) * 2 // 3])
    write_native()
    print(f"wrote {RAW}")


if __name__ == "__main__":
    main()
