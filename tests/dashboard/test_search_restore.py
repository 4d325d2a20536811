"""A reload of the Sensitivity & search page: a new session (as a reloaded tab is) shows the model's
latest search, its settings back in the form, and continues it without measuring a plan twice."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from streamlit.elements.lib import policies

from dashboard import cached, state
from engine.search import SearchSpec, search_id
from engine.types import CalibrationMethod, Precision
from tests.dashboard.conftest import app, wait_for_jobs

MODEL = "digits_cnn"
PAGE = "app_pages/search.py"
RESTORED = "latest search of this model, restored"


def _texts(elements: Any) -> str:
    return "\n".join(str(e.value) for e in elements)


def _open() -> Any:
    """The page in a new session, as a reload or a new tab opens it."""
    at = app(model=MODEL)
    at.switch_page(PAGE).run()
    assert not at.exception
    return at


def _press_and_wait(at: Any) -> None:
    at.button(key=state.SEARCH_RUN).click().run()
    assert not at.exception
    wait_for_jobs(at)
    assert not at.exception


def _trial_keys(at: Any) -> list[str]:
    return list(at.dataframe[-1].value["result key"])


def test_a_reload_shows_the_same_search_and_pressing_again_measures_nothing_new(
    home: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    store = cached.runner().store
    at = _open()
    assert RESTORED not in _texts(at.caption)  # nothing searched yet: the defaults
    at.number_input(key=state.SEARCH_MAX_DROP).set_value(0.5)
    at.number_input(key=state.SEARCH_BUDGET).set_value(2)
    _press_and_wait(at)
    shown = _trial_keys(at)
    assert len(shown) == 2
    results = store.count()

    # Streamlit logs (once a process) a widget given a default beside a value set for it: a restore set
    # the candidate precisions while the widget still passed its default (seen in the app's log).
    monkeypatch.setattr(policies, "_shown_default_value_warning", False)
    with caplog.at_level(logging.WARNING):
        again = _open()  # the tab reloaded: a new session
    assert "created with a default value but also had its value set" not in caplog.text
    assert again.number_input(key=state.SEARCH_MAX_DROP).value == 0.5
    assert again.number_input(key=state.SEARCH_BUDGET).value == 2
    assert again.radio(key=state.SEARCH_DROP_UNIT).value == "points"
    assert again.multiselect(key=state.SEARCH_PRECISIONS).value == [
        Precision.FP16.value,
        Precision.INT8.value,
        Precision.INT4.value,
    ]
    assert RESTORED in _texts(again.caption)
    assert _trial_keys(again) == shown
    assert _texts(again.success) == _texts(at.success)  # the same recommendation

    _press_and_wait(again)  # unchanged: the same search, its budget already spent
    assert not _texts(again.error) and "still running" not in _texts(again.warning)
    assert _trial_keys(again) == shown
    assert store.count() == results  # nothing measured again
    spec, calibration = again.session_state[f"qd_search::{MODEL}"][:2]
    runner = cached.runner()
    sid = search_id(runner.model(MODEL), spec, runner.settings(CalibrationMethod(calibration)))
    assert len(store.search_trials(sid)) == 2


def test_every_setting_and_the_pins_come_back(home: Path) -> None:
    layers = cached.layers(MODEL)
    pinned = layers[-1].name
    at = app(model=MODEL)
    at.switch_page("app_pages/plan.py").run()  # the plan being edited, kept on disk: all INT8
    at.selectbox(key="qd_preset").set_value("int8").run()
    at.button(key="qd_apply_preset").click().run()
    at.session_state[f"qd_pins::{MODEL}"] = {pinned: Precision.INT4.value}  # as a click on the chart
    at.switch_page(PAGE).run()
    at.selectbox(key=state.SEARCH_CALIBRATION).set_value(CalibrationMethod.PERCENTILE)
    at.multiselect(key=state.SEARCH_PRECISIONS).set_value([Precision.INT8.value])
    at.number_input(key=state.SEARCH_MAX_DROP).set_value(2.0)
    at.radio(key=state.SEARCH_DROP_UNIT).set_value("relative")
    at.number_input(key=state.SEARCH_MAX_SIZE).set_value(1.1)  # kB, as 1,100 bytes
    at.number_input(key=state.SEARCH_MAX_LATENCY).set_value(5.0)
    at.radio(key=state.SEARCH_OBJECTIVE).set_value("latency")
    at.number_input(key=state.SEARCH_BUDGET).set_value(1)
    at.number_input(key=state.SEARCH_SECONDS).set_value(300.0)
    _press_and_wait(at)
    shown = _trial_keys(at)
    results = cached.runner().store.count()

    again = _open()
    assert again.selectbox(key=state.SEARCH_CALIBRATION).value == CalibrationMethod.PERCENTILE
    assert again.multiselect(key=state.SEARCH_PRECISIONS).value == [Precision.INT8.value]
    assert again.number_input(key=state.SEARCH_MAX_DROP).value == 2.0
    assert again.radio(key=state.SEARCH_DROP_UNIT).value == "relative"
    assert again.number_input(key=state.SEARCH_MAX_SIZE).value == 1.1
    assert again.number_input(key=state.SEARCH_MAX_LATENCY).value == 5.0
    assert again.radio(key=state.SEARCH_OBJECTIVE).value == "latency"
    assert again.number_input(key=state.SEARCH_BUDGET).value == 1
    assert again.number_input(key=state.SEARCH_SECONDS).value == 300.0
    assert f"`{pinned}` at {Precision.INT4.label}" in _texts(again.success)
    # The plan being edited is left as it was kept (it may have changed since the search).
    assert f"qd_plan::{MODEL}" not in again.session_state
    again.switch_page("app_pages/plan.py").run()
    assert {m.label: m.value for m in again.metric}["Plan"] == "5 INT8"
    again.switch_page(PAGE).run()
    assert _trial_keys(again) == shown
    _press_and_wait(again)
    assert _trial_keys(again) == shown and cached.runner().store.count() == results


def test_a_kept_search_that_no_longer_fits_the_model_leaves_the_defaults(home: Path) -> None:
    runner = cached.runner()
    bundle = runner.model(MODEL)
    settings = runner.settings(CalibrationMethod.MINMAX)
    # Kept by an engine whose model had a layer this one has not.
    spec = SearchSpec({"/gone/Conv": (Precision.INT8,)}, max_evaluations=7)
    runner.store.record_search(
        "stale",
        model_hash=bundle.model_hash,
        data_hash=bundle.data_hash,
        settings_hash=settings.hash,
        spec=spec.to_json(),
        calibration=settings.calibration.value,
    )
    at = _open()
    assert at.number_input(key=state.SEARCH_BUDGET).value == 20
    assert at.number_input(key=state.SEARCH_MAX_DROP).value is None
    assert RESTORED not in _texts(at.caption) and "plans measured (budget" not in _texts(at.caption)


def test_a_press_on_another_model_does_not_keep_this_ones_search_from_coming_back(home: Path) -> None:
    at = _open()
    at.number_input(key=state.SEARCH_BUDGET).set_value(2)
    _press_and_wait(at)  # a search of digits_cnn in the store
    shown = _trial_keys(at)

    other = app(model="digits_mobilenet")  # a new session, on another model first
    other.switch_page(PAGE).run()
    other.multiselect(key=state.SEARCH_PRECISIONS).set_value([])
    other.button(key=state.SEARCH_RUN).click().run()  # refused: nothing to search
    assert "cannot start a search" in _texts(other.error)
    other.session_state[state.MODEL] = MODEL  # then to digits_cnn, as the sidebar does
    other.run()
    assert not other.exception
    assert RESTORED in _texts(other.caption) and _trial_keys(other) == shown


def test_the_restored_caption_holds_only_while_the_form_asks_for_that_search(home: Path) -> None:
    at = _open()
    at.number_input(key=state.SEARCH_BUDGET).set_value(2)
    _press_and_wait(at)

    again = _open()
    assert RESTORED in _texts(again.caption)
    # Other settings in the form, as a press refused (a search still running) leaves them:
    again.session_state[state.SEARCH_BUDGET] = 7
    again.run()
    assert "with these settings continues it" not in _texts(again.caption)
    assert "The form above now holds other settings" in _texts(again.caption)
