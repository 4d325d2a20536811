"""Pure plan-editing logic for the Plan page (no streamlit here, so it is tested directly)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from engine.types import LayerInfo, Precision

LABEL_TO_VALUE = {p.label: p.value for p in Precision}
VALUE_TO_LABEL = {p.value: p.label for p in Precision}
# Bytes per FP32 weight byte: INT4 packs two weights per byte. Scales and zero points are ignored,
# which is why the page calls the result an estimate.
_SIZE_FACTOR = {p.value: p.weight_bits / 32 for p in Precision}


def uniform(layers: list[LayerInfo], precision: str = "fp32") -> dict[str, str]:
    """Every layer at one precision where it accepts it, FP32 elsewhere."""
    p = Precision(precision)
    return {x.name: (p.value if p in x.accepts else "fp32") for x in layers}


def editor_frame(layers: list[LayerInfo], assignment: Mapping[str, str]) -> pd.DataFrame:
    """Rows of the data editor: one per layer, precision shown by its label."""
    return pd.DataFrame(
        {
            "layer": [x.name for x in layers],
            "op": [x.op_type for x in layers],
            "params": [x.params for x in layers],
            "weights_kb": [x.weight_bytes / 1e3 for x in layers],
            "precision": [VALUE_TO_LABEL[assignment.get(x.name, "fp32")] for x in layers],
            "accepts": [", ".join(p.label for p in x.accepts) for x in layers],
        }
    )


def apply_edits(
    layers: list[LayerInfo], assignment: Mapping[str, str], edited_rows: Mapping[Any, Mapping[str, Any]]
) -> tuple[dict[str, str], list[str]]:
    """Apply data_editor edits ({row: {"precision": label}}); rows a layer cannot take are reverted.

    Returns the new assignment and one plain message per rejected row.
    """
    new = dict(assignment)
    notes = []
    for row, change in edited_rows.items():
        if "precision" not in change:
            continue
        layer = layers[int(row)]
        label = change["precision"]
        value = LABEL_TO_VALUE.get(label)
        if value is None:
            notes.append(f"{layer.name}: pick a precision from the list.")
            continue
        p = Precision(value)
        if p not in layer.accepts:
            why = layer.rejects.get(p, "not supported for this op type")
            accepted = ", ".join(a.label for a in layer.accepts)
            notes.append(f"{layer.name} ({layer.op_type}) cannot be {p.label}: {why}. It accepts {accepted}.")
            continue
        new[layer.name] = p.value
    return new, notes


def set_op_type(
    layers: list[LayerInfo], assignment: Mapping[str, str], op_type: str, precision: str
) -> tuple[dict[str, str], int, int]:
    """Set every layer of one op type that accepts the precision; returns (assignment, changed, skipped)."""
    p = Precision(precision)
    new = dict(assignment)
    changed = skipped = 0
    for x in layers:
        if x.op_type != op_type:
            continue
        if p in x.accepts:
            new[x.name] = p.value
            changed += 1
        else:
            skipped += 1
    return new, changed, skipped


def estimate_size(layers: list[LayerInfo], assignment: Mapping[str, str], fp32_model_bytes: int) -> int:
    """Estimated model bytes: each layer's weights scaled by its precision, plus the non-layer bytes."""
    layer_bytes = sum(x.weight_bytes for x in layers)
    other = max(fp32_model_bytes - layer_bytes, 0)
    return int(other + sum(x.weight_bytes * _SIZE_FACTOR[assignment.get(x.name, "fp32")] for x in layers))
