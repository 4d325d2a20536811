"""The additive predictor's exact solver against brute-force enumeration (property-based)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.predictor import AdditivePredictor
from engine.types import Precision

LOW = (Precision.FP16, Precision.INT8, Precision.INT4)


@st.composite
def _predictors(draw: st.DrawFn) -> AdditivePredictor:
    n_layers = draw(st.integers(min_value=1, max_value=5))
    options, drop, size, latency = {}, {}, {}, {}
    for i in range(n_layers):
        name = f"layer{i}"
        lows = draw(st.lists(st.sampled_from(LOW), min_size=0, max_size=3, unique=True))
        options[name] = (Precision.FP32, *lows)
        for p in lows:
            drop[(name, p)] = draw(st.floats(0.0, 0.05))
            size[(name, p)] = -draw(st.floats(0.0, 1e5))
            latency[(name, p)] = draw(st.floats(-0.5, 0.5))  # a low precision may be slower here
    return AdditivePredictor(options, drop, size, latency, base_size_bytes=2e5, base_latency_ms=1.0)


def _all_assignments(pred: AdditivePredictor) -> list[dict[str, Precision]]:
    names = list(pred.options)
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*pred.options.values())]


limits = st.one_of(st.none(), st.floats(0.0, 0.1))


@settings(max_examples=120, deadline=None)
@given(
    _predictors(),
    st.sampled_from(["size", "latency"]),
    limits,
    st.one_of(st.none(), st.floats(5e4, 2.5e5)),
    st.one_of(st.none(), st.floats(0.3, 1.7)),
)
def test_solver_meets_every_limit_and_is_optimal(
    pred: AdditivePredictor,
    objective: str,
    max_drop: float | None,
    max_size: float | None,
    max_ms: float | None,
) -> None:
    def meets(a: dict[str, Precision]) -> bool:  # spelled out here, not pred.meets: the oracle
        p = pred.predict(a)
        return (
            (max_drop is None or p.accuracy_drop <= max_drop + 1e-9)
            and (max_size is None or p.size_bytes <= max_size + 1e-6)
            and (max_ms is None or p.latency_ms <= max_ms + 1e-9)
        )

    def cost(a: dict[str, Precision]) -> float:
        p = pred.predict(a)
        return p.size_bytes if objective == "size" else p.latency_ms

    feasible = [a for a in _all_assignments(pred) if meets(a)]
    solved = pred.solve(objective, max_drop, max_size, max_ms)
    if not feasible:
        assert solved is None
        return
    assert solved is not None
    assert set(solved) == set(pred.options) and all(solved[n] in pred.options[n] for n in solved)
    assert meets(solved)
    best = min(cost(a) for a in feasible)
    assert cost(solved) == pytest.approx(best, rel=1e-6, abs=1e-6)


@pytest.mark.parametrize("over", [1.192092896e-07, 5e-7])
def test_a_plan_a_hair_over_the_drop_limit_is_not_returned(over: float) -> None:
    """HiGHS meets limits within about 1e-7; the solver checks them exactly (found by hypothesis)."""
    options = {"a": (Precision.FP32, Precision.FP16, Precision.INT8), "b": (Precision.FP32, Precision.FP16)}
    drop = {("a", Precision.FP16): over, ("a", Precision.INT8): 0.0, ("b", Precision.FP16): 0.0}
    size = {("a", Precision.FP16): -1.0, ("a", Precision.INT8): -0.0, ("b", Precision.FP16): -5.0}
    pred = AdditivePredictor(options, drop, size, {}, base_size_bytes=100.0, base_latency_ms=1.0)
    assert pred.solve("size", max_drop=0.0) in (
        {"a": Precision.FP32, "b": Precision.FP16},
        {"a": Precision.INT8, "b": Precision.FP16},
    )
    assert pred.solve("size", max_drop=0.0, max_size_bytes=94.5) is None
    assert pred.solve("size", max_drop=over) == {"a": Precision.FP16, "b": Precision.FP16}


def test_unknown_objective_is_refused() -> None:
    pred = AdditivePredictor({"a": (Precision.FP32,)}, {}, {}, {}, 1.0, 1.0)
    with pytest.raises(ValueError, match="objective must be one of"):
        pred.solve("accuracy")


def test_anchoring_predicts_each_uniform_plan_at_its_measured_latency() -> None:
    options = {"a": (Precision.FP32, Precision.INT8), "b": (Precision.FP32, Precision.INT8, Precision.FP16)}
    latency = {("a", Precision.INT8): -0.2, ("b", Precision.INT8): -0.1, ("b", Precision.FP16): 0.05}
    pred = AdditivePredictor(options, {}, {}, latency, base_size_bytes=1.0, base_latency_ms=1.0)
    int8 = {"a": Precision.INT8, "b": Precision.INT8}
    fp16 = {"a": Precision.FP32, "b": Precision.FP16}
    anchored = pred.anchored({Precision.INT8: (int8, 0.55), Precision.FP16: (fp16, 0.9)})
    assert anchored.predict(int8).latency_ms == pytest.approx(0.55)
    assert anchored.predict(fp16).latency_ms == pytest.approx(0.9)  # measured faster: the sign flips
    # Layers keep their proportions within a precision: a is still twice b at INT8.
    assert anchored.latency[("a", Precision.INT8)] == pytest.approx(
        2 * anchored.latency[("b", Precision.INT8)]
    )


def test_anchoring_profiled_changes_that_nearly_cancel_predicts_no_plan_below_zero() -> None:
    # digits_cnn's INT4 profile: one layer faster, one slower, nearly cancelling; the uniform
    # plan measured 35 us slower than FP32's 23 us. Scaling the terms made a plan with one INT4
    # layer predict -0.04 ms.
    options = {name: (Precision.FP32, Precision.INT4) for name in ("conv1", "conv2", "conv3")}
    latency = {
        ("conv1", Precision.INT4): 0.00081,
        ("conv2", Precision.INT4): -0.00601,
        ("conv3", Precision.INT4): 0.00610,
    }
    pred = AdditivePredictor(options, {}, {}, latency, base_size_bytes=1.0, base_latency_ms=0.0229)
    uniform = dict.fromkeys(options, Precision.INT4)
    anchored = pred.anchored({Precision.INT4: (uniform, 0.0583)})
    assert anchored.predict(uniform).latency_ms == pytest.approx(0.0583)
    miss = 0.0583 - pred.predict(uniform).latency_ms
    for assignment in _all_assignments(anchored):
        assert anchored.predict(assignment).latency_ms > 0.0
    for key, term in latency.items():
        assert abs(anchored.latency[key] - term) <= miss + 1e-12


def test_anchoring_a_precision_the_profile_did_not_see_spreads_its_miss_evenly() -> None:
    options = {"a": (Precision.FP32, Precision.FP16), "b": (Precision.FP32, Precision.FP16)}
    pred = AdditivePredictor(options, {}, {}, {}, base_size_bytes=1.0, base_latency_ms=1.0)
    fp16 = {"a": Precision.FP16, "b": Precision.FP16}
    anchored = pred.anchored({Precision.FP16: (fp16, 1.4)})
    assert anchored.predict(fp16).latency_ms == pytest.approx(1.4)
    assert anchored.predict({"a": Precision.FP16, "b": Precision.FP32}).latency_ms == pytest.approx(1.2)
