"""A layer's probes run from the FP32 model's tensors at that layer: same outputs as the whole model.

Real models (digits_resnet for its skip connections, digits_cnn for the engine path), real
quantizers and real ONNX Runtime sessions; the shortcut is only allowed to change float rounding.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

import engine.api
import engine.prefix
from engine import measure
from engine.api import Engine
from engine.evaluate import ModelCache
from engine.prefix import FP32Model, run_variants
from engine.quantize import quantize_plan
from engine.sensitivity import sensitivity_settings
from engine.store import ResultStore
from engine.types import MeasureSettings, Plan, Precision

SETTINGS = sensitivity_settings(MeasureSettings(bootstrap=200))
# Reads its own input and the first block's output (the shortcut): a cut of two tensors.
RESIDUAL_LAYER = "/layer2/layer2.0/conv1/Conv"


@pytest.fixture(scope="module")
def resnet(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    home = tmp_path_factory.mktemp("prefix")
    eng = Engine(store=ResultStore(home / "results.sqlite"), home=home, settings=SETTINGS)
    bundle = eng.model("digits_resnet")
    layers = eng.layers(bundle)
    cache = ModelCache(eng.cache_dir, bundle.model_hash)
    prepared = onnx.load(str(cache.prepared(bundle.model_bytes)))
    ranges = cache.calibration(bundle.model_bytes, bundle.calibration, bundle.data_hash, SETTINGS.calibration)
    inputs = {k: v[:96] for k, v in bundle.eval_set.inputs.items()}  # enough to compare, quick to run
    return {"layers": layers, "prepared": prepared, "ranges": ranges, "inputs": inputs}


def _build(resnet: dict[str, Any], plan: Plan) -> bytes:
    built = quantize_plan(
        resnet["prepared"],
        resnet["layers"],
        plan,
        calibration_cache=resnet["ranges"],
        method=SETTINGS.calibration,
        work_dir=None,
    )
    return built.model_bytes


def test_each_probe_of_a_layer_starts_at_that_layer_and_matches_its_whole_model(resnet) -> None:  # type: ignore[no-untyped-def]
    layer = next(x for x in resnet["layers"] if x.name == RESIDUAL_LAYER)
    precisions = [p for p in layer.accepts if p is not Precision.FP32]
    assert len(precisions) == 5  # FP16, INT8, dynamic INT8, INT4, W8A16
    fp32 = FP32Model(resnet["prepared"])
    variants = [_build(resnet, Plan(layers={layer.name: p})) for p in precisions]
    fp32_nodes = {n.name for n in resnet["prepared"].graph.node}
    for precision, data in zip(precisions, variants, strict=True):
        cut = fp32.cut(onnx.load_from_string(data))
        assert cut is not None, precision
        # It starts inside the network (the float16 converter renames tensors; they are mapped).
        assert sorted(cut.reads.values()) == [
            "/layer1/layer1.1/relu2/Relu_output_0",
            "/layer2/layer2.0/shortcut/shortcut.0/Conv_output_0",
        ], precision
        # About a third of the FP32 model's nodes come before that layer: not run again.
        rerun = {n.name for n in cut.changed} & fp32_nodes
        assert len(fp32_nodes - rerun) >= 0.3 * len(fp32_nodes), precision

    shared = run_variants(fp32, variants, resnet["inputs"], threads=1)
    for precision, data, out in zip(precisions, variants, shared, strict=True):
        whole = measure.run_batched(measure.make_session(data, 1), resnet["inputs"])
        assert out.shape == whole.shape
        # Float rounding only (ONNX Runtime fuses differently across the cut): far above any
        # quantization error, and the same predictions.
        assert measure.sqnr_db(whole, out) > 100, precision
        np.testing.assert_array_equal(out.argmax(axis=1), whole.argmax(axis=1))


def test_a_model_with_nothing_changed_runs_whole(resnet) -> None:  # type: ignore[no-untyped-def]
    fp32 = FP32Model(resnet["prepared"])
    unchanged = _build(resnet, Plan(default=Precision.FP32))
    assert fp32.cut(onnx.load_from_string(unchanged)) is None
    (out,) = run_variants(fp32, [unchanged], resnet["inputs"], threads=1)
    whole = measure.run_batched(measure.make_session(unchanged, 1), resnet["inputs"])
    np.testing.assert_array_equal(out, whole)


def _probe_plans(eng: Engine, bundle, indices: tuple[int, ...] = (2,)) -> list[Plan]:  # type: ignore[no-untyped-def]
    layers = [eng.layers(bundle)[i] for i in indices]
    return [Plan(layers={x.name: p}) for x in layers for p in x.accepts if p is not Precision.FP32]


def test_probes_measured_together_store_what_each_measured_alone_stores(tmp_path: Path) -> None:
    together = Engine(store=ResultStore(tmp_path / "a.sqlite"), home=tmp_path / "a", settings=SETTINGS)
    alone = Engine(store=ResultStore(tmp_path / "b.sqlite"), home=tmp_path / "b", settings=SETTINGS)
    bundle = together.model("digits_cnn")
    # Two neighbouring layers' probes, as run_sensitivity groups them: the FP32 part runs once.
    plans = _probe_plans(together, bundle, (2, 3))
    assert len(plans) == 10
    grouped = together.evaluate_many(bundle, plans, together=[list(range(len(plans)))])
    single = alone.evaluate_many(alone.model("digits_cnn"), plans)
    for g, s in zip(grouped, single, strict=True):
        assert g["status"] == s["status"] == "ok", (g["error"], s["error"])
        assert g["key"] == s["key"]  # the same evaluation, whichever way it was run
        gm, sm = g["metrics"], s["metrics"]
        assert gm["accuracy"] == sm["accuracy"] and gm["per_sample_correct"] == sm["per_sample_correct"]
        assert gm["size_bytes"] == sm["size_bytes"] and gm["realized"] == sm["realized"]
        assert gm["sqnr_db"] == pytest.approx(sm["sqnr_db"], abs=0.01)
        assert gm["accuracy_delta_ci_low"] == sm["accuracy_delta_ci_low"]


def test_a_group_whose_task_fails_is_measured_plan_by_plan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: Any) -> None:
        raise MemoryError("the group did not fit")

    monkeypatch.setattr(engine.api, "evaluate_together_task", broken)
    eng = Engine(store=ResultStore(tmp_path / "r.sqlite"), home=tmp_path, settings=SETTINGS)
    bundle = eng.model("digits_cnn")
    plans = _probe_plans(eng, bundle)
    landed: list[int] = []
    records = eng.evaluate_many(
        bundle, plans, together=[list(range(len(plans)))], on_done=lambda i, _: landed.append(i)
    )
    assert [r["status"] for r in records] == ["ok"] * len(plans)
    assert sorted(landed) == list(range(len(plans)))


def test_shared_tensors_too_large_to_hold_mean_each_variant_runs_whole(  # type: ignore[no-untyped-def]
    resnet, monkeypatch: pytest.MonkeyPatch
) -> None:
    fp32 = FP32Model(resnet["prepared"])
    variant = _build(resnet, Plan(layers={RESIDUAL_LAYER: Precision.INT8}))
    cut = fp32.cut(onnx.load_from_string(variant))
    assert cut is not None
    names = sorted(cut.reads.values())
    rows = len(resnet["inputs"]["input"])
    held = measure.run_batched_all(
        measure.make_session(fp32.prefix(names).SerializeToString(), 1), resnet["inputs"]
    )
    assert fp32.held_bytes(names, rows) == sum(a.nbytes for a in held)

    monkeypatch.setattr(engine.prefix, "MAX_HELD_BYTES", fp32.held_bytes(names, rows) - 1)
    (out,) = run_variants(fp32, [variant], resnet["inputs"], threads=1)
    whole = measure.run_batched(measure.make_session(variant, 1), resnet["inputs"])
    np.testing.assert_array_equal(out, whole)


def test_a_report_that_raises_drops_none_of_the_groups_measured_plans(tmp_path: Path) -> None:
    """Review: a Stop pressed on the page raises from the first plan's report; the group's other plans,
    measured in the same task, were never stored (each was stored just before its own report)."""

    class Stopped(Exception):
        pass

    def stop(_: int, __: dict[str, Any]) -> None:
        raise Stopped

    eng = Engine(store=ResultStore(tmp_path / "r.sqlite"), home=tmp_path, settings=SETTINGS)
    bundle = eng.model("digits_cnn")
    plans = _probe_plans(eng, bundle, (2, 3))
    with pytest.raises(Stopped):
        eng.evaluate_many(bundle, plans, together=[list(range(len(plans)))], on_done=stop)
    stored = [eng.cached(eng.job(bundle, p)) for p in plans]
    assert all(r is not None and r["status"] == "ok" for r in stored), [r is not None for r in stored]
