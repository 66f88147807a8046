"""Natural-language tagging with langdetect (curator/stages/language.py)."""

import json
import re
from pathlib import Path

import polars as pl

from curator.config import CurateConfig
from curator.stages import language
from curator.stages.base import StageContext
from tests.conftest import NATIVE_DATA, messages_frame

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


def test_chinese_and_japanese_prose_with_full_width_punctuation():
    zh = "请写一个函数，计算列表中所有数字的总和。然后打印结果，好吗？"
    ja = "Pythonでリストを元のリストを変更せずにソートするにはどうすればよいですか？"
    ko = "안녕하세요. 파이썬에서 리스트를 정렬하는 방법을 알려주세요."
    assert language.prose(zh) == zh and language.prose(ja) == ja and language.prose(ko) == ko
    out, _ = _run([[("user", zh), ("assistant", zh)], [("user", ja), ("assistant", ja)]])
    assert out["lang"].to_list() == ["zh", "ja"]
    assert out["lang_reason"].to_list() == [None, None]
    # Unicode punctuation around Latin-script words too: Spanish ¿...?, French «...»
    es = "¿Cómo puedo ordenar una lista en Python sin modificar la lista original?"
    fr = "«Bonjour», dit-il à son ami „heute“."
    assert language.prose(es) == es and language.prose(fr) == fr


def test_fast_path_counts_no_tech_loanwords_and_leaves_on_foreign_function_words():
    det = language.Detector(language.Config(), seed=0)
    loanwords = {"function", "program", "code", "list", "array", "string", "return", "value", "number", "total",
                 "class", "object", "method", "result", "example", "using"}
    assert not loanwords & language.EN_COMMON_WORDS
    indonesian = ("Saya ingin menulis program yang menghitung total dari sebuah list of numbers dan "
                  "menampilkan hasilnya.")
    spanish = "Hazme un programa en Python que use una function para return el total de un array de numbers"
    german = "Kannst du mir eine function schreiben, die einen string nimmt und die length als number return?"
    for text, lang in [(indonesian, "id"), (spanish, "es"), (german, "de")]:
        assert det.cheap(text) is None, text
        assert det.detect(text)[0] == lang
    # English coding prose still takes the fast path
    en = "Write a function that returns the total of a list of numbers, and explain how it works."
    assert det.cheap(en) == ("en", language.FAST_CONFIDENCE, None)
    # one foreign-looking word (a name, `de facto`) does not leave it
    assert det.cheap("Could you tell me what the de facto way is to sort the things in this list?") is not None


def test_prose_mentioning_a_call_or_led_by_a_keyword_is_prose():
    lines = [
        "What does len() do in Python?",
        "Qu'est-ce que la fonction map() fait en Python ?",
        "if i have 3 apples and eat one how many are left",
        "print the numbers from one to ten in reverse order",
        "from the list below pick the largest number",
        "using recursion compute the factorial of n",
        "return the sum of all even numbers in the array",
    ]
    for line in lines:
        assert language.prose(line) == line, line
    out, _ = _run([[("user", lines[2] + "\n" + lines[3]), ("assistant", lines[1] + " Elle applique une fonction.")]])
    assert out["user_lang"][0] == "en" and out["assistant_lang"][0] == "fr"
    code = [
        "import numpy as np", "from collections import Counter", "return result", "    return a + b",
        "for x in xs:", "while True:", "if x > 5:", "print(\"Hello, how are you today\")", "total += x",
        "x.sort()", "SELECT name FROM users WHERE id = 1", "pip install requests numpy pandas",
        "echo \"hello there my friend\"", "const add = (a, b) => a + b",
    ]
    for line in code:
        assert language.prose(line) == "", line


# 130 characters of Chinese prose on one line; the year between spaces is how translated text
# writes numbers, and it left the line with two "words" out of three (not prose)
ZH_130 = ("长城是中国古代修建的军事防御工程，全长超过两万公里。"
          "它始建于春秋战国时期，秦始皇统一六国后把各段城墙连接起来。"
          "现在的长城大多是明朝重建的，于 1987 年被列入世界遗产名录。"
          "每年都有很多游客从世界各地来这里参观，"
          "感受古代劳动人民的智慧和力量，了解中国悠久历史。")


def test_a_clean_chinese_paragraph_is_zh_by_script():
    assert len(ZH_130) == 130
    out, ctx = _run([[("user", "请介绍一下长城。"), ("assistant", ZH_130)], [("user", ZH_130), ("assistant", ZH_130)]])
    assert out["lang"].to_list() == ["zh", "zh"]
    assert out["lang_confidence"].to_list() == [1.0, 1.0]
    assert out["lang_reason"].to_list() == [None, None]
    # 7 characters weigh 17.5 letters, under min_letters: the short question alone is too short
    assert out["user_lang"].to_list() == ["und", "zh"]
    assert out["assistant_lang"].to_list() == ["zh", "zh"]
    assert language.prose(ZH_130) == ZH_130
    # decided by script, langdetect is not asked
    assert ctx.summaries["language"]["distinct_samples_by_decision"] == {"too_short": 1, "script": 1}


def test_chinese_with_latin_brand_names_is_zh():
    text = "我最近买了一部新的 iPhone，用 Python 写了一个小程序，然后把代码上传到 GitHub 上和朋友们分享。"
    det = language.Detector(language.Config(), seed=0)
    # 32 Han characters (x 2.5 = 80) against 18 Latin letters: 80 / 98 of the weighted letters
    assert det.detect(text) == ("zh", 80 / 98, None)
    ai = "神经网络是一种人工智能 (AI) 系统，其灵感来自于人脑的结构和功能。"
    assert language.prose(ai) == ai  # a name before a bracket is not a call when it is Chinese
    assert det.detect(ai) == ("zh", 67.5 / 69.5, None)  # 27 Han characters, 2 Latin letters


def test_japanese_with_kanji_and_kana_is_ja():
    det = language.Detector(language.Config(), seed=0)
    assert det.detect("この関数は配列を受け取り、合計を返します。") == ("ja", 1.0, None)
    assert det.detect("東京の天気はどうですか") == ("ja", 1.0, None)  # 11 characters: 27.5 letters
    # a lone の in a Chinese sentence (1 Kana of 29 Han and Kana) does not make it Japanese
    assert det.detect("我们的店名叫做小林の面包店，欢迎大家明天来品尝新出炉的面包。") == ("zh", 1.0, None)


def test_korean_is_ko():
    det = language.Detector(language.Config(), seed=0)
    assert det.detect("Python에서 list를 sort하는 방법을 알려주세요.") == ("ko", 65 / 93, None)
    assert det.detect("파이썬 리스트 정렬 방법") == ("ko", 1.0, None)
    # Hangul first: a Korean sentence quoting a Japanese word is Korean
    assert det.detect("'ありがとう'는 일본어로 감사합니다라는 뜻입니다.") == ("ko", 1.0, None)


def test_mostly_english_with_one_chinese_word_stays_en():
    text = "The Chinese word 你好 means hello, and it is usually the first word that people learn when they start."
    out, ctx = _run([[("user", text), ("assistant", text)]])
    assert out.select("lang", "lang_reason", "user_lang", "assistant_lang").row(0) == ("en", None, "en", "en")
    # 2 Han characters weigh 5 of 83 letters: far from the script share; langdetect says en
    assert ctx.summaries["language"]["distinct_samples_by_decision"] == {"langdetect": 1}


def test_real_chinese_alpaca_held_out_half_is_zh():
    """alpaca_zh_sample.json: records 0-999 tuned the thresholds, records 1000-1999 are held out."""
    from curator.io.formats import to_chat

    records = json.loads((NATIVE_DATA / "alpaca_zh_sample.json").read_text(encoding="utf-8"))[1000:]
    cjk = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff\uac00-\ud7af]")
    records = [r for r in records if len(cjk.findall(r["instruction"] + r["input"] + r["output"])) >= 20]
    assert len(records) == 903
    convs = [[(m["role"], m["content"]) for m in to_chat(r, "alpaca")["messages"]] for r in records]
    langs = _run(convs, workers=1)[0]["lang"].to_list()
    assert langs.count("zh") >= 0.98 * len(records)
    assert langs.count("und") < 0.01 * len(records)
