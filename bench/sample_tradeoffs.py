"""Do the sample models show a trade-off? Measured with the engine, side by side in one run.

* INT8 speed-up at batch 1 on digits_resnet: FP32 and all-INT8 timed in alternating rounds.
* For each sample: the accuracy lost by every uniform low-precision plan (static INT8 once per
  calibration method: MinMax, the default, Entropy and Percentile; dynamic INT8; weight-only
  INT4), and how much of that loss a "keep k layers FP32" plan recovers (see `recovery`: three
  orders of layers, and only plans that keep at least half the uniform plan's size saving).
  Accuracy is the card's metric on the fixed evaluation split; deltas carry their bootstrap
  95% CI.

Run: .venv/bin/python bench/sample_tradeoffs.py [SAMPLE ...]   (default: every sample)
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine import measure  # noqa: E402
from engine.api import Engine  # noqa: E402
from engine.datasets import SAMPLES_DIR, EvalSet, ModelBundle, sample_names  # noqa: E402
from engine.store import ResultStore  # noqa: E402
from engine.types import CalibrationMethod, MeasureSettings, Plan, Precision  # noqa: E402

ACCURACY_ONLY = MeasureSettings(batch_sizes=(1,), min_runs=5, max_runs=5, max_seconds=0.2, bootstrap=1000)
# Every uniform 8- and 4-bit plan a user can pick: static INT8 once per calibration method;
# dynamic INT8 and weight-only INT4 have no calibration, so they are measured once.
UNIFORM_PLANS = (
    *((Precision.INT8, method) for method in CalibrationMethod),
    (Precision.INT8_DYNAMIC, CalibrationMethod.MINMAX),
    (Precision.INT4, CalibrationMethod.MINMAX),
)


def interleaved_speedup(engine: Engine, bundle: ModelBundle, rounds: int = 5) -> tuple[float, list[float]]:
    """Median over rounds of INT8's speed-up over FP32 at batch 1, one thread, each round's from
    runs of the two paired and alternated (engine/latency_compare.py)."""
    base = engine.evaluate(bundle, Plan(), settings=ACCURACY_ONLY)
    int8 = engine.evaluate(bundle, Plan(default=Precision.INT8), settings=ACCURACY_ONLY)
    s_fp32 = measure.make_session(Path(base["artifact_path"]).read_bytes(), 1)
    s_int8 = measure.make_session(Path(int8["artifact_path"]).read_bytes(), 1)
    feeds = measure.make_feeds(bundle.eval_set.inputs, 1)
    ratios = []
    for _ in range(rounds):
        paired = measure.measure_latency(s_int8, feeds, threads=1, min_runs=50, max_runs=200, fp32=s_fp32)
        ratios.append(1 / (paired.vs_fp32 or float("nan")))
    return statistics.median(ratios), ratios


def accuracy(record: dict) -> float:
    assert record["status"] == "ok", record["error"]
    return float(record["metrics"]["accuracy"])


def calibration_split(bundle: ModelBundle) -> ModelBundle:
    """The model scored on its calibration split instead of its evaluation split (both labelled)."""
    labels = np.load(SAMPLES_DIR / bundle.name / "calib.npz", allow_pickle=False)["labels"]
    scored_on = EvalSet(bundle.calibration, labels, bundle.eval_set.task)
    return dataclasses.replace(bundle, name=f"{bundle.name} (calibration split)", eval_set=scored_on)


def recovery(engine: Engine, bundle: ModelBundle, uniform: Precision, settings: MeasureSettings) -> dict:
    """Loss of the uniform plan, and the smallest mixed plan found that recovers half of it.

    Mixed plans keep some layers FP32 and the rest at the uniform precision. Three families, k
    layers kept for k = 1, 2, ...: the k most helpful layers (ranked one at a time on the
    calibration split: the uniform plan with just that layer kept FP32), the first k layers, and
    the last k layers. A loss spread over several layers (each alone harmless) is invisible to
    the ranking, hence the two others.
    A mixed plan counts only while it keeps at least half of the size the uniform plan saves
    against FP32 (measured), so "keep almost everything FP32" never counts as recovery.
    """
    layers = [x for x in engine.layers(bundle) if uniform in x.accepts]
    if not layers:
        return {}
    base_record = engine.baseline(bundle, settings)
    base = accuracy(base_record)
    uni = engine.evaluate(bundle, Plan(default=uniform), settings=settings)
    loss = base - accuracy(uni)
    base_size, uni_size = (r["metrics"]["size_bytes"] for r in (base_record, uni))
    best, best_how = uni, "none"
    if loss > 0:
        # Ranked on the calibration split, so the plan is judged on evaluation data it was not
        # picked with (picking the best of N layers on the evaluation split flatters the pick).
        singles = engine.evaluate_many(
            calibration_split(bundle),
            [Plan(default=uniform, layers={x.name: Precision.FP32}) for x in layers],
            settings=settings,
        )
        ranked = [x for x, _ in sorted(zip(layers, singles, strict=True), key=lambda lr: -accuracy(lr[1]))]
        families = {"most helpful": ranked, "first": layers, "last": layers[::-1]}
        tried: list[tuple[dict, str]] = []
        for family, order in families.items():
            for k in range(1, len(order)):
                kept = {x.name: Precision.FP32 for x in order[:k]}
                mixed = engine.evaluate(bundle, Plan(default=uniform, layers=kept), settings=settings)
                if base_size - mixed["metrics"]["size_bytes"] < (base_size - uni_size) / 2:
                    break  # keeps less than half the saving; a larger k only keeps less
                tried.append((mixed, f"{family} {k}"))
                if accuracy(mixed) - accuracy(uni) >= loss / 2:
                    break  # the smallest plan of this family that recovers half
        halves = [t for t in tried if accuracy(t[0]) - accuracy(uni) >= loss / 2]
        if halves:
            best, best_how = min(halves, key=lambda t: t[0]["metrics"]["size_bytes"])
        elif tried:
            best, best_how = max(tried, key=lambda t: accuracy(t[0]))
    best_acc = accuracy(best)
    m = uni["metrics"]
    return {
        "fp32": base,
        "uniform": accuracy(uni),
        "loss_pt": 100 * loss,
        "ci": (100 * m["accuracy_delta_ci_low"], 100 * m["accuracy_delta_ci_high"]),
        "mixed": best_acc,
        "kept_fp32": best_how,
        "of_layers": len(layers),
        "sizes_kb": [r["metrics"]["size_bytes"] / 1024 for r in (base_record, uni, best)],
        "recovered": (best_acc - accuracy(uni)) / loss if loss > 0 else float("nan"),
    }


def main() -> None:
    home = Path(tempfile.mkdtemp(prefix="bench-tradeoffs-"))
    engine = Engine(store=ResultStore(home / "results.sqlite"), home=home, settings=ACCURACY_ONLY)
    speedup, ratios = interleaved_speedup(engine, engine.model("digits_resnet"))
    rounds = " ".join(f"{r:.2f}" for r in ratios)
    print(f"digits_resnet INT8 vs FP32 at batch 1: {speedup:.2f}x (rounds: {rounds})")
    showing = 0
    for name in sys.argv[1:] or sample_names():
        bundle = engine.model(name)
        sample_shows = False
        for uniform, calibration in UNIFORM_PLANS:
            settings = dataclasses.replace(ACCURACY_ONLY, calibration=calibration)
            r = recovery(engine, bundle, uniform, settings)
            if not r:
                continue
            shows = r["loss_pt"] >= 1.0 and r["recovered"] >= 0.5
            sample_shows = sample_shows or shows
            how = f"all-{uniform.value}" + (f" ({calibration.value})" if uniform.calibrated else "")
            print(
                f"{name:17s} {how:20s}: {100 * r['fp32']:.2f}% -> {100 * r['uniform']:.2f}% "
                f"(loss {r['loss_pt']:.2f} pt, CI of delta {r['ci'][0]:+.2f}..{r['ci'][1]:+.2f}); "
                f"FP32 kept for {r['kept_fp32']} of {r['of_layers']} layers: {100 * r['mixed']:.2f}% "
                + (
                    f"(recovers {100 * r['recovered']:.0f}% of the loss)"
                    if r["loss_pt"] > 0
                    else "(no loss to recover)"
                )
                + " [size KB fp32/uniform/mixed: "
                + "/".join(f"{kb:.0f}" for kb in r["sizes_kb"])
                + "]"
                + ("  <- trade-off" if shows else "")
            )
        showing += sample_shows
    print(f"RESULT int8_speedup_digits_resnet={speedup:.2f} samples_with_tradeoff={showing}")


if __name__ == "__main__":
    main()
