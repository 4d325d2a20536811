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
    wait_for_jobs(at)

    job = _job("sensitivity")
    assert job["state"] == "done" and job["outcome"] == "stopped", job  # asked for: not a failure
    assert job["message"] in [i.value for i in at.info]  # the bar is gone: what it kept is said
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
    assert job["state"] == "done" and job["outcome"] == "stopped" and "as you asked" in job["message"], job
    kept = {t["result_key"] for t in trials()}
    assert 3 <= len(kept) < 12, len(kept)
    at.switch_page("app_pages/search.py").run()
    assert not at.exception
    # Its best plan so far is not the search's answer: the page says it was stopped, and how to go on.
    said = " ".join(i.value for i in at.info)
    assert f"You stopped this search after {len(kept)} of its 12 plans" in said, said

    runner.submit_search(MODEL, spec)
    wait_for_jobs(at)
    done = runner.last_job("search", MODEL)
    assert done is not None and done["state"] == "done" and done["outcome"] is None, done
    at.run()
    assert "You stopped this search" not in " ".join(i.value for i in at.info)
    after = [t["result_key"] for t in trials()]
    assert len(after) == len(set(after)) == 12 and kept <= set(after)  # continued, nothing measured twice


def test_the_bar_says_stopping_at_once_and_the_button_is_not_pressed_twice(home: Path) -> None:
    """A job stops at its next report, which can be seconds away (a profile, a slow plan): until then
    the bar says so. A job row that never reports stands still for as long as the test looks."""
    runner = cached.runner()
    runner.store.upsert_job("search-still", kind="search", model_name=MODEL, state="running", message="Busy")
    runner.stops.open("search-still")
    try:
        at = app(model=MODEL)
        at.run()
        at.button(key="qd_stop_search-still").click().run()
        assert not at.exception
        bars = " ".join(p.proto.text for p in at.get("progress"))
        assert "⏹ Stopping when the next plan lands: Busy" in bars, bars
        assert at.button(key="qd_stop_search-still").disabled
    finally:
        runner.stops.close("search-still")
        runner.store.upsert_job("search-still", state="done")


def test_a_stop_after_the_last_report_keeps_the_jobs_own_end(home: Path) -> None:
    """Review: a Stop pressed once all the work was done (between the last report and the end) turned a
    finished job into 'stopped ... press again to continue', with nothing left to continue."""
    import threading

    runner = cached.runner()
    reported, pressed = threading.Event(), threading.Event()

    def work(report: Any) -> str:
        report(0.5, "half")
        report(1.0, "all measured")  # the last report
        reported.set()
        pressed.wait(10)
        report(1.0, "still all measured")
        return "finished"

    job_id = runner._start("presets", "nothing", "Test job", work, stopped="Continue it.")
    assert reported.wait(10)
    assert runner.stops.request(job_id)
    pressed.set()
    wait_for_jobs(app(model=MODEL))
    job = runner.last_job("presets", "nothing")
    assert (
        job is not None and job["state"] == "done" and job["outcome"] is None and job["message"] == "finished"
    )


def test_a_job_stopped_while_it_waits_for_a_thread_does_nothing(home: Path) -> None:
    import threading
    from concurrent.futures import ThreadPoolExecutor

    runner = cached.runner()
    busy, ran = threading.Event(), []
    one_thread = ThreadPoolExecutor(max_workers=1)
    one_thread.submit(busy.wait, 10)  # the thread the job would run on is taken
    job_id = runner._start(
        "search",
        "queued",
        "Queued job",
        lambda report: ran.append(1) or "ran",
        stopped="Continue it.",
        executor=one_thread,
    )
    assert runner.stops.request(job_id)
    busy.set()
    one_thread.shutdown(wait=True)
    job = runner.last_job("search", "queued")
    assert job is not None and job["outcome"] == "stopped" and not ran, (job, ran)
