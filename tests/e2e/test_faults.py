"""Faults with real processes, in Chromium against a real `streamlit run` with its Dask workers.

1. The server is SIGKILLed mid-job and started again on the same home: the interrupted job is shown
   and stored as stale (never left "running"), the results finished before are intact, the plan
   runs again to the end, no result is duplicated and SQLite's integrity check passes.
2. A second tab is opened while a job runs: it shows that job in progress, pressing Evaluate there
   on the same plan starts no second job, both tabs show the result once it is measured, and
   neither page shows an error.

The evaluated plan is digits_cnn at INT8 with Entropy calibration: ~13 s in a worker (the
calibration histograms), long enough to be interrupted or watched from a second tab, with
QUANTDASH_QUICK keeping the rest short. The store is read straight from the SQLite file.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import psutil
import pytest

from tests.e2e.conftest import Server, start_server
from tests.e2e.test_dashboard_flow import choose, click, wait_idle

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
MODEL = "digits_cnn"
ENV = {"QUANTDASH_QUICK": "1"}
EXCEPTION = "[data-testid=stException]"
# Set once any Streamlit exception box is drawn, even if a later rerun removes it again.
WATCH_EXCEPTIONS = """
new MutationObserver(() => {
    if (document.querySelector('[data-testid="stException"]')) window.__qdException = true;
}).observe(document, {childList: true, subtree: true});
"""
RUNNING = re.compile("You can keep working")
T = TypeVar("T")


# --- the store, read with a connection of its own --------------------------------------------


def query(home: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(home / "results.sqlite", timeout=30)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def jobs(home: Path) -> dict[str, dict[str, Any]]:
    conn = sqlite3.connect(home / "results.sqlite", timeout=30)
    conn.row_factory = sqlite3.Row
    try:
        return {r["job_id"]: dict(r) for r in conn.execute("SELECT * FROM jobs ORDER BY created_at")}
    finally:
        conn.close()


def results(home: Path) -> dict[str, tuple[Any, ...]]:
    """Every stored result row, whole, by key."""
    return {row[0]: row for row in query(home, "SELECT * FROM results ORDER BY key")}


def statuses(home: Path) -> dict[str, str]:
    return dict(query(home, "SELECT key, status FROM results"))


def assert_store_whole(home: Path) -> None:
    """One row per result key, one evaluation job per key at most running, integrity ok."""
    dupes = query(home, "SELECT key, COUNT(*) FROM results GROUP BY key HAVING COUNT(*) > 1")
    assert dupes == [], dupes
    running = query(
        home,
        "SELECT result_key, COUNT(*) FROM jobs WHERE state IN ('queued', 'running') AND kind = 'evaluate' "
        "GROUP BY result_key HAVING COUNT(*) > 1",
    )
    assert running == [], running
    assert query(home, "PRAGMA integrity_check") == [("ok",)]


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 60) -> T:
    deadline = time.monotonic() + timeout
    while (value := probe()) is None:
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
    return value


def new_job(home: Path, seen: set[str]) -> dict[str, Any]:
    """The evaluation job that the last Evaluate click added."""

    def probe() -> dict[str, Any] | None:
        fresh = [j for i, j in jobs(home).items() if i not in seen and j["kind"] == "evaluate"]
        return fresh[0] if fresh else None

    return wait_for("the job of the Evaluate click", probe, timeout=30)


def wait_done(home: Path, job_id: str, timeout: float = 150) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        job = jobs(home)[job_id]
        assert job["state"] in ("queued", "running", "done"), job
        return job if job["state"] == "done" else None

    return wait_for(f"job {job_id} to finish", probe, timeout)


# --- the Plan page -------------------------------------------------------------------------------


def open_plan(page: Any, server: Server) -> None:
    page.goto(f"{server.url}/plan?model={MODEL}")
    page.get_by_role("heading", name=f"Plan · {MODEL}").wait_for(timeout=120_000)
    page.locator(".st-key-qd_preset [data-testid=stSelectbox]").wait_for(timeout=120_000)
    wait_idle(page)


def set_int8_plan(page: Any, calibration: str) -> None:
    """The int8 preset, and the calibration picked by its label."""
    choose(page, "qd_preset", re.compile(r"^int8:"))
    click(page, "qd_apply_preset")
    page.get_by_text(re.compile(r"^\d+ INT8$")).wait_for(timeout=30_000)
    page.locator(f".st-key-qd_calibration_{MODEL} [data-testid=stSelectbox]").wait_for(timeout=30_000)
    choose(page, f"qd_calibration_{MODEL}", re.compile(rf"^{calibration}:"))
    wait_idle(page)


def evaluate(page: Any, home: Path) -> dict[str, Any]:
    """Press Evaluate; the job row it added."""
    seen = set(jobs(home))
    click(page, "qd_evaluate")
    return new_job(home, seen)


def assert_no_exception(page: Any) -> None:
    assert page.locator(EXCEPTION).count() == 0, page.locator(EXCEPTION).first.inner_text()
    assert not page.evaluate("() => window.__qdException === true"), "an exception box was drawn"
    assert "Traceback" not in page.inner_text("body")


def process_tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def _name(p: psutil.Process) -> str:
    try:
        return f"{p.pid} {' '.join(p.cmdline())[:120]}"
    except psutil.Error:
        return str(p.pid)


# --- 1. kill and restart the server mid-job ------------------------------------------------------


def test_server_killed_mid_job_then_restarted(browser: Any, tmp_path: Path, artifacts: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    server = start_server(home, ENV)
    page = browser.new_page(viewport={"width": 1500, "height": 1100})
    page.add_init_script(WATCH_EXCEPTIONS)
    try:
        # A finished result first: INT8 (MinMax) and the FP32 baseline measured with it.
        open_plan(page, server)
        set_int8_plan(page, "MinMax")
        first = evaluate(page, home)
        wait_done(home, first["job_id"])
        finished = results(home)
        assert len(finished) == 2 and set(statuses(home).values()) == {"ok"}

        # Then the long one (Entropy calibration), and the server dies while a worker runs it.
        set_int8_plan(page, "Entropy")
        job = evaluate(page, home)
        key = job["result_key"]
        assert job["state"] == "running" and key not in finished
        page.get_by_text(RUNNING).first.wait_for(timeout=30_000)
        time.sleep(2.5)  # the task is on a worker by now; it takes ~13 s there
        assert jobs(home)[job["job_id"]]["state"] == "running"
        assert key not in results(home), "the evaluation finished before the kill"
        tree = process_tree(server.proc.pid)
        names = [_name(p) for p in tree]
        assert any("engine.cluster" in n for n in names), names  # the Dask cluster it started
        assert len(tree) >= 4, names  # streamlit, the cluster, two workers (and helpers)
        os.killpg(server.proc.pid, signal.SIGKILL)
        server.proc.wait(timeout=30)
        # Nothing the server started survives it: its process group is gone, and the cluster (a
        # session of its own, so Ctrl-C in a terminal spares it) shuts itself and its workers down.
        _, alive = psutil.wait_procs(tree, timeout=60)
        assert not alive, [_name(p) for p in alive]
        with pytest.raises(ProcessLookupError):
            os.killpg(server.proc.pid, 0)

        # The store as the dead server left it: the job still says running, nothing half-written.
        assert jobs(home)[job["job_id"]]["state"] == "running"
        assert results(home) == finished
        assert query(home, "PRAGMA integrity_check") == [("ok",)]

        # A new server on the same home: the job is stale, shown as interrupted, never as running.
        server = start_server(home, ENV)
        open_plan(page, server)
        page.get_by_text(re.compile("interrupted because the app restarted")).first.wait_for(timeout=60_000)
        after = jobs(home)
        assert after[job["job_id"]]["state"] == "stale", after[job["job_id"]]
        assert not [j for j in after.values() if j["state"] in ("queued", "running")]
        assert page.get_by_text(RUNNING).count() == 0
        page.screenshot(path=str(artifacts / "e2e-faults-restarted.png"), full_page=True)

        # The same plan, submitted again, is measured to the end under the same key.
        set_int8_plan(page, "Entropy")
        again = evaluate(page, home)
        assert again["result_key"] == key and again["job_id"] != job["job_id"]
        wait_done(home, again["job_id"])
        page.get_by_text(re.compile(r"^Measured: \d+ INT8 · Entropy calibration")).wait_for(timeout=60_000)
        wait_idle(page)

        now = results(home)
        assert {k: v for k, v in now.items() if k in finished} == finished  # byte for byte
        assert set(now) == {*finished, key} and statuses(home)[key] == "ok"
        states = {i: j["state"] for i, j in jobs(home).items()}
        assert states == {first["job_id"]: "done", job["job_id"]: "stale", again["job_id"]: "done"}
        assert_store_whole(home)
        assert_no_exception(page)
    except BaseException:
        page.screenshot(path=str(artifacts / "e2e-faults-failure.png"), full_page=True)
        print(server.log.read_text()[-4000:])
        raise
    finally:
        page.close()
        server.stop()


# --- 2. a second tab during a job ----------------------------------------------------------------


def test_second_tab_during_a_job(browser: Any, tmp_path: Path, artifacts: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    server = start_server(home, ENV)
    context = browser.new_context(viewport={"width": 1500, "height": 1100})
    context.add_init_script(WATCH_EXCEPTIONS)
    tab1 = context.new_page()
    tab2 = None
    try:
        open_plan(tab1, server)
        set_int8_plan(tab1, "Entropy")
        job = evaluate(tab1, home)
        key = job["result_key"]
        tab1.get_by_text(RUNNING).first.wait_for(timeout=30_000)

        # Tab 2, same browser, same model, while the job runs: it shows that job in progress.
        tab2 = context.new_page()
        open_plan(tab2, server)
        tab2.get_by_text(RUNNING).first.wait_for(timeout=30_000)
        assert jobs(home)[job["job_id"]]["state"] == "running", "the job ended before tab 2 saw it"
        tab2.screenshot(path=str(artifacts / "e2e-faults-tab2.png"), full_page=True)

        def for_key() -> list[str]:
            return [i for i, j in jobs(home).items() if j["result_key"] == key]

        assert for_key() == [job["job_id"]]

        # The same plan in tab 2, Evaluate pressed there too while it runs: still that one job.
        set_int8_plan(tab2, "Entropy")
        assert jobs(home)[job["job_id"]]["state"] == "running", "the job ended before tab 2 pressed"
        click(tab2, "qd_evaluate")
        wait_idle(tab2)
        assert for_key() == [job["job_id"]]

        wait_done(home, job["job_id"])
        # Both tabs show the result, without a reload (the jobs panel reruns each page).
        for tab in (tab1, tab2):
            tab.get_by_text(re.compile(r"^Measured: \d+ INT8 · Entropy calibration")).wait_for(timeout=60_000)
            # The result can land before the job ends (its FP32 baseline is measured after it): the
            # progress line goes at the panel's next tick after the end, not at once.
            tab.get_by_text(RUNNING).first.wait_for(state="detached", timeout=30_000)
            wait_idle(tab)
            assert tab.get_by_text(RUNNING).count() == 0
        tab1.screenshot(path=str(artifacts / "e2e-faults-tab1-done.png"), full_page=True)

        assert for_key() == [job["job_id"]]
        stored = statuses(home)
        assert stored[key] == "ok" and set(stored.values()) == {"ok"}
        assert len(stored) == 2  # the plan and its FP32 baseline
        assert {j["state"] for j in jobs(home).values()} == {"done"}
        assert_store_whole(home)
        for tab in (tab1, tab2):
            assert_no_exception(tab)
    except BaseException:
        for n, tab in enumerate((tab1, tab2), 1):
            if tab is not None:
                tab.screenshot(path=str(artifacts / f"e2e-faults-tab{n}-failure.png"), full_page=True)
        print(server.log.read_text()[-4000:])
        raise
    finally:
        context.close()
        server.stop()
