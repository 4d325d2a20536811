"""The Find best plans form belongs to the model picked in the sidebar: a limit set for one model is
not found in another's form, and each model's own values come back when it is picked again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from dashboard import cached, state
from engine.api import Engine
from engine.types import Precision
from tests.dashboard.conftest import app
from tests.models import tiny_cnn

MODEL, OTHER = "digits_cnn", "digits_mobilenet"
PAGE = "app_pages/search.py"
FIELDS = {
    "allowed": state.SEARCH_PRECISIONS,
    "max_drop": state.SEARCH_MAX_DROP,
    "unit": state.SEARCH_DROP_UNIT,
    "max_kb": state.SEARCH_MAX_SIZE,
    "max_ms": state.SEARCH_MAX_LATENCY,
    "objective": state.SEARCH_OBJECTIVE,
    "budget": state.SEARCH_BUDGET,
    "seconds": state.SEARCH_SECONDS,
}


def _texts(elements: Any) -> str:
    return "\n".join(str(e.value) for e in elements)


def _form(at: Any) -> dict[str, Any]:
    widgets = {w.key: w for w in [*at.multiselect, *at.number_input, *at.radio]}
    return {field: widgets[key].value for field, key in FIELDS.items()}


def _defaults(model: str) -> dict[str, Any]:
    """What the form shows for a model nothing was set for."""
    accepted = {p for x in cached.layers(model) for p in x.accepts}
    return {
        "allowed": [p.value for p in (Precision.FP16, Precision.INT8, Precision.INT4) if p in accepted],
        "max_drop": None,
        "unit": "points",
        "max_kb": None,
        "max_ms": None,
        "objective": "size",
        "budget": 20,
        "seconds": None,
    }


def _press(at: Any, model: str) -> None:
    """Press Find best plans, so the form's values count, while a search of the model 'runs' elsewhere:
    the press is told to wait, and no search is measured."""
    store = cached.runner().store
    store.upsert_job("busy", kind="search", model_name=model, state="running", message="searching")
    try:
        at.button(key=state.SEARCH_RUN).click().run()
        assert not at.exception
        assert "A search on this model is still running" in _texts(at.warning)
    finally:
        store.upsert_job("busy", state="done")


def _pick(at: Any, model: str) -> None:
    at.selectbox(key=state.MODEL).set_value(model).run()  # the sidebar's picker
    assert not at.exception


def test_a_limit_set_for_one_model_is_not_in_anothers_form_and_comes_back(home: Path) -> None:
    at = app(model=MODEL)
    at.switch_page(PAGE).run()
    assert not at.exception
    assert _form(at) == _defaults(MODEL)
    at.number_input(key=state.SEARCH_MAX_SIZE).set_value(50.0)
    at.radio(key=state.SEARCH_OBJECTIVE).set_value("latency")
    at.number_input(key=state.SEARCH_BUDGET).set_value(3)
    _press(at, MODEL)
    mine = {**_defaults(MODEL), "max_kb": 50.0, "objective": "latency", "budget": 3}
    assert _form(at) == mine

    _pick(at, OTHER)
    assert _form(at) == _defaults(OTHER)  # not a 50 kB limit set for another network
    at.number_input(key=state.SEARCH_MAX_DROP).set_value(2.0)
    at.multiselect(key=state.SEARCH_PRECISIONS).set_value([Precision.INT8.value])
    _press(at, OTHER)
    theirs = {**_defaults(OTHER), "max_drop": 2.0, "allowed": [Precision.INT8.value]}
    assert _form(at) == theirs

    _pick(at, MODEL)
    assert _form(at) == mine
    # Picked on another page, then back here: the form is that model's all the same.
    at.switch_page("app_pages/plan.py").run()
    _pick(at, OTHER)
    at.switch_page(PAGE).run()
    assert not at.exception
    assert _form(at) == theirs
    # A rerun on the same model (a job's end reruns the app) writes nothing: a half-typed field stays.
    at.run()
    assert not at.number_input(key=state.SEARCH_MAX_DROP).proto.set_value


def _labelled(tmp: Path, seed: int) -> tuple[Path, Path]:
    model_bytes, _ = tiny_cnn()
    x = np.random.default_rng(seed).random((60, 1, 8, 8), dtype=np.float32)
    labels = ort.InferenceSession(model_bytes).run(None, {"input": x})[0].argmax(1)
    (tmp / "m.onnx").write_bytes(model_bytes)
    np.savez(tmp / f"data-{seed}.npz", input=x, labels=labels)
    return tmp / "m.onnx", tmp / f"data-{seed}.npz"


def test_a_model_added_under_a_removed_ones_name_starts_from_the_defaults(home: Path, tmp_path: Path) -> None:
    engine = Engine(pool=None, home=home)  # another process, as the CLI is
    engine.add_model(*_labelled(tmp_path, seed=1), name="again")
    at = app(model="again")
    at.switch_page(PAGE).run()
    at.number_input(key=state.SEARCH_MAX_SIZE).set_value(0.5)
    _press(at, "again")
    assert _form(at)["max_kb"] == 0.5

    engine.remove_model("again")  # and another network, under the same name
    engine.add_model(*_labelled(tmp_path, seed=2), name="again")
    _pick(at, MODEL)
    _pick(at, "again")
    assert _form(at) == _defaults("again")
