"""The search shown on the Sensitivity & search page (the last one started here, or the model's latest
in the store): its recommended plan, its plans on the plots and in a table, read back as they land."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
import streamlit as st

from dashboard import cached, editing, state
from dashboard.search_context import POLL_S, SearchPage
from dashboard.search_logic import fp32_point, plan_assignment, recommendation_text, trials_table
from engine.search import SearchSpec
from engine.search_trials import recommend


@dataclass(frozen=True)
class _Shown:
    model: str
    spec: SearchSpec
    calibration: str  # a CalibrationMethod value: the one the search was started with
    key: str  # cached.search_key
    fp32: dict[str, float] | None  # the measured FP32 baseline's point, if measured

    def trials(self) -> pd.DataFrame:
        return cached.search_trials(self.key, self.model, self.calibration, cached.store_version(), self.spec)

    def recommendation(self, trials: pd.DataFrame) -> tuple[str | None, str]:
        if trials.empty or self.fp32 is None:
            return None, ""
        return recommend(trials, self.spec, self.fp32)


def section(page: SearchPage, form_now: dict[str, Any]) -> None:
    """Below the form: the shown search, if there is one. form_now: the form's values (what a press
    would search), to say whether they ask for a restored search again."""
    model = page.model
    shown_search = state.shown_search(model)
    if shown_search is None:
        return
    spec, spec_calibration = shown_search
    restored = state.search_restored(model)
    if restored is not None:
        # A press refused (its settings, or a search still running) leaves other settings in the form.
        if form_now == restored:
            st.caption(
                "This is the latest search of this model, restored: its settings are kept in the store, "
                "so a reload shows it again. Find best plans with these settings continues it; nothing is "
                "measured twice."
            )
        else:
            st.caption(
                "This is the latest search of this model, restored from the store. The form above now holds "
                "other settings: Find best plans starts the search they ask for."
            )
    search_running = page.running("search")
    shown = _Shown(
        model,
        spec,
        spec_calibration,
        cached.search_key(model, spec, spec_calibration),
        fp32_point(page.runner.store.get_ok(cached.baseline_key(model))),
    )
    _recommended(page, shown, search_running)
    st.fragment(run_every=POLL_S if search_running else None)(_search_view)(shown)


def _recommended(page: SearchPage, shown: _Shown, search_running: bool) -> None:
    trials = shown.trials()
    recommended, message = shown.recommendation(trials)
    last = page.runner.last_job("search", page.model)
    stopped = last is not None and last.get("outcome") == "stopped"
    if stopped and not search_running and 0 < len(trials) < shown.spec.max_evaluations:
        # Without this, the best of the plans measured before the Stop reads as the search's answer.
        st.info(
            f"You stopped this search after {len(trials)} of its {shown.spec.max_evaluations} plans: what "
            "follows is the best of those. Find best plans with the same settings continues it; nothing is "
            "measured twice."
        )
    if search_running:
        st.info("Searching: plans appear on the plots and in the table as they are measured.")
    elif trials.empty:
        st.info("No plan of this search is measured yet. Press Find best plans to start (or continue) it.")
    elif recommended is not None:
        row = trials.set_index("result_key").loc[recommended]
        limit = shown.spec.constraints.drop_limit(shown.fp32["accuracy"])
        st.success(f"**Recommended: {row['plan_summary']}**  \n{recommendation_text(row, shown.fp32, limit)}")
        st.caption(message[0].upper() + message[1:] + ".")

        def _load() -> None:
            state.put(state.MODEL, page.model)  # the Plan page shows the model it was loaded for
            editing.set_plan(
                page.model,
                plan_assignment(row["plan"], page.layer_names),
                editing.measured_with(row["plan"], shown.calibration),  # the search's
            )

        if st.button("Load recommended plan into the plan editor", key=state.SEARCH_LOAD, on_click=_load):
            st.switch_page("app_pages/plan.py")
    else:
        st.warning(
            message[0].upper()
            + message[1:]
            + ". Loosen a limit, add candidate precisions or raise the budget."
        )


def _search_view(shown: _Shown) -> None:
    # Drawn as a fragment: while the search runs, only it is read back every POLL_S.
    trials = shown.trials()
    if trials.empty:
        return
    ringed, _ = shown.recommendation(trials)
    base = cached.baseline_key(shown.model)
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
        f"{len(trials)} plans measured (budget {shown.spec.max_evaluations}). Latency: median at batch 1, "
        "one intra-op thread, on this machine ("
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
