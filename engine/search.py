"""Automatic mixed-precision search: a front of plans, every one of them measured.

1. Sensitivity (each layer alone at each candidate precision) and one latency profile per
   precision feed the additive predictor (engine/predictor.py).
2. Each precision's uniform plan is measured, and what the profile missed of its latency is
   spread over that precision's layers (AdditivePredictor.anchored); then the predictor's exact
   solver proposes the cheapest plan (in size, then latency) at a ladder of accuracy-drop limits,
   the user's constraints included. Those plans are measured.
3. NSGA-II (optuna), seeded with every plan measured so far, searches without assuming the
   layers add up, until the budget (measured plans or seconds) is spent.

Every plan a search measures is recorded in the store's search_trials table as it lands. A
search with the same identity (model, data, candidates, constraints, objective, settings,
seed) started again continues from there: its earlier plans are re-seeded from the store and
never measured twice. Its settings (spec and measurement settings) are kept in the store's
searches table as it starts, so engine/search_history.py can name the model's last search after a
restart. The trials table and the recommendation from it are engine/search_trials.py.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
import pandas as pd

from engine.api import Engine, Job
from engine.datasets import ModelBundle
from engine.predictor import OBJECTIVES, AdditivePredictor, build_predictor
from engine.search_spec import Constraints, SearchSpec
from engine.search_trials import objective_point, prediction_json, recommend, trial_objectives, trials_frame
from engine.sensitivity import ALONE, candidate_precisions, layer_profile, run_sensitivity
from engine.types import MeasureSettings, Plan, PlanError, Precision, stable_hash

ORIGIN_BASELINE = "baseline"
ORIGIN_ANCHOR = "anchor"  # each precision's uniform plan: puts predicted latency on the measured scale
ORIGIN_PREDICTOR = "predictor"
ORIGIN_NSGA2 = "nsga2"


@dataclass
class SearchProgress:
    phase: str  # "sensitivity" | "profile" | "predictor" | "nsga2" | "done"
    measured: int  # plans measured for the search so far (resumed ones included)
    budget: int
    message: str


@dataclass
class SearchResult:
    search_id: str
    trials: pd.DataFrame  # one row per measured plan, with predicted and measured values
    fp32: dict[str, float]
    recommended: str | None  # result key
    message: str
    sensitivity_evaluations: int
    new_evaluations: int  # plans this run measured (not served from the store)


def search_id(bundle: ModelBundle, spec: SearchSpec, settings: MeasureSettings) -> str:
    return stable_hash(
        {
            "model": bundle.model_hash,
            "data": bundle.data_hash,
            "spec": spec.identity(),
            "settings": settings.hash,
        }
    )[:24]


def default_candidates(
    engine: Engine, bundle: ModelBundle, allowed: list[Precision]
) -> dict[str, tuple[Precision, ...]]:
    """Each layer's accepted precisions among `allowed`, FP32 always included."""
    return candidate_precisions(engine.layers(bundle), allowed)


def check_candidates(engine: Engine, bundle: ModelBundle, spec: SearchSpec) -> None:
    layers = {x.name: x for x in engine.layers(bundle)}
    unknown = sorted(set(spec.candidates) - set(layers))
    if unknown:
        raise PlanError(f"unknown layers {unknown}; the model's layers are: {', '.join(layers)}")
    for name, ps in spec.candidates.items():
        bad = [p.value for p in ps if p not in layers[name].accepts]
        if bad:
            ok = ", ".join(p.value for p in layers[name].accepts)
            raise PlanError(f"layer {name!r} cannot take {', '.join(bad)}; it accepts: {ok}")


def _sensitivity_candidates(spec: SearchSpec) -> dict[str, tuple[Precision, ...]]:
    return {k: v for k, v in spec.candidates.items() if v != (Precision.FP32,)}


class _Search:
    """One run of a search; `run_search` is the entry point."""

    def __init__(
        self,
        engine: Engine,
        bundle: ModelBundle,
        spec: SearchSpec,
        settings: MeasureSettings,
        on_progress: Callable[[SearchProgress], None] | None,
    ) -> None:
        self.engine, self.bundle, self.spec, self.settings = engine, bundle, spec, settings
        self.on_progress = on_progress
        self.id = search_id(bundle, spec, settings)
        self.layer_names = [x.name for x in engine.layers(bundle)]
        self.free = [n for n in self.layer_names if len(spec.candidates.get(n, (Precision.FP32,))) > 1]
        self.known: dict[str, dict[str, Any]] = {}  # result key -> trial (resumed and new)
        self.new_evaluations = 0
        self.started = time.monotonic()
        self.phase = "sensitivity"

    # --- bookkeeping ---

    def assignment(self, params: Mapping[str, str]) -> dict[str, Precision]:
        out = {n: self.spec.candidates.get(n, (Precision.FP32,))[0] for n in self.layer_names}
        out.update({n: Precision(v) for n, v in params.items()})
        return out

    def params(self, assignment: Mapping[str, Precision]) -> dict[str, str]:
        return {n: assignment[n].value for n in self.free}

    def progress(self, message: str) -> None:
        if self.on_progress:
            self.on_progress(SearchProgress(self.phase, len(self.known), self.spec.max_evaluations, message))

    def out_of_budget(self) -> bool:
        if len(self.known) >= self.spec.max_evaluations:
            return True
        limit = self.spec.max_seconds
        return limit is not None and time.monotonic() - self.started >= limit

    def measure(
        self, assignments: list[dict[str, Precision]], origin: str, predictor: AdditivePredictor
    ) -> list[dict[str, Any]]:
        """Measure plans not yet tried (up to the budget); record each as it lands. Returns trials."""
        jobs: list[Job] = []
        todo: list[dict[str, Precision]] = []
        for a in assignments:
            job = self.engine.job(self.bundle, Plan(layers=a), self.settings)
            if job.key in self.known or any(job.key == j.key for j in jobs):
                continue
            if len(self.known) + len(jobs) >= self.spec.max_evaluations:
                break
            jobs.append(job)
            todo.append(a)
        if not jobs:
            return []
        stored_before = {j.key for j in jobs if self.engine.cached(j) is not None}
        out = []

        def landed(i: int, record: dict[str, Any]) -> None:
            predicted = predictor.predict(todo[i])
            trial = {
                "result_key": record["key"],
                "origin": origin,
                "plan": jobs[i].plan.to_json(),
                "predicted": prediction_json(predicted),
                "result": record,
            }
            self.engine.store.add_search_trial(
                self.id, record["key"], origin, trial["plan"], trial["predicted"]
            )
            self.known[record["key"]] = trial
            if record["key"] not in stored_before:
                self.new_evaluations += 1
            out.append(trial)
            self.progress(f"measured {len(self.known)} of {self.spec.max_evaluations} plans ({origin})")

        self.engine.evaluate_many(
            self.bundle,
            [Plan(layers=a) for a in todo],
            settings=self.settings,
            source=f"search:{self.id}",
            on_done=landed,
        )
        return out

    # --- phases ---

    def predictor(self) -> tuple[AdditivePredictor, dict[str, float], int]:
        baseline = self.engine.baseline(self.bundle, self.settings)
        fp32 = objective_point(baseline)
        if fp32 is None:
            raise RuntimeError(f"the FP32 baseline could not be measured: {baseline.get('error')}")
        candidates = _sensitivity_candidates(self.spec)
        self.progress("sensitivity: each layer alone at each candidate precision")

        def sensitivity_progress(done: int, total: int) -> None:
            self.progress(f"sensitivity: {done} of {total} plans")

        precisions = sorted({p for ps in self.spec.candidates.values() for p in ps}, key=lambda p: p.value)
        sensitivity = run_sensitivity(
            self.engine,
            self.bundle,
            self.settings,
            candidates,
            views=(ALONE,),
            on_progress=sensitivity_progress,
        )
        self.phase = "profile"
        self.progress("profiling each layer's time per precision")
        profile = layer_profile(self.engine, self.bundle, precisions, self.settings)
        # Plans run before the search proper: the probes, their FP32 baseline, one per profile (built
        # and profiled, not evaluated, but counted as the work of a plan).
        n_probes = len(sensitivity) + 1 + profile["precision"].nunique()
        predictor = build_predictor(
            self.spec.candidates, sensitivity, profile, fp32["size_bytes"], fp32["latency_ms"]
        )
        return predictor, fp32, n_probes

    def predictor_picks(
        self, predictor: AdditivePredictor, fp32: dict[str, float]
    ) -> list[dict[str, Precision]]:
        """The solver's cheapest plans at a ladder of drop limits, for each cost objective."""
        c = self.spec.constraints
        user_limit = c.drop_limit(fp32["accuracy"])
        lowest = {
            n: min(ps, key=lambda p: predictor.size.get((n, p), 0.0))
            for n, ps in self.spec.candidates.items()
        }
        worst_drop = max(predictor.predict(lowest).accuracy_drop, 1e-4)
        steps = max(2, min(8, self.spec.max_evaluations // 6))
        limits = sorted(
            {*np.linspace(0.0, worst_drop, steps), *([user_limit] if user_limit is not None else [])}
        )
        picks: list[dict[str, Precision]] = []
        # The user's objective first, so a tight budget still measures the plans the
        # recommendation is most likely to come from.
        for objective in (self.spec.objective, *(o for o in OBJECTIVES if o != self.spec.objective)):
            for limit in ([user_limit] if user_limit is not None else []) + list(limits):
                solved = predictor.solve(objective, limit, c.max_size_bytes, c.max_latency_ms)
                full = None if solved is None else {**self.assignment({}), **solved}
                if full is not None and full not in picks:
                    picks.append(full)
        return picks

    def anchor(self, predictor: AdditivePredictor) -> AdditivePredictor:
        """Measure each precision's uniform plan (as far as the candidates allow) and put the
        predictor's latency on the scale of those measurements."""
        uniforms: dict[Precision, dict[str, Precision]] = {}
        for precision in sorted(
            {p for ps in self.spec.candidates.values() for p in ps}, key=lambda p: p.value
        ):
            if precision is Precision.FP32:
                continue
            plan = self.assignment(
                {n: precision.value for n in self.free if precision in self.spec.candidates[n]}
            )
            if plan != self.assignment({}):
                uniforms[precision] = plan
        self.measure(list(uniforms.values()), ORIGIN_ANCHOR, predictor)
        measured: dict[Precision, tuple[Mapping[str, Precision], float]] = {}
        for precision, plan in uniforms.items():
            trial = self.known.get(self.engine.job(self.bundle, Plan(layers=plan), self.settings).key)
            values = trial_objectives(trial["result"]) if trial else None
            if values is not None:
                measured[precision] = (plan, values[2])
        return predictor.anchored(measured)

    def nsga2(self, predictor: AdditivePredictor) -> None:
        if not self.free:
            return
        distributions: dict[str, optuna.distributions.BaseDistribution] = {
            n: optuna.distributions.CategoricalDistribution([p.value for p in self.spec.candidates[n]])
            for n in self.free
        }
        sampler = optuna.samplers.NSGAIISampler(
            population_size=max(4, min(16, self.spec.max_evaluations // 4)), seed=self.spec.seed
        )
        optuna.logging.set_verbosity(logging.WARNING)
        study = optuna.create_study(directions=["maximize", "minimize", "minimize"], sampler=sampler)
        for (
            trial
        ) in self.known.values():  # seeds: everything measured so far (predictor picks, a resumed run)
            study.enqueue_trial(self.params(self.assignment_of(trial)))
        workers = max(1, self.engine.pool.n_workers()) if self.engine.pool is not None else 1
        stale_rounds = 0
        while not self.out_of_budget() and stale_rounds < 50:
            asked = [study.ask(distributions) for _ in range(workers)]
            assignments = [self.assignment(t.params) for t in asked]
            before = len(self.known)
            self.measure(assignments, ORIGIN_NSGA2, predictor)
            stale_rounds = stale_rounds + 1 if len(self.known) == before else 0
            for t, a in zip(asked, assignments, strict=True):
                key = self.engine.job(self.bundle, Plan(layers=a), self.settings).key
                found = self.known.get(key)
                values = trial_objectives(found["result"]) if found else None
                if values is None:
                    study.tell(t, state=optuna.trial.TrialState.FAIL)
                else:
                    study.tell(t, list(values))

    def assignment_of(self, trial: Mapping[str, Any]) -> dict[str, Precision]:
        return Plan.from_json(trial["plan"]).resolve(self.layer_names)

    def resume(self) -> None:
        for trial in self.engine.store.search_trials(self.id):
            if trial["result"] is not None:
                self.known[trial["result_key"]] = trial

    def run(self) -> SearchResult:
        check_candidates(self.engine, self.bundle, self.spec)
        # Kept before anything is measured, so a page opened later (a reload, another tab) can show
        # this search, running or not, with the settings it was started with.
        self.engine.store.record_search(
            self.id,
            model_hash=self.bundle.model_hash,
            data_hash=self.bundle.data_hash,
            settings_hash=self.settings.hash,
            spec=self.spec.to_json(),
            calibration=self.settings.calibration.value,
        )
        self.resume()
        predictor, fp32, n_probes = self.predictor()
        self.phase = "predictor"
        if self.known:
            self.progress(f"resuming: {len(self.known)} plans measured before")
        if all(Precision.FP32 in ps for ps in self.spec.candidates.values()):
            # FP32 is a plan of the space too (often the fastest): measured already as the baseline.
            self.measure([{n: Precision.FP32 for n in self.layer_names}], ORIGIN_BASELINE, predictor)
        predictor = self.anchor(predictor)
        self.measure(self.predictor_picks(predictor, fp32), ORIGIN_PREDICTOR, predictor)
        self.phase = "nsga2"
        self.nsga2(predictor)
        self.phase = "done"
        trials = trials_frame(list(self.known.values()), fp32)
        recommended, message = recommend(trials, self.spec, fp32)
        self.progress(message)
        return SearchResult(self.id, trials, fp32, recommended, message, n_probes, self.new_evaluations)


def check_searchable(bundle: ModelBundle) -> None:
    """ValueError in plain words unless the model has labelled evaluation data to measure accuracy on."""
    if bundle.eval_set.labels is None:
        raise ValueError(
            f"{bundle.name} has no labelled evaluation data, so no plan's accuracy can be measured and the "
            "search, which trades accuracy against size and latency, has nothing to trade; add the model "
            "again with labelled data (.npz with 'labels', images with labels.csv, or .csv with a 'label' "
            "column)"
        )


def run_search(
    engine: Engine,
    bundle: ModelBundle,
    spec: SearchSpec,
    settings: MeasureSettings | None = None,
    on_progress: Callable[[SearchProgress], None] | None = None,
) -> SearchResult:
    """Search (or continue searching) for the measured Pareto front of mixed-precision plans."""
    check_searchable(bundle)
    return _Search(engine, bundle, spec, settings or engine.settings, on_progress).run()


__all__ = [
    "Constraints",
    "check_candidates",
    "check_searchable",
    "objective_point",
    "SearchProgress",
    "SearchResult",
    "SearchSpec",
    "default_candidates",
    "recommend",
    "run_search",
    "search_id",
    "trials_frame",
]
