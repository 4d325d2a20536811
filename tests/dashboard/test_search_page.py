"""The Sensitivity & search page with AppTest: a real sensitivity pass and real searches of digits_cnn
(inline, quick timing, a budget of a few plans), in a temporary data folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dashboard import cached, state
from engine.search import SearchSpec
from engine.sensitivity import KEEP_FP32
from engine.types import CalibrationMethod, PlanError, Precision
from tests.dashboard.conftest import app, wait_for_jobs

MODEL = "digits_cnn"
PAGE = "app_pages/search.py"


def _texts(elements: Any) -> str:
    return "\n".join(str(e.value) for e in elements)


def _figure(at: Any, index: int = 0) -> dict[str, Any]:
    charts = [e for e in at.main if getattr(e, "type", "") == "plotly_chart"]
    return json.loads(charts[index].proto.spec)


def _open(**session: Any) -> Any:
    at = app(model=MODEL)
    for k, v in session.items():
        at.session_state[k] = v
    at.switch_page(PAGE).run()
    assert not at.exception
    return at


def test_sensitivity_pass_draws_each_layer_with_intervals_and_time_share(home: Path) -> None:
    at = _open()
    # The plans the pass measures beside its probes are named, so its progress ("1 of 22 plans")
    # does not read as another count of the 20 probes.
    assert "measures 20 probe plans and the FP32 and all-INT8 plans they are compared with" in _texts(at.info)
    at.button(key=state.SENS_RUN).click().run()
    assert not at.exception
    wait_for_jobs(at)
    assert not at.exception
    assert "15 of 15 probes measured" in _texts(at.caption)  # FP16, INT8 and INT4 on each of 5 layers

    figure = _figure(at)
    bars = {t["name"]: t for t in figure["data"] if t["type"] == "bar" and t.get("xaxis") != "x2"}
    dots = {t["name"]: t for t in figure["data"] if t["type"] == "scatter"}
    assert list(bars) == list(dots) == ["FP16", "INT8", "INT4"]
    assert len(bars["INT4"]["y"]) == len(bars["INT8"]["y"]) == 5  # every layer takes INT4
    assert "error_x" in dots["INT8"] and "95% CI" in dots["INT8"]["hovertext"][0]
    shares = figure["data"][-1]
    assert all(s is not None and 0 < s < 100 for s in shares["x"])  # profiled at batch 1
    assert "percentage points" in figure["layout"]["xaxis"]["title"]["text"]
    assert "this machine" in figure["layout"]["xaxis2"]["title"]["text"]
    table = at.dataframe[0].value
    assert len(table) == 20 and set(table["status"]) == {"ok"}  # and 5 kept FP32

    # Sorted by time share: the layers top to bottom in falling share.
    at.selectbox(key=state.SENS_SORT).set_value("latency").run()
    shares = _figure(at)["data"][-1]
    assert shares["x"] == sorted(shares["x"], reverse=True) and shares["y"] == list(range(5))

    # The reverse view: one bar per layer, kept FP32 with the rest INT8.
    at.radio(key=state.SENS_VIEW).set_value(KEEP_FP32).run()
    assert not at.exception
    names = [t["name"] for t in _figure(at)["data"]]
    assert names == ["FP32 (kept)", "FP32 (kept)", "share of FP32 time"]


def test_search_recommends_a_plan_that_loads_into_the_editor(home: Path) -> None:
    layers = cached.layers(MODEL)
    pinned = layers[0].name
    # A pin as a click on the chart leaves it (the click itself is covered by the browser test).
    at = _open(**{f"qd_pins::{MODEL}": {pinned: "fp32"}})
    assert f"`{pinned}` at FP32" in _texts(at.success)
    at.number_input(key=state.SEARCH_MAX_DROP).set_value(1.0)
    at.number_input(key=state.SEARCH_BUDGET).set_value(4)
    at.button(key=state.SEARCH_RUN).click().run()
    assert not at.exception
    wait_for_jobs(at)
    assert not at.exception

    recommendation = _texts(at.success)
    assert "Recommended: " in recommendation and "batch 1 on this machine" in recommendation
    assert "meet the limits" in _texts(at.caption)
    table = at.dataframe[-1].value
    assert 1 <= len(table) <= 4 and list(table["recommended"]).count("★") == 1
    assert {"predicted change (pp)", "change (pp)", "predicted size (kB)", "latency b1 (ms)"} <= set(
        table.columns
    )
    best = table[table["recommended"] == "★"].iloc[0]
    assert best["change (pp)"] >= -1.0
    figure = _figure(at, -1)
    assert "recommended" in [t["name"] for t in figure["data"]]

    record = cached.runner().store.get(best["result key"])
    assert record["plan"]["layers"][pinned] == "fp32"  # the pin held
    at.button(key=state.SEARCH_LOAD).click().run()
    assert not at.exception
    assert at.session_state[f"qd_plan::{MODEL}"] == record["plan"]["layers"]
    assert {m.label: m.value for m in at.metric}["Plan"] == record["plan_summary"]  # now on the Plan page


def test_limits_no_plan_meets_show_the_closest_plans(home: Path) -> None:
    at = _open()
    at.number_input(key=state.SEARCH_MAX_SIZE).set_value(1.0)  # 1 kB: no plan of this model is that small
    at.number_input(key=state.SEARCH_BUDGET).set_value(2)
    at.button(key=state.SEARCH_RUN).click().run()
    wait_for_jobs(at)
    assert not at.exception
    warning = _texts(at.warning)
    assert "None of the 2 measured plans meets the limits; closest: " in warning
    assert "kB over the size limit" in warning and "off by" not in warning
    assert state.SEARCH_LOAD not in [b.key for b in at.button]  # nothing to load


def test_a_search_that_cannot_run_is_refused_at_once_in_plain_words(home: Path) -> None:
    runner = cached.runner()
    jobs_before = len(runner.store.list_jobs())
    with pytest.raises(
        PlanError, match=r"unknown layers \['/no/such/Conv'\]; the model's layers are: /conv1/Conv"
    ):
        runner.submit_search(MODEL, SearchSpec(candidates={"/no/such/Conv": (Precision.INT8,)}))
    assert len(runner.store.list_jobs()) == jobs_before  # nothing queued that can only fail


def test_a_press_while_a_search_runs_is_told_to_wait_until_it_ends(home: Path) -> None:
    store = cached.runner().store
    store.upsert_job(
        "search-elsewhere", kind="search", model_name=MODEL, state="running", message="searching"
    )
    at = _open()
    at.button(key=state.SEARCH_RUN).click().run()
    assert not at.exception
    assert "A search on this model is still running" in _texts(at.warning)
    at.run()  # any rerun (a job ending elsewhere reruns the app) keeps saying it, not only the press's own
    assert "A search on this model is still running" in _texts(at.warning)
    store.upsert_job("search-elsewhere", state="done")
    at.run()  # once the search has ended the advice no longer holds
    assert not at.exception and "still running" not in _texts(at.warning)


def test_settings_that_cannot_start_a_search_are_refused_until_they_change(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import engine.search

    real = engine.search.default_candidates

    def refusing(engine_: Any, bundle: Any, allowed: list[Precision]) -> Any:
        if Precision.INT4 in allowed:  # as a model whose layers no longer take what the page offers
            raise PlanError("layer '/conv1/Conv' cannot take int4; it accepts: fp32, int8")
        return real(engine_, bundle, allowed)

    monkeypatch.setattr(engine.search, "default_candidates", refusing)
    store = cached.runner().store
    at = _open()
    at.multiselect(key=state.SEARCH_PRECISIONS).select(Precision.INT4.value)
    at.button(key=state.SEARCH_RUN).click().run()
    assert not at.exception
    refused = "These settings cannot start a search: layer '/conv1/Conv' cannot take int4"
    assert refused in _texts(at.error)
    # A search starting and ending elsewhere reruns the page: the settings are still the ones refused.
    store.upsert_job("search-meanwhile", kind="search", model_name=MODEL, state="running", message="busy")
    at.run()
    assert refused in _texts(at.error)
    store.upsert_job("search-meanwhile", state="done")
    at.run()
    assert refused in _texts(at.error)
    at.multiselect(key=state.SEARCH_PRECISIONS).unselect(Precision.INT4.value)
    at.number_input(key=state.SEARCH_BUDGET).set_value(1)
    at.button(key=state.SEARCH_RUN).click().run()  # other settings: a search starts, nothing refused
    wait_for_jobs(at)
    assert not at.exception and "cannot start a search" not in _texts(at.error)


def test_a_pin_that_names_no_precision_is_dropped_not_a_traceback(home: Path) -> None:
    layers = [x.name for x in cached.runner().engine.layers(cached.runner().model(MODEL))]
    at = _open()
    at.session_state[f"qd_pins::{MODEL}"] = {layers[0]: "int3", layers[1]: Precision.FP16.value}
    at.run()
    assert not at.exception
    pinned = _texts(at.success)
    assert f"`{layers[1]}` at {Precision.FP16.label}" in pinned and layers[0] not in pinned


def test_no_candidate_precision_or_a_zero_limit_is_refused_not_searched(home: Path) -> None:
    store = cached.runner().store
    searches = len([j for j in store.list_jobs() if j["kind"] == "search"])
    at = _open()
    at.multiselect(key=state.SEARCH_PRECISIONS).set_value([])
    at.button(key=state.SEARCH_RUN).click().run()
    assert not at.exception
    assert "cannot start a search: pick at least one candidate precision" in _texts(at.error)
    at.multiselect(key=state.SEARCH_PRECISIONS).set_value([Precision.INT8.value])
    at.number_input(key=state.SEARCH_MAX_SIZE).set_value(0.0)
    at.button(key=state.SEARCH_RUN).click().run()
    assert "cannot start a search: the size limit must be above 0 kB (or empty for none), got 0 kB" in _texts(
        at.error
    )
    # Out of range: the browser's own range check drew only a red border and kept the old value, so the
    # press seemed to do nothing (browser QA); the page refuses it in words instead.
    at.number_input(key=state.SEARCH_MAX_SIZE).set_value(None)
    for key, value, said in (
        (state.SEARCH_BUDGET, 0, "the budget must be a whole number of plans from 1 to 1000, got 0"),
        (state.SEARCH_BUDGET, 5000, "from 1 to 1000, got 5000"),
        (state.SEARCH_MAX_DROP, -1.0, "the accuracy-drop limit must be 0 to 100 points (or none), got -1"),
    ):
        at.number_input(key=key).set_value(value)
        at.button(key=state.SEARCH_RUN).click().run()
        assert not at.exception and said in _texts(at.error), _texts(at.error)
        at.number_input(key=key).set_value(20 if key == state.SEARCH_BUDGET else None)
    assert len([j for j in store.list_jobs() if j["kind"] == "search"]) == searches  # nothing started


def test_the_sensitivity_pass_waits_for_a_running_search_that_measures_its_probes(home: Path) -> None:
    store = cached.runner().store
    store.upsert_job(
        "search-probing",
        kind="search",
        model_name=MODEL,
        state="running",
        message="sensitivity: 2 of 15 plans",
    )
    try:
        at = _open(**{state.SENS_PRECISIONS: [Precision.W8A16.value]})
        said = _texts([*at.info, *at.caption])
        assert "a search on this model is measuring" in said.lower(), said
        button = at.button(key=state.SENS_RUN)
        assert button.disabled and "Not while a search on this model measures its own probes" in button.help
        # Past its probes, the search measures whole plans: the pass need not wait.
        store.upsert_job("search-probing", message="measured 3 of 20 plans (nsga2)")
        at.run()
        assert "search on this model is" not in _texts([*at.info, *at.caption]).lower()
        assert "not measured yet (Run sensitivity pass measures them)" in _texts(at.caption)
        assert not at.button(key=state.SENS_RUN).disabled
    finally:
        store.upsert_job("search-probing", state="done")


def test_a_reload_during_a_pass_shows_its_precisions_and_counts_only_its_probes_to_come(home: Path) -> None:
    """Browser QA: a reload mid-pass put the picker back to FP16, INT8, INT4 while the pass probed
    INT8 and INT4, and the status counted the FP16 probes as 'still to come'."""
    model = "mnist1d_resnet"  # no other test here probes it: none of its probes is measured
    runner = cached.runner()
    runner.store.upsert_job(
        "sensitivity-running", kind="sensitivity", model_name=model, state="running", message="0 of 9 plans"
    )
    runner._probing["sensitivity-running"] = (
        model,
        (Precision.INT8, Precision.INT4),
        CalibrationMethod.MINMAX,
    )
    layers = cached.layers(model)
    coming = sum(p in x.accepts for x in layers for p in (Precision.INT8, Precision.INT4))
    other = sum(Precision.FP16 in x.accepts for x in layers)
    try:
        at = app(model=model)  # a new session, as a reload is
        at.switch_page("app_pages/search.py").run()
        assert not at.exception
        assert at.multiselect(key=state.SENS_PRECISIONS).value == [Precision.INT8.value, Precision.INT4.value]
        at.multiselect(key=state.SENS_PRECISIONS).set_value(
            [Precision.FP16.value, Precision.INT8.value, Precision.INT4.value]
        ).run()
        said = _texts(at.caption)
        expected = (
            f"{coming} still to come (they appear as they land), {other} not measured by the running pass"
        )
        assert expected in said, said
    finally:
        runner.store.upsert_job("sensitivity-running", state="done")
        runner._probing.clear()


def test_loading_the_recommended_plan_loads_the_searchs_calibration(home: Path) -> None:
    """Browser QA: an Entropy search's recommended plan loaded into the editor beside a MinMax picker, so
    Evaluate there measured another plan than the one recommended."""
    from dashboard import drafts
    from engine.types import CalibrationMethod

    at = _open()
    at.selectbox(key=state.SEARCH_CALIBRATION).set_value(CalibrationMethod.ENTROPY)
    at.multiselect(key=state.SEARCH_PRECISIONS).set_value([Precision.INT8.value])  # a calibrated plan
    at.number_input(key=state.SEARCH_BUDGET).set_value(2)
    at.button(key=state.SEARCH_RUN).click().run()
    wait_for_jobs(at)
    assert not at.exception
    at.button(key=state.SEARCH_LOAD).click().run()
    assert not at.exception
    assert at.selectbox(key=state.calibration_key(MODEL)).value == CalibrationMethod.ENTROPY  # Plan page
    assert "Measured: " in _texts(at.info)  # the plan recommended, as it was measured
    kept = drafts.load(cached.runner().engine.home, cached.model_id(MODEL), cached.layers(MODEL))
    assert kept is not None and kept.calibration == CalibrationMethod.ENTROPY


def test_a_budget_that_is_not_a_whole_number_is_refused_not_rounded(home: Path) -> None:
    """Browser QA: a budget of 2.5 was taken as 2 without a word (an integer field), and the search ran."""
    store = cached.runner().store
    searches = len([j for j in store.list_jobs() if j["kind"] == "search"])
    at = _open()
    at.number_input(key=state.SEARCH_BUDGET).set_value(2.5)
    at.button(key=state.SEARCH_RUN).click().run()
    assert not at.exception
    said = "cannot start a search: the budget must be a whole number of plans from 1 to 1000, got 2.5"
    assert said in _texts(at.error), _texts(at.error)
    assert len([j for j in store.list_jobs() if j["kind"] == "search"]) == searches  # nothing started
    at.number_input(key=state.SEARCH_BUDGET).set_value(None)
    at.button(key=state.SEARCH_RUN).click().run()
    assert "a whole number of plans from 1 to 1000, got nothing" in _texts(at.error)


def test_a_reload_during_a_pass_shows_its_calibration(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Browser QA: a reload mid-pass put the calibration picker back to MinMax while the pass ran with
    Entropy: the page counted probes as still to come in a view they never land in. The pass's progress
    names its calibration; the picker comes back to it."""
    import threading

    import pandas as pd

    import dashboard.runner
    from engine.types import CalibrationMethod

    model = "mnist1d_resnet"
    release = threading.Event()

    def profile(*args: Any, **kwargs: Any) -> None:  # the pass stays running until the test is done
        release.wait(60)

    monkeypatch.setattr(dashboard.runner, "layer_profile", profile)
    monkeypatch.setattr(dashboard.runner, "run_sensitivity", lambda *a, **k: pd.DataFrame({"status": []}))
    runner = cached.runner()
    job = runner.submit_sensitivity(model, CalibrationMethod.ENTROPY, [Precision.INT8, Precision.INT4])
    try:
        assert "(INT8, INT4; Entropy calibration)" in runner.store.get_job(job)["message"]
        at = app(model=model)  # a new session, as a reload is
        at.switch_page(PAGE).run()
        assert not at.exception
        assert at.selectbox(key=state.SEARCH_CALIBRATION).value == CalibrationMethod.ENTROPY
        assert at.multiselect(key=state.SENS_PRECISIONS).value == [Precision.INT8.value, Precision.INT4.value]
        # The picker stays the user's to change while the pass runs.
        at.selectbox(key=state.SEARCH_CALIBRATION).set_value(CalibrationMethod.PERCENTILE).run()
        at.run()
        assert at.selectbox(key=state.SEARCH_CALIBRATION).value == CalibrationMethod.PERCENTILE
    finally:
        release.set()
    wait_for_jobs(at)
