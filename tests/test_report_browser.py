"""report.html of a run on ../shared/data/chat, opened in real headless Chromium.

Debian's `chromium` package (installed by .ci/run) driven through Playwright's client with
`executable_path`, so nothing is downloaded. Checks: no console errors or page errors, every
section present and listed in the table of contents, every chart drawn with visible bars and its
labels inside it, tables sort on click, every in-page link resolves to an element, a language row
opens its examples, no horizontal overflow at a phone's 390 px and a desktop's 1400 px. Screenshots
of both viewports, and of each section at each width, go to test-artifacts/ (gitignored) for a
person to look at.
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


@pytest.mark.parametrize("width", [390, 1400])
def test_layout_holds_and_every_link_resolves(browser, report_html, width):
    page, problems, _ = _open(browser, report_html, width, 900)
    assert page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth") <= 0
    nav = page.eval_on_selector_all("nav#toc a", "as => as.map(a => a.getAttribute('href'))")
    assert len(nav) >= len(SECTIONS)
    unresolved = page.evaluate(
        """() => Array.from(document.querySelectorAll('a[href^="#"]')).map(a => a.getAttribute('href'))
              .filter(h => !document.getElementById(decodeURIComponent(h.slice(1))))""")
    assert unresolved == []
    # the gate messages are on screen, not in a part of the table scrolled out of view
    for box in page.eval_on_selector_all("table.gates td:last-child", "tds => tds.map(td => td.getBoundingClientRect().right)"):
        assert box <= width
    # chart labels (the token axis' last one included) lie inside their chart
    outside = page.evaluate(
        """() => Array.from(document.querySelectorAll('svg.chart')).flatMap(svg => {
              const w = svg.viewBox.baseVal.width;
              return Array.from(svg.querySelectorAll('text')).map(t => t.getBBox())
                  .filter(b => b.x < -0.5 || b.x + b.width > w + 0.5).map(b => [svg.querySelector('title').textContent, b.x, b.width]);
           })""")
    assert outside == []
    _screenshot_sections(page, width)
    page.close()
    assert problems == []


def test_a_language_row_opens_its_examples(browser, report_html):
    page, problems, _ = _open(browser, report_html, 1400, 900)
    link = page.locator("section#languages table a").first
    target = link.get_attribute("href")
    assert not page.locator(target).is_visible()
    link.click()
    page.wait_for_function("id => document.getElementById(id).closest('details').open", arg=target[1:])
    assert page.locator(target).is_visible() and page.locator(f"{target} code").count() >= 1
    page.close()
    assert problems == []


def _screenshot_sections(page, width):
    """One picture per section; the sticky contents bar is made static so it does not cover them."""
    ARTIFACTS.mkdir(exist_ok=True)
    page.add_style_tag(content="nav#toc { position: static; }")
    for section in page.eval_on_selector_all("main > section", "ss => ss.map(s => s.id)"):
        page.locator(f"section#{section}").screenshot(path=str(ARTIFACTS / f"report-{width}-{section}.png"))
