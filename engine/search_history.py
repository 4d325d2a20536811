"""Searches as the store keeps them: the model's latest one (to show again after a reload or a
restart) and the trials a search holds so far (for a page showing one that still runs)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

import pandas as pd

from engine.api import Engine
from engine.datasets import ModelBundle
from engine.search import check_candidates, search_id
from engine.search_spec import SearchSpec
from engine.search_trials import objective_point, trials_frame
from engine.types import CalibrationMethod, MeasureSettings, Plan


@dataclass(frozen=True)
class StoredSearch:
    """A search's settings as the store kept them when it last started or continued."""

    search_id: str
    spec: SearchSpec
    settings: MeasureSettings
    started_at: str


def latest_search(
    engine: Engine, bundle: ModelBundle, settings: Iterable[MeasureSettings] | None = None
) -> StoredSearch | None:
    """The model's search that started (or continued) last, measured with one of `settings` (default:
    the engine's own, with each calibration method). None if there is none whose settings were kept,
    or if the latest one no longer fits the model (a layer gone, a precision it no longer takes)."""
    options = (
        list(settings)
        if settings is not None
        else [replace(engine.settings, calibration=c) for c in CalibrationMethod]
    )
    by_hash = {s.hash: s for s in options}
    row = engine.store.latest_search(bundle.model_hash, bundle.data_hash, by_hash)
    if row is None:
        return None
    try:
        spec = SearchSpec.from_json(row["spec"])
        check_candidates(engine, bundle, spec)
    except (ValueError, TypeError, KeyError):  # PlanError is a ValueError
        return None
    found = by_hash[row["settings_hash"]]
    # An engine whose search identity changed since cannot continue that search: not the same one.
    if search_id(bundle, spec, found) != row["search_id"]:
        return None
    return StoredSearch(str(row["search_id"]), spec, found, str(row["started_at"]))


def stored_search(
    engine: Engine, bundle: ModelBundle, spec: SearchSpec, settings: MeasureSettings | None = None
) -> pd.DataFrame:
    """The trials a search holds in the store now (for a page that shows one still running)."""
    settings = settings or engine.settings
    fp32 = objective_point(engine.store.get_ok(engine.job(bundle, Plan(), settings).key))
    if fp32 is None:
        return pd.DataFrame()
    return trials_frame(engine.store.search_trials(search_id(bundle, spec, settings)), fp32)
