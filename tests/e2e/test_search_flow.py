"""Sensitivity & search in Chromium against a real `streamlit run` with Dask workers.

Run the sensitivity pass on digits_cnn, click a bar to pin its layer, run a small search under an
accuracy limit, see the recommendation (which keeps the pin) and load it into the plan editor.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from engine.store import ResultStore
from tests.e2e.conftest import start_server
from tests.e2e.test_dashboard_flow import click, wait_idle

pytestmark = pytest.mark.e2e
MODEL = "digits_cnn"
PINNED, PINNED_AT = "/fc2/Gemm", "INT4"  # the output layer, pinned to the coarsest format


def dot_position(page: Any, precision_label: str, layer: str) -> dict[str, float] | None:
    """Page coordinates of a layer's dot (its accuracy change) for one precision on the sensitivity chart."""
    return page.evaluate(
        """([name, layer]) => {
            const gd = document.querySelector('.js-plotly-plot');
            if (!gd || !gd._fullData) return null;
            for (const trace of gd._fullData) {
                if (trace.type !== 'scatter' || trace.name !== name) continue;
                const i = (trace.customdata || []).findIndex(c => c[0] === layer);
                if (i < 0) continue;
                const L = gd._fullLayout, box = gd.getBoundingClientRect();
                return {x: box.left + L.xaxis._offset + L.xaxis.l2p(trace.x[i]),
                        y: box.top + L.yaxis._offset + L.yaxis.l2p(trace.y[i])};
            }
            return null;
        }""",
        [precision_label, layer],
    )


def test_sensitivity_pin_search_and_load(browser: Any, tmp_path: Path, artifacts: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    server = start_server(home, {"QUANTDASH_QUICK": "1"})
    page = browser.new_page(viewport={"width": 1500, "height": 1400})
    try:
        page.goto(f"{server.url}/search?model={MODEL}")
        page.get_by_role("heading", name=f"Sensitivity & search · {MODEL}").wait_for(timeout=120_000)
        page.get_by_text("Not measured yet").wait_for(timeout=60_000)
        wait_idle(page)
        click(page, "qd_sens_run")
        # Bars land while the pass runs, without a reload; then every probe is in.
        page.get_by_text("15 of 15 probes measured").wait_for(timeout=300_000)
        wait_idle(page)
        page.screenshot(path=str(artifacts / "e2e-search-1-sensitivity.png"), full_page=True)

        pos = dot_position(page, PINNED_AT, PINNED)
        assert pos is not None, f"the {PINNED_AT} result of {PINNED} is not drawn"
        page.mouse.click(pos["x"], pos["y"])
        pinned = page.locator("[data-testid=stAlertContentSuccess]", has_text="Pinned in the plan editor")
        pinned.wait_for(timeout=30_000)
        assert f"{PINNED} at {PINNED_AT}" in pinned.inner_text()

        page.locator(".st-key-qd_search_max_drop input").fill("1")
        budget = page.locator(".st-key-qd_search_budget input")
        budget.fill("4")
        # Enter in a field does not start a search (it did: each accidental one costs minutes).
        budget.press("Enter")
        page.wait_for_timeout(3000)
        wait_idle(page)
        with sqlite3.connect(home / "results.sqlite") as db:
            searches = db.execute("SELECT COUNT(*) FROM jobs WHERE kind = 'search'").fetchone()[0]
        assert searches == 0, "Enter in the budget field started a search"
        click(page, "qd_search_run")
        page.get_by_text(re.compile("^Recommended: ")).wait_for(timeout=300_000)
        wait_idle(page)
        body = page.inner_text("body")
        assert "meet the limits" in body and "batch 1 on this machine" in body and "95% CI" in body
        page.screenshot(path=str(artifacts / "e2e-search-2-recommended.png"), full_page=True)

        # Every plan the search measured kept the pinned layer where the click put it.
        with sqlite3.connect(home / "results.sqlite") as db:
            keys = [k for (k,) in db.execute("SELECT result_key FROM search_trials")]
        store = ResultStore(home / "results.sqlite")
        assert 1 <= len(keys) <= 4
        assert {store.get(k)["plan"]["layers"][PINNED] for k in keys} == {PINNED_AT.lower()}

        recommended = page.get_by_text(re.compile("^Recommended: ")).inner_text()
        summary = recommended.splitlines()[0].removeprefix("Recommended: ").strip()
        click(page, "qd_search_load")
        page.get_by_role("heading", name=f"Plan · {MODEL}").wait_for(timeout=60_000)
        page.get_by_text(summary, exact=True).wait_for(timeout=30_000)
        page.screenshot(path=str(artifacts / "e2e-search-3-loaded.png"), full_page=True)
    except BaseException:
        page.screenshot(path=str(artifacts / "e2e-search-failure.png"), full_page=True)
        print(server.log.read_text()[-4000:])
        raise
    finally:
        page.close()
        server.stop()
