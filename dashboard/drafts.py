"""The plan being edited for each model, kept on disk: a reload or a restart does not lose it.

One small JSON file per model under <home>/drafts/, named by the model's identity (name, network
and data: a model added under a removed one's name does not inherit its draft). Removing a model on
the Models page removes its draft. A draft that no longer fits the model's layers is ignored, never
applied in part.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from engine.evaluate import atomic_write
from engine.types import CalibrationMethod, LayerInfo, Precision


@dataclass(frozen=True)
class Draft:
    assignment: dict[str, str]  # layer name -> precision value, every layer
    calibration: CalibrationMethod | None  # of the INT8 and W8A16 activations, if one was chosen


def _path(home: Path, model_id: str) -> Path:
    return home / "drafts" / f"{hashlib.sha256(model_id.encode()).hexdigest()[:24]}.json"


def save(
    home: Path, model_id: str, assignment: Mapping[str, str], calibration: CalibrationMethod | None = None
) -> None:
    """Keep the plan being edited, written whole or not at all."""
    path = _path(home, model_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "model_id": model_id,
        "assignment": dict(assignment),
        "calibration": calibration.value if calibration is not None else None,
    }
    atomic_write(path, json.dumps(data).encode())


def load(home: Path, model_id: str, layers: list[LayerInfo]) -> Draft | None:
    """The kept plan, if there is one and every layer of the model is in it at a precision it
    accepts; None otherwise (no draft, a damaged file, or a draft of other layers)."""
    try:
        data = json.loads(_path(home, model_id).read_text(encoding="utf-8"))
        assignment = {str(k): str(v) for k, v in data["assignment"].items()}
        if data["model_id"] != model_id or set(assignment) != {x.name for x in layers}:
            return None
        if any(Precision(assignment[x.name]) not in x.accepts for x in layers):
            return None
        calibration = data.get("calibration")
        return Draft(assignment, CalibrationMethod(calibration) if calibration is not None else None)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def remove(home: Path, model_id: str) -> None:
    """Drop the model's kept plan, if any: its model was removed. One that cannot be (a folder not
    writable) stays: the removal of the model goes on, and only the same files added again find it."""
    with contextlib.suppress(OSError):
        _path(home, model_id).unlink(missing_ok=True)
