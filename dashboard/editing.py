"""The plan being edited for each model, for every page that reads or changes it.

This session's plan if it has one; else the one kept on disk (dashboard/drafts.py) from an earlier
session, so a reload or a restart opens the Plan page, and the pins the Search page sets, on it;
else all FP32. Every change is kept on disk at once, whichever page makes it. When another tab kept
a plan since this session last read or kept one, this session takes that plan before changing it:
an edit in a tab left open on an older plan lands on the newer one instead of overwriting it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import streamlit as st

from dashboard import cached, drafts, state
from dashboard.plan_logic import uniform
from dashboard.text import one_line
from engine.types import CalibrationMethod, LayerInfo, Plan


def current_plan(model: str, layers: list[LayerInfo]) -> dict[str, str]:
    """The plan being edited (layer name -> precision value, every layer)."""
    assignment = state.plan_assignment(model)
    kept = drafts.load(cached.runner().engine.home, cached.model_id(model), layers)
    if assignment is not None:
        saved = state.get(state.draft_saved_key(model))
        if kept is None or saved is None or (kept.assignment, kept.calibration) == saved:
            return assignment
        # Kept by another tab since this one last read or kept it: that plan is the newer one.
        state.put(state.PLAN_CHANGED_ELSEWHERE, model)
        state.set_plan_assignment(model, kept.assignment)
        if kept.calibration is not None:
            state.put(state.calibration_key(model), kept.calibration)
        state.put(state.draft_saved_key(model), (dict(kept.assignment), _calibration(model)))
        return dict(kept.assignment)
    if kept is None:
        assignment = uniform(layers)
    else:
        assignment = kept.assignment
        if kept.calibration is not None and state.get(state.calibration_key(model)) is None:
            state.put(state.calibration_key(model), kept.calibration)  # the Plan page's picker starts on it
    state.set_plan_assignment(model, assignment)
    state.put(state.draft_saved_key(model), (dict(assignment), _calibration(model)))
    return assignment


def set_plan(model: str, assignment: Mapping[str, str], calibration: CalibrationMethod | None = None) -> None:
    """Make `assignment` the plan being edited, and keep it; with `calibration` (see measured_with), the
    Plan page's calibration picker too, kept with the plan."""
    state.set_plan_assignment(model, dict(assignment))
    if calibration is not None:
        state.put(state.calibration_key(model), calibration)
    keep(model)


def measured_with(plan: Mapping[str, Any], calibration: str | None) -> CalibrationMethod | None:
    """The calibration a stored plan (Plan JSON) was measured with, to load with it: None if none of its
    precisions is calibrated (INT8, W8A16), or none is known. Loaded without it, the Plan page kept its
    picker's method and Evaluate measured another plan (the MinMax one) than the result loaded."""
    if calibration is None:
        return None
    p = Plan.from_json(dict(plan))
    return (
        CalibrationMethod(calibration) if any(x.calibrated for x in (p.default, *p.layers.values())) else None
    )


def keep(model: str) -> None:
    """Keep the session's plan and calibration on disk, if they changed since last kept."""
    assignment = state.plan_assignment(model)
    if assignment is None:
        return
    now = (dict(assignment), _calibration(model))
    if state.get(state.draft_saved_key(model)) != now:
        try:
            drafts.save(cached.runner().engine.home, cached.model_id(model), *now)
        except OSError as e:  # a full disk, a folder not writable: the session's plan still stands
            st.warning(f"The plan could not be kept on disk ({one_line(e)}): it is kept in this tab only.")
            return
        state.put(state.draft_saved_key(model), now)


def _calibration(model: str) -> CalibrationMethod | None:
    value = state.get(state.calibration_key(model))
    return CalibrationMethod(value) if value is not None else None
