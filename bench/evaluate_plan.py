"""How much a new plan costs on digits_resnet with Entropy calibration, measured side by side.

1. quantize_speedup: the engine's quantization of a new plan (ranges calibrated once and
   reused) against the naive path that recalibrates for every plan (same plan, same code).
2. overhead_vs_eval_only: the engine's whole per-plan evaluation (quantize + measure) against
   loading the finished quantized model and running the same accuracy and latency measurement.
3. plans_per_min: new plans evaluated per minute by the worker pool (2 workers) on this machine.

Run: .venv/bin/python bench/evaluate_plan.py [--plans 6]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.api import Engine  # noqa: E402
from engine.calibrate import calibrate  # noqa: E402
from engine.datasets import load_sample  # noqa: E402
from engine.evaluate import ModelCache, evaluate_task, measure_built_model, quiet_ort_logging  # noqa: E402
from engine.quantize import quantize_plan  # noqa: E402
from engine.types import CalibrationMethod, MeasureSettings, Plan, Precision  # noqa: E402

METHOD = CalibrationMethod.ENTROPY


def mixed_plans(layers: list, n: int, seed: int = 0) -> list[Plan]:
    """n distinct plans, each mixing several precisions (mostly INT8, as a real search would)."""
    rng = np.random.default_rng(seed)
    plans: list[Plan] = []
    while len(plans) < n:
        choice = {}
        for layer in layers:
            options = [
                p for p in layer.accepts if p is not Precision.INT8_DYNAMIC
            ]  # ConvInteger is 4x slower
            weights = np.array([4.0 if p is Precision.INT8 else 1.0 for p in options])
            choice[layer.name] = options[rng.choice(len(options), p=weights / weights.sum())]
        plan = Plan(layers=choice)
        if len(set(choice.values())) >= 2 and plan not in plans:
            plans.append(plan)
    return plans


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="digits_resnet")
    ap.add_argument("--plans", type=int, default=6)
    args = ap.parse_args()

    bundle = load_sample(args.model)
    settings = MeasureSettings(calibration=METHOD)
    home = Path(tempfile.mkdtemp(prefix="bench-evaluate-"))
    cache = ModelCache(home / "cache", bundle.model_hash)
    prepared_path = cache.prepared(bundle.model_bytes)
    prepared = onnx.load(str(prepared_path))
    layers = cache.layers(bundle.model_bytes)
    plans = mixed_plans(layers, args.plans)
    print(f"{args.model}: {len(layers)} layers, {len(plans)} mixed plans, {METHOD.value} calibration")

    t = time.perf_counter()
    ranges = cache.calibration(bundle.model_bytes, bundle.calibration, bundle.data_hash, METHOD)
    print(f"calibration once: {time.perf_counter() - t:.2f} s")

    # 1. quantization step, engine vs naive, interleaved plan by plan.
    engine_q, naive_q = [], []
    with quiet_ort_logging():
        for i, plan in enumerate(plans):
            t = time.perf_counter()
            quantize_plan(prepared, layers, plan, calibration_cache=ranges, method=METHOD)
            engine_q.append(time.perf_counter() - t)
            t = time.perf_counter()
            fresh = home / f"naive-ranges-{i}.json"
            calibrate(prepared_path, bundle.calibration, METHOD, fresh)
            quantize_plan(prepared, layers, plan, calibration_cache=fresh, method=METHOD)
            naive_q.append(time.perf_counter() - t)
            print(
                f"  plan {i}: quantize engine {engine_q[-1]:.3f} s, naive (recalibrating) {naive_q[-1]:.3f} s"
            )
    quantize_speedup = statistics.median(naive_q) / statistics.median(engine_q)

    # 2. whole evaluation vs evaluation of the finished model, interleaved.
    whole, eval_only = [], []
    for i, plan in enumerate(plans):
        t = time.perf_counter()
        out = evaluate_task(
            bundle.model_bytes, bundle.eval_set, bundle.calibration, bundle.data_hash,
            plan.to_json(), settings.to_json(), str(home / "cache"), len(bundle.card["classes"]),
        )  # fmt: skip
        whole.append(time.perf_counter() - t)
        t = time.perf_counter()
        measure_built_model(
            out["model_bytes"],
            bundle.model_bytes,
            bundle.eval_set,
            settings,
            cache,
            len(bundle.card["classes"]),
        )
        eval_only.append(time.perf_counter() - t)
        print(f"  plan {i}: whole evaluation {whole[-1]:.2f} s, eval-only {eval_only[-1]:.2f} s")
    overhead = statistics.median(whole) / statistics.median(eval_only)

    # 3. throughput of the real path: a 2-worker pool evaluating new plans (new seed: none cached).
    from engine.jobs import WorkerPool

    with WorkerPool.connect(workers=2) as pool:
        engine = Engine(pool=pool, home=home / "pool", settings=settings)
        engine.layers(bundle)
        # Warm the workers' caches: prepared model, reference outputs and the calibration (an FP32
        # plan would not calibrate, leaving every worker to calibrate inside the timed part).
        engine.evaluate(bundle, Plan(default=Precision.INT8), source="bench")
        fresh_plans = mixed_plans(layers, args.plans, seed=1)
        t = time.perf_counter()
        records = engine.evaluate_many(bundle, fresh_plans, source="bench")
        elapsed = time.perf_counter() - t
    ok = sum(r["status"] == "ok" for r in records)
    plans_per_min = 60 * ok / elapsed
    print(f"pool: {ok}/{len(fresh_plans)} plans ok in {elapsed:.1f} s")
    for r in records:
        if r["status"] != "ok":
            print(f"  {r['plan_summary']}: {r['status']}: {r['error']}")

    print(
        f"quantize: engine median {statistics.median(engine_q):.3f} s"
        f" vs naive {statistics.median(naive_q):.3f} s"
        f" -> {quantize_speedup:.1f}x (target >= 5x)"
    )
    print(
        f"evaluation: whole median {statistics.median(whole):.2f} s"
        f" vs eval-only {statistics.median(eval_only):.2f} s"
        f" -> {overhead:.2f}x (target <= 1.2x)"
    )
    print(f"plans per minute on this {__import__('os').cpu_count()}-core machine: {plans_per_min:.1f}")
    print(
        f"RESULT quantize_speedup={quantize_speedup:.2f} overhead_vs_eval_only={overhead:.3f} "
        f"plans_per_min={plans_per_min:.1f}"
    )


if __name__ == "__main__":
    main()
