"""The Find best plans form of the Sensitivity & search page: its values (the model's own, or those of
the model's latest search, kept in the store), and what a press of its button starts or says."""

from __future__ import annotations

from typing import Any

import streamlit as st

from dashboard import cached, search_sensitivity, state, widgets
from dashboard.search_context import SearchPage
from dashboard.search_logic import FORM_FIELDS, form_defaults, form_from_spec, pins_from_spec, spec_from_form
from engine import search as engine_search
from engine.datasets import ModelBundle
from engine.search import SearchSpec
from engine.search_history import latest_search
from engine.types import CalibrationMethod, PlanError, Precision


def take_values(page: SearchPage) -> None:
    """Before the page draws anything: the form holds the model's own values, or on the session's
    first visit to the model (a reload, a new tab) those of its latest search, which is shown; and the
    Sensitivity section's picks are those of a pass running on the model (a reload mid-pass)."""
    # Before the restore below, which writes into the form: taking the form overwrites what it holds.
    state.take_search_form(cached.model_id(page.model), form_defaults(page.offered))
    if state.first_search_visit(page.model) and not page.no_labels and state.shown_search(page.model) is None:
        _restore_latest_search(page)
    # After the search's: a pass running now is what the Sensitivity section shows, in its calibration.
    search_sensitivity.take_running_pass(page)


def _candidates(page: SearchPage, bundle: ModelBundle, allowed: list[Precision]) -> Any:
    # Looked up on engine.search at each call, as the page script's own import in each run did: a
    # function put there in its place (as a test does) is the one called.
    return engine_search.default_candidates(page.runner.engine, bundle, allowed)


def _spec(page: SearchPage, form: dict[str, Any], pinned: dict[str, str]) -> SearchSpec:
    bundle = page.runner.model(page.model)
    return spec_from_form(lambda ps: _candidates(page, bundle, ps), form, pinned)


def _restore_latest_search(page: SearchPage) -> None:
    """Show the model's latest search (kept in the store) with its settings back in the form, so a
    reload loses nothing and Find best plans pressed unchanged continues it. A search the form cannot
    ask for again (the model's layers or precisions changed since) leaves the form at its defaults."""
    model, runner = page.model, page.runner
    bundle = runner.model(model)
    stored = latest_search(runner.engine, bundle, [runner.settings(c) for c in CalibrationMethod])
    if stored is None:
        return
    form = form_from_spec(stored.spec, page.offered)
    try:
        defaults = _candidates(page, bundle, [Precision(v) for v in form["allowed"]])
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


def section(page: SearchPage, calibration: CalibrationMethod) -> dict[str, Any] | None:
    """The section's heading, the form, and what its last press said. Returns the form's values (what
    a press would search), or None for a model with nothing to search (no labelled data)."""
    model, offered = page.model, page.offered
    st.subheader("Find best plans")
    if page.no_labels:
        st.info(
            f"{model} has no labelled evaluation data: the search trades accuracy against size and latency, "
            "and no accuracy can be measured. Add it again with labels on the Models page to search it."
        )
        return None
    st.caption(
        "An additive model built from the sensitivity of each layer proposes the cheapest plans for a ladder "
        "of accuracy limits; NSGA-II then searches without assuming the layers add up. Every plan is really "
        "quantized and measured (the predictions are shown beside the measurements). Pressing the button "
        "again with the same settings continues the same search: nothing is measured twice."
    )
    # Only the button starts a search: Enter in a field did too, and each accidental one costs minutes.
    with st.form(state.SEARCH_FORM, border=True, enter_to_submit=False):
        # No defaults on these widgets: take_values has set each one (the model's own values, or
        # form_defaults), and Streamlit warns of a default beside a value set through the session state.
        allowed = st.multiselect(
            "Candidate precisions (FP32 is always one)",
            offered,
            format_func=lambda v: Precision(v).label,
            key=state.SEARCH_PRECISIONS,
            persist_state=state.KEEP,
        )
        c1, c2, c3 = st.columns(3)
        # No min_value / max_value on these fields: the browser would only draw a red border around a
        # value out of range and keep the old one without a word; spec_from_form refuses it in plain words.
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
        # A float field: an integer one took 2.5 as 2 (the browser parses it as an integer) and the
        # search ran with a budget nobody typed; spec_from_form refuses it in words. %g: "20", "2.5".
        budget = c2.number_input(
            "Budget: plans to measure",
            value=None,
            step=1.0,
            format="%g",
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
    form_now = dict(
        zip(FORM_FIELDS, (allowed, max_drop, unit, max_kb, max_ms, objective, budget, seconds), strict=True)
    )
    _press(page, calibration, form_now, submitted)
    return form_now


def _press(
    page: SearchPage, calibration: CalibrationMethod, form_now: dict[str, Any], submitted: bool
) -> None:
    # What a press of Find best plans acted on: the settings it was given (a form: they change only on a
    # press), and whether a search on the model was running then. Each message stays while its own is so.
    model, pins = page.model, state.pins(page.model)
    given = (model, pins, calibration, form_now)
    busy = (model, page.running("search"))
    if submitted:
        refusal, wait = None, None
        try:
            spec = _spec(page, form_now, pins)
        except (ValueError, PlanError) as e:
            refusal = f"These settings cannot start a search: {e}"
        else:
            if busy[1]:
                wait = "A search on this model is still running: wait for it to end, then press again."
            else:
                try:
                    page.runner.submit_search(model, spec, calibration)
                except PlanError as e:  # e.g. a pin no longer fits the model's layers
                    refusal = f"These settings cannot start a search: {e}"
        widgets.keep_outcome(state.SEARCH_OUTCOME, given, refusal)
        widgets.keep_outcome(state.SEARCH_BUSY, busy, wait, kind="warning")
        if refusal is None and wait is None:
            state.show_search(model, spec, calibration.value)
            st.rerun()
    widgets.show_outcome(state.SEARCH_OUTCOME, given)
    widgets.show_outcome(state.SEARCH_BUSY, busy)
