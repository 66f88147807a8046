"""Natural-language tagging with langdetect (curator/stages/language.py)."""

import json
from pathlib import Path

import polars as pl

from curator.config import CurateConfig
from curator.stages import language
from curator.stages.base import StageContext
from tests.conftest import messages_frame

CHAT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "chat"
FR = ("Considérant que la reconnaissance de la dignité inhérente à tous les membres de la famille humaine "
      "et de leurs droits égaux et inaliénables constitue le fondement de la liberté.")
DE = ("Alle Menschen sind frei und gleich an Würde und Rechten geboren. Sie sind mit Vernunft und Gewissen "
      "begabt und sollen einander im Geist der Brüderlichkeit begegnen.")
EN = "Could you explain how the garbage collector in Python decides when to free memory for an object?"


_frame = messages_frame


def _run(conversations, **overrides):
    ctx = StageContext(config=CurateConfig.model_validate({"language": overrides}))
    return language.run(_frame(conversations), ctx), ctx


def test_languages_per_role_and_example():
    out, ctx = _run(
        [
            [("user", EN), ("assistant", EN)],
            [("user", FR), ("assistant", FR)],
            [("user", DE), ("assistant", "```python\nprint('hallo')\n```")],
        ]
    )
    assert out["user_lang"].to_list() == ["en", "fr", "de"]
    assert out["assistant_lang"].to_list() == ["en", "fr", "und"]
    assert out["lang"].to_list() == ["en", "fr", "de"]
    assert out["lang_reason"].to_list() == [None, None, None]
    assert out["lang_confidence"][0] == language.FAST_CONFIDENCE  # the English fast path
    assert out["lang_confidence"][1] > 0.9  # langdetect's probability
    assert ctx.summaries["language"]["lang"] == {"de": 1, "en": 1, "fr": 1}
    assert ctx.summaries["language"]["distinct_samples_by_decision"] == {
        "fast_path": 1, "langdetect": 2, "no_text": 1
    }


def test_short_text_is_und_with_a_reason():
    out, _ = _run([[("user", "Hi"), ("assistant", "Hello!")], [("user", ""), ("assistant", "`x = 1`")]])
    assert out["user_lang"].to_list() == ["und", "und"]
    assert out["lang"].to_list() == ["und", "und"]
    assert out["lang_reason"].to_list() == ["too_short", "no_text"]
    assert out["lang_confidence"].to_list() == [None, None]


def test_code_urls_and_unfenced_code_are_not_prose():
    text = "See https://example.com/a-long-path-with-words\n```js\nconst a = 1;\n```\n`inline code here`"
    assert language.prose(text).split() == ["See"]
    assert language.prose("public class A {\n  int x;\n}\nimport os") == ""
    gsm = "Natalia sold 48/2 = <<48/2=24>>24 clips in May."
    assert language.prose(gsm) == gsm


def test_fast_path_leaves_other_languages_to_langdetect():
    det = language.Detector(language.Config(), seed=0)
    assert det.cheap(EN) == ("en", language.FAST_CONFIDENCE, None)
    dutch = "Alle mensen worden vrij en gelijk in waardigheid en rechten geboren. Zij zijn begiftigd met verstand"
    indonesian = "Semua orang dilahirkan merdeka dan mempunyai martabat dan hak-hak yang sama"
    assert det.cheap(dutch) is None and det.cheap(indonesian) is None
    assert det.detect(dutch)[0] == "nl" and det.detect(indonesian)[0] == "id"
    assert language.Detector(language.Config(fast_path=False), seed=0).cheap(EN) is None


def test_mixed_roles_fall_back_to_the_whole_example():
    out, _ = _run([[("user", FR), ("assistant", DE + " " + DE)]])
    assert (out["user_lang"][0], out["assistant_lang"][0]) == ("fr", "de")
    assert out["lang"][0] == "de"  # most of the example's prose is German


def test_deterministic_with_the_seed():
    ambiguous = "Tanto gusto, grazie mille amici miei, tutto bene qui"
    runs = [language.Detector(language.Config(), seed=7).detect(ambiguous) for _ in range(3)]
    assert runs[0] == runs[1] == runs[2]


def test_real_gsm8k_is_english():
    """GSM8K is English; the stage must say so for (nearly) every record."""
    lines = (CHAT / "gsm8k_train.jsonl").read_text(encoding="utf-8").splitlines()[:200]
    out, _ = _run([[(m["role"], m["content"]) for m in json.loads(line)["messages"]] for line in lines])
    assert out["user_lang"].to_list().count("en") >= 198
    assert out["lang"].to_list().count("en") >= 198


def test_prose_of_turns_all_rows_at_once_and_the_limit():
    texts = pl.Series(
        ["Line one is prose here.\nx = compute(1);\nLine three is prose too.", None, "```py\nx = 1\n```\nAfter the code."]
    )
    before = texts.to_list()
    out = language.prose_of_turns(texts, limit=30)
    # the limit stops after the line that reaches it; code lines and fenced blocks are not prose
    assert out["prose"].to_list() == ["Line one is prose here.\nLine three is prose too.", "", "After the code."]
    assert out["size"].to_list() == [48, 0, 15]
    assert language.prose_of_turns(texts, limit=10)["prose"][0] == "Line one is prose here."
    assert texts.to_list() == before  # cutting code out does not write into the caller's column
    spaced = language.prose_of_turns(pl.Series(["  Tabs\tand   spaces   are one space  "]))
    assert spaced["flat"][0] == "Tabs and spaces are one space"


def test_fast_path_allows_a_borrowed_accent_but_not_accented_languages():
    det = language.Detector(language.Config(), seed=0)
    cafe = ("We went to the café after work and it was one of the best places in the city for coffee "
            "and cake, so we will go there again with all of our friends")
    assert det.cheap(cafe) == ("en", language.FAST_CONFIDENCE, None)  # 1 letter of ~110 outside ASCII
    assert language.Detector(language.Config(fast_max_non_ascii=0), seed=0).cheap(cafe) is None
    assert det.cheap(FR) is None and det.cheap(DE) is None
