"""Sensitivity, profiling and the mixed-precision search on a real sample model (digits_cnn)."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from engine.api import Engine
from engine.evaluate import ModelCache
from engine.profile import OTHER
from engine.search import (
    Constraints,
    SearchProgress,
    SearchSpec,
    default_candidates,
    run_search,
    search_id,
)
from engine.search_history import latest_search
from engine.sensitivity import (
    ALONE,
    KEEP_FP32,
    candidate_precisions,
    layer_profile,
    probes,
    run_sensitivity,
    sensitivity_frame,
    sensitivity_settings,
)
from engine.store import ResultStore
from engine.types import MeasureSettings, PlanError, Precision
from tests.models import tiny_cnn

FAST = MeasureSettings(batch_sizes=(1,), max_seconds=0.2, max_runs=40, bootstrap=200)
LOW = [Precision.FP16, Precision.INT8, Precision.INT4]


def _engine(home: Path) -> Engine:
    return Engine(store=ResultStore(home / "results.sqlite"), home=home, settings=FAST)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    return _engine(tmp_path_factory.mktemp("home"))


@pytest.fixture(scope="module")
def digits(engine: Engine):  # type: ignore[no-untyped-def]
    return engine.model("digits_cnn")


def test_sensitivity_is_partial_while_running_then_complete(engine: Engine, digits) -> None:  # type: ignore[no-untyped-def]
    layers = engine.layers(digits)
    before = sensitivity_frame(engine, digits)
    assert len(before) == len(probes(layers, candidate_precisions(layers)))
    assert (before["status"] == "pending").all()
    # Two probes measured (as a pass that is still running would have): exactly those show.
    some = probes(layers, candidate_precisions(layers))[:2]
    engine.evaluate_many(digits, [p.plan for p in some], settings=sensitivity_settings(FAST))
    partial = sensitivity_frame(engine, digits)
    assert (partial["status"] == "ok").sum() == 2
    progress: list[tuple[int, int]] = []
    frame = run_sensitivity(engine, digits, on_progress=lambda d, n: progress.append((d, n)))
    assert (frame["status"] == "ok").all()
    assert progress[-1][0] == progress[-1][1] == len(frame) + 2  # + the FP32 and all-INT8 plans
    assert set(frame["view"]) == {ALONE, KEEP_FP32}
    assert len(frame[frame["view"] == KEEP_FP32]) == len(layers)


def test_sensitivity_figures_are_plausible(engine: Engine, digits) -> None:  # type: ignore[no-untyped-def]
    frame = run_sensitivity(engine, digits)  # from the store by now
    alone = frame[frame["view"] == ALONE].set_index(["layer", "precision"])
    weights = {x.name: x.weight_bytes for x in engine.layers(digits)}
    for layer, size in weights.items():
        fp16, int8 = alone.loc[(layer, "fp16")], alone.loc[(layer, "int8")]
        # FP16 is far more faithful than INT8, and one INT8 layer alone stays close to FP32.
        assert fp16["sqnr_db"] > int8["sqnr_db"] + 10
        assert int8["sqnr_db"] > 25
        assert int8["ci_low"] <= int8["accuracy_change"] <= int8["ci_high"]
        if (
            size > 50_000
        ):  # big layers: INT8 weights save most of their FP32 bytes (small ones pay Q/DQ overhead)
            assert int8["size_change_bytes"] < -0.6 * size
    keep = frame[frame["view"] == KEEP_FP32]
    # Keeping a big layer FP32 costs its bytes back.
    assert keep.set_index("layer").loc["/fc1/Gemm", "size_change_bytes"] > 0.6 * weights["/fc1/Gemm"]
    assert keep["ci_low"].notna().all()  # the gain carries a paired interval


def test_layer_profile_covers_every_layer(engine: Engine, digits) -> None:  # type: ignore[no-untyped-def]
    profile = layer_profile(engine, digits, [Precision.INT8, Precision.INT4])
    names = [x.name for x in engine.layers(digits)]
    fp32 = profile[profile["precision"] == "fp32"].set_index("layer")
    assert set(fp32.index) == {*names, OTHER}
    assert (fp32.loc[names, "us_per_run"] > 0).all()
    # Shares are of the whole profiled model; every layer takes INT8, so its rows cover it all.
    for precision in ("fp32", "int8"):
        assert profile[profile["precision"] == precision]["share"].sum() == pytest.approx(1.0)
    # Every layer that takes INT4 (here all: Convs per output channel, MatMuls block-wise) has an INT4 time.
    int4_layers = set(profile[profile["precision"] == "int4"]["layer"]) - {OTHER}
    assert int4_layers == {x.name for x in engine.layers(digits) if Precision.INT4 in x.accepts}


def test_layer_profile_builds_and_profiles_without_evaluating(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    digits = engine.model("digits_cnn")
    profile = layer_profile(engine, digits, [Precision.INT8, Precision.INT8_DYNAMIC])
    assert set(profile["precision"]) == {"fp32", "int8", "int8-dynamic"}
    # A profile needs the built model only: no plan was measured over the evaluation set.
    assert engine.store.count() == 0
    # Profiles are kept: asked again, nothing is built or run.
    folder = ModelCache(engine.cache_dir, digits.model_hash).folder
    kept = {p: p.stat().st_mtime_ns for p in folder.glob("profile-*.json")}
    assert len(kept) == 3
    again = layer_profile(engine, digits, [Precision.INT8, Precision.INT8_DYNAMIC])
    assert again.equals(profile)
    assert {p: p.stat().st_mtime_ns for p in folder.glob("profile-*.json")} == kept


def test_a_profile_that_cannot_be_built_is_left_out(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    digits = engine.model("digits_cnn")
    # Static INT8 needs calibration data: without it that precision's model cannot be built.
    broken = replace(digits, calibration={})
    profile = layer_profile(engine, broken, [Precision.INT8, Precision.FP16])
    assert set(profile["precision"]) == {"fp32", "fp16"}


def test_run_tasks_can_give_none_for_a_failed_call(engine: Engine) -> None:
    calls = [(int, ("7",)), (int, ("seven",))]
    assert engine.run_tasks(calls, what="parsing", skip_failed=True) == [7, None]
    with pytest.raises(ValueError):
        engine.run_tasks(calls, what="parsing")


def test_search_recommends_a_measured_plan_within_the_limit(engine: Engine, digits) -> None:  # type: ignore[no-untyped-def]
    spec = SearchSpec(
        default_candidates(engine, digits, LOW), Constraints(max_accuracy_drop=0.5), max_evaluations=8
    )
    progress: list[SearchProgress] = []
    result = run_search(engine, digits, spec, on_progress=progress.append)
    trials = result.trials
    assert len(trials) == 8 and trials["result_key"].is_unique
    assert set(trials["origin"]) <= {"baseline", "anchor", "predictor", "nsga2"} and "predictor" in set(
        trials["origin"]
    )
    assert [p.phase for p in progress][-1] == "done"
    best = trials.set_index("result_key").loc[result.recommended]
    assert best["accuracy_drop"] <= 0.005
    assert best["size_bytes"] < result.fp32["size_bytes"] / 3  # INT4/INT8 on the big layers
    assert trials["on_front"].any()
    # Size adds up layer by layer: the predictor is within 10% of every measured size.
    error = (trials["predicted_size_bytes"] - trials["size_bytes"]).abs() / trials["size_bytes"]
    assert error.max() < 0.10, error.max()
    # A uniform plan sets the latency scale: no latency prediction of its own (engine/search_trials.py).
    anchors = trials["origin"] == "anchor"
    assert trials.loc[anchors, "predicted_latency_ms"].isna().all()
    assert (trials.loc[~anchors, "predicted_latency_ms"] > 0).all(), trials["predicted_latency_ms"].min()


def test_impossible_limits_say_so_and_name_the_closest(engine: Engine, digits) -> None:  # type: ignore[no-untyped-def]
    spec = SearchSpec(
        default_candidates(engine, digits, LOW), Constraints(max_size_bytes=1_000), max_evaluations=4, seed=1
    )
    result = run_search(engine, digits, spec)
    assert result.recommended is None
    assert "none of the 4 measured plans meets the limits; closest:" in result.message


def test_a_spec_round_trips_through_json_budget_and_limits_included() -> None:
    spec = SearchSpec(
        {"b": (Precision.FP32, Precision.INT4), "a": (Precision.INT8,)},
        Constraints(max_accuracy_drop=0.5, relative=True, max_size_bytes=1_100, max_latency_ms=0.25),
        objective="latency",
        max_evaluations=7,
        max_seconds=30,
        seed=2,
    )
    back = SearchSpec.from_json(json.loads(json.dumps(spec.to_json())))
    assert back == spec and back.identity() == spec.identity()
    assert SearchSpec.from_json(SearchSpec({"a": (Precision.INT8,)}).to_json()) == SearchSpec(
        {"a": (Precision.INT8,)}
    )
    with pytest.raises(ValueError, match="'int3' is not a valid Precision"):
        SearchSpec.from_json({**spec.to_json(), "candidates": {"a": ["int3"]}})
    with pytest.raises(ValueError, match="unknown keys"):
        SearchSpec.from_json({**spec.to_json(), "budget": 3})


def test_the_latest_search_of_a_model_comes_back_with_its_settings(engine: Engine, digits) -> None:  # type: ignore[no-untyped-def]
    spec = SearchSpec(
        default_candidates(engine, digits, [Precision.INT8]),
        Constraints(max_accuracy_drop=0.5),
        objective="latency",
        max_evaluations=2,
        max_seconds=600,
        seed=5,
    )
    result = run_search(engine, digits, spec)
    latest = latest_search(engine, digits)
    assert latest is not None
    assert (latest.search_id, latest.spec, latest.settings) == (result.search_id, spec, FAST)
    # Searches measured with other settings are not this engine's to continue.
    assert latest_search(engine, digits, [replace(FAST, seed=9)]) is None
    # A kept spec that no longer fits the model (a layer gone, a precision it no longer takes, one
    # this engine does not know) is no search to restore, and no error either.
    for candidates in ({"/gone/Conv": ["int8"]}, {"/conv1/Conv": ["int3"]}):
        engine.store.record_search(
            "stale",
            model_hash=digits.model_hash,
            data_hash=digits.data_hash,
            settings_hash=FAST.hash,
            spec={**spec.to_json(), "candidates": candidates},
            calibration=FAST.calibration.value,
        )
        assert latest_search(engine, digits) is None


def test_bad_candidates_are_refused_with_the_valid_choices(engine: Engine, digits, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # tiny_cnn's first Linear reads 16 features: too few for a 32-weight INT4 block.
    path, data = tmp_path / "tiny_cnn.onnx", tmp_path / "data.npz"
    model_bytes, inputs = tiny_cnn()
    path.write_bytes(model_bytes)
    np.savez(data, **inputs, labels=np.arange(len(inputs["input"])) % 10)
    tiny = engine.model(engine.add_model(path, data, name="tiny-cnn-labelled").name)
    head = engine.layers(tiny)[3]
    assert head.op_type == "MatMul" and Precision.INT4 not in head.accepts
    with pytest.raises(PlanError, match="cannot take int4; it accepts: fp32"):
        run_search(engine, tiny, SearchSpec({head.name: (Precision.INT4,)}))
    with pytest.raises(PlanError, match="unknown layers"):
        run_search(engine, digits, SearchSpec({"nope": (Precision.INT8,)}))
    with pytest.raises(ValueError, match="accuracy-drop limit must be 0 to 100 points"):
        Constraints(max_accuracy_drop=-1)
    with pytest.raises(ValueError, match="accuracy-drop limit must be 0 to 100 % of FP32 accuracy"):
        Constraints(max_accuracy_drop=500, relative=True)
    with pytest.raises(ValueError, match="size limit must be above 0 bytes"):
        Constraints(max_size_bytes=0)
    with pytest.raises(ValueError, match="latency limit must be above 0 ms"):
        Constraints(max_latency_ms=float("nan"))
    assert Constraints(max_accuracy_drop=0, max_size_bytes=1, max_latency_ms=1e-3).max_accuracy_drop == 0


def _search_in_child(home: str) -> None:
    engine = _engine(Path(home))
    bundle = engine.model("digits_cnn")
    run_search(
        engine, bundle, SearchSpec(default_candidates(engine, bundle, LOW), max_evaluations=10, seed=3)
    )


def test_a_killed_search_resumes_without_measuring_a_plan_twice(tmp_path: Path) -> None:
    spec_budget = 10
    child = multiprocessing.get_context("spawn").Process(target=_search_in_child, args=(str(tmp_path),))
    child.start()
    store = ResultStore(tmp_path / "results.sqlite")
    engine = _engine(tmp_path)
    bundle = engine.model("digits_cnn")
    spec = SearchSpec(default_candidates(engine, bundle, LOW), max_evaluations=spec_budget, seed=3)
    sid = search_id(bundle, spec, FAST)
    deadline = time.monotonic() + 240
    while len(store.search_trials(sid)) < 3 and time.monotonic() < deadline and child.is_alive():
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)  # type: ignore[arg-type]
    child.join()
    before = {t["result_key"]: t["result"]["created_at"] for t in store.search_trials(sid)}
    assert 3 <= len(before) < spec_budget, "the search must be killed midway"

    progress: list[SearchProgress] = []
    result = run_search(engine, bundle, spec, on_progress=progress.append)
    # It picked up where the killed run stopped: its count starts at the plans stored before.
    assert progress[0].measured >= len(before)
    assert any(p.message == f"resuming: {len(before)} plans measured before" for p in progress)
    keys = list(result.trials["result_key"])
    assert len(keys) == spec_budget and len(set(keys)) == spec_budget
    assert set(before) <= set(keys)
    # Nothing measured before the kill was measured again (its stored result is untouched) ...
    after = {k: store.get(k)["created_at"] for k in before}  # type: ignore[index]
    assert after == before
    # ... and this run measured at most the rest of the budget.
    assert result.new_evaluations <= spec_budget - len(before)
    assert np.isfinite(result.trials["accuracy"]).all()


def test_how_far_a_plan_is_outside_the_limits_is_said_in_each_limits_own_unit() -> None:
    fp32 = {"accuracy": 0.98, "size_bytes": 350_000.0, "latency_ms": 0.4}
    limits = Constraints(max_accuracy_drop=1, max_size_bytes=10_000, max_latency_ms=0.5)
    # 57.6 kB against a 10 kB limit is 47.6 kB over (it had said "off by 13.6%": of FP32's size).
    assert limits.overshoot(0.03, 57_600, 0.7, fp32) == (
        "2.00 points over the accuracy limit; 47.6 kB over the size limit; 0.2 ms over the latency limit"
    )
    assert limits.overshoot(0.01, 10_000, 0.5, fp32) == "meets the limits"  # at each limit exactly
    relative = Constraints(max_accuracy_drop=1, relative=True)  # 1% of 98%: 0.98 points
    assert relative.overshoot(0.0198, 1e9, 9.0, fp32) == "1.00 points over the accuracy limit"
