"""The only place session-state keys and query-parameter names are spelled.

Pages call these helpers instead of indexing st.session_state with literals, so a key cannot be
misspelled in one page and silently start a second, empty state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import streamlit as st

from engine.types import Precision

# Query parameters: a copied link reopens the same model and result.
QP_MODEL = "model"
QP_RESULT = "result"

MODEL = "qd_model"  # the model picked in the sidebar (a widget key)
SELECTED = "qd_selected_result"  # result key selected on Explore (chart click or list)
_SELECTED_OF = "qd_selected_of"  # the model the selected result is of
_SELECTED_ON = "qd_selected_on"  # the sidebar's model when the result was selected, or since
WATCHED = "qd_watched_jobs"  # job ids this session saw running: their end triggers a rerun
DISMISSED = "qd_dismissed_jobs"  # failed jobs whose message the user closed
EDIT_NOTES = "qd_edit_notes"  # (model, plan, notes): what the plan's last edit left to say
PLAN_OUTCOME = "qd_plan_outcome"  # why Evaluate did not submit the plan (widgets.keep_outcome)
COMPARE = "qd_compare"  # widget key: results picked on Compare
COMPARE_PICKS = "qd_compare_picks"  # {model: result keys}: the picks of each model, kept across pages

# Widget keys (each widget gets a key, all spelled here).
PRESET = "qd_preset"
OP_TYPE = "qd_op_type"
ONE_LAYER = "qd_one_layer"
EXPLORE_MODELS = "qd_explore_models"
EXPLORE_PRECISIONS = "qd_explore_precisions"
EXPLORE_RELATIVE = "qd_explore_relative"
EXPLORE_PICK = "qd_explore_pick"
# Sensitivity & search page.
SEARCH_CALIBRATION = "qd_search_calibration"
SENS_PRECISIONS = "qd_sens_precisions"
SENS_RUN = "qd_sens_run"
SENS_VIEW = "qd_sens_view"
SENS_SORT = "qd_sens_sort"
CLEAR_PINS = "qd_clear_pins"
PIN_TOAST = "qd_pin_toast"  # a pin made by a chart click, announced once
SEARCH_FORM = "qd_search_form"
SEARCH_PRECISIONS = "qd_search_precisions"
SEARCH_MAX_DROP = "qd_search_max_drop"
SEARCH_DROP_UNIT = "qd_search_drop_unit"
SEARCH_MAX_SIZE = "qd_search_max_size_kb"
SEARCH_MAX_LATENCY = "qd_search_max_latency_ms"
SEARCH_OBJECTIVE = "qd_search_objective"
SEARCH_BUDGET = "qd_search_budget"
SEARCH_SECONDS = "qd_search_seconds"
# The form's fields (dashboard.search_logic.FORM_FIELDS) and the widgets that hold them.
SEARCH_FORM_KEYS = {
    "allowed": SEARCH_PRECISIONS,
    "max_drop": SEARCH_MAX_DROP,
    "unit": SEARCH_DROP_UNIT,
    "max_kb": SEARCH_MAX_SIZE,
    "max_ms": SEARCH_MAX_LATENCY,
    "objective": SEARCH_OBJECTIVE,
    "budget": SEARCH_BUDGET,
    "seconds": SEARCH_SECONDS,
}
_SEARCH_FORM_OF = "qd_search_form_of"  # the model whose values the form's widgets hold
SEARCH_RUN = "qd_search_run"
SEARCH_LOAD = "qd_search_load"
SEARCH_OUTCOME = "qd_search_outcome"  # why Find best plans refused its settings (widgets.keep_outcome)
SEARCH_BUSY = "qd_search_busy"  # Find best plans pressed while a search on the model runs
# Report page.
REPORT_GOAL = "qd_report_goal"
REPORT_MEASURE = "qd_report_measure"
REPORT_BUILD = "qd_report_build"
REPORT_DL_HTML = "qd_report_dl_html"
REPORT_DL_PDF = "qd_report_dl_pdf"
REPORT_DL_BUNDLE = "qd_report_dl_bundle"
REPORT_DL_IMAGES = "qd_report_dl_images"
# Models page: adding your own model.
UPLOAD_ADD = "qd_upload_add"
MODELS_NOTE = "qd_models_note"  # (model, markdown): what adding it said, shown while it is the model
UPLOAD_OUTCOME = "qd_upload_outcome"  # why Add model refused the uploads (widgets.keep_outcome)
REMOVE_MODEL = "qd_remove_model"
_UPLOAD_VERSION = "qd_upload_version"
_NEXT_MODEL = "qd_next_model"
_LINK_MISS = "qd_link_miss"  # (model a link named, model shown instead)
_REMOVED_HERE = "qd_removed_here"  # the model this session's Remove button just removed


# What a user sets on a page and expects to find again after visiting another: Streamlit keeps
# such a widget's value for the session (it drops it otherwise in a run that does not draw the
# widget). Streamlit's own keeping, not a write-back each run: that would reset a half-typed field
# whenever a job's end reruns the app.
KEEP: Literal["session"] = "session"


def chart_key(name: str) -> str:
    return f"qd_chart_{name}"


def _plan_key(model: str) -> str:
    return f"qd_plan::{model}"


def _editor_version_key(model: str) -> str:
    return f"qd_editor_version::{model}"


def get(key: str, default: Any = None) -> Any:
    return st.session_state.get(key, default)


def put(key: str, value: Any) -> None:
    st.session_state[key] = value


def current_model() -> str | None:
    value = st.session_state.get(MODEL)
    return str(value) if value else None


def plan_assignment(model: str) -> dict[str, str] | None:
    """The plan being edited for a model: layer name -> precision value, every layer spelled out."""
    value = st.session_state.get(_plan_key(model))
    return dict(value) if value is not None else None


def set_plan_assignment(model: str, assignment: dict[str, str]) -> None:
    st.session_state[_plan_key(model)] = dict(assignment)
    # A new editor key makes data_editor start again from the plan (dropping its own edit state).
    st.session_state[_editor_version_key(model)] = st.session_state.get(_editor_version_key(model), 0) + 1


def calibration_key(model: str) -> str:
    """The Plan page's calibration picker of a model: one per model, as the plan it goes with."""
    return f"qd_calibration_{model}"


# The model whose plan this session just took from another tab's (dashboard/editing.py), to say so.
PLAN_CHANGED_ELSEWHERE = "qd_plan_changed_elsewhere"


def draft_saved_key(model: str) -> str:
    """The plan this session last kept on disk for the model (dashboard/drafts.py)."""
    return f"qd_draft_saved::{model}"


def editor_key(model: str) -> str:
    return f"qd_editor::{model}::{st.session_state.get(_editor_version_key(model), 0)}"


def pins(model: str) -> dict[str, str]:
    """Layers pinned from the sensitivity chart: layer name -> precision value (the search keeps them).
    A value that names no precision (kept in a session from another version) is dropped, not shown."""
    known = {p.value for p in Precision}
    return {n: v for n, v in dict(st.session_state.get(f"qd_pins::{model}") or {}).items() if v in known}


def set_pins(model: str, pinned: dict[str, str]) -> None:
    st.session_state[f"qd_pins::{model}"] = dict(pinned)


def shown_search(model: str) -> tuple[Any, str] | None:
    """The search last started on the page for a model: (SearchSpec, calibration value), or None."""
    value = st.session_state.get(f"qd_search::{model}")
    return (value[0], value[1]) if value is not None else None


def show_search(model: str, spec: Any, calibration: str, restored: dict[str, Any] | None = None) -> None:
    """restored: the form's values that ask for it, when it is shown because it is the model's latest
    search in the store rather than by a press here."""
    st.session_state[f"qd_search::{model}"] = (spec, calibration, restored)


def search_restored(model: str) -> dict[str, Any] | None:
    """The form's values a restored search was shown with (show_search), or None."""
    value = st.session_state.get(f"qd_search::{model}")
    return value[2] if value is not None else None


def take_search_form(model_id: str, defaults: dict[str, Any]) -> None:
    """Make the Find best plans form the model's (model_id: cached.model_id): the values it holds go
    back to the model they were set for, and this model's own last values come in (else `defaults`).

    One set of widgets serves every model (their keys name them in the browser tests), so the values
    are swapped on a change of model; only then: a write on every run would reset a field being typed
    in whenever a job's end reruns the app. By identity, not name: a model added under a removed
    one's name (here, in another tab or with the CLI) does not inherit its limits.
    """
    owner = st.session_state.get(_SEARCH_FORM_OF)
    if owner == model_id:
        return
    if owner is not None:
        st.session_state[f"qd_search_form::{owner}"] = {
            field: st.session_state[key] for field, key in SEARCH_FORM_KEYS.items() if key in st.session_state
        }
    kept = st.session_state.get(f"qd_search_form::{model_id}") or {}
    for field, key in SEARCH_FORM_KEYS.items():
        st.session_state[key] = kept.get(field, defaults[field])
    st.session_state[_SEARCH_FORM_OF] = model_id


def first_search_visit(model: str) -> bool:
    """True once per session and model: when the page may show the model's latest stored search."""
    key = f"qd_search_visited::{model}"
    first = key not in st.session_state
    st.session_state[key] = True
    return first


def selected_result() -> str | None:
    return st.session_state.get(SELECTED)


def select_result(key: str | None, model: str | None = None) -> None:
    """model: the model the result is of (the sidebar's, if not given)."""
    st.session_state[SELECTED] = key
    st.session_state[_SELECTED_OF] = model or current_model()
    st.session_state[_SELECTED_ON] = current_model()


def sync_from_url(models: list[str], model_of: Callable[[str], str | None]) -> None:
    """On a fresh session, take the model and result from the URL (a shared link). A link naming
    only a result opens that result's model (model_of: the model a result key belongs to)."""
    if MODEL not in st.session_state:
        result = st.query_params.get(QP_RESULT)
        wanted = st.query_params.get(QP_MODEL) or (model_of(result) if result else None)
        st.session_state[MODEL] = wanted if wanted in models else (models[0] if models else None)
        if wanted and wanted not in models:
            st.session_state[_LINK_MISS] = (wanted, st.session_state[MODEL])
    if SELECTED not in st.session_state:
        result = st.query_params.get(QP_RESULT) or None
        st.session_state[SELECTED] = result
        st.session_state[_SELECTED_OF] = model_of(result) if result else None
        st.session_state[_SELECTED_ON] = st.session_state[MODEL]


def link_miss() -> str | None:
    """The model a link named that is not here (removed, or never added on this machine), while the
    model shown in its place is still the one picked: the sidebar says so instead of switching silently."""
    miss = st.session_state.get(_LINK_MISS)
    if miss is None or miss[1] != current_model():
        st.session_state.pop(_LINK_MISS, None)
        return None
    return str(miss[0])


def _follow_model() -> None:
    # A model switch drops a selected result of another model: kept, the URL linked the new model with
    # the old one's plan, and Explore showed that plan as the new model's. The result's own model (a
    # link's, or one picked with All models on) keeps it: that is where it is shown.
    model = current_model()
    on = st.session_state.get(_SELECTED_ON, model)
    if on != model and st.session_state.get(_SELECTED_OF) != model:
        st.session_state[SELECTED] = None
    st.session_state[_SELECTED_ON] = model


def sync_to_url() -> None:
    """Write the current model and result into the URL so the address bar is a shareable link."""
    _follow_model()
    model, result = current_model(), selected_result()
    if model and st.query_params.get(QP_MODEL) != model:
        st.query_params[QP_MODEL] = model
    if result and st.query_params.get(QP_RESULT) != result:
        st.query_params[QP_RESULT] = result
    if not result and QP_RESULT in st.query_params:
        del st.query_params[QP_RESULT]


def upload_key(field: str) -> str:
    """Key of a widget of the add-a-model form. A new one after each add empties the form: a file
    uploader cannot be reset through session state."""
    return f"qd_upload_{field}_{st.session_state.get(_UPLOAD_VERSION, 0)}"


def clear_upload() -> None:
    st.session_state[_UPLOAD_VERSION] = st.session_state.get(_UPLOAD_VERSION, 0) + 1


def remove_confirm_key(model: str) -> str:
    return f"qd_remove_confirm::{model}"


def show_model(name: str) -> None:
    """Pick this model in the sidebar from the next run on (its picker exists already in this run)."""
    st.session_state[_NEXT_MODEL] = name


def settle_model(models: list[str]) -> str | None:
    """Before the sidebar picker: apply show_model, and leave a model no longer listed (removed).
    Returns the model this session was on if something else removed it (another tab, the CLI)."""
    wanted = st.session_state.pop(_NEXT_MODEL, None)
    removed_here = st.session_state.pop(_REMOVED_HERE, None)
    if wanted in models:
        st.session_state[MODEL] = wanted
    elif st.session_state.get(MODEL) not in models:
        gone = st.session_state.get(MODEL)
        st.session_state[MODEL] = models[0] if models else None
        return str(gone) if gone and gone != removed_here else None
    return None


# What buttons said, each kept with what it acted on (its model among it); see widgets.keep_outcome.
_OUTCOMES = (
    MODELS_NOTE, UPLOAD_OUTCOME, PLAN_OUTCOME, EDIT_NOTES, SEARCH_OUTCOME, SEARCH_BUSY,
)  # fmt: skip


def forget_model(model: str) -> None:
    """Drop a removed model's page state (its plan, pins, search): a new model may take its name.

    What buttons said goes too, whichever model it was about: their attempts name a model only by its
    name, so a new model of the same name would be shown the old one's messages; a removal is rare.
    """
    keys = (
        _plan_key(model),
        draft_saved_key(model),
        calibration_key(model),
        f"qd_pins::{model}",
        f"qd_search::{model}",
        f"qd_search_visited::{model}",
    )
    for key in keys:
        st.session_state.pop(key, None)
    for key in _OUTCOMES:
        st.session_state.pop(key, None)
    st.session_state[_REMOVED_HERE] = model  # settle_model: this session removed it, and said so


def one_precision_key(layer_index: int) -> str:
    # Keyed by layer: each layer offers its own choices, and a stale choice must not carry over.
    # An index, not the name: keys become CSS classes (st-key-...), and names hold "/" and ".".
    return f"qd_one_precision_{layer_index}"


def op_precision_key(op_type: str) -> str:
    return f"qd_op_precision::{op_type}"
