"""The same network and data added under two names: each name shows the results measured under either.

Results are keyed by content, so the second name is served the records stored under the first; its
Explore, Compare and Report said "nothing measured yet" and "Measure the presets first" did nothing
(browser QA). Real inline evaluations of a small added network.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dashboard import cached, report_files, state
from engine.goal import parse_goal
from engine.report import recommendation_for
from engine.sensitivity import sensitivity_settings
from engine.types import Plan, Precision
from tests.dashboard.conftest import app, wait_for_jobs
from tests.models import tiny_cnn

FIRST, SECOND = "tiny-npz", "tiny-again"


@pytest.fixture(scope="module")
def keys(home: Path, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    tmp = tmp_path_factory.mktemp("nets")
    x = np.random.default_rng(0).random((120, 1, 8, 8), dtype=np.float32)
    np.savez(tmp / "d.npz", input=x, labels=np.arange(120) % 10)
    (tmp / "m.onnx").write_bytes(tiny_cnn(seed=11)[0])
    engine = cached.runner().engine
    engine.add_model(tmp / "m.onnx", tmp / "d.npz", name=FIRST)
    engine.add_model(tmp / "m.onnx", tmp / "d.npz", name=SECOND)
    bundle = engine.model(FIRST)
    return [engine.evaluate(bundle, Plan(default=p))["key"] for p in (Precision.FP32, Precision.INT8)]


def test_the_second_name_shows_the_plans_measured_under_the_first(keys: list[str]) -> None:
    at = app(model=SECOND)
    at.switch_page("app_pages/explore.py").run()
    assert not at.exception
    (chart,) = [e for e in at.main if getattr(e, "type", "") == "plotly_chart"]
    figure = json.loads(chart.proto.spec)
    assert {k for t in figure["data"] for k in t.get("customdata") or []} == set(keys)
    hovers = " ".join(h for t in figure["data"] for h in t.get("hovertext") or t.get("text") or [])
    assert SECOND in hovers and FIRST not in hovers  # shown as this model's plans

    at.switch_page("app_pages/compare.py").run()
    assert not at.exception
    assert {o.rsplit("(", 1)[1].rstrip(")") for o in at.multiselect(key=state.COMPARE).options} == {
        k[:6] for k in keys
    }


def test_the_second_names_report_recommends_among_them(keys: list[str]) -> None:
    engine = cached.runner().engine
    rec = recommendation_for(engine, engine.model(SECOND), parse_goal("smallest within 5 points of FP32"))
    assert set(rec.candidates["key"]) == set(keys) and rec.chosen is not None


def test_the_second_names_plan_details_and_load_are_its_own(keys: list[str]) -> None:
    """Review: the plots showed the plan as the second name's, but its details said '5 INT8 · tiny-npz'
    and Load put it into tiny-npz's editor, switching the sidebar there."""
    at = app(model=SECOND, result=keys[1])
    at.switch_page("app_pages/explore.py").run()
    assert not at.exception
    assert at.subheader[0].value.endswith(f"· {SECOND}")
    at.button(key="qd_load_plan").click().run()
    assert not at.exception and at.session_state[state.MODEL] == SECOND


def test_the_second_names_report_counts_plans_measured_since_under_the_first(
    keys: list[str], home: Path
) -> None:
    """Review: the Report page counted the plans measured after its report by name, so a plan of the
    same files measured under the first name was not one the second name's report lacked."""
    runner = cached.runner()
    goal = "smallest within 5 points of FP32"
    runner.submit_report(SECOND, parse_goal(goal), goal)
    at = app(model=SECOND)
    at.switch_page("app_pages/report.py").run()
    wait_for_jobs(at)
    assert report_files.latest(home / "reports", SECOND, cached.model_id(SECOND)) is not None
    assert "after this report was built" not in " ".join(i.value for i in at.info)

    first = runner.engine.model(FIRST)
    layer = runner.engine.layers(first)[0].name
    runner.engine.evaluate(first, Plan(layers={layer: Precision.W8A16}))
    # A sensitivity probe (no latency) is no plan a report could show: not counted (review).
    probe = runner.engine.evaluate(
        first, Plan(layers={layer: Precision.FP16}), settings=sensitivity_settings(runner.settings())
    )
    assert probe["status"] == "ok" and not probe["metrics"].get("latency")
    at.run()
    assert not at.exception
    said = " ".join(i.value for i in at.info)
    assert "1 plan was measured after this report was built" in said, said
