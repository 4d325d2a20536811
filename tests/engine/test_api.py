"""The engine end to end on a real sample model: store hits and misses, calibration reuse, accuracy."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pytest

from engine import evaluate, measure
from engine.api import Engine
from engine.datasets import load_sample, sample_names
from engine.evaluate import ModelCache
from engine.latency_compare import comparable_ms
from engine.measure import make_session
from engine.presets import preset_plan
from engine.store import ResultStore
from engine.types import CalibrationMethod, MeasureSettings, Plan, PlanError, Precision

FAST = MeasureSettings(batch_sizes=(1, 8), max_seconds=0.3, max_runs=60, bootstrap=200)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    home = tmp_path_factory.mktemp("home")
    return Engine(store=ResultStore(home / "results.sqlite"), home=home, settings=FAST)


@pytest.fixture(scope="module")
def digits(engine: Engine):  # type: ignore[no-untyped-def]
    return engine.model("digits_cnn")


def test_fp32_baseline_matches_the_card(engine: Engine, digits) -> None:  # type: ignore[no-untyped-def]
    record = engine.baseline(digits)
    m = record["metrics"]
    assert record["status"] == "ok"
    assert m["accuracy"] == pytest.approx(digits.card["fp32_metrics"]["accuracy"], abs=1e-6)
    assert m["accuracy_delta"] == 0.0 and m["sqnr_db"] is None  # identical to itself
    assert set(m["latency"]) == {"1", "8"}
    lat = m["latency"]["1"]
    assert lat["ci_low_ms"] <= lat["median_ms"] <= lat["ci_high_ms"] and lat["runs"] >= FAST.min_runs
    env = record["environment"]
    assert env["onnxruntime"] and env["cpu"] and env["threads"] == 1


def test_an_all_fp32_plan_runs_the_model_once_on_a_cold_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its outputs are the FP32 reference's: computed once, not a second time for the plan."""
    cold = Engine(store=ResultStore(tmp_path / "results.sqlite"), home=tmp_path, settings=FAST)
    digits = cold.model("digits_cnn")
    monkeypatch.setattr(evaluate, "_MEMO", evaluate._Memo())  # no reference kept from other tests
    runs = []
    real = measure.run_batched
    monkeypatch.setattr(measure, "run_batched", lambda *a, **k: runs.append(1) or real(*a, **k))
    record = cold.evaluate(digits, Plan(), settings=dataclasses.replace(FAST, latency=False))
    assert record["status"] == "ok", record["error"]
    assert len(runs) == 1
    assert record["metrics"]["accuracy"] == pytest.approx(digits.card["fp32_metrics"]["accuracy"], abs=1e-6)


def test_int8_is_smaller_and_close_with_a_ci(engine: Engine, digits) -> None:  # type: ignore[no-untyped-def]
    layers = engine.layers(digits)
    record = engine.evaluate(digits, preset_plan("int8", layers))
    m = record["metrics"]
    assert record["status"] == "ok", record["error"]
    assert set(m["realized"].values()) == {"int8"}
    assert m["size_bytes"] < 0.4 * m["fp32_size_bytes"]
    assert m["sqnr_db"] > 20 and m["agreement"] > 0.95
    assert m["accuracy_delta_ci_low"] <= m["accuracy_delta"] <= m["accuracy_delta_ci_high"]
    assert len(m["per_class_accuracy"]) == 10
    assert Path(record["artifact_path"]).is_file()


def test_plans_are_timed_against_fp32_on_one_scale(engine: Engine, digits) -> None:  # type: ignore[no-untyped-def]
    """Each plan's latency carries its ratio to the FP32 model timed alternately with it, and the
    FP32 median measured once for the model: the same scale for every plan, what plans compare by."""
    fp32 = engine.baseline(digits)["metrics"]["latency"]
    dynamic = engine.evaluate(digits, Plan(default=Precision.INT8_DYNAMIC))["metrics"]["latency"]
    for batch in ("1", "8"):
        a, b = fp32[batch], dynamic[batch]
        assert a["fp32_ms"] == b["fp32_ms"] > 0
        # The FP32 plan is the model every plan is timed against: its ratio is 1 by definition (timed
        # against itself it measured 0.97-1.04 here, noise that made "N× faster" disagree with the ratio).
        assert (a["vs_fp32"], a["vs_fp32_ci_low"], a["vs_fp32_ci_high"]) == (1.0, 1.0, 1.0), a
        assert comparable_ms(a) == a["fp32_ms"]
        assert b["vs_fp32_ci_low"] <= b["vs_fp32"] <= b["vs_fp32_ci_high"]
    # Dynamic INT8 Conv is ~4x slower than FP32 on this CPU (DESIGN.md): the ratio says so.
    assert dynamic["1"]["vs_fp32"] > 1.5, dynamic["1"]
    key = engine.job(digits, Plan(default=Precision.INT8_DYNAMIC)).key
    row = engine.store.to_frame().set_index("key").loc[key]
    assert row["latency_ms_b1"] == pytest.approx(dynamic["1"]["vs_fp32"] * dynamic["1"]["fp32_ms"])


def test_write_once_keeps_the_first_file(tmp_path: Path) -> None:
    """Two workers measuring a model's FP32 scale at once: both go on with the first one's."""
    path = tmp_path / "scale.json"
    assert evaluate.write_once(path, b"first") == b"first"
    assert evaluate.write_once(path, b"second") == b"first"
    assert [p.name for p in tmp_path.iterdir()] == ["scale.json"]  # no temporary files left


def test_write_once_where_the_filesystem_has_no_hard_links(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(*_args: object) -> None:
        raise PermissionError(1, "Operation not permitted")  # what os.link raises on such a filesystem

    monkeypatch.setattr(evaluate.os, "link", no_links)
    path = tmp_path / "scale.json"
    assert evaluate.write_once(path, b"first") == b"first"
    assert evaluate.write_once(path, b"second") == b"first"
    assert [p.name for p in tmp_path.iterdir()] == ["scale.json"]


def test_settings_stored_before_the_ratio_existed_keep_their_keys() -> None:
    """Results timed without FP32 alongside keep their keys (and are not mixed with new ones)."""
    old = {k: v for k, v in MeasureSettings().to_json().items() if k != "interleave_fp32"}
    assert MeasureSettings.from_json(old).interleave_fp32 is False
    assert MeasureSettings.from_json(old).to_json() == old
    assert MeasureSettings().hash != MeasureSettings.from_json(old).hash
    # Nothing is timed without latency, so sensitivity probes' keys do not change.
    assert "interleave_fp32" not in MeasureSettings(latency=False).to_json()


def test_same_evaluation_twice_is_a_store_hit(engine: Engine, digits) -> None:  # type: ignore[no-untyped-def]
    plan = Plan(default=Precision.FP16)
    first = engine.evaluate(digits, plan)
    n = engine.store.count()
    t = time.perf_counter()
    again = engine.evaluate(digits, plan)
    assert time.perf_counter() - t < 0.5
    assert again["key"] == first["key"] and again["created_at"] == first["created_at"]
    assert engine.store.count() == n
    # An equivalent plan spelled differently is the same evaluation.
    spelled_out = Plan(layers={x.name: Precision.FP16 for x in engine.layers(digits)})
    assert engine.job(digits, spelled_out).key == first["key"]


def test_other_settings_or_plan_is_a_miss(engine: Engine, digits) -> None:  # type: ignore[no-untyped-def]
    plan = Plan(default=Precision.FP16)
    key = engine.job(digits, plan).key
    assert engine.job(digits, plan, MeasureSettings(batch_sizes=(1,))).key != key
    assert engine.job(digits, Plan(default=Precision.INT8_DYNAMIC)).key != key
    assert engine.cached(engine.job(digits, Plan(default=Precision.W8A16))) is None


def test_calibration_method_names_only_plans_with_static_layers(engine: Engine, digits) -> None:  # type: ignore[no-untyped-def]
    entropy = dataclasses.replace(engine.settings, calibration=CalibrationMethod.ENTROPY)
    for weight_only in (Plan(), Plan(default=Precision.FP16), Plan(default=Precision.INT8_DYNAMIC)):
        job = engine.job(digits, weight_only, entropy)
        assert job.key == engine.job(digits, weight_only).key
        assert job.settings.calibration is CalibrationMethod.MINMAX
    for static in (Plan(default=Precision.INT8), Plan(default=Precision.W8A16)):
        job = engine.job(digits, static, entropy)
        assert job.key != engine.job(digits, static).key
        assert job.settings == entropy


def test_calibration_is_computed_once_per_method(engine: Engine, digits) -> None:  # type: ignore[no-untyped-def]
    cache = ModelCache(engine.cache_dir, digits.model_hash)
    first = cache.calibration(
        digits.model_bytes, digits.calibration, digits.data_hash, CalibrationMethod.MINMAX
    )
    stamp = first.stat().st_mtime_ns
    again = cache.calibration(
        digits.model_bytes, digits.calibration, digits.data_hash, CalibrationMethod.MINMAX
    )
    assert again == first and again.stat().st_mtime_ns == stamp
    entropy = cache.calibration(
        digits.model_bytes, digits.calibration, digits.data_hash, CalibrationMethod.ENTROPY
    )
    assert entropy != first and json.loads(entropy.read_text())


def test_invalid_plan_is_refused_before_any_work(engine: Engine, digits) -> None:  # type: ignore[no-untyped-def]
    n = engine.store.count(status=None)
    with pytest.raises(PlanError, match="unknown layer"):
        engine.evaluate(digits, Plan(layers={"/no/such/layer": Precision.INT8}))
    assert engine.store.count(status=None) == n


def test_a_failed_evaluation_is_stored_then_rerun(engine: Engine, digits, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    plan = Plan(default=Precision.INT8)
    settings = MeasureSettings(calibration=CalibrationMethod.PERCENTILE, batch_sizes=(1,), max_seconds=0.2)
    # Break the cached prepared model so the worker-side build fails, then repair it.
    cache = ModelCache(engine.cache_dir, digits.model_hash)
    prepared = cache.prepared(digits.model_bytes)
    good = prepared.read_bytes()
    prepared.write_bytes(b"not an onnx model")
    try:
        failed = engine.evaluate(digits, plan, settings=settings)
    finally:
        prepared.write_bytes(good)
    assert failed["status"] == "failed" and failed["error"]
    assert engine.cached(engine.job(digits, plan, settings)) is None
    ok = engine.evaluate(digits, plan, settings=settings)
    assert ok["status"] == "ok" and ok["key"] == failed["key"]
    assert engine.store.get(ok["key"])["status"] == "ok"


def test_results_load_as_a_frame(engine: Engine) -> None:
    frame = engine.store.to_frame(model_name="digits_cnn")
    assert len(frame) >= 3
    assert {"size_bytes", "latency_ms_b1", "accuracy", "accuracy_delta", "plan_summary"} <= set(frame.columns)
    assert frame["size_bytes"].notna().all()


@pytest.mark.parametrize("name", sample_names())
def test_sample_card_is_complete_and_matches_its_model(name: str) -> None:
    bundle = load_sample(name)
    card = bundle.card
    for field in ("task", "metrics", "inputs", "provenance", "seed", "fp32_metrics"):
        assert field in card, f"{name} card lacks {field}"
    # The card's FP32 accuracy is the committed model's on the committed eval split (a retrained
    # model.onnx without its card, or the reverse, fails here).
    session = make_session(bundle.model_bytes)
    logits = np.concatenate(
        [
            session.run(None, {k: v[i : i + 64] for k, v in bundle.eval_set.inputs.items()})[0]
            for i in range(0, len(bundle.eval_set.labels), 64)
        ]
    )
    accuracy = float((logits.argmax(-1) == bundle.eval_set.labels).mean())
    assert accuracy == pytest.approx(card["fp32_metrics"]["accuracy"], abs=1e-5)
    calib = next(iter(bundle.calibration.values()))
    evals = next(iter(bundle.eval_set.inputs.values()))
    assert not {row.tobytes() for row in calib} & {row.tobytes() for row in evals}, (
        "calibration overlaps eval"
    )


def test_a_bare_onnx_file_gets_fidelity_metrics_on_synthetic_inputs(engine: Engine, tmp_path: Path) -> None:
    from tests.models import tiny_cnn

    path = tmp_path / "mine.onnx"
    path.write_bytes(tiny_cnn()[0])
    bundle = engine.model(str(path))
    assert bundle.eval_set.synthetic and bundle.eval_set.labels is None
    record = engine.evaluate(bundle, Plan(default=Precision.INT8))
    m = record["metrics"]
    assert record["status"] == "ok", record["error"]
    assert m["labelled"] is False and "accuracy" not in m
    assert m["synthetic_data"] is True and m["sqnr_db"] > 20 and 0 <= m["agreement"] <= 1


def test_language_model_reports_perplexity_ratio_with_ci(engine: Engine) -> None:
    bundle = engine.model("char_transformer")
    record = engine.evaluate(bundle, Plan(default=Precision.INT4))
    m = record["metrics"]
    assert record["status"] == "ok", record["error"]
    assert m["perplexity"] >= 1 and m["fp32_perplexity"] >= 1
    assert m["perplexity_ratio"] == pytest.approx(m["perplexity"] / m["fp32_perplexity"], rel=1e-6)
    assert m["perplexity_ratio_ci_low"] <= m["perplexity_ratio"] <= m["perplexity_ratio_ci_high"]
    assert m["accuracy_delta_ci_low"] <= m["accuracy_delta"] <= m["accuracy_delta_ci_high"]


def test_a_plan_of_a_model_without_layers_is_summarised_in_words() -> None:
    from engine.types import plan_summary

    # A model with no Conv/MatMul/Gemm of constant weights printed "plan: " and nothing after it.
    assert plan_summary({}) == "no quantizable layers"
    assert plan_summary({"a": Precision.INT8, "b": Precision.INT8, "c": Precision.FP32}) == "2 INT8 · 1 FP32"
