"""Named starting plans: what a user picks before adjusting layers."""

from __future__ import annotations

from collections.abc import Callable

from engine.types import LayerInfo, Plan, PlanError, Precision


def _uniform(p: Precision) -> Callable[[list[LayerInfo]], Plan]:
    # A default applies where a layer accepts it; other layers stay FP32 (see quantize.resolve_plan).
    return lambda layers: Plan(default=p)


def _int8_except_ends(layers: list[LayerInfo]) -> Plan:
    # First and last layers are the usual accuracy bottlenecks: keep them FP32.
    ends = {layers[0].name, layers[-1].name} if layers else set()
    return Plan(default=Precision.INT8, layers={n: Precision.FP32 for n in ends})


PRESETS: dict[str, Callable[[list[LayerInfo]], Plan]] = {
    "fp32": _uniform(Precision.FP32),
    "fp16": _uniform(Precision.FP16),
    "int8": _uniform(Precision.INT8),
    "int8-dynamic": _uniform(Precision.INT8_DYNAMIC),
    "int4-weights": _uniform(Precision.INT4),
    "w8a16": _uniform(Precision.W8A16),
    "int8-except-ends": _int8_except_ends,
}

PRESET_DESCRIPTIONS = {
    "fp32": "every layer in 32-bit float (the baseline)",
    "fp16": "every layer in 16-bit float",
    "int8": "every layer INT8 static (8-bit weights and calibrated 8-bit activations)",
    "int8-dynamic": "every layer INT8 dynamic (8-bit weights, activations quantized at run time)",
    "int4-weights": "4-bit weights on every Conv and MatMul/Linear layer that takes them, others FP32",
    "w8a16": "8-bit weights with 16-bit activations on every layer",
    "int8-except-ends": "INT8 static everywhere except the first and last layer (FP32)",
}


def preset_plan(name: str, layers: list[LayerInfo]) -> Plan:
    """The plan a preset names, for a model's layers; PlanError lists the presets."""
    try:
        return PRESETS[name](layers)
    except KeyError:
        raise PlanError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}") from None
