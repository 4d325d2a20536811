"""The Report page in Chromium against a real `streamlit run` with Dask workers.

On a fresh store: pick digits_cnn, open Report, measure the presets, read the recommendation, type a
goal the page cannot read and then a valid one, build the report and download its PDF and bundle.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import start_server
from tests.e2e.test_dashboard_flow import click, wait_idle

pytestmark = pytest.mark.e2e
MODEL = "digits_cnn"
EXCEPTION = "[data-testid=stException]"
# Set once any Streamlit exception box is drawn, even if a later rerun removes it again.
WATCH_EXCEPTIONS = """
new MutationObserver(() => {
    if (document.querySelector('[data-testid="stException"]')) window.__qdException = true;
}).observe(document, {childList: true, subtree: true});
"""
DOWNLOADS = ("report.html", "report.pdf", "bundle.zip", "images.zip")


def assert_no_exception(page: Any) -> None:
    assert page.locator(EXCEPTION).count() == 0, page.locator(EXCEPTION).first.inner_text()
    assert not page.evaluate("() => window.__qdException === true"), "an exception box was drawn"


def set_goal(page: Any, text: str) -> None:
    """Type a goal and press Enter, as a person would."""
    box = page.get_by_role("textbox", name="Goal, in plain words")
    box.fill(text)
    box.press("Enter")
    wait_idle(page)


def download(page: Any, name: str, target: Path) -> Path:
    with page.expect_download(timeout=60_000) as dl:
        page.get_by_role("button", name=f"Download {name}").click()
    dl.value.save_as(target)
    return target


def test_measure_presets_goal_and_build_report(browser: Any, tmp_path: Path, artifacts: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    server = start_server(home, {"QUANTDASH_QUICK": "1"})
    page = browser.new_page(viewport={"width": 1500, "height": 1400}, accept_downloads=True)
    page.add_init_script(WATCH_EXCEPTIONS)
    try:
        page.goto(f"{server.url}/?model={MODEL}")
        page.get_by_role("heading", name=MODEL).first.wait_for(timeout=120_000)
        wait_idle(page)
        page.get_by_role("link", name="Report").click()
        page.get_by_role("heading", name=f"Report · {MODEL}").wait_for(timeout=120_000)
        assert f"model={MODEL}" in page.url and "/report" in page.url

        # A fresh store has too few measured plans: the page offers to measure the presets.
        page.locator(".st-key-qd_report_measure").wait_for(timeout=180_000)
        wait_idle(page)
        assert "Measure the presets first" in page.inner_text("body")
        click(page, "qd_report_measure")
        # Measured in a job: reloaded during it (as a person might), the tab shows it running and
        # updates by itself when it ends; it used to keep "Only 1 measured plan(s)" until a second reload.
        wait_idle(page)
        page.reload()
        page.get_by_role("heading", name=f"Report · {MODEL}").wait_for(timeout=120_000)
        # The FP32 baseline alone is already recommended: done when the offer goes, after the rerun.
        page.locator(".st-key-qd_report_measure").wait_for(state="detached", timeout=240_000)
        wait_idle(page)
        headline = page.get_by_role("heading", name=re.compile("^Recommended for the smallest plan"))
        headline.wait_for(timeout=60_000)
        assert headline.inner_text().startswith(
            "Recommended for the smallest plan within 1 point of FP32 accuracy"
        )
        body = page.inner_text("body")
        assert "95% CI" in body
        caveats = page.locator("[data-testid=stMarkdownContainer]", has_text="Caveats")
        assert "CPU" in caveats.first.inner_text()
        page.get_by_role("heading", name="Plans considered").wait_for(timeout=30_000)
        page.locator("[data-testid=stDataFrame]").first.wait_for(timeout=30_000)
        assert "measured plan(s) of" not in body, "still asks to measure the presets"
        assert "preset plans could not be measured" not in body
        assert_no_exception(page)
        page.screenshot(path=str(artifacts / "e2e-report-1-recommended.png"), full_page=True)

        # A goal the page cannot read: a plain error, no traceback; then a valid goal again.
        set_goal(page, "make it good")
        error = page.locator("[data-testid=stAlertContentError]", has_text="could not read the goal")
        error.wait_for(timeout=30_000)
        assert_no_exception(page)
        page.screenshot(path=str(artifacts / "e2e-report-2-bad-goal.png"), full_page=True)

        set_goal(page, "fastest under 5 MB")
        page.get_by_role(
            "heading", name=re.compile("^Recommended for the fastest plan at most 5 MB")
        ).wait_for(timeout=60_000)
        assert error.count() == 0
        assert_no_exception(page)

        click(page, "qd_report_build")
        for name in DOWNLOADS:
            page.get_by_role("button", name=f"Download {name}").wait_for(timeout=240_000)
        wait_idle(page)
        assert_no_exception(page)
        page.screenshot(path=str(artifacts / "e2e-report-3-built.png"), full_page=True)

        pdf = download(page, "report.pdf", tmp_path / "report.pdf")
        assert pdf.read_bytes()[:4] == b"%PDF"
        bundle = download(page, "bundle.zip", tmp_path / "bundle.zip")
        assert zipfile.is_zipfile(bundle)
        with zipfile.ZipFile(bundle) as z:
            assert "model.onnx" in z.namelist(), z.namelist()
        assert_no_exception(page)
    except BaseException:
        page.screenshot(path=str(artifacts / "e2e-report-failure.png"), full_page=True)
        print(server.log.read_text()[-4000:])
        raise
    finally:
        page.close()
        server.stop()
