"""A search's measured plans as a table, and the plan it recommends from them.

Shared by the search itself (engine/search.py), the pages that show a search while it runs, and
the report: each reads the same trials (a measured result beside what the predictor said of it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from engine import pareto
from engine.latency_compare import comparable_ms
from engine.predictor import Prediction
from engine.search_spec import EXACT_LIMIT, SearchSpec


def trial_objectives(record: dict[str, Any]) -> tuple[float, float, float] | None:
    """(accuracy, size bytes, latency ms at batch 1 as plans compare by it) of an ok result, else None."""
    if record.get("status") != "ok":
        return None
    m = record["metrics"]
    latency = (m.get("latency") or {}).get("1") or {}
    accuracy, size = m.get("accuracy"), m.get("size_bytes")
    if accuracy is None or size is None or latency.get("median_ms") is None:
        return None
    return float(accuracy), float(size), comparable_ms(latency)


def objective_point(record: dict[str, Any] | None) -> dict[str, float] | None:
    """{accuracy, size_bytes, latency_ms (batch 1 median)} of an ok result, as the search scores it."""
    values = trial_objectives(record) if record else None
    return (
        None if values is None else dict(zip(("accuracy", "size_bytes", "latency_ms"), values, strict=True))
    )


# Trials whose predictions are not the predictor's word on a plan: the FP32 baseline (exact by
# construction) and each precision's uniform plan, whose measured latency puts the predictor's latency
# on the measured scale (its own latency prediction, made before, is the profiler's alone).
CALIBRATION_ORIGINS = ("baseline", "anchor")


def prediction_json(p: Prediction) -> dict[str, float]:
    return {"accuracy_drop": p.accuracy_drop, "size_bytes": p.size_bytes, "latency_ms": p.latency_ms}


def trials_frame(trials: list[dict[str, Any]], fp32: Mapping[str, float]) -> pd.DataFrame:
    """One row per trial: measured and predicted accuracy, size, latency; on the measured front?"""
    rows = []
    for t in trials:
        record = t["result"] or {}
        values = trial_objectives(record) if record else None
        m = record.get("metrics") or {}
        p = t["predicted"]
        rows.append(
            {
                "result_key": t["result_key"],
                "origin": t["origin"],
                "plan_summary": record.get("plan_summary"),
                "status": record.get("status", "missing"),
                "accuracy": values[0] if values else np.nan,
                "accuracy_drop": fp32["accuracy"] - values[0] if values else np.nan,
                "ci_low": m.get("accuracy_delta_ci_low", np.nan),
                "ci_high": m.get("accuracy_delta_ci_high", np.nan),
                "size_bytes": values[1] if values else np.nan,
                "latency_ms": values[2] if values else np.nan,
                "predicted_accuracy_drop": p["accuracy_drop"],
                "predicted_size_bytes": p["size_bytes"],
                "predicted_latency_ms": np.nan if t["origin"] == "anchor" else p["latency_ms"],
                "plan": t["plan"],
            }
        )
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    frame["on_front"] = pareto.non_dominated(
        frame[["accuracy", "size_bytes", "latency_ms"]].to_numpy(), maximize=[True, False, False]
    )
    return frame


def recommend(trials: pd.DataFrame, spec: SearchSpec, fp32: Mapping[str, float]) -> tuple[str | None, str]:
    """The best measured plan meeting the limits, or (None, why not and which plans come closest)."""
    if trials.empty or trials["status"].ne("ok").all():
        return None, "no plan could be measured"
    ok = trials[trials["status"] == "ok"].copy()
    ok["excess"] = [
        spec.constraints.excess(r.accuracy_drop, r.size_bytes, r.latency_ms, fp32) for r in ok.itertuples()
    ]
    cost = "size_bytes" if spec.objective == "size" else "latency_ms"
    feasible = ok[ok["excess"] <= EXACT_LIMIT]
    if not feasible.empty:
        best = feasible.sort_values([cost, "accuracy_drop"]).iloc[0]
        return str(best["result_key"]), (
            f"{len(feasible)} of {len(ok)} measured plans meet the limits; the "
            f"{'smallest' if spec.objective == 'size' else 'fastest'} is recommended"
        )
    closest = ok.sort_values(["excess", cost]).head(3)
    names = "; ".join(
        f"{r.plan_summary} ({spec.constraints.overshoot(r.accuracy_drop, r.size_bytes, r.latency_ms, fp32)})"
        for r in closest.itertuples()
    )
    return None, f"none of the {len(ok)} measured plans meets the limits; closest: {names}"
