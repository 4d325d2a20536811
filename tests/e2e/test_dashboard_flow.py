"""A person's path through the dashboard, in Chromium against a real `streamlit run` with Dask workers.

Pick digits_resnet, apply the INT8 preset, change two layers, evaluate, watch the point land on the
Explore plots without reloading, click it and download its plan.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from engine.api import Engine
from engine.datasets import sample_names
from engine.store import ResultStore
from tests.e2e.conftest import start_server

pytestmark = pytest.mark.e2e
MODEL = "digits_resnet" if "digits_resnet" in sample_names() else "digits_cnn"


def choose(page: Any, key: str, option: str | re.Pattern[str]) -> None:
    """Pick an option of the keyed Streamlit selectbox."""
    page.locator(f".st-key-{key} button[aria-label=Open]").click()
    page.get_by_role("option", name=option).first.click()


def click(page: Any, key: str) -> None:
    """Click the keyed button (a button with help text also holds a hidden copy of itself)."""
    page.locator(f".st-key-{key}").get_by_role("button").first.click()


def wait_idle(page: Any) -> None:
    """Wait for Streamlit to finish the current rerun."""
    page.wait_for_timeout(300)
    page.locator("[data-testid=stStatusWidget]").wait_for(state="hidden", timeout=120_000)


def point_position(page: Any, result_key: str) -> dict[str, float] | None:
    """Page coordinates of a result's marker on the first Pareto plot (from plotly's own axes)."""
    return page.evaluate(
        """key => {
            const gd = document.querySelector('.js-plotly-plot');
            if (!gd || !gd._fullData) return null;
            // _fullData: plotly.js has decoded the typed arrays (numpy x/y) there.
            for (const trace of gd._fullData) {
                const i = (trace.customdata || []).indexOf(key);
                if (i < 0) continue;
                // The marker's own panel: its axes know their offset in the figure.
                const L = gd._fullLayout, box = gd.getBoundingClientRect();
                const xa = L['xaxis' + trace.xaxis.slice(1)], ya = L['yaxis' + trace.yaxis.slice(1)];
                return {x: box.left + xa._offset + xa.l2p(trace.x[i]),
                        y: box.top + ya._offset + ya.l2p(trace.y[i])};
            }
            return null;
        }""",
        result_key,
    )


def test_pick_plan_evaluate_click_and_download(browser: Any, tmp_path: Path, artifacts: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    layers = Engine(store=ResultStore(tmp_path / "probe.sqlite"), home=tmp_path / "probe").layers(
        Engine(home=tmp_path / "probe", store=ResultStore(tmp_path / "probe.sqlite")).model(MODEL)
    )
    first, last = layers[0].name, layers[-1].name
    server = start_server(home, {"QUANTDASH_QUICK": "1"})
    page = browser.new_page(viewport={"width": 1500, "height": 1100}, accept_downloads=True)
    try:
        page.goto(server.url)
        page.locator(".st-key-qd_model [data-testid=stSelectbox]").wait_for(timeout=120_000)
        choose(page, "qd_model", MODEL)
        page.get_by_role("heading", name=MODEL).wait_for(timeout=60_000)
        assert f"model={MODEL}" in page.url
        page.screenshot(path=str(artifacts / "e2e-1-models.png"), full_page=True)

        page.get_by_role("link", name="Plan").click()
        page.locator(".st-key-qd_preset [data-testid=stSelectbox]").wait_for(timeout=120_000)
        choose(page, "qd_preset", re.compile(r"^int8:"))
        click(page, "qd_apply_preset")
        page.get_by_text(re.compile(rf"^{len(layers)} INT8$")).wait_for(timeout=30_000)

        # Two layers changed by hand: the first back to FP32, the last to INT4.
        for index, name, label in ((0, first, "FP32"), (len(layers) - 1, last, "INT4")):
            choose(page, "qd_one_layer", name)
            page.locator(f".st-key-qd_one_precision_{index} [data-testid=stSelectbox]").wait_for()
            choose(page, f"qd_one_precision_{index}", label)
            click(page, "qd_apply_one")
            wait_idle(page)
        summary = f"{len(layers) - 2} INT8 · 1 FP32 · 1 INT4"
        page.get_by_text(summary, exact=True).wait_for(timeout=30_000)
        assert "Estimated size" in page.inner_text("body")
        page.screenshot(path=str(artifacts / "e2e-2-plan.png"), full_page=True)

        click(page, "qd_evaluate")
        page.get_by_text(re.compile("You can keep working")).first.wait_for(timeout=30_000)
        page.screenshot(path=str(artifacts / "e2e-3-running.png"), full_page=True)

        # Move on while it runs: the job lives in the store, and Explore picks it up.
        page.get_by_role("link", name="Explore").click()
        store = ResultStore(home / "results.sqlite")
        deadline = time.monotonic() + 400
        key = None
        while key is None:
            assert time.monotonic() < deadline, "the evaluation did not finish"
            jobs = [j for j in store.list_jobs() if j["model_name"] == MODEL and j["result_key"]]
            failed = [j for j in jobs if j["state"] == "failed"]
            assert not failed, failed[0]["message"]
            done = [
                j
                for j in jobs
                if j["state"] == "done" and store.get(j["result_key"])["plan_summary"] == summary
            ]
            key = done[0]["result_key"] if done else None
            time.sleep(1)
        # No reload: the page must redraw by itself.
        deadline = time.monotonic() + 60
        while (pos := point_position(page, key)) is None:
            assert time.monotonic() < deadline, "the new point did not appear on the plot"
            page.wait_for_timeout(500)
        wait_idle(page)
        pos = point_position(page, key)
        page.screenshot(path=str(artifacts / "e2e-4-explore.png"), full_page=True)

        page.mouse.click(pos["x"], pos["y"])
        page.get_by_role("heading", name=re.compile(re.escape(summary))).wait_for(timeout=30_000)
        assert f"result={key}" in page.url
        body = page.inner_text("body")
        assert "ONNX Runtime" in body and "95% CI" in body
        page.screenshot(path=str(artifacts / "e2e-5-selected.png"), full_page=True)

        with page.expect_download() as download:
            click(page, "qd_dl_plan")
        path = tmp_path / "plan.json"
        download.value.save_as(path)
        plan = json.loads(path.read_text())
        assert plan["layers"][first] == "fp32" and plan["layers"][last] == "int4"
        assert sorted(set(plan["layers"].values())) == ["fp32", "int4", "int8"]
        assert len(plan["layers"]) == len(layers)
    except BaseException:
        page.screenshot(path=str(artifacts / "e2e-failure.png"), full_page=True)
        print(server.log.read_text()[-4000:])
        raise
    finally:
        page.close()
        server.stop()
