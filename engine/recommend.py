"""Pick the measured plan that best meets a goal, and say what it buys and costs in plain words.

Only measured results are considered: the ones the store holds for the model and data of its
latest FP32 baseline, with accuracy, size and batch-1 latency (sensitivity probes measure no
latency, so they are not candidates). Every figure in the statement comes from those
measurements, with its interval; the caveats name what the figures do not cover.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from engine import pareto
from engine.charts import is_baseline, precision_mix
from engine.goal import Goal
from engine.latency_compare import comparable_latency, is_reference, ratio_to_fp32
from engine.search_spec import EXACT_LIMIT
from engine.search_trials import objective_point

# Ties on the objective are broken by the other two, in this order.
_ORDER = {
    "size": ["size_bytes", "accuracy_drop", "latency_ms"],
    "latency": ["latency_ms", "accuracy_drop", "size_bytes"],
    "accuracy": ["accuracy_drop", "size_bytes", "latency_ms"],
}
SMALL_EVAL_SET = 1000


@dataclass(frozen=True)
class Recommendation:
    """The chosen plan (None when no measured plan meets the goal) and the words around it."""

    goal: Goal
    model_name: str
    chosen: dict[str, Any] | None
    baseline: dict[str, Any]
    candidates: pd.DataFrame  # every plan considered, with meets/excess/on_front/chosen columns
    headline: str
    statement: str
    caveats: tuple[str, ...]

    @property
    def chosen_key(self) -> str | None:
        return str(self.chosen["key"]) if self.chosen else None


CALIBRATED = frozenset({"int8", "w8a16"})  # plans whose result depends on the calibration method


def _settings(metrics: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return (metrics or {}).get("settings") or {}


def _calibration(plan: Mapping[str, Any] | None, metrics: Mapping[str, Any] | None) -> str | None:
    return _settings(metrics).get("calibration") if CALIBRATED.intersection(precision_mix(plan)) else None


def _latency_interval(metrics: Mapping[str, Any]) -> tuple[float, float]:
    """A result's batch-1 latency interval (low, high) in ms; NaN where it has none, and for the FP32
    plan itself: it is the scale the others are timed against, so its "interval" has no width and
    would read as a certainty it does not have (the report says what it is instead)."""
    try:
        if is_reference(metrics["latency"]["1"]):
            return float("nan"), float("nan")
        _, low, high = _latency_ci(metrics)
    except (KeyError, TypeError, ValueError):
        return float("nan"), float("nan")
    return low, high


def candidate_frame(frame: pd.DataFrame, baseline: Mapping[str, Any]) -> pd.DataFrame:
    """The results a recommendation may choose from: same model and data as the baseline, latency
    timed with the same number of threads, measured accuracy, size and batch-1 latency, status ok."""
    threads = _settings(baseline["metrics"]).get("threads")
    ok = frame[
        (frame["status"] == "ok")
        & (frame["model_hash"] == baseline["model_hash"])
        & (frame["data_hash"] == baseline["data_hash"])
        # A plan timed with another thread count is not comparable with this baseline's latency.
        & (frame["metrics"].map(lambda m: _settings(m).get("threads")) == threads)
    ]
    ok = ok[np.isfinite(ok[["accuracy", "size_bytes", "latency_ms_b1"]].astype(float)).all(axis=1)]
    intervals = [_latency_interval(m) for m in ok["metrics"]]
    out = pd.DataFrame(
        {
            "key": ok["key"],
            "plan_summary": ok["plan_summary"],
            "accuracy": ok["accuracy"].astype(float),
            "accuracy_drop": float(baseline["metrics"]["accuracy"]) - ok["accuracy"].astype(float),
            "ci_low": ok["accuracy_delta_ci_low"].astype(float),
            "ci_high": ok["accuracy_delta_ci_high"].astype(float),
            "size_bytes": ok["size_bytes"].astype(float),
            "latency_ms": ok["latency_ms_b1"].astype(float),
            # The interval on the scale plans are compared by (engine.latency_compare).
            "latency_low_ms": [low for low, _ in intervals],
            "latency_high_ms": [high for _, high in intervals],
            "calibration": [_calibration(p, m) for p, m in zip(ok["plan"], ok["metrics"], strict=True)],
            "source": ok["source"],
            "plan_hash": ok["plan_hash"],
            "plan": ok["plan"],
        }
    )
    # One row per plan and calibration (which only static plans depend on): a plan measured again
    # under other settings (a search measures batch 1 only) keeps its latest measurement.
    out = out.drop_duplicates(subset=["plan_hash", "calibration"], keep="last").reset_index(drop=True)
    if len(out):
        out["on_front"] = pareto.non_dominated(
            out[["accuracy", "size_bytes", "latency_ms"]].to_numpy(), maximize=[True, False, False]
        )
    else:
        out["on_front"] = pd.Series(dtype=bool)
    return out


def _fp32_point(baseline: Mapping[str, Any]) -> dict[str, float]:
    point = objective_point(
        dict(baseline)
    )  # the search's scoring of a result: accuracy, size, batch-1 latency
    if point is None:
        raise ValueError("the FP32 baseline has no accuracy, size and batch-1 latency to compare with")
    return point


def choose(candidates: pd.DataFrame, goal: Goal, baseline: Mapping[str, Any]) -> pd.DataFrame:
    """candidates with `excess` (0 = meets every limit), `meets` and `chosen` columns added."""
    fp32 = _fp32_point(baseline)
    out = candidates.copy()
    out["excess"] = [
        goal.constraints.excess(r.accuracy_drop, r.size_bytes, r.latency_ms, fp32) for r in out.itertuples()
    ]
    out["meets"] = out["excess"] <= EXACT_LIMIT
    out["chosen"] = False
    feasible = out[out["meets"]]
    if len(feasible):
        out.loc[feasible.sort_values(_ORDER[goal.objective]).index[0], "chosen"] = True
    return out


def _points(x: float) -> str:
    return f"{100 * x:+.1f}".replace("-", "−")


def _latency_ci(metrics: Mapping[str, Any]) -> tuple[float, float, float]:
    """A result's batch-1 latency (value, 95% CI low, high) in ms, as plans are compared by it."""
    return comparable_latency(metrics["latency"]["1"])


def limit_met_not_surely(ci_low: float | None, drop_limit: float | None) -> str | None:
    """For a plan chosen by its measured change, which meets the accuracy-drop limit (a fraction):
    what to say when the change's 95% interval reaches past it (None when it does not)."""
    if drop_limit is None or ci_low is None or not np.isfinite(ci_low) or -ci_low <= drop_limit + EXACT_LIMIT:
        return None
    return (
        f"The limit is met by the measured change, not surely: its 95% interval reaches {_points(ci_low)} "
        f"points, past the limit of {_points(-drop_limit)} points. A larger evaluation set, or a plan "
        "whose interval stays within the limit, would make it sure."
    )


def speed_words(chosen: Mapping[str, Any], baseline: Mapping[str, Any]) -> str:
    """ "1.7× faster", "1.3× slower" or "no clear latency difference", from the median intervals."""
    new, old = _latency_ci(chosen["metrics"])[0], _latency_ci(baseline["metrics"])[0]
    slower, clear = ratio_to_fp32(chosen["metrics"]["latency"]["1"], baseline["metrics"]["latency"]["1"])
    if not clear:
        return f"no clear latency difference ({new:.3g} ms vs {old:.3g} ms at batch 1)"
    ratio = 1 / slower
    factor = ratio if ratio >= 1 else 1 / ratio
    shown = f"{factor:.2f}" if factor < 1.1 else f"{factor:.1f}"  # never "1.0× faster"
    return f"{shown}× faster" if ratio >= 1 else f"{shown}× slower"


def size_words(chosen: Mapping[str, Any], baseline: Mapping[str, Any]) -> str:
    new, old = float(chosen["metrics"]["size_bytes"]), float(baseline["metrics"]["size_bytes"])
    change = 1 - new / old
    if abs(change) < 0.005:
        return "the same size"
    return f"{100 * change:.0f}% smaller" if change > 0 else f"{100 * -change:.0f}% larger"


def _units(metrics: Mapping[str, Any]) -> str:
    # A language model is scored per character but resampled per sequence, the eval set's unit.
    return "sequences" if "perplexity" in metrics else "examples"


def accuracy_words(chosen: Mapping[str, Any]) -> str:
    """The accuracy change with its interval (and, for a language model, the perplexity ratio)."""
    m = chosen["metrics"]
    n = int(m.get("eval_size") or 0)
    words = (
        f"{_points(m['accuracy_delta'])} points accuracy (95% CI {_points(m['accuracy_delta_ci_low'])} "
        f"to {_points(m['accuracy_delta_ci_high'])})"
    )
    if m.get("perplexity_ratio") is not None:
        words += (
            f", perplexity ×{m['perplexity_ratio']:.3f} (95% CI ×{m['perplexity_ratio_ci_low']:.3f} to "
            f"×{m['perplexity_ratio_ci_high']:.3f})"
        )
    return f"{words} on {n:,} held-out {_units(m)}"


def statement(chosen: Mapping[str, Any], baseline: Mapping[str, Any]) -> str:
    """e.g. "74% smaller, 1.7× faster on this CPU, −0.3 points accuracy (95% CI −0.8 to +0.2) on 360
    held-out examples"."""
    speed = speed_words(chosen, baseline)
    on_cpu = "" if speed.startswith("no clear") else " on this CPU"
    return f"{size_words(chosen, baseline)}, {speed}{on_cpu}, {accuracy_words(chosen)}"


def caveats(
    chosen: Mapping[str, Any] | None,
    baseline: Mapping[str, Any],
    n_candidates: int,
    drop_limit: float | None = None,
    searched: bool = False,
) -> list[str]:
    """What the figures do not cover, in the order a reader should weigh it.

    drop_limit: the goal's accuracy-drop limit (fraction), if it has one; searched: whether a
    mixed-precision search has been run on the model."""
    env = baseline.get("environment") or {}
    threads = env.get("threads", "?")
    out = [
        f"Latency was measured on this machine's CPU ({env.get('cpu', 'unknown CPU')}, {threads} "
        f"thread{'s' if threads != 1 else ''}, ONNX Runtime {env.get('onnxruntime', '?')}); other "
        "hardware, thread counts or runtimes will give other numbers."
    ]
    if chosen is None:
        return out
    m = chosen["metrics"]
    used = set(precision_mix(chosen.get("plan")))
    if "fp16" in used:
        # ONNX Runtime's x86 CPU kernels have no FP16 Conv/MatMul: the converter's casts make them FP32.
        out.append(
            "FP16 layers run as FP32 behind casts on this CPU: they halve those layers' weights but give "
            "no speed-up here."
        )
    lo, hi = float(m["accuracy_delta_ci_low"]), float(m["accuracy_delta_ci_high"])
    # FP32 itself (nothing else meets the goal) has no change from FP32: an interval "0.00 to 0.00"
    # says nothing of noise, so its caveats are left out.
    fp32_chosen = is_baseline(chosen.get("plan"))
    if not fp32_chosen and lo <= 0 <= hi:
        out.append(
            f"The accuracy change is within noise: its 95% interval ({_points(lo)} to {_points(hi)} "
            "points) includes zero."
        )
    elif not fp32_chosen and hi < 0:
        out.append(f"The accuracy loss is real, not noise: its 95% interval ends at {_points(hi)} points.")
    unsure = limit_met_not_surely(lo, drop_limit)
    if unsure:
        out.append(unsure)
    n = int(m.get("eval_size") or 0)
    if 0 < n < SMALL_EVAL_SET and _units(m) == "examples":
        out.append(
            f"The evaluation set is small ({n:,} examples): one example is {100 / n:.2f} points, so "
            "small differences between plans are not meaningful."
        )
    elif 0 < n < SMALL_EVAL_SET:
        width = "" if fp32_chosen else f"the accuracy interval is {100 * (hi - lo):.2f} points wide, so "
        out.append(
            f"The evaluation set is small ({n:,} sequences): {width}differences between plans smaller than "
            "their accuracy intervals are not meaningful."
        )
    speed = speed_words(chosen, baseline)
    if speed.endswith("slower"):
        out.append(f"This plan is {speed} than FP32 on this CPU: it saves size, not time.")
    elif speed.startswith("no clear"):
        out.append("Its latency is not clearly different from FP32's on this CPU.")
    out.append(
        "Speed-ups compare with the FP32 run measured at "
        f"{str(baseline.get('created_at', '?'))[:16].replace('T', ' ')} UTC; this machine is shared, and "
        "runs vary by up to ±20%."
    )
    if used & {"int8", "w8a16"}:
        calib = (m.get("settings") or {}).get("calibration", "?")
        out.append(
            f"Static activation ranges (INT8, W8A16) were calibrated ({calib}) on the model's calibration "
            "split; inputs unlike it can lose more accuracy."
        )
    few = f"Only {n_candidates} plan{' was' if n_candidates == 1 else 's were'} measured for this model"
    if n_candidates < 10 and not searched:
        out.append(f"{few}; a search (Sensitivity & search) may find better ones.")
    elif n_candidates < 10:
        out.append(f"{few}, a search's among them; a search with a larger budget may find better ones.")
    return out


def recommend(
    frame: pd.DataFrame,
    goal: Goal,
    baseline: dict[str, Any],
    model_name: str,
    store_get: Any,
    searched: bool = False,
) -> Recommendation:
    """The best measured plan for the goal among frame's results (store.to_frame rows), in words.

    store_get(key) returns a full stored record (the frame's rows lack the environment); searched:
    whether a mixed-precision search has been run on the model (the caveats say so)."""
    considered = choose(candidate_frame(frame, baseline), goal, baseline)
    picked = considered[considered["chosen"]]
    what = goal.describe()
    if len(picked):
        chosen = store_get(str(picked.iloc[0]["key"]))
        headline = f"Recommended for {what}: {chosen['plan_summary']}"
        words = statement(chosen, baseline)
    else:
        chosen = None
        closest = considered.sort_values(["excess", *_ORDER[goal.objective]]).head(3)
        fp32, limits = _fp32_point(baseline), goal.constraints
        names = "; ".join(
            f"{r.plan_summary} ({limits.overshoot(r.accuracy_drop, r.size_bytes, r.latency_ms, fp32)})"
            for r in closest.itertuples()
        )
        headline = f"No measured plan of {model_name} meets the goal: {what}"
        words = (
            f"None of the {len(considered)} measured plans meets it. Closest: {names}."
            if len(considered)
            else "No plan of this model has been measured yet."
        )
    return Recommendation(
        goal=goal,
        model_name=model_name,
        chosen=chosen,
        baseline=baseline,
        candidates=considered,
        headline=headline,
        statement=words,
        caveats=tuple(
            caveats(
                chosen,
                baseline,
                len(considered),
                drop_limit=goal.constraints.drop_limit(_fp32_point(baseline)["accuracy"]),
                searched=searched,
            )
        ),
    )
