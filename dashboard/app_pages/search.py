"""Sensitivity & search: what each layer costs at each precision, and a measured search for the best plans."""

from __future__ import annotations

import functools
from typing import Any

import pandas as pd
import streamlit as st

from dashboard import cached, editing, state, widgets
from dashboard.search_logic import (
    DEFAULT_PRECISIONS,
    FORM_FIELDS,
    form_defaults,
    form_from_spec,
    fp32_point,
    pin,
    pins_from_spec,
    plan_assignment,
    recommendation_text,
    spec_from_form,
    trials_table,
)
from engine.search import SearchSpec, default_candidates
from engine.search_charts import (
    SORTS,
    SensitivityChartInfo,
    picked_bar,
    sensitivity_chart_info,
    sensitivity_figure,
)
from engine.search_history import latest_search
from engine.search_trials import recommend
from engine.sensitivity import ALONE, KEEP_FP32
from engine.types import CalibrationMethod, PlanError, Precision

POLL_S = 1.5  # how often a running pass or search is read back from the store
VIEWS = {
    ALONE: "Each layer alone at a precision (vs FP32)",
    KEEP_FP32: "Reverse: all INT8 but this layer FP32 (vs all-INT8)",
}

model = state.current_model()
runner = cached.runner()
layers = cached.layers(model)
layer_names = [x.name for x in layers]
offered = [p.value for p in Precision if p is not Precision.FP32 and any(p in x.accepts for x in layers)]
# Added without labelled data: no accuracy to measure (sensitivity is drawn by SQNR, nothing to search).
no_labels = not cached.has_labels(model)


def _spec(form: dict[str, Any], pinned: dict[str, str]) -> SearchSpec:
    bundle = runner.model(model)
    return spec_from_form(lambda ps: default_candidates(runner.engine, bundle, ps), form, pinned)


def _restore_latest_search() -> None:
    """Show the model's latest search (kept in the store) with its settings back in the form, so a
    reload loses nothing and Find best plans pressed unchanged continues it. A search the form cannot
    ask for again (the model's layers or precisions changed since) leaves the form at its defaults."""
    bundle = runner.model(model)
    stored = latest_search(runner.engine, bundle, [runner.settings(c) for c in CalibrationMethod])
    if stored is None:
        return
    form = form_from_spec(stored.spec, offered)
    try:
        defaults = default_candidates(runner.engine, bundle, [Precision(v) for v in form["allowed"]])
        pinned = pins_from_spec(stored.spec, defaults)
        rebuilt = spec_from_form(lambda _: defaults, form, pinned)  # the candidates just computed
    except (ValueError, PlanError):
        return
    if rebuilt.identity() != stored.spec.identity():  # the form cannot ask for it again: another search
        return
    for field, key in state.SEARCH_FORM_KEYS.items():
        state.put(key, form[field])
    state.put(state.SEARCH_CALIBRATION, stored.settings.calibration)
    if pinned:
        # Into the search only: the plan being edited may have changed since (it is kept on its own).
        state.set_pins(model, pinned)
    state.show_search(model, rebuilt, stored.settings.calibration.value, restored=form)


# Before the restore below, which writes into the form: taking the form overwrites what it holds.
state.take_search_form(cached.model_id(model), form_defaults(offered))
# The first visit of a session (a reload, a new tab) to a model with no search shown here: its
# latest search, from the store.
if state.first_search_visit(model) and not no_labels and state.shown_search(model) is None:
    _restore_latest_search()

st.header(f"Sensitivity & search · {model}")
widgets.jobs_panel()


def _running(kind: str) -> bool:
    return bool(runner.active_jobs(kind, model))


calibration: CalibrationMethod = st.columns([2, 1])[0].selectbox(
    "Calibration of INT8 and W8A16 activations",
    list(CalibrationMethod),
    format_func=lambda m: f"{m.label}: {m.description}",
    key=state.SEARCH_CALIBRATION,
    persist_state=state.KEEP,
    help="Used by the sensitivity pass and the search alike; other precisions do not use it.",
)

# --- per-layer sensitivity ------------------------------------------------------------------------
st.subheader("Per-layer sensitivity")
st.caption(
    "Each probe is a plan really quantized and measured on the evaluation split: one layer at a precision "
    "with every other layer FP32, or (reverse view) every layer INT8 except one kept FP32. Accuracy "
    "changes are in percentage points with their 95% bootstrap interval as error bars. Time shares come "
    "from ONNX Runtime's per-node profiler on the FP32 model, batch 1, on this machine."
)
probing = runner.probing(model)  # the precisions of a pass running on this model, if one is
if probing is not None and state.get(state.SENS_PRECISIONS) is None:
    # A new session (a reload, a new tab) while a pass runs: show that pass, not the defaults.
    state.put(state.SENS_PRECISIONS, [p.value for p in probing if p.value in offered])
c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
probed = c1.multiselect(
    "Precisions to probe (each layer only at those it accepts)",
    offered,
    default=None
    if state.get(state.SENS_PRECISIONS) is not None
    else [p.value for p in DEFAULT_PRECISIONS if p.value in offered],
    format_func=lambda v: Precision(v).label,
    key=state.SENS_PRECISIONS,
    persist_state=state.KEEP,
)
sens_running = _running("sensitivity")


def _search_probing() -> bool:
    # A search first measures its own probes (each layer alone at its candidate precisions; its
    # progress says "sensitivity: ..."): a pass started beside it would measure them twice, and they
    # land in this chart as they come. After that phase it measures whole plans: nothing to wait for.
    return any(
        "sensitivity" in (j["message"] or "") or (j["message"] or "").endswith(": starting")
        for j in runner.active_jobs("search", model)
    )


probes_by_search = _search_probing()
if c2.button(
    "Run sensitivity pass",
    key=state.SENS_RUN,
    type="primary",
    disabled=sens_running or probes_by_search or not probed,
    help="Probes already measured are served from the store, so a pass that stopped continues."
    + (
        " Not while a search on this model measures its own probes; run it once that is done."
        if probes_by_search
        else ""
    ),
):
    runner.submit_sensitivity(model, calibration, [Precision(v) for v in probed])
    st.toast("Sensitivity pass started in the background: bars appear as probes land.")
    st.rerun()


def _pin_from_chart(info: SensitivityChartInfo) -> None:
    # A click on a bar: pin that layer at that precision in the Plan page's editor and in the search.
    picked = picked_bar(info, state.get(state.chart_key("sensitivity")))
    if picked is None:
        return
    layer, precision = picked
    pins, assignment = pin(state.pins(model), editing.current_plan(model, layers), layer, precision)
    state.set_pins(model, pins)
    editing.set_plan(model, assignment)
    state.put(state.PIN_TOAST, f"Pinned {layer} at {Precision(precision).label} in the plan editor.")
    st.rerun()  # the whole page, so the search section lists the new pin too


def _clear_pins() -> None:
    state.set_pins(model, {})


@st.fragment(run_every=POLL_S if sens_running or probes_by_search else None)
def sensitivity_view() -> None:
    if not probed:
        st.info("Pick at least one precision to probe.")
        return
    frame = cached.sensitivity(model, calibration.value, tuple(probed), cached.store_version())
    if frame["status"].eq("pending").all() and probes_by_search and not sens_running:
        st.info(
            "A search on this model is measuring its own probes (each layer alone at its candidate "
            "precisions): those appear here as they land; run the pass for the rest once that is done."
        )
        return
    if frame["status"].eq("pending").all() and not sens_running:
        st.info(
            f"Not measured yet: Run sensitivity pass measures {len(frame)} probe plans and the FP32 and "
            "all-INT8 plans they are compared with (no latency timing, so each costs about one evaluation "
            "of the model), then each layer's share of FP32 time."
        )
        return
    try:
        profile = cached.fp32_profile(model)
    except Exception as e:  # the profiler failed in its worker: the chart goes on without time shares
        st.warning(f"Each layer's time share could not be profiled ({type(e).__name__}: {e}).")
        profile = None
    c1, c2 = st.columns(2)
    view = c1.radio(
        "View",
        list(VIEWS),
        format_func=VIEWS.get,
        key=state.SENS_VIEW,
        persist_state=state.KEEP,
        horizontal=True,
    )
    sort = c2.selectbox(
        "Sort layers by",
        list(SORTS),
        format_func=lambda v: SORTS[v].replace("accuracy", "output SQNR") if no_labels else SORTS[v],
        key=state.SENS_SORT,
        persist_state=state.KEEP,
    )
    if no_labels:
        st.info(
            f"{model} has no labelled evaluation data, so no probe's accuracy can be measured: the bars "
            "are each probe's output SQNR against FP32 (dB; lower means further from FP32)."
        )
    info = sensitivity_chart_info(frame, profile, view, sort, "sqnr" if no_labels else "accuracy")
    total = info.measured + info.pending + info.failed
    status = f"{info.measured} of {total} probes measured in this view"
    # Of the probes not measured, those the running pass measures (its precisions) are still to come.
    pending = frame[(frame["view"] == view) & (frame["status"] == "pending")]
    coming = int(pending["precision"].isin([p.value for p in probing]).sum()) if probing else info.pending
    if info.pending and sens_running and coming < info.pending:
        status += (
            f", {coming} still to come (they appear as they land), {info.pending - coming} not measured "
            "by the running pass (its precisions are in the jobs panel)"
        )
    elif info.pending and sens_running:
        status += f", {info.pending} still to come (they appear as they land)"
    elif info.pending and probes_by_search and view == ALONE:  # the search measures no reverse-view probe
        status += f", {info.pending} still to come (a search on this model is measuring its own probes)"
    elif info.pending:
        status += f", {info.pending} not measured yet (Run sensitivity pass measures them)"
    if info.failed:
        status += f", {info.failed} failed (reasons in the table below)"
    undrawn = info.measured - sum(len(bars) for _, bars in info.traces)
    if undrawn:  # measured, but no finite value to draw: SQNR of outputs identical to FP32's, or NaN
        status += f"; {undrawn} with no finite {'SQNR' if no_labels else 'accuracy'} are in the table only"
    st.caption(status + ".")
    st.plotly_chart(
        sensitivity_figure(info),
        key=state.chart_key("sensitivity"),
        on_select=functools.partial(_pin_from_chart, info),
        selection_mode="points",
        width="stretch",
        theme=None,
    )
    st.caption(
        "Click a bar to pin that layer at that precision in the plan editor (Plan page)"
        + (
            "."
            if no_labels
            else "; the search below then keeps it there. Whiskers: 95% interval of the accuracy change."
        )
    )
    with st.expander("All probes as a table"):
        shares = {}
        if profile is not None:
            fp32 = profile[profile["precision"] == Precision.FP32.value]
            shares = dict(zip(fp32["layer"], fp32["share"] * 100, strict=True))
        table = frame.assign(
            precision=frame["precision"].map(lambda v: Precision(v).label),
            accuracy_change_pp=frame["accuracy_change"] * 100,
            ci_pp=[
                f"{lo * 100:+.2f} to {hi * 100:+.2f}" if pd.notna(lo) and pd.notna(hi) else ""
                for lo, hi in zip(frame["ci_low"], frame["ci_high"], strict=True)
            ],
            size_change_kb=frame["size_change_bytes"] / 1e3,
            fp32_time_share_pct=frame["layer"].map(shares),
        )
        st.dataframe(
            table[
                ["layer", "op_type", "view", "precision", "status", "accuracy_change_pp", "ci_pp", "sqnr_db"]
                + ["size_change_kb", "fp32_time_share_pct", "error"]
            ],
            hide_index=True,
            column_config={
                "accuracy_change_pp": st.column_config.NumberColumn("accuracy change (pp)", format="%+.2f"),
                "ci_pp": "95% CI (pp)",
                "sqnr_db": st.column_config.NumberColumn("output SQNR (dB)", format="%.1f"),
                "size_change_kb": st.column_config.NumberColumn("size change (kB)", format="%+.1f"),
                "fp32_time_share_pct": st.column_config.NumberColumn(
                    "share of FP32 time (%, batch 1, this machine)", format="%.1f"
                ),
            },
        )


sensitivity_view()
toast = state.get(state.PIN_TOAST)
if toast:
    st.toast(toast)
    state.put(state.PIN_TOAST, None)
pins = state.pins(model)
if pins:
    c1, c2 = st.columns([5, 1], vertical_alignment="center")
    c1.success(
        "Pinned in the plan editor, and kept there by the search: "
        + ", ".join(f"`{n}` at {Precision(v).label}" for n, v in pins.items())
        + "."
    )
    c2.button("Clear pins", key=state.CLEAR_PINS, on_click=_clear_pins, help="The plan editor keeps them.")

# --- find best plans ------------------------------------------------------------------------------
st.subheader("Find best plans")
if no_labels:
    st.info(
        f"{model} has no labelled evaluation data: the search trades accuracy against size and latency, "
        "and no accuracy can be measured. Add it again with labels on the Models page to search it."
    )
    st.stop()
st.caption(
    "An additive model built from the sensitivity of each layer proposes the cheapest plans for a ladder "
    "of accuracy limits; NSGA-II then searches without assuming the layers add up. Every plan is really "
    "quantized and measured (the predictions are shown beside the measurements). Pressing the button "
    "again with the same settings continues the same search: nothing is measured twice."
)
# Only the button starts a search: Enter in a field did too, and each accidental one costs minutes.
with st.form(state.SEARCH_FORM, border=True, enter_to_submit=False):
    # No defaults on these widgets: state.take_search_form has set each one (the model's own values, or
    # form_defaults), and Streamlit warns of a default beside a value set through the session state.
    allowed = st.multiselect(
        "Candidate precisions (FP32 is always one)",
        offered,
        format_func=lambda v: Precision(v).label,
        key=state.SEARCH_PRECISIONS,
        persist_state=state.KEEP,
    )
    c1, c2, c3 = st.columns(3)
    # No min_value / max_value on these fields: the browser would only draw a red border around a value
    # out of range and keep the old one without a word; spec_from_form refuses it in plain words.
    max_drop = c1.number_input(
        "Max accuracy drop (optional)",
        value=None,
        step=0.1,
        placeholder="no limit",
        key=state.SEARCH_MAX_DROP,
        persist_state=state.KEEP,
    )
    unit = c1.radio(
        "Drop measured in",
        ["points", "relative"],
        format_func={"points": "percentage points", "relative": "% of FP32 accuracy"}.get,
        key=state.SEARCH_DROP_UNIT,
        persist_state=state.KEEP,
        horizontal=True,
    )
    max_kb = c2.number_input(
        "Max size (kB, optional)",
        value=None,
        placeholder="no limit",
        key=state.SEARCH_MAX_SIZE,
        persist_state=state.KEEP,
    )
    max_ms = c3.number_input(
        "Max latency (ms, batch 1, this machine, optional)",
        value=None,
        format="%.3f",
        placeholder="no limit",
        key=state.SEARCH_MAX_LATENCY,
        persist_state=state.KEEP,
    )
    c1, c2, c3 = st.columns(3)
    objective = c1.radio(
        "Recommend the",
        ["size", "latency"],
        format_func={"size": "smallest plan", "latency": "fastest plan"}.get,
        key=state.SEARCH_OBJECTIVE,
        persist_state=state.KEEP,
        horizontal=True,
        help="Among the measured plans that meet every limit.",
    )
    budget = c2.number_input(
        "Budget: plans to measure",
        value=None,
        step=1,
        key=state.SEARCH_BUDGET,
        persist_state=state.KEEP,
        help="Plans measured for the search itself; the sensitivity probes it needs come on top.",
    )
    seconds = c3.number_input(
        "Time limit (s, optional)",
        value=None,
        placeholder="none",
        key=state.SEARCH_SECONDS,
        persist_state=state.KEEP,
    )
    submitted = st.form_submit_button("Find best plans", type="primary", key=state.SEARCH_RUN)
# What a press of Find best plans acted on: the settings it was given (a form: they change only on a
# press), and whether a search on the model was running then. Each message stays while its own is so.
form_now = dict(
    zip(FORM_FIELDS, (allowed, max_drop, unit, max_kb, max_ms, objective, budget, seconds), strict=True)
)
given = (model, pins, calibration, form_now)
busy = (model, bool(_running("search")))
if submitted:
    refusal, wait = None, None
    try:
        spec = _spec(form_now, pins)
    except (ValueError, PlanError) as e:
        refusal = f"These settings cannot start a search: {e}"
    else:
        if busy[1]:
            wait = "A search on this model is still running: wait for it to end, then press again."
        else:
            try:
                runner.submit_search(model, spec, calibration)
            except PlanError as e:  # e.g. a pin no longer fits the model's layers
                refusal = f"These settings cannot start a search: {e}"
    widgets.keep_outcome(state.SEARCH_OUTCOME, given, refusal)
    widgets.keep_outcome(state.SEARCH_BUSY, busy, wait, kind="warning")
    if refusal is None and wait is None:
        state.show_search(model, spec, calibration.value)
        st.rerun()
widgets.show_outcome(state.SEARCH_OUTCOME, given)
widgets.show_outcome(state.SEARCH_BUSY, busy)

shown = state.shown_search(model)
if shown is None:
    st.stop()
spec, spec_calibration = shown
restored = state.search_restored(model)
if restored is not None:
    # A press refused (its settings, or a search still running) leaves other settings in the form.
    if form_now == restored:
        st.caption(
            "This is the latest search of this model, restored: its settings are kept in the store, so a "
            "reload shows it again. Find best plans with these settings continues it; nothing is measured "
            "twice."
        )
    else:
        st.caption(
            "This is the latest search of this model, restored from the store. The form above now holds "
            "other settings: Find best plans starts the search they ask for."
        )
search_running = _running("search")
key = cached.search_key(model, spec, spec_calibration)
fp32 = fp32_point(runner.store.get_ok(cached.baseline_key(model)))


def _trials() -> pd.DataFrame:
    return cached.search_trials(key, model, spec_calibration, cached.store_version(), spec)


def _recommendation(trials: pd.DataFrame) -> tuple[str | None, str]:
    if trials.empty or fp32 is None:
        return None, ""
    return recommend(trials, spec, fp32)


trials = _trials()
recommended, message = _recommendation(trials)
if search_running:
    st.info("Searching: plans appear on the plots and in the table as they are measured.")
elif trials.empty:
    st.info("No plan of this search is measured yet. Press Find best plans to start (or continue) it.")
elif recommended is not None:
    row = trials.set_index("result_key").loc[recommended]
    limit = spec.constraints.drop_limit(fp32["accuracy"])
    st.success(f"**Recommended: {row['plan_summary']}**  \n{recommendation_text(row, fp32, limit)}")
    st.caption(message[0].upper() + message[1:] + ".")

    def _load() -> None:
        state.put(state.MODEL, model)  # the Plan page shows the model it was loaded for
        editing.set_plan(model, plan_assignment(row["plan"], layer_names))

    if st.button("Load recommended plan into the plan editor", key=state.SEARCH_LOAD, on_click=_load):
        st.switch_page("app_pages/plan.py")
else:
    st.warning(
        message[0].upper() + message[1:] + ". Loosen a limit, add candidate precisions or raise the budget."
    )


@st.fragment(run_every=POLL_S if search_running else None)
def search_view() -> None:
    trials = _trials()
    if trials.empty:
        return
    ringed, _ = _recommendation(trials)
    base = cached.baseline_key(model)
    keys = (*trials["result_key"], base)
    version = cached.store_version()
    st.plotly_chart(
        cached.search_figure(version, tuple(keys), ringed), key=state.chart_key("search"), theme=None
    )
    frame = cached.results(version)
    envs = {
        (e.get("cpu"), e.get("onnxruntime")) for e in frame.loc[frame["key"].isin(keys), "environment"] if e
    }
    st.caption(
        f"{len(trials)} plans measured (budget {spec.max_evaluations}). Latency: median at batch 1, one "
        "intra-op thread, on this machine ("
        + "; ".join(f"{cpu}, ONNX Runtime {ort}" for cpu, ort in sorted(envs, key=str))
        + "). Orange: Pareto-optimal on that panel's two axes; star: FP32; ring: the recommended plan. "
        "Hover a point for its 95% intervals."
    )
    st.dataframe(
        trials_table(trials, ringed),
        hide_index=True,
        column_config={
            c: st.column_config.NumberColumn(c, format=f)
            for c, f in (
                ("accuracy (%)", "%.2f"),
                ("change (pp)", "%+.2f"),
                ("predicted change (pp)", "%+.2f"),
                ("change beyond prediction (pp)", "%+.2f"),
                ("size (kB)", "%.1f"),
                ("predicted size (kB)", "%.1f"),
                ("latency b1 (ms)", "%.3f"),
                ("predicted latency (ms)", "%.3f"),
            )
        },
    )
    st.caption(
        "Changes are against FP32 (a loss is negative). Predicted: the sum of each layer's own effect from "
        "the sensitivity pass. Where the measured change, size or latency departs from it, the layers do not "
        "simply add up (errors compound, or quantize/dequantize pairs at precision boundaries cost time). "
        "Uniform plans have no latency prediction: their measured latency sets the predictor's scale."
    )


search_view()
