"""The tiny pipeline's report opened in real headless Chromium: no request leaves the page, nothing is
logged as an error, the content is there, and it prints within an A4 landscape page (issue #8).

A screenshot is saved under tests/artifacts/ (git-ignored) for a person to look at.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from helpers.chromium import Browser, find_chromium

pytestmark = [pytest.mark.slow, pytest.mark.chromium]

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
# A4 landscape (297 mm) less the page's 12 mm margins, in CSS pixels (96 per inch)
PRINT_WIDTH_PX = int((297 - 2 * 12) / 25.4 * 96)


@pytest.fixture(scope="module")
def browser():
    binary = find_chromium()
    if binary is None:
        reason = "chromium not found on PATH (.ci/run installs Debian's chromium)"
        print(f"SKIPPED: {reason}")
        pytest.skip(reason)
    with Browser(binary) as b:
        yield b


@pytest.mark.parametrize("page", ["results/report.html", "results/tiny/report.html"])
def test_report_opens_offline_with_no_request_and_no_error(tiny_run, browser, page):
    path = (tiny_run / page).resolve()
    tab = browser.open(path.as_uri(), width=1280, height=900)
    outside = [u for u in tab.requested_urls if u != path.as_uri() and not u.startswith("data:")]
    assert outside == [], outside
    assert tab.errors == [], tab.errors

    assert tab.evaluate("document.querySelectorAll('#summary-encoder tbody tr').length") == 1
    assert tab.evaluate("document.querySelector('#summary-encoder td').textContent.trim()") == "tiny"
    # the offline run's field metrics: asked for but without weights, or (GREEN, opt-in) not asked for
    field = "document.querySelector('#summary-field td[data-key=\"{}\"] span')"
    assert tab.evaluate(field.format("bertscore") + ".textContent") == "not computed"
    assert "distilroberta-base" in tab.evaluate(field.format("bertscore") + ".title")
    assert tab.evaluate(field.format("green") + ".textContent") == "not asked"
    plots = tab.evaluate("[...document.querySelectorAll('.plot[data-plot]')].map(e => e.dataset.plot)")
    assert "encoder-loss" in plots and "roc-zero_shot" in plots, plots
    assert tab.evaluate("document.querySelectorAll('.plot svg path').length") > 10  # the plots drew lines
    generation = "document.querySelectorAll('.example-generation img.thumb')"
    assert tab.evaluate(f"{generation}.length") >= 1
    assert tab.evaluate(
        f"[...{generation}].every(i => i.complete && i.naturalWidth > 0)"
    )  # data: images decoded
    assert tab.evaluate("document.querySelectorAll('.example-retrieval .match').length") >= 1
    assert tab.evaluate("document.querySelectorAll('script').length") == 0

    if page == "results/report.html":
        ARTIFACTS.mkdir(exist_ok=True)
        shot = tab.screenshot(ARTIFACTS / "report.png", max_height=2400)
        assert shot.stat().st_size > 10_000


def test_report_prints_within_an_a4_landscape_page(tiny_run, browser):
    tab = browser.open(
        (tiny_run / "results" / "report.html").resolve().as_uri(), width=PRINT_WIDTH_PX, height=700
    )
    tab.emulate_media("print")
    widest = tab.evaluate(
        "Math.max(...[...document.querySelectorAll('main *')].map(e => e.getBoundingClientRect().right))"
    )
    assert widest <= PRINT_WIDTH_PX + 1, widest  # nothing is cut off at the right edge of the paper
    assert tab.evaluate("getComputedStyle(document.querySelector('nav')).display") == "none"
    assert tab.evaluate("getComputedStyle(document.querySelector('pre.config')).maxHeight") == "none"
    pdf = tab.print_pdf()
    assert pdf.startswith(b"%PDF") and len(re.findall(rb"/Type\s*/Page[^s]", pdf)) >= 2
