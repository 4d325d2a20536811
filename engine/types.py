"""Value types shared by every part of the engine: small, frozen, validated."""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class Precision(enum.Enum):
    """Numeric format of one layer. The value is the spelling used in plan JSON."""

    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"  # static W8A8 QDQ, per-channel weights, calibrated activations
    INT8_DYNAMIC = "int8-dynamic"  # int8 weights, activations quantized at run time
    INT4 = "int4"  # weight-only: block-wise MatMulNBits for MatMul, per output channel for Conv
    W8A16 = "w8a16"  # int8 weights, 16-bit calibrated activations

    @property
    def weight_bits(self) -> int:
        return _WEIGHT_BITS[self]

    @property
    def label(self) -> str:
        return _LABELS[self]

    @property
    def calibrated(self) -> bool:
        """Static formats: their activation ranges come from calibration data."""
        return self in (Precision.INT8, Precision.W8A16)

    @classmethod
    def parse(cls, text: str) -> Precision:
        """Parse a plan spelling ("int8", "INT8", "int8_dynamic" ...) or raise ValueError."""
        key = str(text).strip().lower().replace("_", "-")
        for p in cls:
            if p.value == key:
                return p
        valid = ", ".join(p.value for p in cls)
        raise ValueError(f"unknown precision {text!r}; expected one of: {valid}")


_WEIGHT_BITS = {
    Precision.FP32: 32,
    Precision.FP16: 16,
    Precision.INT8: 8,
    Precision.INT8_DYNAMIC: 8,
    Precision.INT4: 4,
    Precision.W8A16: 8,
}
_LABELS = {
    Precision.FP32: "FP32",
    Precision.FP16: "FP16",
    Precision.INT8: "INT8",
    Precision.INT8_DYNAMIC: "INT8 dyn",
    Precision.INT4: "INT4",
    Precision.W8A16: "W8A16",
}


class CalibrationMethod(enum.Enum):
    MINMAX = "minmax"
    ENTROPY = "entropy"
    PERCENTILE = "percentile"

    @property
    def label(self) -> str:
        return {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}[self.value]

    @property
    def description(self) -> str:
        return _CALIBRATION_DESCRIPTIONS[self]

    @classmethod
    def parse(cls, text: str) -> CalibrationMethod:
        key = str(text).strip().lower()
        for m in cls:
            if m.value == key:
                return m
        valid = ", ".join(m.value for m in cls)
        raise ValueError(f"unknown calibration method {text!r}; expected one of: {valid}")


_CALIBRATION_DESCRIPTIONS = {
    CalibrationMethod.MINMAX: "the full observed range of each activation: nothing is clipped (the default)",
    CalibrationMethod.ENTROPY: "the range whose 8-bit histogram stays closest (KL divergence) to the "
    "observed one: clips rare outliers for finer steps",
    CalibrationMethod.PERCENTILE: "the range holding 99.999% of the observed values: clips the extremes",
}


def stable_hash(obj: Any) -> str:
    """sha256 of the canonical JSON of obj (sorted keys); stable across runs."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class LayerInfo:
    """One quantizable layer (a weight-bearing node) of a prepared model."""

    name: str
    op_type: str
    params: int
    macs: int  # per sample (batch 1)
    weight_bytes: int  # FP32 bytes of its initializers
    input_shapes: tuple[tuple[int | str, ...], ...]
    output_shapes: tuple[tuple[int | str, ...], ...]
    accepts: tuple[Precision, ...]
    rejects: Mapping[Precision, str] = field(default_factory=dict)  # precision -> why not

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("layer name must not be empty")
        if Precision.FP32 not in self.accepts:
            raise ValueError(f"layer {self.name}: every layer must accept fp32")


@dataclass(frozen=True)
class Plan:
    """Layer name -> precision, with a default for layers not named."""

    default: Precision = Precision.FP32
    layers: Mapping[str, Precision] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Normalise to a sorted plain dict so equal plans hash equally.
        fixed = {str(k): Precision(v) for k, v in sorted(dict(self.layers).items())}
        object.__setattr__(self, "layers", fixed)
        object.__setattr__(self, "default", Precision(self.default))

    def precision_of(self, layer: str) -> Precision:
        return self.layers.get(layer, self.default)

    def resolve(self, layer_names: list[str]) -> dict[str, Precision]:
        """The precision of every named layer."""
        return {n: self.precision_of(n) for n in layer_names}

    def to_json(self) -> dict[str, Any]:
        return {"default": self.default.value, "layers": {k: v.value for k, v in self.layers.items()}}

    @classmethod
    def from_json(cls, data: Any) -> Plan:
        """Build from parsed plan JSON; raise ValueError naming what is wrong."""
        if not isinstance(data, dict):
            raise ValueError(
                'plan must be a JSON object like {"default": "int8", "layers": {"conv1": "fp32"}}'
            )
        unknown = set(data) - {"default", "layers"}
        if unknown:
            raise ValueError(f"plan has unknown keys {sorted(unknown)}; expected 'default' and 'layers'")
        default = Precision.parse(data.get("default", "fp32"))
        layers_raw = data.get("layers", {})
        if not isinstance(layers_raw, dict):
            raise ValueError("plan 'layers' must be an object mapping layer name -> precision")
        layers = {}
        for name, value in layers_raw.items():
            try:
                layers[str(name)] = Precision.parse(value)
            except ValueError as e:
                raise ValueError(f"layer {name!r}: {e}") from None
        return cls(default=default, layers=layers)

    @property
    def hash(self) -> str:
        return stable_hash(self.to_json())


def canonical_plan(plan: Plan, layer_names: list[str]) -> Plan:
    """The same plan with every layer spelled out, so equivalent plans share one hash."""
    return Plan(default=Precision.FP32, layers=plan.resolve(layer_names))


def plan_summary(assignment: Mapping[str, Precision]) -> str:
    """'18 INT8 · 2 FP32' — counts per precision, most common first."""
    counts: dict[Precision, int] = {}
    for p in assignment.values():
        counts[p] = counts.get(p, 0) + 1
    order = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0].value))
    # A model with no Conv/MatMul/Gemm layer with constant weights has nothing to set: say so, not "".
    return " · ".join(f"{n} {p.label}" for p, n in order) or "no quantizable layers"


@dataclass(frozen=True)
class MeasureSettings:
    """How a plan is measured; part of every result's cache key."""

    calibration: CalibrationMethod = CalibrationMethod.MINMAX
    batch_sizes: tuple[int, ...] = (1, 32)
    threads: int = 1
    min_runs: int = 20
    max_runs: int = 300
    max_seconds: float = 3.0  # per batch size; a cap so one slow model cannot stall a sweep
    rel_ci: float = 0.05  # stop when the median's 95% interval is within +-5%
    bootstrap: int = 1000
    seed: int = 0
    # False: accuracy, fidelity and size only (a sensitivity pass needs no timing of every plan).
    latency: bool = True
    # Time each plan in alternation with the FP32 model and keep the ratio (LatencyStats.vs_fp32):
    # plans are compared by it, as it does not move with the host's state the way absolute times do.
    interleave_fp32: bool = True

    def __post_init__(self) -> None:
        if self.threads < 1:
            raise ValueError("threads must be >= 1")
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            raise ValueError("batch_sizes must be positive integers")
        if not 1 <= self.min_runs <= self.max_runs:
            raise ValueError("need 1 <= min_runs <= max_runs")
        object.__setattr__(self, "calibration", CalibrationMethod(self.calibration))
        object.__setattr__(self, "batch_sizes", tuple(int(b) for b in self.batch_sizes))
        if not self.latency:  # nothing is timed, so nothing is interleaved
            object.__setattr__(self, "interleave_fp32", False)

    def to_json(self) -> dict[str, Any]:
        return {
            "calibration": self.calibration.value,
            "batch_sizes": list(self.batch_sizes),
            "threads": self.threads,
            "min_runs": self.min_runs,
            "max_runs": self.max_runs,
            "max_seconds": self.max_seconds,
            "rel_ci": self.rel_ci,
            "bootstrap": self.bootstrap,
            "seed": self.seed,
            # Spelled only when off, so the settings (and result keys) stored before it existed stay valid.
            **({} if self.latency else {"latency": False}),
            # Spelled when on: results timed without it keep their keys (none is served for these settings).
            **({"interleave_fp32": True} if self.interleave_fp32 else {}),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MeasureSettings:
        """The settings a result stored (to_json's output); __post_init__ restores the types."""
        return cls(**{"interleave_fp32": False, **data})  # absent: stored before it existed

    @property
    def hash(self) -> str:
        return stable_hash(self.to_json())


class PlanError(ValueError):
    """A plan that cannot be applied to a model; the message lists valid choices."""
