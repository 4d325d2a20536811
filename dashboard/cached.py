"""The only place st.cache_* decorators live.

cache_resource holds the per-process Runner (a plain holder: Streamlit refuses to cache a Dask
Client itself). cache_data holds derived, immutable data keyed by what it depends on.
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from dashboard import upload_logic
from dashboard.runner import Runner
from engine.charts import filter_results, model_identity, panel_title, pareto_plot_info, with_derived
from engine.datasets import SAMPLES_DIR, sample_names
from engine.goal import parse_goal
from engine.model_io import ModelError
from engine.pareto_figure import ParetoGridInfo, pareto_grid_figure
from engine.recommend import Recommendation
from engine.report import recommendation_for
from engine.search import SearchSpec, search_id
from engine.search_charts import search_front_info
from engine.search_history import stored_search
from engine.sensitivity import candidate_precisions, layer_profile, sensitivity_frame, sensitivity_settings
from engine.store import default_home
from engine.types import CalibrationMethod, LayerInfo, Plan, Precision
from engine.user_models import card_stamp, user_cards, user_model_names


@st.cache_resource(show_spinner="Starting the worker processes (first visit only)...")
def runner() -> Runner:
    return Runner()


def cards() -> dict[str, dict[str, Any]]:
    """Model cards by name: the samples first, then the models users added (plain JSON files: reading
    them runs no model). A model added or removed elsewhere (the CLI, another session) shows up too."""
    return _cards(added_models())


def has_labels(model: str) -> bool:
    """Whether the model's evaluation data has labels (its card's task), so accuracy can be measured.
    Explore and Compare, which may show results of models no longer listed, read each result's own
    `labelled` flag instead."""
    return cards().get(model, {}).get("task") != "fidelity_only"


# When each added model was written, as this process last saw it (shared like the caches it guards).
_seen_stamps: dict[str, int] = {}


def added_models() -> tuple[str, ...]:
    """Names of the models users added (a folder listing: cheap enough for every rerun).

    A model replaced under the same name elsewhere (the CLI's remove-model then add-model, while
    the app runs) is noticed by its card's new stamp, and everything cached under its name dropped.
    """
    home = default_home()
    names = tuple(user_model_names(home))
    for name in names:
        stamp = card_stamp(name, home)
        if _seen_stamps.setdefault(name, stamp) != stamp:
            _seen_stamps[name] = stamp
            models_changed(name)
    return names


@st.cache_data(show_spinner=False, max_entries=4)
def _cards(added: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    samples = {n: json.loads((SAMPLES_DIR / n / "card.json").read_text()) for n in sample_names()}
    # Listed a moment ago, maybe removed since: user_cards reads what is there now.
    return {**samples, **{n: c for n, c in user_cards(default_home()).items() if n in added}}


def models_changed(name: str) -> None:
    """After adding or removing a model: forget everything cached under its name (a new model may
    take the name of a removed one)."""
    _cards.clear()
    for cache in (layers, model_bytes, baseline_key, model_id):
        cache.clear()
    runner().forget_model(name)


@st.cache_data(show_spinner="Reading the model's inputs (in a worker process)...", max_entries=8)
def declared_inputs(file_id: str, file_name: str, _data: bytes) -> dict[str, Any]:
    """{"inputs": [...]} or {"error": message} for an uploaded model (one upload: one file_id)."""
    del file_id  # only the cache key (the bytes are not hashed)
    try:
        return {"inputs": upload_logic.read_declared(runner().engine, file_name, _data)}
    except ModelError as e:
        return {"error": str(e)}


@st.cache_data(show_spinner="Reading the model's layers (in a worker process)...")
def layers(model: str) -> list[LayerInfo]:
    r = runner()
    return r.engine.layers(r.model(model))


@st.cache_data(show_spinner=False)
def model_bytes(model: str) -> int:
    return len(runner().model(model).model_bytes)


@st.cache_data(show_spinner=False)
def baseline_key(model: str) -> str:
    return runner().baseline_key(model)


@st.cache_data(show_spinner=False)
def model_id(model: str) -> str:
    """The model as its results know it (engine.charts.model_identity: name, network and data), so a
    model added under a removed one's name does not show the old results. Loading the model hashes
    its files: cached until the model is added or removed. A model whose files cannot be read now is
    known by its name alone (every result under it), rather than failing the page that asked."""
    try:
        bundle = runner().model(model)
    except (OSError, ValueError, ModelError):
        return model
    return model_identity(model, bundle.model_hash, bundle.data_hash)


def store_version() -> tuple[int, str]:
    """Changes whenever a result lands: the cache key of the results frame."""
    store = runner().store
    done = store.list_jobs(["done", "failed"])
    return store.count(), max((j["updated_at"] for j in done), default="")


# Two caches below are cache_resource, not cache_data: cache_data unpickles its value on every hit,
# and with 1,000 results (a frame of plan dicts; a figure, whose every property plotly re-validates
# when unpickled) that is ~20 ms of every rerun on an idle core. Callers must not mutate them.


@st.cache_resource(show_spinner=False, max_entries=4)
def results(version: tuple[int, str]) -> pd.DataFrame:
    """Every successful result with its environment (CPU, ONNX Runtime), plus derived plot columns.

    Deriving once per store change (hover texts, % vs FP32) keeps re-renders on filter or model
    switches cheap with thousands of results. Shared and read-only: filter, never assign to it.
    """
    del version  # only the cache key
    store = runner().store
    frame = store.to_frame()
    # Sensitivity probes (one layer changed, measured without latency) belong to the Sensitivity
    # page; on Explore and Compare they would crowd the plots with plans that have no latency.
    frame = frame[frame["source"] != "sensitivity"].reset_index(drop=True)
    frame["environment"] = pd.Series(
        [(store.get(k) or {}).get("environment") or {} for k in frame["key"]], index=frame.index, dtype=object
    )
    return with_derived(frame)


@st.cache_data(show_spinner=False, max_entries=64)
def record(key: str) -> dict[str, Any] | None:
    return runner().store.get(key)


@st.cache_data(show_spinner=False, max_entries=8)
def artifact_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


@st.cache_resource(show_spinner=False, max_entries=64)
def pareto_charts(
    version: tuple[int, str],
    models: tuple[str, ...] | None,
    precisions: tuple[str, ...],
    charts: tuple[tuple[str, str], ...],
    relative: bool,
    selected: str | None,
) -> tuple[go.Figure, tuple[tuple[str, ...], ...], tuple[int, ...]]:
    """(figure, its trace keys for click mapping, plans left off per plot) of the Explore plots.

    ``charts`` holds (x, y) objectives, one panel each, drawn side by side in one figure. Cached per
    store version and view, so going back to a model or filter already seen only ships the figure
    again instead of recomputing fronts over every result. The figure is shared: never update it.
    """
    shown = filter_results(results(version), models, precisions)
    infos = tuple(pareto_plot_info(shown, x, y, relative=relative, selected=selected) for x, y in charts)
    grid = ParetoGridInfo(infos, tuple(panel_title(x, y) for x, y in charts))
    return pareto_grid_figure(grid), grid.trace_keys(), tuple(i.missing for i in infos)


# --- Sensitivity & search page: read what the store holds now (a pass or search may be running) ---


@st.cache_data(show_spinner=False, max_entries=16)
def sensitivity(
    model: str, calibration: str, precisions: tuple[str, ...], version: tuple[int, str]
) -> pd.DataFrame:
    """The sensitivity frame (rows 'pending' until measured) for the probed precisions."""
    del version  # only the cache key: a new result may fill a pending row
    r = runner()
    bundle = r.model(model)
    candidates = candidate_precisions(r.engine.layers(bundle), [Precision(p) for p in precisions])
    return sensitivity_frame(r.engine, bundle, r.settings(CalibrationMethod(calibration)), candidates)


def fp32_profile(model: str) -> pd.DataFrame | None:
    """Each layer's share of FP32 time, once the sensitivity pass (or a search) measured FP32; else None.

    Before that, profiling would measure a plan here, in the page's run: leave it to the pass.
    """
    r = runner()
    bundle = r.model(model)
    base = r.engine.job(bundle, Plan(), sensitivity_settings(r.engine.settings))
    return _fp32_profile(model) if r.engine.cached(base) is not None else None


@st.cache_data(show_spinner="Reading each layer's time from ONNX Runtime's profiler...")
def _fp32_profile(model: str) -> pd.DataFrame:
    r = runner()
    return layer_profile(r.engine, r.model(model), [Precision.FP32], r.engine.settings)


def search_key(model: str, spec: SearchSpec, calibration: str) -> str:
    r = runner()
    return search_id(r.model(model), spec, r.settings(CalibrationMethod(calibration)))


@st.cache_data(show_spinner=False, max_entries=16)
def search_trials(
    key: str, model: str, calibration: str, version: tuple[int, str], _spec: SearchSpec
) -> pd.DataFrame:
    """The trials a search (named by its key; _spec is not hashed) holds in the store now."""
    del key, version  # only cache keys
    r = runner()
    return stored_search(r.engine, r.model(model), _spec, r.settings(CalibrationMethod(calibration)))


@st.cache_resource(show_spinner=False, max_entries=16)
def search_figure(version: tuple[int, str], keys: tuple[str, ...], recommended: str | None) -> go.Figure:
    """Accuracy vs size and vs latency of the given results (a search's plans, FP32). Shared: never update."""
    frame = results(version)
    return pareto_grid_figure(search_front_info(frame[frame["key"].isin(keys)], recommended))


# --- Report page ----------------------------------------------------------------------------------


@st.cache_data(
    show_spinner="Choosing the plan (the FP32 baseline is measured first if it is missing)...", max_entries=16
)
def recommendation(model: str, goal_text: str, version: tuple[int, str]) -> Recommendation:
    """The recommendation for a goal among the model's stored results (GoalError: unreadable goal)."""
    del version  # only the cache key: a new result may change the choice
    r = runner()
    return recommendation_for(r.engine, r.model(model), parse_goal(goal_text), r.settings())
