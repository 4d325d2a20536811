"""Sensitivity & search: what each layer costs at each precision, and a measured search for the best plans.

The page in order; each section is a module of its own: dashboard.search_sensitivity (the per-layer
pass), dashboard.search_form (Find best plans) and dashboard.search_results (the search shown).
"""

from __future__ import annotations

import streamlit as st

from dashboard import search_form, search_results, search_sensitivity, state, widgets
from dashboard.search_context import SearchPage
from engine.types import CalibrationMethod

page = SearchPage.of(state.current_model())
search_form.take_values(page)  # before the calibration picker: a restored search sets it too

st.header(f"Sensitivity & search · {page.model}")
widgets.jobs_panel()

calibration: CalibrationMethod = st.columns([2, 1])[0].selectbox(
    "Calibration of INT8 and W8A16 activations",
    list(CalibrationMethod),
    format_func=lambda m: f"{m.label}: {m.description}",
    key=state.SEARCH_CALIBRATION,
    persist_state=state.KEEP,
    help="Used by the sensitivity pass and the search alike; other precisions do not use it.",
)

search_sensitivity.section(page, calibration)
form_now = search_form.section(page, calibration)
if form_now is not None:
    search_results.section(page, form_now)
