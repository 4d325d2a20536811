"""An additive predictor of a plan's accuracy, size and latency, and an exact solver over it.

Each layer at each precision contributes on its own (as HAWQ-V3 and ModelOpt's AutoQuantize
model it):

* accuracy drop: the drop measured with that layer alone at that precision (clipped at zero:
  a layer that "gains" alone is noise on a finite evaluation set, not a free lunch);
* size: the measured size change of that layer alone at that precision;
* latency: the layer's profiled kernel time at that precision minus its FP32 time, plus its
  part of the change in other ops (casts, quantize/dequantize) the uniform plan showed, scaled
  from profiled microseconds to the measured FP32 median.

Layer interactions (errors that compound, Q/DQ pairs at precision boundaries) are exactly what
this leaves out: the search measures every plan it proposes and shows prediction beside result.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from scipy.optimize import Bounds, LinearConstraint, OptimizeResult, milp

from engine.profile import OTHER
from engine.sensitivity import ALONE
from engine.types import Precision

OBJECTIVES = ("size", "latency")
# How far over (max drop, max size, max latency) a prediction may be and still meet the limit:
# float rounding, far below anything measured (a drop of 1e-9 is a billionth of a point).
LIMIT_SLACK = (1e-9, 1e-6, 1e-9)
MAX_CUTS = 200  # plans found a hair over a limit, cut off one by one; in practice one or two


@dataclass(frozen=True)
class Prediction:
    accuracy_drop: float  # fraction (0.01 = 1 point)
    size_bytes: float
    latency_ms: float


@dataclass(frozen=True)
class AdditivePredictor:
    """Per (layer, precision) contributions; FP32 contributes nothing."""

    options: Mapping[str, tuple[Precision, ...]]  # per layer, FP32 first
    drop: Mapping[tuple[str, Precision], float]
    size: Mapping[tuple[str, Precision], float]
    latency: Mapping[tuple[str, Precision], float]
    base_size_bytes: float
    base_latency_ms: float

    def predict(self, assignment: Mapping[str, Precision]) -> Prediction:
        items = [(layer, assignment.get(layer, Precision.FP32)) for layer in self.options]
        return Prediction(
            accuracy_drop=sum(self.drop.get(i, 0.0) for i in items),
            size_bytes=self.base_size_bytes + sum(self.size.get(i, 0.0) for i in items),
            latency_ms=self.base_latency_ms + sum(self.latency.get(i, 0.0) for i in items),
        )

    def anchored(
        self, uniform: Mapping[Precision, tuple[Mapping[str, Precision], float]]
    ) -> AdditivePredictor:
        """The same predictor with each precision's latency terms moved so that its uniform plan
        (given with its measured latency) is predicted exactly, up to the move of any layer in it
        at another precision (a pinned one), whose own anchoring moves it too.

        The profiler's per-node times carry its own overhead per node, which small models with
        many small nodes (casts, Q/DQ) feel most; one measured plan per precision puts the layer
        times back on the scale of real runs. What the profile misses (measured minus predicted)
        is spread over that precision's layers in proportion to the size of each one's profiled
        change, or evenly when the profile saw none. Where those changes share a sign this is the
        same as scaling them; where they nearly cancel (one layer faster, another slower), a
        scale would blow them up in opposite directions (on digits_cnn it made a plan with one
        INT4 layer predict -0.04 ms), while a spread moves no layer by more than the whole miss.
        """
        latency = dict(self.latency)
        for precision, (assignment, measured_ms) in uniform.items():
            own = [
                (n, p)
                for n, p in assignment.items()
                if p is precision and p is not Precision.FP32 and n in self.options
            ]
            if not own:
                continue
            predicted = self.predict(assignment).latency_ms
            sizes = np.array([abs(self.latency.get(k, 0.0)) for k in own])
            weights = sizes / sizes.sum() if sizes.sum() > 1e-12 else np.full(len(own), 1.0 / len(own))
            for k, w in zip(own, weights, strict=True):
                latency[k] = self.latency.get(k, 0.0) + float(w) * (measured_ms - predicted)
        return replace(self, latency=latency)

    def solve(
        self,
        objective: str,
        max_drop: float | None = None,
        max_size_bytes: float | None = None,
        max_latency_ms: float | None = None,
    ) -> dict[str, Precision] | None:
        """The assignment minimising predicted size or latency under the constraints (an exact
        0/1 program, scipy's HiGHS MILP); None when no assignment meets them."""
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
        variables = [(layer, p) for layer, ps in self.options.items() for p in ps]
        n = len(variables)
        drop = np.array([self.drop.get(v, 0.0) for v in variables])
        size = np.array([self.size.get(v, 0.0) for v in variables])
        latency = np.array([self.latency.get(v, 0.0) for v in variables])
        primary, secondary = (size, latency) if objective == "size" else (latency, size)
        constraints = []
        one_each = np.zeros((len(self.options), n))
        for i, layer in enumerate(self.options):
            one_each[i, [j for j, v in enumerate(variables) if v[0] == layer]] = 1.0
        constraints.append(LinearConstraint(one_each, 1.0, 1.0))
        if max_drop is not None:
            constraints.append(LinearConstraint(drop[None, :], -np.inf, max_drop + 1e-12))
        if max_size_bytes is not None:
            constraints.append(
                LinearConstraint(size[None, :], -np.inf, max_size_bytes - self.base_size_bytes)
            )
        if max_latency_ms is not None:
            constraints.append(
                LinearConstraint(latency[None, :], -np.inf, max_latency_ms - self.base_latency_ms)
            )
        limits = (max_drop, max_size_bytes, max_latency_ms)
        cuts: list[LinearConstraint] = []  # plans HiGHS returned a hair over a limit (see _milp_within)
        result = self._milp_within(primary, constraints, cuts, variables, limits)
        if result is None:
            return None
        # Among the plans with that best cost, the one with the lowest drop, then the better
        # other cost: a second exact solve with the cost held at its optimum (lexicographic,
        # so no weighting can trade a little cost for a lot of accuracy).
        best = float(primary @ result.x)
        slack = 1e-9 * max(1.0, abs(best))
        held = LinearConstraint(primary[None, :], -np.inf, best + slack)
        other_scale = max(float(np.abs(secondary).max(initial=0.0)), 1e-12)
        tie_break = self._milp_within(
            drop + 1e-6 * secondary / other_scale, [*constraints, held], cuts, variables, limits
        )
        # HiGHS holds the cost within its tolerance, not exactly: a tie-break that costs more is dropped.
        if tie_break is not None and float(primary @ tie_break.x) <= best + slack:
            result = tie_break
        return _assignment(variables, result.x)

    def meets(
        self,
        assignment: Mapping[str, Precision],
        limits: tuple[float | None, float | None, float | None],
    ) -> bool:
        """Whether the predicted drop, size and latency are within (max_drop, max_size, max_ms)."""
        p = self.predict(assignment)
        values = (p.accuracy_drop, p.size_bytes, p.latency_ms)
        return all(
            limit is None or value <= limit + slack
            for value, limit, slack in zip(values, limits, LIMIT_SLACK, strict=True)
        )

    def _milp_within(
        self,
        cost: np.ndarray,
        constraints: list[LinearConstraint],
        cuts: list[LinearConstraint],
        variables: list[tuple[str, Precision]],
        limits: tuple[float | None, float | None, float | None],
    ) -> OptimizeResult | None:
        """scipy's milp, checked against the limits exactly: HiGHS meets a constraint within its
        feasibility tolerance (about 1e-7), so a plan whose drop is 1e-7 over a limit of 0 can come
        back as feasible. Each such plan is cut off (appended to `cuts`) and the program solved
        again; None when nothing is left."""
        n = len(variables)
        # HiGHS also stops within an absolute gap of 1e-6 objective units (not settable from scipy):
        # scaled so the largest coefficient is 1e6, that gap is a millionth of any real difference.
        scaled = cost * (1e6 / max(float(np.abs(cost).max(initial=0.0)), 1e-12))
        for _ in range(MAX_CUTS):
            result = milp(
                scaled,
                constraints=[*constraints, *cuts],
                integrality=np.ones(n),
                bounds=Bounds(0.0, 1.0),
                # Exact: HiGHS stops within 0.01% of the optimum by default, which is a different plan.
                options={"mip_rel_gap": 0.0},
            )
            if result.status != 0 or result.x is None:
                return None
            if self.meets(_assignment(variables, result.x), limits):
                return result
            chosen = (result.x > 0.5).astype(float)
            cuts.append(LinearConstraint(chosen[None, :], -np.inf, len(self.options) - 1))
        return None


def _assignment(variables: list[tuple[str, Precision]], x: np.ndarray) -> dict[str, Precision]:
    return {v[0]: v[1] for v, chosen in zip(variables, x, strict=True) if chosen > 0.5}


def build_predictor(
    options: Mapping[str, tuple[Precision, ...]],
    sensitivity: pd.DataFrame,
    profile: pd.DataFrame,
    base_size_bytes: float,
    base_latency_ms: float,
) -> AdditivePredictor:
    """From a sensitivity frame (alone view), a layer profile and the measured FP32 baseline."""
    alone = sensitivity[(sensitivity["view"] == ALONE) & (sensitivity["status"] == "ok")]
    drop: dict[tuple[str, Precision], float] = {}
    size: dict[tuple[str, Precision], float] = {}
    for row in alone.itertuples():
        key = (row.layer, Precision(row.precision))
        change = row.accuracy_change
        drop[key] = max(0.0, -float(change)) if pd.notna(change) else 0.0
        size[key] = float(row.size_change_bytes) if pd.notna(row.size_change_bytes) else 0.0
    times = {(r.layer, r.precision): float(r.us_per_run) for r in profile.itertuples()}
    fp32_total = sum(v for (_, p), v in times.items() if p == Precision.FP32.value)
    ms_per_us = base_latency_ms / fp32_total if fp32_total > 0 else 0.0
    latency: dict[tuple[str, Precision], float] = {}
    for precision in {p for ps in options.values() for p in ps} - {Precision.FP32}:
        layer_time = {layer: t for (layer, p), t in times.items() if p == precision.value and layer != OTHER}
        if not layer_time:
            continue  # not profiled: no latency change predicted
        other_change = times.get((OTHER, precision.value), 0.0) - times.get(
            (OTHER, Precision.FP32.value), 0.0
        )
        total = sum(layer_time.values())
        for layer, t in layer_time.items():
            own = t - times.get((layer, Precision.FP32.value), 0.0)
            share_of_other = other_change * t / total if total > 0 else 0.0
            latency[(layer, precision)] = (own + share_of_other) * ms_per_us
    return AdditivePredictor(
        options={layer: tuple(ps) for layer, ps in options.items()},
        drop=drop,
        size=size,
        latency=latency,
        base_size_bytes=float(base_size_bytes),
        base_latency_ms=float(base_latency_ms),
    )
