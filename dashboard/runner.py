"""Per-server-process evaluation runner: the Engine with its worker pool, and background threads.

The page submits a plan and returns at once; a thread here waits for the workers
(Engine.evaluate_many) and writes progress into the store's jobs table. Pages read that table,
so a reload or a page change loses nothing: the store is the truth.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from dashboard import report_files
from dashboard.job_stops import JobStopped, StopRequests
from engine import report as engine_report
from engine.api import Engine
from engine.charts import model_identity
from engine.datasets import ModelBundle
from engine.goal import Goal
from engine.jobs import WorkerPool
from engine.presets import PRESETS, preset_plan
from engine.search import SearchProgress, SearchSpec, check_candidates, run_search
from engine.sensitivity import candidate_precisions, layer_profile, run_sensitivity
from engine.types import CalibrationMethod, MeasureSettings, Plan, Precision

# QUANTDASH_INLINE=1 runs evaluations in this process (tests only: a crash would take the app down).
INLINE_ENV = "QUANTDASH_INLINE"
# QUANTDASH_QUICK=1 measures latency for at most 0.3 s per batch size (tests and demos).
QUICK_ENV = "QUANTDASH_QUICK"
QUICK = MeasureSettings(max_seconds=0.3, max_runs=60, bootstrap=200)
PRESETS_JOB = "presets"  # the job kind of the Report page's "Measure the presets first"

_ADVICE = {
    "timeout": "Try a smaller plan change, fewer INT4 layers, or run it from the command line with a "
    "longer --timeout.",
    "crashed": "The worker process died (for example ONNX Runtime crashed or ran out of memory). Try again; "
    "if it repeats, set the layers you changed back to FP32 one at a time to find the culprit.",
    "failed": "Try another precision for the layers named above, or start again from a preset.",
}


def explain_failure(record: dict[str, Any]) -> str:
    """A failed result in plain words: what failed, why (first line of the error), and what to try."""
    status = record.get("status", "failed")
    error = (record.get("error") or "no reason was recorded").strip().splitlines()[0]
    what = {"timeout": "took too long", "crashed": "crashed its worker"}.get(status, "failed")
    summary = record.get("plan_summary") or "the plan"
    return f"Evaluating {summary} on {record.get('model_name')} {what}: {error}. {_ADVICE.get(status, '')}"


def _evaluating(summary: str, model_name: str, plan: Plan, settings: MeasureSettings, n_layers: int) -> str:
    """What an evaluation job says while it runs: the plan (its summary counts layers by precision:
    say of how many), what is done, and the step that can take a minute the first time (silent, it
    looked stuck)."""
    text = f"Evaluating {summary} on {model_name} ({n_layers} layers): quantizing the plan, then "
    text += "measuring accuracy and latency"
    if any(p.calibrated for p in (plan.default, *plan.layers.values())):
        text += (
            f". Its INT8/W8A16 activation ranges ({settings.calibration.label} calibration) are computed "
            "once per model and method: the first plan that needs them waits for that"
        )
    return text


class Runner:
    """Engine + worker pool + background threads; one per Streamlit server process."""

    def __init__(self, inline: bool | None = None, settings: MeasureSettings | None = None) -> None:
        inline = os.environ.get(INLINE_ENV) == "1" if inline is None else inline
        if settings is None and os.environ.get(QUICK_ENV) == "1":
            settings = QUICK
        self.pool = None if inline else WorkerPool.connect()
        self.engine = Engine(pool=self.pool, settings=settings)
        self.store = self.engine.store
        # Jobs whose server process has exited (a crash or a restart) can never finish now; jobs of
        # another live server process sharing this store are left running.
        self.store.mark_orphaned_jobs()
        # Two threads: one evaluation can wait on the workers while the next is submitted.
        self._threads = ThreadPoolExecutor(max_workers=2, thread_name_prefix="quantdash-eval")
        # Sensitivity passes and searches take minutes: threads of their own, so a plan evaluated on
        # the Plan page meanwhile is not queued behind them.
        self._long = ThreadPoolExecutor(max_workers=2, thread_name_prefix="quantdash-long")
        # Reports mostly read the store (a chosen plan whose model file is gone is measured again) and
        # render with Chromium: a thread of their own, not queued behind two searches.
        self._reports = ThreadPoolExecutor(max_workers=1, thread_name_prefix="quantdash-report")
        # Presets (about a minute) neither queue behind two searches nor hold up the Plan page's evaluations.
        self._presets = ThreadPoolExecutor(max_workers=1, thread_name_prefix="quantdash-presets")
        self._model_lock = threading.Lock()
        self._submit_lock = threading.Lock()
        # The precisions each running sensitivity pass probes, by job id: a reloaded tab (a new session
        # of this process) shows the pass it left, and counts only its probes as still to come.
        # A running pass's model, precisions and calibration, by job: a reloaded page takes its picks.
        self._probing: dict[str, tuple[str, tuple[Precision, ...], CalibrationMethod]] = {}
        self.stops = StopRequests()  # the Stop buttons of long jobs

    def model(self, name: str) -> ModelBundle:
        with self._model_lock:  # Engine caches bundles in a plain dict
            return self.engine.model(name)

    def forget_model(self, name: str) -> None:
        with self._model_lock:
            self.engine.forget_model(name)

    def baseline_key(self, name: str) -> str:
        bundle = self.model(name)
        return self.engine.job(bundle, Plan(default=Precision.FP32)).key

    def settings(self, calibration: CalibrationMethod | None = None) -> MeasureSettings:
        """The runner's measurement settings, with another calibration method if one is given."""
        base = self.engine.settings
        return base if calibration is None else replace(base, calibration=calibration)

    def submit(
        self,
        model_name: str,
        plan: Plan,
        *,
        calibration: CalibrationMethod | None = None,
        with_baseline: bool = True,
    ) -> str:
        """Queue one plan (plus the FP32 baseline if it is not measured yet); returns the job id,
        that of the job already measuring this plan if there is one.

        Raises PlanError at once if the plan does not fit the model.
        """
        bundle = self.model(model_name)
        settings = self.settings(calibration)
        job = self.engine.job(bundle, plan, settings)
        plans = [plan]
        # Sessions (tabs) share this runner: checking for a job and adding one is one step.
        with self._submit_lock:
            self.store.mark_orphaned_jobs()  # a job whose process died is not "already running"
            active = self.store.list_jobs(["queued", "running"])
            # The plan is being measured already (Evaluate pressed again, or in another tab): that
            # job is the answer; a second one would measure it twice and overwrite the first result.
            same = [j["job_id"] for j in active if j["kind"] == "evaluate" and j["result_key"] == job.key]
            if same:
                return str(same[0])
            if with_baseline:
                base = self.engine.job(bundle, Plan(default=Precision.FP32))
                running = {j["result_key"] for j in active}
                # Not when another job (the Models page's) is already measuring it.
                if base.key != job.key and base.key not in running and self.engine.cached(base) is None:
                    plans.append(Plan(default=Precision.FP32))
            job_id = f"eval-{uuid.uuid4().hex[:12]}"
            self.store.upsert_job(
                job_id,
                kind="evaluate",
                model_name=model_name,
                result_key=job.key,
                state="running",
                progress=0.0,
                message=_evaluating(
                    job.summary, model_name, job.plan, settings, len(self.engine.layers(bundle))
                ),
            )
        self._threads.submit(self._work, job_id, bundle, plans, settings, job.summary)
        return job_id

    def _work(
        self, job_id: str, bundle: ModelBundle, plans: list[Plan], settings: MeasureSettings, summary: str
    ) -> None:
        landed: dict[int, dict[str, Any]] = {}
        started = time.monotonic()

        def on_done(index: int, record: dict[str, Any]) -> None:
            landed[index] = record
            # The job stays "running" until every plan (the baseline too) is in the store.
            what = "your plan" if index == 0 else "the FP32 baseline"
            self.store.upsert_job(
                job_id,
                progress=len(landed) / len(plans),
                message=f"Evaluating {summary} on {bundle.name}: {what} measured",
            )

        try:
            self.engine.evaluate_many(bundle, plans, settings=settings, source="dashboard", on_done=on_done)
            record = landed[0]
            if record["status"] == "ok":
                self.store.upsert_job(
                    job_id, state="done", progress=1.0, message=f"{summary} on {bundle.name}: measured"
                )
            else:
                self.store.upsert_job(job_id, state="failed", progress=1.0, message=explain_failure(record))
        except Exception as e:  # the pool itself failed: say so; the app keeps running
            self.store.upsert_job(
                job_id,
                state="failed",
                message=f"Evaluating {summary} on {bundle.name} could not run ({type(e).__name__}: {e}) "
                f"after {time.monotonic() - started:.0f} s. Try again; if it repeats, restart the app "
                "(its worker processes restart with it).",
            )

    def submit_sensitivity(
        self,
        model_name: str,
        calibration: CalibrationMethod | None = None,
        precisions: list[Precision] | None = None,
    ) -> str:
        """Queue a sensitivity pass (each layer's FP32 time share first, then every probe); job id.

        ``precisions`` limits the probed precisions (each layer's accepted ones if None).
        """
        bundle = self.model(model_name)
        settings = self.settings(calibration)
        candidates = (
            None if precisions is None else candidate_precisions(self.engine.layers(bundle), precisions)
        )

        def work(report: Callable[[float, str], None]) -> str:
            # The profile first: the chart's time shares then show while the probes are measured.
            layer_profile(self.engine, bundle, [Precision.FP32], settings)
            report(0.02, "each layer's FP32 time profiled; measuring the probes")
            frame = run_sensitivity(
                self.engine,
                bundle,
                settings,
                candidates,
                # The total counts the FP32 and all-INT8 plans beside the probes: say so, or the
                # page's "64 probes" and this "of 66" look like two answers.
                on_progress=lambda done, total: report(
                    done / total,
                    f"{done} of {total} plans measured (the probes, and the FP32 and all-INT8 plans "
                    "they are compared with)",
                ),
            )
            bad = int(frame["status"].ne("ok").sum())
            return f"Sensitivity pass on {model_name}: {len(frame) - bad} of {len(frame)} probes measured" + (
                f", {bad} failed (their reasons are in the table)" if bad else ""
            )

        probed = (
            tuple(
                sorted(
                    {p for ps in candidates.values() for p in ps} - {Precision.FP32},
                    key=list(Precision).index,
                )
            )
            if candidates
            else ()
        )
        # The calibration too: probes of another method are other results.
        method = f"{settings.calibration.label} calibration"
        labels = f" ({', '.join(p.label for p in probed)}; {method})" if probed else f" ({method})"

        def tracked(report: Callable[[float, str], None]) -> str:
            try:
                return work(report)
            finally:
                self._probing.pop(job_id, None)

        job_id = self._start(
            "sensitivity",
            model_name,
            f"Sensitivity pass on {model_name}{labels}",
            tracked,
            stopped="What was measured is kept: press Run sensitivity pass again to continue from there.",
        )
        self._probing.setdefault(job_id, (model_name, probed, settings.calibration))
        return job_id

    def probing(self, model_name: str) -> tuple[Precision, ...] | None:
        """The precisions a sensitivity pass running on the model probes (None if none is running here)."""
        running = self._running_pass(model_name)
        return running[1] or None if running else None

    def probing_calibration(self, model_name: str) -> CalibrationMethod | None:
        """The calibration of a sensitivity pass running on the model (None if none is running here)."""
        running = self._running_pass(model_name)
        return running[2] if running else None

    def _running_pass(self, model_name: str) -> tuple[str, tuple[Precision, ...], CalibrationMethod] | None:
        running = {j["job_id"] for j in self.active_jobs("sensitivity", model_name)}
        found = [v for job, v in list(self._probing.items()) if v[0] == model_name and job in running]
        return found[-1] if found else None

    def submit_search(
        self, model_name: str, spec: SearchSpec, calibration: CalibrationMethod | None = None
    ) -> str:
        """Queue a mixed-precision search (continuing one with the same spec); returns the job id.

        Raises PlanError at once if a candidate does not fit the model.
        """
        bundle = self.model(model_name)
        settings = self.settings(calibration)
        check_candidates(self.engine, bundle, spec)

        def work(report: Callable[[float, str], None]) -> str:
            def progress(p: SearchProgress) -> None:
                # The sensitivity and profile phases come before the budget: a sliver of the bar. Its
                # "done" report is the whole bar: nothing is left to stop (see _start's report).
                share = 0.05 if p.phase in ("sensitivity", "profile") else p.measured / max(p.budget, 1)
                share = 1.0 if p.phase == "done" else share
                report(share, p.message)

            result = run_search(self.engine, bundle, spec, settings, on_progress=progress)
            return f"Search on {model_name}: {result.message}"

        return self._start(
            "search",
            model_name,
            f"Searching mixed-precision plans for {model_name}",
            work,
            stopped="The plans measured so far are kept and drawn: press Find best plans again with the same "
            "settings to continue from there.",
        )

    def active_jobs(self, kind: str, model_name: str) -> list[dict[str, Any]]:
        """The model's queued or running jobs of a kind ("search", "report", ...), oldest first."""
        return [
            j
            for j in self.store.list_jobs(["queued", "running"])
            if j["kind"] == kind and j["model_name"] == model_name
        ]

    def submit_report(self, model_name: str, goal: Goal, goal_text: str) -> str:
        """Build the report for the goal in a new folder under <home>/reports; returns the job id.

        Its built.json is written last (dashboard/report_files.py): the Report page offers the
        newest finished one, wherever the user was when it finished."""
        bundle = self.model(model_name)
        settings = self.settings()

        def work(report: Callable[[float, str], None]) -> str:
            out_dir = report_files.fresh_dir(self.engine.home / "reports", model_name)
            steps = 0

            def step(message: str) -> None:
                nonlocal steps
                steps += 1  # how many steps a build takes depends on the goal: a bar that slows down
                report(1 - 0.75**steps, message)

            # Looked up on the module at call time (tests replace it there).
            files = engine_report.build_report(
                self.engine, bundle, goal, out_dir, settings=settings, pdf=True, on_step=step
            )
            images = report_files.zip_images(files.images, out_dir / "images.zip") if files.images else None
            report_files.write_record(
                out_dir,
                {
                    "model": model_name,
                    "model_id": model_identity(model_name, bundle.model_hash, bundle.data_hash),
                    "out_dir": str(out_dir),
                    "html": str(files.html),
                    "pdf": str(files.pdf) if files.pdf else None,
                    "bundle": str(files.bundle) if files.bundle else None,
                    "images": str(images) if images else None,
                    "render_error": files.render_error,
                    "goal": goal.describe(),
                    "goal_text": goal_text,
                    "built_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
                },
            )
            return f"Report of {model_name} built in {out_dir}"

        # Tabs share this runner: a build of the model already running is the answer to a second press.
        with self._submit_lock:
            same = self.active_jobs("report", model_name)
            if same:
                return str(same[0]["job_id"])
            return self._start(
                "report",
                model_name,
                f"Building the report of {model_name}",
                work,
                advice="Check the message, then press Build report again.",
                executor=self._reports,
            )

    def submit_presets(self, model_name: str) -> str:
        """Measure the model's FP32 baseline and every preset plan in the background (the store serves
        those already measured); returns the job id, that of the model's running one if there is one."""
        bundle = self.model(model_name)
        settings = self.settings()
        total = len(PRESETS)

        def work(report: Callable[[float, str], None]) -> str:
            report(0.0, f"quantizing and measuring {total} plans ({', '.join(PRESETS)})")
            landed = 0

            def on_done(name: str, record: dict[str, Any]) -> None:
                nonlocal landed
                landed += 1
                # The plans run side by side on the workers: name the one that landed, not "the" current one.
                how = "" if record.get("status") == "ok" else ": could not be measured"
                report(
                    landed / total,
                    f"{landed} of {total} done, the latest {name} ({record.get('plan_summary')}){how}",
                )

            # Looked up on the module at call time (tests replace it there).
            records = engine_report.ensure_candidates(self.engine, bundle, settings, on_done=on_done)
            bad = sum(r.get("status") != "ok" for r in records)
            return f"Presets of {model_name}: {len(records) - bad} of {len(records)} measured" + (
                f", {bad} could not be (why is on the Report page)" if bad else ""
            )

        # Tabs share this runner: the model's presets already being measured are the answer to a second
        # press (measuring them twice would only overwrite the first results).
        with self._submit_lock:
            self.store.mark_orphaned_jobs()  # a job whose process died is not "already running"
            same = self.active_jobs(PRESETS_JOB, model_name)
            if same:
                return str(same[0]["job_id"])
            return self._start(
                PRESETS_JOB,
                model_name,
                f"Measuring the preset plans of {model_name}",
                work,
                advice="What was measured is kept: press Measure the presets first again to continue from "
                "there; if it repeats, restart the app (its worker processes restart with it).",
                executor=self._presets,
                stopped="What was measured is kept: press Measure the presets first again to continue from "
                "there.",
            )

    def preset_failures(self, model_name: str) -> list[dict[str, Any]]:
        """The failed results of the model's preset plans, once its latest presets job has ended: the
        Report page says why, in any tab, until each is measured (pressed again, or on the Plan page)."""
        last = self.last_job(PRESETS_JOB, model_name)
        if last is None or last["state"] != "done":
            return []
        bundle = self.model(model_name)
        layers = self.engine.layers(bundle)
        settings = engine_report.with_batch_1(self.settings())
        # Two presets can be one plan on a model (INT4 where no layer takes it is FP32): once each.
        keys = dict.fromkeys(self.engine.job(bundle, preset_plan(n, layers), settings).key for n in PRESETS)
        records = [self.store.get(k) for k in keys]
        return [r for r in records if r is not None and r["status"] != "ok"]

    def _start(
        self,
        kind: str,
        model_name: str,
        what: str,
        work: Callable[[Callable[[float, str], None]], str],
        advice: str = "What was measured is kept: press the button again to continue from there; if it "
        "repeats, restart the app (its worker processes restart with it).",
        executor: ThreadPoolExecutor | None = None,
        stopped: str | None = None,
    ) -> str:
        """Run work(report) on a long-job thread, its progress and outcome in a job row; job id.
        `advice`: what a failure message tells the user to do next. `stopped`: given, the job takes a
        Stop (dashboard.job_stops), and this is what its end then tells the user."""
        job_id = f"{kind}-{uuid.uuid4().hex[:12]}"
        if stopped is not None:
            self.stops.open(job_id)
        self.store.upsert_job(
            job_id,
            kind=kind,
            model_name=model_name,
            state="running",
            progress=0.0,
            message=f"{what}: starting",
        )

        def report(progress: float, message: str) -> None:
            # A Stop pressed since the last report ends the job here; not at its last report (all
            # its work is done then: it would be told to continue what has nothing left).
            if progress < 1.0:
                self.stops.check(job_id)
            self.store.upsert_job(job_id, progress=min(max(progress, 0.0), 1.0), message=f"{what}: {message}")

        def run() -> None:
            started = time.monotonic()
            try:
                self.stops.check(job_id)  # stopped while it waited for a thread: it does nothing
                self.store.upsert_job(job_id, state="done", progress=1.0, message=work(report))
            except JobStopped:  # asked for: it ended as the user wanted, not failed
                took = time.monotonic() - started
                self.store.upsert_job(
                    job_id,
                    state="done",
                    outcome="stopped",
                    message=f"{what}: stopped after {took:.0f} s, as you asked. {stopped}",
                )
            except Exception as e:  # no traceback on screen: what failed, why, what to try
                reason = (str(e).strip() or "no reason given").splitlines()[0]
                self.store.upsert_job(
                    job_id,
                    state="failed",
                    message=f"{what} stopped after {time.monotonic() - started:.0f} s "
                    f"({type(e).__name__}: {reason}). {advice}",
                )
            finally:
                self.stops.close(job_id)

        (executor or self._long).submit(run)
        return job_id

    def last_job(self, kind: str, model_name: str) -> dict[str, Any] | None:
        """The model's latest job of a kind, in any state (None if it has had none)."""
        jobs = [j for j in self.store.list_jobs() if j["kind"] == kind and j["model_name"] == model_name]
        return jobs[-1] if jobs else None

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)
        self._long.shutdown(wait=False, cancel_futures=True)
        self._reports.shutdown(wait=False, cancel_futures=True)
        self._presets.shutdown(wait=False, cancel_futures=True)
        if self.pool is not None:
            self.pool.close()
