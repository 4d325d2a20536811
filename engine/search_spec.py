"""What a search is asked: the limits a recommended plan must meet (Constraints) and the search
itself (SearchSpec: candidates per layer, limits, objective, budget), with their JSON forms as the
store keeps them. engine/search.py runs one."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.predictor import OBJECTIVES
from engine.types import Precision
from engine.units import decimal_bytes

EXACT_LIMIT = 1e-9  # "within 1 point" includes a drop of exactly 1 point, whatever the float rounding


@dataclass(frozen=True)
class Constraints:
    """Limits a recommended plan must meet; None = no limit.

    max_accuracy_drop is in points (0.5 = half a point of accuracy) or, with relative=True, in
    percent of the FP32 accuracy.
    """

    max_accuracy_drop: float | None = None
    relative: bool = False
    max_size_bytes: float | None = None
    max_latency_ms: float | None = None

    def __post_init__(self) -> None:
        drop = self.max_accuracy_drop
        if drop is not None and not (np.isfinite(drop) and 0 <= drop <= 100):
            unit = "% of FP32 accuracy" if self.relative else "points"
            raise ValueError(f"the accuracy-drop limit must be 0 to 100 {unit} (or none), got {drop:g}")
        # No plan is 0 bytes or runs in 0 ms: a limit of 0 or less can only refuse every plan.
        for what, value, unit in (
            ("size", self.max_size_bytes, "bytes"),
            ("latency", self.max_latency_ms, "ms"),
        ):
            if value is not None and not (np.isfinite(value) and value > 0):
                raise ValueError(f"the {what} limit must be above 0 {unit} (or none), got {value:g} {unit}")

    def drop_limit(self, fp32_accuracy: float) -> float | None:
        """The accuracy-drop limit as a fraction (0.01 = one point)."""
        if self.max_accuracy_drop is None:
            return None
        if self.relative:
            return fp32_accuracy * self.max_accuracy_drop / 100.0
        return self.max_accuracy_drop / 100.0

    def excess(self, drop: float, size_bytes: float, latency_ms: float, fp32: Mapping[str, float]) -> float:
        """How far a plan is outside the limits, each excess relative to its FP32 value (0 = meets them)."""
        out = 0.0
        limit = self.drop_limit(fp32["accuracy"])
        if limit is not None:
            out += max(0.0, drop - limit) / max(fp32["accuracy"], 1e-12)
        if self.max_size_bytes is not None:
            out += max(0.0, size_bytes - self.max_size_bytes) / fp32["size_bytes"]
        if self.max_latency_ms is not None:
            out += max(0.0, latency_ms - self.max_latency_ms) / fp32["latency_ms"]
        return out

    def overshoot(self, drop: float, size_bytes: float, latency_ms: float, fp32: Mapping[str, float]) -> str:
        """How far a plan is outside each limit, in the limit's own unit ("meets the limits" if not)."""
        parts = []
        limit = self.drop_limit(fp32["accuracy"])
        if limit is not None and drop > limit + EXACT_LIMIT:
            parts.append(f"{100 * (drop - limit):.2f} points over the accuracy limit")
        if self.max_size_bytes is not None and size_bytes > self.max_size_bytes:
            parts.append(f"{decimal_bytes(size_bytes - self.max_size_bytes)} over the size limit")
        if self.max_latency_ms is not None and latency_ms > self.max_latency_ms:
            parts.append(f"{latency_ms - self.max_latency_ms:.3g} ms over the latency limit")
        return "; ".join(parts) or "meets the limits"

    def to_json(self) -> dict[str, Any]:
        return {
            "max_accuracy_drop": self.max_accuracy_drop,
            "relative": self.relative,
            "max_size_bytes": self.max_size_bytes,
            "max_latency_ms": self.max_latency_ms,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Constraints:
        """The limits to_json wrote; ValueError naming what is wrong."""
        _no_unknown_keys("limits", data, _CONSTRAINT_FIELDS)
        limits = {k: _optional_number(k, data.get(k)) for k in _CONSTRAINT_FIELDS if k != "relative"}
        return cls(relative=bool(data.get("relative", False)), **limits)


_CONSTRAINT_FIELDS = ("max_accuracy_drop", "relative", "max_size_bytes", "max_latency_ms")


def _no_unknown_keys(what: str, data: Mapping[str, Any], fields: tuple[str, ...]) -> None:
    unknown = set(data) - set(fields)
    if unknown:
        raise ValueError(f"{what} has unknown keys {sorted(unknown)}; expected some of {fields}")


def _optional_number(name: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number or null, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class SearchSpec:
    """What to search: candidate precisions per layer, limits, what "best" means, and a budget."""

    candidates: Mapping[str, tuple[Precision, ...]]
    constraints: Constraints = field(default_factory=Constraints)
    objective: str = (
        "size"  # the recommendation: smallest ("size") or fastest ("latency") plan meeting the limits
    )
    max_evaluations: int = 40  # plans measured for the search itself (the sensitivity pass is extra)
    max_seconds: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.max_evaluations < 1:
            raise ValueError("max_evaluations must be at least 1")
        if self.max_seconds is not None and self.max_seconds <= 0:
            raise ValueError("max_seconds must be positive (or none)")
        fixed = {str(k): tuple(Precision(p) for p in v) for k, v in sorted(dict(self.candidates).items())}
        if any(not v for v in fixed.values()):
            empty = sorted(k for k, v in fixed.items() if not v)
            raise ValueError(f"layers with no candidate precision: {', '.join(empty)}")
        object.__setattr__(self, "candidates", fixed)

    def identity(self) -> dict[str, Any]:
        """Everything but the budget: raising the budget continues the same search."""
        return {
            "candidates": {k: [p.value for p in v] for k, v in self.candidates.items()},
            "constraints": self.constraints.to_json(),
            "objective": self.objective,
            "seed": self.seed,
        }

    def to_json(self) -> dict[str, Any]:
        """The whole spec, budget included, as plain JSON (from_json reads it back)."""
        return {**self.identity(), "max_evaluations": self.max_evaluations, "max_seconds": self.max_seconds}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SearchSpec:
        """The spec to_json wrote; ValueError naming what is wrong (a precision no longer known, say)."""
        _no_unknown_keys("search spec", data, _SPEC_FIELDS)
        candidates = data.get("candidates")
        if not isinstance(candidates, Mapping) or not all(isinstance(v, list) for v in candidates.values()):
            raise ValueError("search spec 'candidates' must map each layer name to a list of precisions")
        seconds = _optional_number("max_seconds", data.get("max_seconds"))
        return cls(
            candidates={str(k): tuple(Precision(p) for p in v) for k, v in candidates.items()},
            constraints=Constraints.from_json(data.get("constraints") or {}),
            objective=str(data.get("objective", "size")),
            max_evaluations=int(data.get("max_evaluations", 40)),
            max_seconds=seconds,
            seed=int(data.get("seed", 0)),
        )


_SPEC_FIELDS = ("candidates", "constraints", "objective", "seed", "max_evaluations", "max_seconds")
