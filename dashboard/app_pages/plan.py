"""Plan: set each layer's precision (table, presets, by op type), see a size estimate, and evaluate."""

from __future__ import annotations

import streamlit as st

from dashboard import cached, editing, state, widgets
from dashboard.plan_logic import (
    LABEL_TO_VALUE,
    VALUE_TO_LABEL,
    apply_edits,
    editor_frame,
    estimate_size,
    set_op_type,
)
from engine.presets import PRESET_DESCRIPTIONS, PRESETS, preset_plan
from engine.types import CalibrationMethod, Plan, PlanError, Precision, plan_summary

model = state.current_model()
runner = cached.runner()
layers = cached.layers(model)
by_name = {x.name: x for x in layers}
assignment = editing.current_plan(model, layers)  # this session's, else the one kept on disk

st.header(f"Plan · {model}")
widgets.jobs_panel()
ELSEWHERE = (
    "This plan was changed in another tab since this one showed it: this tab now shows that plan, with "
    "the change just made here applied on top of it. Check the layers before you evaluate."
)
if state.get(state.PLAN_CHANGED_ELSEWHERE) == model:
    st.info(ELSEWHERE)  # until this run ends, or an edit below carries it into its notes


def _set(new: dict[str, str], notes: list[str] | None = None) -> None:
    """Make `new` the plan; `notes`: what the edit left to say, shown while the plan stays this one
    (every rerun draws them: a background job ending reruns the app, which would wipe a one-off)."""
    if state.get(state.PLAN_CHANGED_ELSEWHERE) == model:  # the edit reruns the page: keep saying it
        state.put(state.PLAN_CHANGED_ELSEWHERE, None)
        notes = [*(notes or []), ELSEWHERE]
    editing.set_plan(model, new)
    state.put(state.EDIT_NOTES, (model, dict(new), notes or []))


# --- presets, op types, one layer --------------------------------------------------------------
c1, c2, c3 = st.columns(3)
with c1:
    preset = st.selectbox(
        "Preset", list(PRESETS), key=state.PRESET, format_func=lambda p: f"{p}: {PRESET_DESCRIPTIONS[p]}"
    )
    if st.button("Apply preset", key="qd_apply_preset"):
        bundle = runner.model(model)
        # The engine resolves a preset per layer (layers that cannot take it stay FP32).
        job = runner.engine.job(bundle, preset_plan(preset, layers))
        _set({n: p.value for n, p in job.plan.layers.items()})
        st.rerun()
with c2:
    op_types = sorted({x.op_type for x in layers})
    op = st.selectbox("All layers of op type", op_types, key=state.OP_TYPE)
    offered = [p for p in Precision if any(p in x.accepts for x in layers if x.op_type == op)]
    op_prec = st.selectbox("set to", offered, key=state.op_precision_key(op), format_func=lambda p: p.label)
    if st.button(f"Set all {op}", key="qd_apply_op"):
        new, changed, skipped = set_op_type(layers, assignment, op, op_prec.value)
        note = f"{changed} {op} layer(s) set to {op_prec.label}."
        if skipped:
            note += f" {skipped} cannot take {op_prec.label} and were left as they were."
        _set(new, [note])
        st.rerun()
with c3:
    one = st.selectbox("One layer", [x.name for x in layers], key=state.ONE_LAYER)
    one_prec = st.selectbox(
        "set to",
        list(by_name[one].accepts),
        key=state.one_precision_key(list(by_name).index(one)),
        format_func=lambda p: p.label,
        help="Only the precisions this layer accepts are offered.",
    )
    if st.button("Set layer", key="qd_apply_one"):
        _set({**assignment, one: one_prec.value})
        st.rerun()


# --- the table ---------------------------------------------------------------------------------
edited = st.data_editor(
    editor_frame(layers, assignment),
    key=state.editor_key(model),
    hide_index=True,
    disabled=["layer", "op", "params", "weights_kb", "accepts"],
    column_config={
        "precision": st.column_config.SelectboxColumn(
            "precision", options=list(LABEL_TO_VALUE), required=True,
            help="Each layer takes only the precisions in its 'accepts' column; others are reverted.",
        ),
        "weights_kb": st.column_config.NumberColumn("weights (kB, FP32)", format="%.1f"),
    },
)  # fmt: skip
# SelectboxColumn options are per column, so each row is checked against what its layer accepts.
changes = {
    i: {"precision": label}
    for i, label in enumerate(edited["precision"])
    if label != VALUE_TO_LABEL[assignment[layers[i].name]]
}
if changes:
    new, notes = apply_edits(layers, assignment, changes)
    _set(new, ["Not applied: " + n for n in notes])  # a new editor key: rejected rows show their old value
    st.rerun()
edit_notes = state.get(state.EDIT_NOTES)
if edit_notes is not None and edit_notes[:2] == (model, assignment):
    for note in edit_notes[2]:
        st.warning(note)

# --- estimate and evaluate ----------------------------------------------------------------------
precisions = {n: Precision(v) for n, v in assignment.items()}
base = runner.store.get_ok(cached.baseline_key(model))
fp32_bytes = base["metrics"]["size_bytes"] if base else cached.model_bytes(model)
est = estimate_size(layers, assignment, fp32_bytes)
c1, c2, c3 = st.columns(3)
c1.metric("Plan", plan_summary(precisions))
c2.metric(
    "Estimated size", widgets.fmt_bytes(est), help="An estimate from the layer table, before measuring."
)
c3.metric("Estimated compression vs FP32", f"{fp32_bytes / est:.2f}×")
st.caption(
    "Estimate: each layer's FP32 weight bytes × bits/32 for its precision, plus the bytes outside the "
    "layers. Scales, zero points and graph changes are not counted; Evaluate measures the real file."
)

plan = Plan(layers=precisions)
calibration = CalibrationMethod.MINMAX
if any(p.calibrated for p in precisions.values()):
    calibration = st.selectbox(
        "Calibration of INT8 and W8A16 activations",
        list(CalibrationMethod),
        format_func=lambda m: f"{m.label}: {m.description}",
        key=state.calibration_key(model),
        persist_state=state.KEEP,
        help="How each activation's 8- or 16-bit range is chosen from the calibration split. "
        "Layers in other precisions do not use it.",
    )
editing.keep(model)  # the calibration picked is kept with the plan
if state.get(state.PLAN_CHANGED_ELSEWHERE) == model:  # said once above; this run went through
    state.put(state.PLAN_CHANGED_ELSEWHERE, None)
known = runner.engine.cached(runner.engine.job(runner.model(model), plan, runner.settings(calibration)))
if st.button("Evaluate", key="qd_evaluate", type="primary"):
    try:
        runner.submit(model, plan, calibration=calibration)
    except PlanError as e:
        widgets.keep_outcome(
            state.PLAN_OUTCOME, (model, plan, calibration), f"This plan does not fit {model}: {e}"
        )
    else:
        widgets.keep_outcome(state.PLAN_OUTCOME, (model, plan, calibration), None)
        st.toast("Submitted: it runs in a worker process. This page stays usable; Explore shows the result.")
        st.rerun()
widgets.show_outcome(state.PLAN_OUTCOME, (model, plan, calibration))
if known is not None:
    # All three objectives: after an evaluation this is where its outcome shows first.
    st.info(f"Measured: {widgets.measured_text(known)}.")

    def _show_known() -> None:
        # Before the run, like the other load buttons: a page switch mid-run drops the sidebar
        # picker's value, and Explore would open on the first model listed.
        state.put(state.MODEL, model)
        state.select_result(known["key"])

    if st.button("Show it on Explore", key="qd_show_known", on_click=_show_known):
        st.switch_page("app_pages/explore.py")
