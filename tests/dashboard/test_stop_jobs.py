"""Stop on a long job's progress bar: the job ends at its next report, told as a stop, not a failure,
and what it measured stays in the store, so starting it again continues from there.

A real sensitivity pass (inline, quick timing) on a sample model, stopped from the page.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from dashboard import cached, state
from engine.types import Precision
from tests.dashboard.conftest import app, wait_for_jobs

MODEL = "digits_cnn"


def _job(kind: str) -> dict[str, Any]:
    (job,) = [j for j in cached.runner().store.list_jobs() if j["kind"] == kind]
    return job


def _results() -> int:
    runner = cached.runner()
    bundle = runner.model(MODEL)
    return len(runner.store.to_frame(network=(bundle.model_hash, bundle.data_hash)))


def test_a_stopped_sensitivity_pass_keeps_what_it_measured_and_continues(home: Path) -> None:
    at = app(model=MODEL)
    at.session_state[state.SENS_PRECISIONS] = [
        Precision.FP16.value,
        Precision.INT8.value,
        Precision.INT4.value,
    ]
    at.switch_page("app_pages/search.py").run()
    at.button(key=state.SENS_RUN).click().run()
    assert not at.exception
    job_id = _job("sensitivity")["job_id"]

    # Some probes in (the FP32 and all-INT8 plans come first), most still to come: press Stop.
    deadline = time.monotonic() + 120
    while _results() < 4:
        assert time.monotonic() < deadline and _job("sensitivity")["state"] == "running", _job("sensitivity")
        time.sleep(0.2)
    at.run()
    stop = at.button(key=f"qd_stop_{job_id}")
    assert not stop.disabled
    stop.click().run()
    assert not at.exception
    if _job("sensitivity")["state"] == "running":  # it stops at its next report: the page says so now
        assert "Stopping: " in " ".join(p.proto.text for p in at.get("progress"))
    wait_for_jobs(at)

    job = _job("sensitivity")
    assert job["state"] == "done", job  # asked for: not a failure
    assert "stopped after" in job["message"] and "as you asked" in job["message"], job["message"]
    assert "press Run sensitivity pass again to continue" in job["message"]
    kept = _results()
    assert 4 <= kept < 22, kept  # 20 probes and the FP32 and all-INT8 plans: stopped part way
    assert not cached.runner().stops.stoppable(job_id)  # ended: nothing left to stop
    assert f"qd_stop_{job_id}" not in {b.key for b in at.button}

    # Again: the pass continues, measuring only what the stopped one had not.
    at.button(key=state.SENS_RUN).click().run()
    wait_for_jobs(at)
    assert not at.exception
    assert _results() == 22
    assert "15 of 15 probes measured" in " ".join(c.value for c in at.caption)  # each layer alone


def test_a_stopped_search_keeps_its_trials_and_a_second_press_continues_it(home: Path) -> None:
    """Stopped in its own phase (the sensitivity pass above serves its probes): its trials stay in
    the store, and the same search started again measures only the rest of its budget."""
    from engine.search import search_id
    from engine.search_spec import SearchSpec

    runner = cached.runner()
    bundle = runner.model(MODEL)
    allowed = (Precision.FP32, Precision.INT8, Precision.INT4)
    spec = SearchSpec(candidates={x.name: allowed for x in runner.engine.layers(bundle)}, max_evaluations=12)
    trials = lambda: runner.store.search_trials(search_id(bundle, spec, runner.settings()))  # noqa: E731
    job_id = runner.submit_search(MODEL, spec)
    deadline = time.monotonic() + 180
    while len(trials()) < 3:
        assert time.monotonic() < deadline and _job("search")["state"] == "running", _job("search")
        time.sleep(0.2)
    assert runner.stops.request(job_id)
    at = app(model=MODEL)
    wait_for_jobs(at)
    job = _job("search")
    assert job["state"] == "done" and "as you asked" in job["message"], job
    kept = {t["result_key"] for t in trials()}
    assert 3 <= len(kept) < 12, len(kept)

    runner.submit_search(MODEL, spec)
    wait_for_jobs(at)
    done = [j for j in runner.store.list_jobs() if j["kind"] == "search"][-1]
    assert done["state"] == "done" and "as you asked" not in done["message"], done
    after = [t["result_key"] for t in trials()]
    assert len(after) == len(set(after)) == 12 and kept <= set(after)  # continued, nothing measured twice
