"""Pure pieces of the Sensitivity & search page: pins, limits, the trials table, the sensitivity chart."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from dashboard.search_logic import (
    constraints,
    pin,
    pinned_candidates,
    plan_assignment,
    recommendation_text,
    trials_table,
)
from engine.profile import OTHER
from engine.search_charts import picked_bar, sensitivity_chart_info, sensitivity_figure
from engine.search_trials import trials_frame
from engine.sensitivity import ALONE, KEEP_FP32
from engine.types import Precision

F16, I8, I4 = Precision.FP16, Precision.INT8, Precision.INT4


def _probe(layer: str, view: str, precision: str, change: float | None, status: str = "ok") -> dict:
    ok = status == "ok" and change is not None
    return {
        "layer": layer,
        "op_type": "Conv",
        "view": view,
        "precision": precision,
        "status": status,
        "accuracy_change": change if ok else np.nan,
        "ci_low": change - 0.01 if ok else np.nan,
        "ci_high": change + 0.005 if ok else np.nan,
        "sqnr_db": 40.0 if ok else np.nan,
        "size_change_bytes": -1000.0 if ok else np.nan,
        "error": None if status != "failed" else "boom",
    }


@pytest.fixture()
def frame() -> pd.DataFrame:
    return pd.DataFrame(
        [
            _probe("a", ALONE, "fp16", 0.0),
            _probe("a", ALONE, "int8", -0.002),
            _probe("b", ALONE, "fp16", 0.001),
            _probe("b", ALONE, "int8", -0.03),  # b is the sensitive layer
            _probe("c", ALONE, "fp16", None, status="pending"),
            _probe("c", ALONE, "int8", None, status="failed"),
            _probe("a", KEEP_FP32, "fp32", 0.001),
            _probe("b", KEEP_FP32, "fp32", 0.02),
            _probe("c", KEEP_FP32, "fp32", 0.0),
        ]
    )


@pytest.fixture()
def profile() -> pd.DataFrame:
    rows = [("a", 10.0), ("b", 20.0), ("c", 60.0), (OTHER, 10.0)]
    return pd.DataFrame(
        {
            "layer": [r[0] for r in rows],
            "precision": "fp32",
            "us_per_run": [r[1] for r in rows],
            "share": [r[1] / 100 for r in rows],
        }
    )


def test_chart_info_sorts_layers_and_carries_intervals(frame: pd.DataFrame, profile: pd.DataFrame) -> None:
    info = sensitivity_chart_info(frame, profile, ALONE, "accuracy")
    assert info.layers == ("b", "a", "c")  # largest loss first; c has nothing measured
    assert (info.measured, info.pending, info.failed) == (4, 1, 1)
    assert [p for p, _ in info.traces] == ["fp16", "int8"]
    b8 = next(x for x in info.traces[1][1] if x.layer == "b")
    assert b8.change_pp == pytest.approx(-3.0)
    assert (b8.minus_pp, b8.plus_pp) == (pytest.approx(1.0), pytest.approx(0.5))
    assert "95% CI -4.00 to -2.50" in b8.hover and "40.0 dB" in b8.hover
    assert info.shares_pct == (pytest.approx(20.0), pytest.approx(10.0), pytest.approx(60.0))

    assert sensitivity_chart_info(frame, profile, ALONE, "latency").layers == ("c", "b", "a")
    assert sensitivity_chart_info(frame, profile, ALONE, "layer").layers == ("a", "b", "c")
    keep = sensitivity_chart_info(frame, None, KEEP_FP32, "accuracy")
    assert keep.layers == ("b", "a", "c") and [p for p, _ in keep.traces] == ["fp32"]
    assert all(math.isnan(s) for s in keep.shares_pct)  # not profiled yet


def test_figure_draws_bars_with_error_bars_and_time_share(frame: pd.DataFrame, profile: pd.DataFrame) -> None:
    info = sensitivity_chart_info(frame, profile, ALONE, "accuracy")
    fig = sensitivity_figure(info)
    # Bars per precision, then a dot with its whisker at each bar's end (clickable at zero), then shares.
    assert [(t.type, t.name) for t in fig.data] == [
        ("bar", "FP16"), ("bar", "INT8"), ("scatter", "FP16"), ("scatter", "INT8"),
        ("bar", "share of FP32 time"),
    ]  # fmt: skip
    assert list(fig.data[3].error_x.arrayminus) == pytest.approx([1.0, 1.0])
    assert list(fig.data[3].customdata[0]) == ["b", "int8"]
    assert fig.data[4].xaxis == "x2" and list(fig.layout.yaxis.ticktext) == ["b", "a", "c"]
    # Each layer's row holds its precisions side by side: b (row 0) FP16 above INT8.
    assert fig.data[0].y[0] < 0 < fig.data[1].y[0]


def test_a_model_without_labels_is_drawn_by_output_sqnr() -> None:
    # No labels: every probe measured, none with an accuracy; SQNR is what there is to show.
    rows = [
        {**_probe(layer, ALONE, "int8", 0.0), "accuracy_change": np.nan, "sqnr_db": sqnr}
        for layer, sqnr in (("a", 38.0), ("b", 21.5), ("c", 30.0))
    ]
    frame = pd.DataFrame(rows)
    assert sensitivity_chart_info(frame, None, ALONE, "accuracy").traces == ()  # nothing to draw by accuracy
    info = sensitivity_chart_info(frame, None, ALONE, "accuracy", metric="sqnr")
    assert info.layers == ("b", "c", "a")  # the furthest from FP32 first
    bars = info.traces[0][1]
    assert [b.change_pp for b in bars] == [21.5, 30.0, 38.0]
    assert all(math.isnan(b.minus_pp) and math.isnan(b.plus_pp) for b in bars)  # SQNR has no interval
    assert info.x_title.startswith("Output SQNR vs FP32 (dB")
    assert "accuracy" not in bars[0].hover and "output SQNR vs FP32 21.5 dB" in bars[0].hover
    with pytest.raises(ValueError, match="metric must be one of"):
        sensitivity_chart_info(frame, None, ALONE, "accuracy", metric="kl")


def test_a_click_on_a_bar_names_its_layer_and_precision(frame: pd.DataFrame) -> None:
    info = sensitivity_chart_info(frame, None, ALONE, "accuracy")
    by_custom = {"selection": {"points": [{"customdata": ["b", "int8"], "curve_number": 1}]}}
    assert picked_bar(info, by_custom) == ("b", "int8")
    by_index = {"selection": {"points": [{"curve_number": 1, "point_index": 0}]}}
    assert picked_bar(info, by_index) == info.trace_keys()[1][0]
    dot = {"selection": {"points": [{"curve_number": 3, "point_index": 0}]}}  # INT8's dot trace
    assert picked_bar(info, dot) == info.trace_keys()[1][0]
    share_bar = {"selection": {"points": [{"curve_number": 4, "point_index": 0}]}}
    assert picked_bar(info, share_bar) is None and picked_bar(info, None) is None


def test_pins_set_the_editor_and_restrict_the_search() -> None:
    pins, assignment = pin({}, {"a": "fp32", "b": "fp32"}, "b", "int8")
    assert pins == {"b": "int8"} and assignment == {"a": "fp32", "b": "int8"}
    candidates = {"a": (Precision.FP32, F16, I8), "b": (Precision.FP32, F16, I8, I4)}
    assert pinned_candidates(candidates, pins) == {"a": candidates["a"], "b": (I8,)}
    assert pinned_candidates(candidates, {"gone": "int8"}) == candidates  # a pin of another model's layer


def test_limits_from_the_form() -> None:
    c = constraints(0.5, True, 120.0, None)
    assert (c.max_accuracy_drop, c.relative, c.max_size_bytes, c.max_latency_ms) == (0.5, True, 120_000, None)
    assert c.drop_limit(0.9) == pytest.approx(0.0045)  # 0.5% of 90% accuracy
    with pytest.raises(ValueError, match="latency limit must be above 0 ms"):
        constraints(None, False, None, -1.0)


def test_trials_table_puts_prediction_beside_measurement() -> None:
    trials = pd.DataFrame(
        {
            "result_key": ["k1", "k2"],
            "origin": ["predictor", "nsga2"],
            "plan_summary": ["2 INT8", "1 INT8 · 1 FP32"],
            "status": ["ok", "ok"],
            "accuracy": [0.95, 0.97],
            "accuracy_drop": [0.03, 0.01],
            "ci_low": [-0.05, -0.02],
            "ci_high": [-0.01, 0.0],
            "size_bytes": [50_000.0, 120_000.0],
            "latency_ms": [0.5, 0.7],
            "predicted_accuracy_drop": [0.01, 0.01],
            "predicted_size_bytes": [52_000.0, 118_000.0],
            "predicted_latency_ms": [0.4, 0.8],
            "plan": [{}, {}],
            "on_front": [True, True],
        }
    )
    table = trials_table(trials, "k2")
    assert list(table["recommended"]) == ["", "★"]
    assert list(table["found by"]) == ["additive predictor", "NSGA-II"]
    # Changes vs FP32, a loss negative, as the recommendation above the table gives them.
    assert table["change (pp)"].tolist() == pytest.approx([-3.0, -1.0])
    assert table["change beyond prediction (pp)"].tolist() == pytest.approx([-2.0, 0.0])
    assert table["change 95% CI (pp)"].tolist() == ["-5.00 to -1.00", "-2.00 to +0.00"]
    assert table["size (kB)"].tolist() == [50.0, 120.0]
    assert trials_table(trials.iloc[:0], None).empty


def test_a_stored_plan_spells_every_layer_for_the_editor() -> None:
    plan = {"default": "int8", "layers": {"b": "fp32"}}
    assert plan_assignment(plan, ["a", "b", "c"]) == {"a": "int8", "b": "fp32", "c": "int8"}


def test_the_recommendation_says_when_its_interval_reaches_past_the_accuracy_limit() -> None:
    """The QA case: "within 1 point" recommended a plan at -0.84 (CI -1.12 to -0.54) with no word
    that its interval crosses the limit, which the Report page says."""
    row = {"size_bytes": 700_000.0, "latency_ms": 1.5, "accuracy": 0.6196, "accuracy_drop": 0.0084}
    row |= {"ci_low": -0.0112, "ci_high": -0.0054}
    fp32 = {"size_bytes": 3_400_000.0, "latency_ms": 1.4, "accuracy": 0.628}
    text = recommendation_text(row, fp32, drop_limit=0.01)
    assert "-0.84 pp vs FP32 (95% CI -1.12 to -0.54)" in text
    assert "not surely: its 95% interval reaches −1.1 points, past the limit of −1.0 points" in text
    assert "not surely" not in recommendation_text(row, fp32, drop_limit=0.02)
    assert "not surely" not in recommendation_text(row, fp32)


def test_a_uniform_plan_has_no_latency_prediction_of_its_own() -> None:
    """Its latency sets the predictor's scale after it was predicted (by the profiler alone): a
    0.38 ms prediction beside 1.03 ms measured read as the predictor being 3x off."""

    def trial(key: str, origin: str) -> dict[str, object]:
        record = {"status": "ok", "plan_summary": key, "metrics": {"accuracy": 0.9, "size_bytes": 10.0}}
        record["metrics"]["latency"] = {"1": {"median_ms": 1.03}}  # type: ignore[index]
        predicted = {"accuracy_drop": 0.0, "size_bytes": 10.0, "latency_ms": 0.383}
        return {"result_key": key, "origin": origin, "result": record, "predicted": predicted, "plan": {}}

    frame = trials_frame([trial("u", "anchor"), trial("p", "predictor")], {"accuracy": 0.9})
    assert math.isnan(frame.loc[0, "predicted_latency_ms"]) and frame.loc[1, "predicted_latency_ms"] == 0.383


def test_every_search_form_field_has_one_widget() -> None:
    """The form's fields are named twice (search_logic.FORM_FIELDS and the widgets of
    state.SEARCH_FORM_KEYS): a field added to one only would be silently neither kept nor restored."""
    from dashboard import state
    from dashboard.search_logic import FORM_FIELDS

    assert tuple(state.SEARCH_FORM_KEYS) == FORM_FIELDS
    assert len(set(state.SEARCH_FORM_KEYS.values())) == len(FORM_FIELDS)
