"""The engine's front door: inspect models and evaluate plans, served from the store when known.

The submitting process never parses or runs a model: inspection and evaluation run as
tasks in worker processes (a Dask pool), and this process is the one writer of the store.
With `pool=None` tasks run in this process instead (for scripts and benchmarks that
accept the risk).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from engine import __version__ as ENGINE_VERSION
from engine import user_models
from engine.datasets import ModelBundle, load_model, sample_names
from engine.evaluate import (
    ModelCache,
    atomic_write,
    evaluate_task,
    evaluate_together_task,
    inspect_task,
    layers_from_json,
)
from engine.measure import machine_fingerprint
from engine.model_io import ModelError
from engine.quantize import resolve_plan
from engine.store import ResultStore, default_home
from engine.types import (
    LayerInfo,
    MeasureSettings,
    Plan,
    Precision,
    canonical_plan,
    plan_summary,
    stable_hash,
)

DEFAULT_TIMEOUT_S = 600.0


class EngineError(RuntimeError):
    """Work that failed in a worker; the message says what failed."""


@dataclass(frozen=True)
class Job:
    """One plan waiting to be evaluated (or already known)."""

    key: str
    plan: Plan
    summary: str
    settings: MeasureSettings  # as evaluated: calibration only where the plan has static layers


def result_key(bundle: ModelBundle, plan: Plan, settings: MeasureSettings) -> str:
    """Content hash naming one evaluation: model, data, canonical plan, settings, engine version."""
    return stable_hash(
        {
            "model": bundle.model_hash,
            "data": bundle.data_hash,
            "plan": plan.hash,
            "settings": settings.hash,
            "engine": ENGINE_VERSION,
            # Latency is a property of the machine: a store shared by two machines keeps both.
            "machine": machine_fingerprint(),
        }
    )


class Engine:
    """Inspect and evaluate models; results go to (and come from) a ResultStore."""

    def __init__(
        self,
        store: ResultStore | None = None,
        pool: Any | None = None,
        home: Path | None = None,
        settings: MeasureSettings | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.home = Path(home) if home else default_home()
        # Without an explicit home the store honours $QUANTDASH_STORE (see store.default_store_path).
        self.store = store or ResultStore(self.home / "results.sqlite" if home else None)
        self.pool = pool
        self.settings = settings or MeasureSettings()
        self.timeout_s = timeout_s
        self.cache_dir = self.home / "cache"
        self.artifacts_dir = self.home / "artifacts"
        self._bundles: dict[str, ModelBundle] = {}

    # --- models -------------------------------------------------------------------------------

    def model(self, name_or_path: str) -> ModelBundle:
        """A sample or added model by name, or an .onnx path, with its data (reads files, runs nothing)."""
        if name_or_path not in self._bundles:
            added = user_models.user_model_names(self.home)
            if name_or_path in added:
                self._bundles[name_or_path] = user_models.load_user_model(name_or_path, self.home)
            else:
                path = Path(name_or_path)
                if name_or_path not in sample_names() and not path.suffix and not path.exists():
                    # Here, not in datasets.load_model: only the engine knows the added models to name.
                    raise ModelError(
                        f"{name_or_path!r} is neither a sample model ({', '.join(sample_names())}), nor a "
                        f"model you added ({', '.join(added) or 'none yet'}), nor an .onnx file"
                    )
                self._bundles[name_or_path] = load_model(name_or_path)
        return self._bundles[name_or_path]

    def add_model(
        self,
        model_file: Path,
        data_file: Path | None = None,
        *,
        name: str | None = None,
        shapes: dict[str, tuple[int, ...]] | None = None,
        model_label: str | None = None,
        data_label: str | None = None,
    ) -> user_models.AddedModel:
        """Check an uploaded model (and data) in a worker and add it by name; ModelError if refused."""
        label = model_label or Path(model_file).name
        try:
            return user_models.add_model(
                Path(model_file),
                Path(data_file) if data_file is not None else None,
                home=self.home,
                run_task=self._upload_task,
                name=name,
                shapes=shapes,
                model_label=label,
                data_label=data_label,
            )
        except EngineError as e:
            raise ModelError(
                f"{label}: {e}. The app is unaffected; expected a model ONNX Runtime can load."
            ) from None

    def forget_model(self, name: str) -> None:
        """Drop the loaded copy of a model (after it was removed or replaced under the same name)."""
        self._bundles.pop(name, None)

    def remove_model(self, name: str) -> None:
        """Remove an added model's folder (its stored results stay); ModelError if there is no such model."""
        self.forget_model(name)
        user_models.remove_model(name, self.home)

    def declared_inputs(self, model_file: Path, model_label: str | None = None) -> list[dict[str, Any]]:
        """An upload's declared inputs (name, shape, dtype), read in a worker.

        ModelError when the file is refused; EngineError when the worker failed (crashed or timed
        out), which may pass: the caller may try again, and the full check of an add gives the verdict.
        """
        return user_models.declared_inputs(
            Path(model_file), run_task=self._upload_task, model_label=model_label
        )

    def _upload_task(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self.run_task(fn, *args, what="checking the upload in a worker process")

    def run_task(self, fn: Callable[..., Any], *args: Any, what: str) -> Any:
        """fn(*args) in a worker (in this process without a pool); EngineError names `what` failed."""
        return self.run_tasks([(fn, args)], what=what)[0]

    def run_tasks(
        self,
        calls: Sequence[tuple[Callable[..., Any], tuple[Any, ...]]],
        *,
        what: str,
        skip_failed: bool = False,
    ) -> list[Any]:
        """Every fn(*args) at once in workers (in this process without a pool), their values in
        order; EngineError names `what` failed if any did, or with ``skip_failed`` a failed call's
        value is None."""
        if self.pool is None:
            values = []
            for fn, args in calls:
                try:
                    values.append(fn(*args))
                except Exception:
                    if not skip_failed:
                        raise
                    values.append(None)
            return values
        outcomes = self.pool.map_outcomes([(fn, args, {}) for fn, args in calls], timeout_s=self.timeout_s)
        for outcome in outcomes:
            if not outcome.ok and not skip_failed:
                raise EngineError(f"{what} {outcome.status}: {outcome.error}")
        return [outcome.value if outcome.ok else None for outcome in outcomes]

    def layers(self, bundle: ModelBundle) -> list[LayerInfo]:
        """The model's layer table (computed once in a worker, then read from the cache)."""
        cached = ModelCache(self.cache_dir, bundle.model_hash).cached_layers()
        if cached is not None:
            return cached
        data = self.run_task(
            inspect_task, bundle.model_bytes, str(self.cache_dir), what="inspecting the model"
        )
        return layers_from_json(data)

    # --- plans --------------------------------------------------------------------------------

    def job(self, bundle: ModelBundle, plan: Plan, settings: MeasureSettings | None = None) -> Job:
        """Validate a plan against the model (PlanError if invalid) and name its result."""
        layers = self.layers(bundle)
        assignment = resolve_plan(plan, layers)
        canonical = canonical_plan(Plan(layers=assignment), [x.name for x in layers])
        settings = settings or self.settings
        summary = plan_summary(assignment)
        default_method = MeasureSettings().calibration
        if not any(p.calibrated for p in assignment.values()):
            # Calibration cannot change a plan without static layers (FP32, FP16, INT4, dynamic):
            # one result serves every calibration method.
            settings = replace(settings, calibration=default_method)
        elif settings.calibration is not default_method:
            # Two results of one plan differ by their calibration: say which, wherever it is shown.
            summary += f" · {settings.calibration.label} calibration"
        return Job(result_key(bundle, canonical, settings), canonical, summary, settings)

    def cached(self, job: Job) -> dict[str, Any] | None:
        return self.store.get_ok(job.key)

    def _task_args(self, bundle: ModelBundle, job: Job) -> tuple[Any, ...]:
        classes = bundle.card.get("classes") or []
        n_classes = len(classes) if bundle.eval_set.task == "classification" and classes else None
        return (
            bundle.model_bytes,
            bundle.eval_set,
            bundle.calibration,
            bundle.data_hash,
            job.plan.to_json(),
            job.settings.to_json(),
            str(self.cache_dir),
            n_classes,
        )

    def _group_args(self, bundle: ModelBundle, jobs: list[Job]) -> tuple[Any, ...]:
        """evaluate_together_task's arguments: _task_args with the list of plans in the plan's place."""
        args = list(self._task_args(bundle, jobs[0]))
        args[4] = [job.plan.to_json() for job in jobs]
        return tuple(args)

    def _record(
        self,
        bundle: ModelBundle,
        job: Job,
        *,
        status: str,
        value: dict[str, Any] | None,
        error: str | None,
        duration_s: float,
        source: str,
    ) -> dict[str, Any]:
        artifact = None
        if value is not None:
            artifact_path = self.artifacts_dir / f"{job.key[:32]}.onnx"
            # Atomic: a crash mid-write must not leave a truncated model to download.
            atomic_write(artifact_path, value["model_bytes"])
            artifact = str(artifact_path)
        record = {
            "key": job.key,
            "model_name": bundle.name,
            "model_hash": bundle.model_hash,
            "data_hash": bundle.data_hash,
            "plan_hash": job.plan.hash,
            "settings_hash": job.settings.hash,
            "engine_version": ENGINE_VERSION,
            "plan": job.plan.to_json(),
            "plan_summary": job.summary,
            "status": status,
            "error": error,
            "metrics": {**(value["metrics"] if value else {}), "settings": job.settings.to_json()},
            "environment": value["environment"] if value else {},
            "artifact_path": artifact,
            "source": source,
            "duration_s": duration_s,
        }
        self.store.put(record)
        return self.store.get(job.key) or record

    def evaluate(
        self,
        bundle: ModelBundle,
        plan: Plan,
        *,
        settings: MeasureSettings | None = None,
        source: str = "api",
        force: bool = False,
    ) -> dict[str, Any]:
        """Evaluate one plan (or return the stored result); failures are stored and returned too."""
        return self.evaluate_many(bundle, [plan], settings=settings, source=source, force=force)[0]

    def evaluate_many(
        self,
        bundle: ModelBundle,
        plans: list[Plan],
        *,
        settings: MeasureSettings | None = None,
        source: str = "api",
        force: bool = False,
        on_done: Callable[[int, dict[str, Any]], None] | None = None,
        together: Sequence[Sequence[int]] = (),
    ) -> list[dict[str, Any]]:
        """Evaluate plans in parallel on the pool; on_done(index, record) as each lands in the store.

        ``together``: groups of plan indices that change the same or neighbouring layers (the
        sensitivity probes of a layer or two). Measured without latency, each group is one worker
        task that runs the FP32 beginning the plans share once (engine.prefix). A group whose task
        fails is measured plan by plan, so the plan that crashed its worker is the one whose result
        says so.
        """
        settings = settings or self.settings
        jobs = [self.job(bundle, p, settings) for p in plans]
        results: list[dict[str, Any] | None] = [None] * len(jobs)
        todo: list[int] = []
        queued: set[str] = set()
        for i, job in enumerate(jobs):
            hit = None if force else self.cached(job)
            if hit is not None:
                results[i] = hit
                if on_done:
                    on_done(i, hit)
            elif job.key not in queued:
                queued.add(job.key)
                todo.append(i)

        def finish(outcomes: list[tuple[int, str, Any, str | None, float]]) -> None:
            # Every plan a task measured is stored before any is reported: a report that raises (a
            # Stop pressed on the page) must not drop the group's other measured plans.
            records = [
                (i, self._record(
                    bundle, jobs[i], status=status, value=value, error=error, duration_s=duration,
                    source=source,
                ))
                for i, status, value, error, duration in outcomes
            ]  # fmt: skip
            for i, record in records:
                results[i] = record
            for i, record in records:
                if on_done:
                    on_done(i, record)

        groups = _groups(todo, together) if not settings.latency else [[i] for i in todo]
        alone = self._run_groups(bundle, jobs, groups, finish)
        if alone:  # the plans of groups whose task failed, one task each this time
            self._run_groups(bundle, jobs, [[i] for i in alone], finish)
        # Duplicated plans share the first one's record (and are reported done too).
        by_key = {jobs[i].key: r for i, r in enumerate(results) if r is not None}
        for i, job in enumerate(jobs):
            if results[i] is None and on_done:
                on_done(i, by_key[job.key])
        return [by_key[j.key] for j in jobs]

    def _run_groups(
        self,
        bundle: ModelBundle,
        jobs: list[Job],
        groups: list[list[int]],
        finish: Callable[[list[tuple[int, str, Any, str | None, float]]], None],
    ) -> list[int]:
        """Measure each group (one plan: evaluate_task; more: evaluate_together_task); returns the
        plans of groups whose task failed as a whole."""
        failed: list[int] = []

        def task(group: list[int]) -> tuple[Callable[..., Any], tuple[Any, ...]]:
            if len(group) == 1:
                return evaluate_task, self._task_args(bundle, jobs[group[0]])
            return evaluate_together_task, self._group_args(bundle, [jobs[i] for i in group])

        def settle(group: list[int], status: str, value: Any, error: str | None, duration: float) -> None:
            if len(group) == 1:
                finish([(group[0], status, value, error, duration)])
            elif status != "ok":
                failed.extend(group)
            else:
                share = duration / len(group)
                finish(
                    [
                        (i, "failed", None, entry["error"], share)
                        if "error" in entry
                        else (i, "ok", entry, None, share)
                        for i, entry in zip(group, value, strict=True)
                    ]
                )

        if self.pool is None:
            for group in groups:
                fn, args = task(group)
                t = time.perf_counter()
                try:
                    value = fn(*args)
                except Exception as e:  # an inline failure is stored like a worker's
                    settle(group, "failed", None, f"{type(e).__name__}: {e}", time.perf_counter() - t)
                else:
                    settle(group, "ok", value, None, time.perf_counter() - t)
        elif groups:
            self.pool.map_outcomes(
                [(*task(g), {}) for g in groups],
                # A group does the work of its plans: it gets their time limits added up.
                timeout_s=[self.timeout_s * len(g) for g in groups],
                on_done=lambda k, o: settle(groups[k], o.status, o.value, o.error, o.duration_s),
            )
        return failed

    def baseline(self, bundle: ModelBundle, settings: MeasureSettings | None = None) -> dict[str, Any]:
        """The FP32 result of a model (evaluated on first use)."""
        return self.evaluate(bundle, Plan(default=Precision.FP32), settings=settings, source="baseline")


def _groups(todo: list[int], together: Sequence[Sequence[int]]) -> list[list[int]]:
    """The plans to measure as groups (each plan in one at most) and the rest one by one, in the
    order of each group's first plan: callers put their longest work first, so the last worker is
    not left with it."""
    group_of: dict[int, list[int]] = {}
    for group in together:
        members = [i for i in dict.fromkeys(group) if i in todo and i not in group_of]
        for i in members:
            group_of[i] = members
    groups: list[list[int]] = []
    for i in todo:
        group = group_of.get(i, [i])
        if group[0] == i:
            groups.append(group)
    return groups
