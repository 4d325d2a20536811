"""The Per-layer sensitivity section of the Sensitivity & search page: the pass, its chart and table,
and the pins a click on a bar sets."""

from __future__ import annotations

import functools

import pandas as pd
import streamlit as st

from dashboard import cached, editing, state
from dashboard.search_context import POLL_S, SearchPage
from dashboard.search_logic import DEFAULT_PRECISIONS, pin
from engine.search_charts import (
    SORTS,
    SensitivityChartInfo,
    picked_bar,
    sensitivity_chart_info,
    sensitivity_figure,
)
from engine.sensitivity import ALONE, KEEP_FP32
from engine.types import CalibrationMethod, Precision

VIEWS = {
    ALONE: "Each layer alone at a precision (vs FP32)",
    KEEP_FP32: "Reverse: all INT8 but this layer FP32 (vs all-INT8)",
}


def take_running_pass(page: SearchPage) -> None:
    """Before the page draws anything: in a new session (a reload, a new tab) while a pass runs on the
    model, the section's picks are that pass's, not the defaults: its precisions and its calibration.
    With MinMax in the picker while an Entropy pass ran, the page counted its probes as still to come in
    a view they never land in, and invited a second pass once it ended."""
    if state.get(state.SENS_PRECISIONS) is not None:  # this session has picked (or taken) them already
        return
    probing = page.runner.probing(page.model)  # the precisions of a pass running on this model, if one is
    if probing is not None:
        state.put(state.SENS_PRECISIONS, [p.value for p in probing if p.value in page.offered])
    calibration = page.runner.probing_calibration(page.model)
    if calibration is not None:
        state.put(state.SEARCH_CALIBRATION, calibration)


def section(page: SearchPage, calibration: CalibrationMethod) -> None:
    """The section, from its heading to the pins it has set."""
    model, runner, offered = page.model, page.runner, page.offered
    st.subheader("Per-layer sensitivity")
    st.caption(
        "Each probe is a plan really quantized and measured on the evaluation split: one layer at a "
        "precision with every other layer FP32, or (reverse view) every layer INT8 except one kept FP32. "
        "Accuracy changes are in percentage points with their 95% bootstrap interval as error bars. Time "
        "shares come from ONNX Runtime's per-node profiler on the FP32 model, batch 1, on this machine."
    )
    probing = runner.probing(model)  # the precisions of a pass running on this model, if one is
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
    sens_running = page.running("sensitivity")
    probes_by_search = _search_probing(page)
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

    view = st.fragment(run_every=POLL_S if sens_running or probes_by_search else None)(_sensitivity_view)
    view(page, calibration, probed, probing, sens_running, probes_by_search)
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
        c2.button(
            "Clear pins",
            key=state.CLEAR_PINS,
            on_click=state.set_pins,
            args=(model, {}),
            help="The plan editor keeps them.",
        )


def _search_probing(page: SearchPage) -> bool:
    # A search first measures its own probes (each layer alone at its candidate precisions; its
    # progress says "sensitivity: ..."): a pass started beside it would measure them twice, and they
    # land in this chart as they come. After that phase it measures whole plans: nothing to wait for.
    return any(
        "sensitivity" in (j["message"] or "") or (j["message"] or "").endswith(": starting")
        for j in page.runner.active_jobs("search", page.model)
    )


def _pin_from_chart(page: SearchPage, info: SensitivityChartInfo) -> None:
    # A click on a bar: pin that layer at that precision in the Plan page's editor and in the search.
    picked = picked_bar(info, state.get(state.chart_key("sensitivity")))
    if picked is None:
        return
    layer, precision = picked
    model = page.model
    pins, assignment = pin(state.pins(model), editing.current_plan(model, page.layers), layer, precision)
    state.set_pins(model, pins)
    editing.set_plan(model, assignment)
    state.put(state.PIN_TOAST, f"Pinned {layer} at {Precision(precision).label} in the plan editor.")
    st.rerun()  # the whole page, so the search section lists the new pin too


def _sensitivity_view(
    page: SearchPage,
    calibration: CalibrationMethod,
    probed: list[str],
    probing: tuple[Precision, ...] | None,
    sens_running: bool,
    probes_by_search: bool,
) -> None:
    # Drawn as a fragment: while a pass or a search's own probes run, only it is read back every POLL_S.
    model, no_labels = page.model, page.no_labels
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
        on_select=functools.partial(_pin_from_chart, page, info),
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
        _probe_table(frame, profile)


def _probe_table(frame: pd.DataFrame, profile: pd.DataFrame | None) -> None:
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
