"""report.html of a run on ../shared/data/chat, opened in real headless Chromium.

Debian's `chromium` package (installed by .ci/run) driven through Playwright's client with
`executable_path`, so nothing is downloaded. Checks: no console errors or page errors, every
section present and listed in the table of contents, every chart drawn with visible bars, tables
sort on click, no horizontal overflow on a phone-sized viewport. Screenshots of both viewports go
to test-artifacts/ (gitignored) for a person to look at.
"""

from __future__ import annotations

import shutil

import pytest

from curator.config import load_config
from curator.pipeline import run
from tests.conftest import CHAT_DATA, ROOT

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")
ARTIFACTS = ROOT / "test-artifacts"
SECTIONS = ("gates", "funnel", "rejects", "quality", "languages", "tokens", "duplicates", "split", "sources", "cost",
            "config")


@pytest.fixture(scope="module")
def report_html(tmp_path_factory):
    if not CHAT_DATA.is_dir():
        pytest.fail(f"{CHAT_DATA} missing: the real data is part of every checkout's ../shared")
    out = tmp_path_factory.mktemp("browser") / "out"
    run(CHAT_DATA, out, load_config(None, []))  # gates are evaluated, not enforced, by the library
    return out / "report.html"


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


def _open(browser, path, width, height):
    page = browser.new_page(viewport={"width": width, "height": height})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console.{m.type}: {m.text}") if m.type in ("error", "warning")
            else None)
    page.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))
    page.on("request", lambda r: problems.append(f"network request: {r.url}") if not r.url.startswith("file:")
            else None)
    page.goto(report_url := path.as_uri())
    page.wait_for_selector("body[data-ready='1']")
    return page, problems, report_url


def test_report_renders_in_chromium(browser, report_html):
    assert report_html.stat().st_size < 5 * 1024 * 1024
    page, problems, _ = _open(browser, report_html, 1280, 900)
    for section in SECTIONS:
        assert page.locator(f"section#{section}").count() == 1, section
        assert page.locator(f"nav#toc a[href='#{section}']").count() == 1, section
        assert page.locator(f"section#{section} h2").inner_text().strip()
    charts = page.evaluate(
        """() => Array.from(document.querySelectorAll('svg.chart')).map(svg => {
              const box = svg.getBoundingClientRect();
              const bars = Array.from(svg.querySelectorAll('rect')).filter(r => r.getBBox().height > 0
                  && r.getBBox().width > 0).length;
              return {title: svg.querySelector('title').textContent, w: box.width, h: box.height, bars};
           })"""
    )
    titles = [c["title"] for c in charts]
    for expected in ("Rows alive after each step", "Rows per reject reason", "Split"):
        assert expected in titles
    for c in charts:
        assert c["w"] > 200 and c["h"] > 20 and c["bars"] > 0, c
    # sorting: the reasons table by its "rows" column, ascending then descending
    header = page.locator("section#rejects table.sortable th", has_text="rows").first
    header.click()
    values = page.eval_on_selector_all("section#rejects table.sortable tbody tr td:nth-child(3)",
                                       "tds => tds.map(td => Number(td.dataset.v))")
    assert values == sorted(values) and len(values) > 1
    header.click()
    values = page.eval_on_selector_all("section#rejects table.sortable tbody tr td:nth-child(3)",
                                       "tds => tds.map(td => Number(td.dataset.v))")
    assert values == sorted(values, reverse=True)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "report-desktop.png"), full_page=False)
    page.screenshot(path=str(ARTIFACTS / "report-desktop-full.png"), full_page=True)
    page.close()
    assert problems == []


def test_report_is_readable_on_a_phone(browser, report_html):
    page, problems, _ = _open(browser, report_html, 390, 844)
    overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"page scrolls sideways by {overflow}px on a phone"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "report-phone.png"), full_page=False)
    page.close()
    assert problems == []
