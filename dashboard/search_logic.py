"""Pure logic of the Sensitivity & search page (no streamlit here, so it is tested directly)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from engine.charts import distinct_summaries
from engine.recommend import limit_met_not_surely
from engine.search import Constraints, SearchSpec
from engine.search_trials import objective_point
from engine.types import Plan, Precision

ORIGINS = {
    "baseline": "FP32 baseline",
    "anchor": "uniform plan (latency anchor)",
    "predictor": "additive predictor",
    "nsga2": "NSGA-II",
}


def pin(
    pinned: Mapping[str, str], assignment: Mapping[str, str], layer: str, precision: str
) -> tuple[dict[str, str], dict[str, str]]:
    """Pin a layer at a precision: returns (pins, plan-editor assignment), both with it set."""
    value = Precision(precision).value
    return {**pinned, layer: value}, {**assignment, layer: value}


def pinned_candidates(
    candidates: Mapping[str, tuple[Precision, ...]], pinned: Mapping[str, str]
) -> dict[str, tuple[Precision, ...]]:
    """Search candidates with each pinned layer restricted to its pinned precision."""
    out = {name: tuple(ps) for name, ps in candidates.items()}
    for name, value in pinned.items():
        if name in out:
            out[name] = (Precision(value),)
    return out


MIN_BUDGET, MAX_BUDGET = 1, 1000  # plans a search from the page may measure


def constraints(
    max_drop: float | None, relative: bool, max_size_kb: float | None, max_latency_ms: float | None
) -> Constraints:
    """The search's limits from the page's inputs (None = no limit); sizes in kB of 1,000 bytes."""
    if max_size_kb is not None and not max_size_kb > 0:  # said in the field's unit, not in bytes
        raise ValueError(f"the size limit must be above 0 kB (or empty for none), got {max_size_kb:g} kB")
    return Constraints(
        max_accuracy_drop=max_drop,
        relative=relative,
        max_size_bytes=None if max_size_kb is None else max_size_kb * 1e3,
        max_latency_ms=max_latency_ms,
    )


def spec_from_form(
    candidates_for: Callable[[list[Precision]], Mapping[str, tuple[Precision, ...]]],
    form: Mapping[str, Any],
    pins: Mapping[str, str],
) -> SearchSpec:
    """The search the form's fields (FORM_FIELDS) ask for, with the pinned layers held; ValueError
    (or PlanError) in plain words if none. candidates_for(precisions): each layer's candidates."""
    if not form["allowed"]:
        raise ValueError(
            "pick at least one candidate precision; with FP32 alone every layer stays FP32 and there "
            "is nothing to search"
        )
    budget, seconds = form["budget"], form["seconds"]
    if budget is None or not MIN_BUDGET <= budget <= MAX_BUDGET or budget != int(budget):
        got = "nothing" if budget is None else f"{budget:g}"  # as typed: 2.5, not 2.50
        raise ValueError(
            f"the budget must be a whole number of plans from {MIN_BUDGET} to {MAX_BUDGET}, got {got}"
        )
    if seconds is not None and not (math.isfinite(seconds) and seconds >= 1):
        raise ValueError(f"the time limit must be at least 1 s (or empty for none), got {seconds:g} s")
    return SearchSpec(
        candidates=pinned_candidates(candidates_for([Precision(v) for v in form["allowed"]]), pins),
        constraints=constraints(form["max_drop"], form["unit"] == "relative", form["max_kb"], form["max_ms"]),
        objective=form["objective"],
        max_evaluations=int(form["budget"]),
        max_seconds=form["seconds"],
    )


FORM_FIELDS = ("allowed", "max_drop", "unit", "max_kb", "max_ms", "objective", "budget", "seconds")
DEFAULT_PRECISIONS = (Precision.FP16, Precision.INT8, Precision.INT4)  # probed, and searched, unless picked


def form_defaults(offered: list[str]) -> dict[str, Any]:
    """The form's fields for a model nothing was set for: no limits, the smallest plan, 20 plans."""
    return {
        "allowed": [p.value for p in DEFAULT_PRECISIONS if p.value in offered],
        "max_drop": None,
        "unit": "points",
        "max_kb": None,
        "max_ms": None,
        "objective": "size",
        "budget": 20,
        "seconds": None,
    }


def form_from_spec(spec: SearchSpec, offered: list[str]) -> dict[str, Any]:
    """The form's fields that ask for a stored search again (spec_from_form's inverse, with the
    pins from pins_from_spec). The candidate precisions are those of the layers left free."""
    free = {p for ps in spec.candidates.values() if len(ps) > 1 for p in ps}
    chosen = (free or {p for ps in spec.candidates.values() for p in ps}) - {Precision.FP32}
    c = spec.constraints
    return {
        "allowed": [v for v in offered if Precision(v) in chosen],
        "max_drop": c.max_accuracy_drop,
        "unit": "relative" if c.relative else "points",
        "max_kb": None if c.max_size_bytes is None else c.max_size_bytes / 1e3,
        "max_ms": c.max_latency_ms,
        "objective": spec.objective,
        # Not part of what the search is (a larger budget continues it): kept within what the form takes.
        "budget": min(max(spec.max_evaluations, MIN_BUDGET), MAX_BUDGET),
        "seconds": None if spec.max_seconds is None else max(spec.max_seconds, 1.0),
    }


def pins_from_spec(spec: SearchSpec, defaults: Mapping[str, tuple[Precision, ...]]) -> dict[str, str]:
    """The layers a stored search held at one precision that the form's candidates would not."""
    return {
        name: ps[0].value for name, ps in spec.candidates.items() if len(ps) == 1 and defaults.get(name) != ps
    }


def fp32_point(record: Mapping[str, Any] | None) -> dict[str, float] | None:
    """(accuracy, size_bytes, latency_ms at batch 1) of a measured FP32 baseline, as the search uses them."""
    return objective_point(dict(record) if record else None)


def plan_assignment(plan: Mapping[str, Any], layer_names: list[str]) -> dict[str, str]:
    """A stored plan as the plan editor holds it: every layer spelled out, precision values."""
    return {n: p.value for n, p in Plan.from_json(dict(plan)).resolve(layer_names).items()}


def _pp(fraction: Any) -> float:
    return float(fraction) * 100 if fraction is not None and np.isfinite(fraction) else math.nan


def trials_table(trials: pd.DataFrame, recommended: str | None) -> pd.DataFrame:
    """The search's trials for a table: measured beside predicted, in points, kB and ms."""
    if trials.empty:
        return pd.DataFrame()
    # Changes vs FP32 (a loss is negative), as the recommendation, the plots and the report give them.
    change = 0.0 - trials["accuracy_drop"].map(_pp)
    ci = [
        f"{_pp(lo):+.2f} to {_pp(hi):+.2f}" if np.isfinite(_pp(lo)) and np.isfinite(_pp(hi)) else ""
        for lo, hi in zip(trials["ci_low"], trials["ci_high"], strict=True)
    ]
    predicted = 0.0 - trials["predicted_accuracy_drop"].map(_pp)
    return pd.DataFrame(
        {
            "recommended": np.where(trials["result_key"] == recommended, "★", ""),
            "plan": distinct_summaries(trials["plan_summary"], trials["result_key"]),
            "found by": trials["origin"].map(lambda o: ORIGINS.get(o, o)),
            "accuracy (%)": trials["accuracy"].map(_pp),
            "change (pp)": change,
            "change 95% CI (pp)": ci,
            "predicted change (pp)": predicted,
            "change beyond prediction (pp)": change - predicted,
            "size (kB)": trials["size_bytes"] / 1e3,
            "predicted size (kB)": trials["predicted_size_bytes"] / 1e3,
            "latency b1 (ms)": trials["latency_ms"],
            "predicted latency (ms)": trials["predicted_latency_ms"],
            "on Pareto front": trials["on_front"].astype(bool),
            "status": trials["status"],
            "result key": trials["result_key"],
        }
    )


def recommendation_text(
    row: Mapping[str, Any], fp32: Mapping[str, float], drop_limit: float | None = None
) -> str:
    """One line on the recommended plan: size, latency and accuracy change, each against FP32; and,
    when its interval reaches past the accuracy limit (a fraction), that it meets it not surely."""
    size, latency, accuracy = row["size_bytes"], row["latency_ms"], row["accuracy"]
    text = (
        f"{size / 1e3:.1f} kB ({fp32['size_bytes'] / size:.2f}× smaller than FP32) · "
        f"latency {latency:.3f} ms at batch 1 on this machine (FP32 {fp32['latency_ms']:.3f} ms) · "
        f"accuracy {accuracy:.2%}, {0.0 - _pp(row['accuracy_drop']):+.2f} pp vs FP32"
    )
    lo, hi = _pp(row.get("ci_low")), _pp(row.get("ci_high"))
    if np.isfinite(lo) and np.isfinite(hi):
        text += f" (95% CI {lo:+.2f} to {hi:+.2f})"
    unsure = limit_met_not_surely(row.get("ci_low"), drop_limit)
    return text + (f"  \n{unsure}" if unsure else "")
