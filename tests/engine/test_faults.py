"""A worker SIGKILLed mid-evaluation, with real processes: the caller lives, the store stays whole.

A real WorkerPool (a local Dask cluster in a child process, two worker processes), an Engine and a
ResultStore in tmp. One plan is evaluated to completion; then a second plan's worker is killed while
the task is executing there. Afterwards the first result is unchanged byte for byte, the killed one
is stored as "crashed" with its reason, re-running it succeeds, every result key has one row, and
SQLite's integrity check passes (read straight from the file, not through the store).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from engine import api
from engine.api import Engine
from engine.cluster import executing_probe
from engine.jobs import WorkerPool
from engine.sensitivity import sensitivity_settings
from engine.store import ResultStore
from engine.types import MeasureSettings, Plan, Precision
from tests.engine import jobs_tasks

FAST = MeasureSettings(batch_sizes=(1,), max_seconds=0.3, max_runs=60, bootstrap=200)
# Latency never converges (±0.01% is out of reach), so it runs until its 8 s cap: long enough to be
# killed in the middle, short enough to be re-run. The cap is time, so it does not depend on the CPU.
LONG = MeasureSettings(batch_sizes=(1,), min_runs=20, max_runs=10**7, max_seconds=8.0, rel_ci=0.0001)

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def pool() -> Iterator[WorkerPool]:
    os.environ.pop("QUANTDASH_SCHEDULER", None)
    with WorkerPool.connect(workers=2) as p:
        yield p


def _rows(db: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Read the SQLite file with a connection of its own (not the store's)."""
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def _executing_evaluation(pool: WorkerPool, timeout: float = 60) -> tuple[str, str]:
    """(task key, worker address) of the evaluation once its worker has been executing it for 1 s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        keys = [
            str(k)
            for keys in pool.client.processing().values()
            for k in keys
            if str(k).startswith("evaluate_task-")
        ]
        if keys:
            running = pool.client.run_on_scheduler(executing_probe(), keys)
            for key, (worker, executing_s) in running.items():
                if executing_s is not None and executing_s >= 1.0:
                    return key, worker
        time.sleep(0.1)
    raise AssertionError("the evaluation never started executing on a worker")


def _wait_for_fresh_workers(pool: WorkerPool, killed: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = set(pool.worker_pids().values())
        if len(pids) == 2 and killed not in pids:
            return
        time.sleep(0.5)
    raise AssertionError("the killed worker was not replaced")


def test_sigkill_worker_mid_evaluation_keeps_the_store_whole(pool: WorkerPool, tmp_path: Path) -> None:
    db = tmp_path / "results.sqlite"
    engine = Engine(store=ResultStore(db), pool=pool, home=tmp_path, settings=FAST, timeout_s=120)
    bundle = engine.model("digits_cnn")
    engine.layers(bundle)  # inspect first: only the evaluation is in flight when the worker dies

    # 1. A finished result, and its row exactly as stored.
    first = engine.evaluate(bundle, Plan(default=Precision.INT8))
    assert first["status"] == "ok", first["error"]
    row_sql = "SELECT * FROM results WHERE key = ?"
    first_row = _rows(db, row_sql, (first["key"],))
    assert len(first_row) == 1
    first_artifact = Path(first["artifact_path"]).read_bytes()

    # 2. Another plan, its worker SIGKILLed while it executes there.
    plan = Plan(default=Precision.FP16)
    killed_key = engine.job(bundle, plan, LONG).key
    box: dict[str, Any] = {}

    def evaluate() -> None:
        try:
            box["record"] = engine.evaluate(bundle, plan, settings=LONG)
        except BaseException as e:  # the assertion below names it
            box["error"] = e

    thread = threading.Thread(target=evaluate, name="evaluation-to-kill")
    started = time.monotonic()
    thread.start()
    _, worker = _executing_evaluation(pool)
    pids = pool.worker_pids()
    victim = pids[worker]
    bystander = next(pid for w, pid in pids.items() if w != worker)
    assert victim != os.getpid() and psutil.pid_exists(victim)
    assert engine.store.get(killed_key) is None, "the evaluation finished before the kill"
    os.kill(victim, signal.SIGKILL)
    thread.join(timeout=120)
    assert not thread.is_alive(), "the caller never got an outcome for the killed evaluation"
    assert "error" not in box, f"the caller raised: {box.get('error')!r}"
    # Well inside the 8 s latency loop: the worker died mid-task, it did not finish first.
    assert time.monotonic() - started < 60

    # The caller lives; the killed evaluation is a stored crash that says why.
    record = box["record"]
    assert record["key"] == killed_key
    assert record["status"] == "crashed", record
    assert record["error"] and "worker process died" in record["error"], record["error"]
    stored = engine.store.get(killed_key)
    assert stored is not None and stored["status"] == "crashed" and stored["error"] == record["error"]
    assert stored["artifact_path"] is None
    # Only the task's own worker died: the other one kept running.
    assert psutil.pid_exists(bystander) and bystander in pool.worker_pids().values()

    # The finished result is untouched, in the store and on disk.
    assert _rows(db, row_sql, (first["key"],)) == first_row
    assert Path(first["artifact_path"]).read_bytes() == first_artifact
    assert engine.store.get(first["key"]) == first

    # 3. The killed plan runs again, under the same key, and succeeds (the crash is a cache miss).
    _wait_for_fresh_workers(pool, victim)
    again = engine.evaluate(bundle, plan, settings=LONG)
    assert again["key"] == killed_key
    assert again["status"] == "ok", again["error"]
    assert again["error"] is None and Path(again["artifact_path"]).is_file()
    assert _rows(db, row_sql, (first["key"],)) == first_row

    # No duplicates: one row per key, and exactly the two results made here.
    counts = dict(_rows(db, "SELECT key, COUNT(*) FROM results GROUP BY key"))
    assert counts == {first["key"]: 1, killed_key: 1}
    statuses = dict(_rows(db, "SELECT key, status FROM results"))
    assert statuses == {first["key"]: "ok", killed_key: "ok"}
    assert _rows(db, "PRAGMA integrity_check") == [("ok",)]
    assert engine.store.integrity_ok()


def test_a_group_that_kills_its_worker_is_measured_plan_by_plan(
    pool: WorkerPool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A layer's probes measured together in one task (engine.prefix); that task's worker dies. Each
    # probe is then measured in a task of its own, so a crash is only ever stored for its own plan.
    monkeypatch.setattr(api, "evaluate_together_task", jobs_tasks.exit_hard_whatever)
    engine = Engine(
        store=ResultStore(tmp_path / "r.sqlite"),
        pool=pool,
        home=tmp_path,
        settings=sensitivity_settings(FAST),
    )
    bundle = engine.model("digits_cnn")
    layer = engine.layers(bundle)[1]
    plans = [Plan(layers={layer.name: p}) for p in (Precision.INT8, Precision.FP16, Precision.INT4)]
    records = engine.evaluate_many(bundle, plans, together=[[0, 1, 2]])
    assert [r["status"] for r in records] == ["ok"] * 3, [r["error"] for r in records]
    assert {r["metrics"]["realized"][layer.name] for r in records} == {"int8", "fp16", "int4"}
