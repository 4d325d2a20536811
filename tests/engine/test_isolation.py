"""Evaluations in real worker processes: a killed or overdue worker is a stored failure, not a dead caller."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.api import Engine
from engine.jobs import WorkerPool
from engine.store import ResultStore
from engine.types import MeasureSettings, Plan, Precision

FAST = MeasureSettings(batch_sizes=(1,), max_seconds=0.3, max_runs=60, bootstrap=200)
# Never converges (±0.01% is out of reach), so latency runs until its 30 s cap: a long task.
SLOW = MeasureSettings(batch_sizes=(1,), min_runs=20, max_runs=10**7, max_seconds=30.0, rel_ci=0.0001)

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def pool() -> Iterator[WorkerPool]:
    os.environ.pop("QUANTDASH_SCHEDULER", None)
    with WorkerPool.connect(workers=2) as p:
        yield p


def _engine(pool: WorkerPool, home: Path, timeout_s: float = 120.0) -> Engine:
    return Engine(
        store=ResultStore(home / "results.sqlite"), pool=pool, home=home, settings=FAST, timeout_s=timeout_s
    )


def test_evaluation_runs_in_a_worker_process(pool: WorkerPool, tmp_path: Path) -> None:
    assert pool.is_local and pool.n_workers() == 2
    assert os.getpid() not in pool.worker_pids().values()
    engine = _engine(pool, tmp_path)
    record = engine.evaluate(engine.model("digits_cnn"), Plan(default=Precision.INT8))
    assert record["status"] == "ok", record["error"]
    assert record["metrics"]["realized"] and engine.store.get_ok(record["key"])


def test_killed_worker_is_a_stored_crash_and_the_caller_lives(pool: WorkerPool, tmp_path: Path) -> None:
    engine = _engine(pool, tmp_path)
    bundle = engine.model("digits_cnn")
    engine.layers(bundle)  # inspect first, so only the evaluation is in flight when we kill
    before = set(pool.worker_pids().values())
    box: dict[str, dict] = {}
    thread = threading.Thread(
        target=lambda: box.setdefault(
            "r", engine.evaluate(bundle, Plan(default=Precision.FP16), settings=SLOW)
        )
    )
    thread.start()
    time.sleep(4)  # well inside the 30 s latency loop
    for pid in before:
        os.kill(pid, signal.SIGKILL)
    thread.join(timeout=120)
    record = box["r"]
    assert record["status"] == "crashed", record
    assert "worker process died" in record["error"]
    assert engine.store.get(record["key"])["status"] == "crashed"
    # The pool recovers (the nanny restarts workers) and the same plan can be re-run.
    _wait_for_fresh_workers(pool, before)
    again = engine.evaluate(bundle, Plan(default=Precision.FP16), settings=FAST)
    assert again["status"] == "ok"


def _wait_for_fresh_workers(pool: WorkerPool, old_pids: set[int], timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        pids = set(pool.worker_pids().values())
        if len(pids) == 2 and not pids & old_pids:
            return
        time.sleep(0.5)
    raise AssertionError("the killed workers were not replaced")


def test_overdue_evaluation_times_out(pool: WorkerPool, tmp_path: Path) -> None:
    _engine(pool, tmp_path).layers(
        _engine(pool, tmp_path).model("digits_cnn")
    )  # inspect without a tight limit
    engine = _engine(pool, tmp_path, timeout_s=5)
    bundle = engine.model("digits_cnn")
    t = time.perf_counter()
    record = engine.evaluate(bundle, Plan(default=Precision.INT8_DYNAMIC), settings=SLOW)
    assert record["status"] == "timeout" and "time limit" in record["error"]
    assert time.perf_counter() - t < 25
    after = engine.evaluate(bundle, Plan(), settings=FAST)
    assert after["status"] == "ok", after["error"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def remote_scheduler(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A scheduler and two workers started separately on loopback, as an existing cluster would be."""
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "0"}
    procs = [
        subprocess.Popen(
            [str(bin_dir / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
             "--no-dashboard"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ),
        subprocess.Popen(
            [str(bin_dir / "dask"), "worker", address, "--nworkers", "2", "--nthreads", "1", "--no-dashboard",
             "--host", "127.0.0.1"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ),
    ]  # fmt: skip
    monkeypatch.setenv("QUANTDASH_SCHEDULER", address)
    try:
        yield address
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def test_quantdash_scheduler_sends_work_to_an_existing_cluster(remote_scheduler: str, tmp_path: Path) -> None:
    deadline = time.time() + 60
    while True:
        try:
            pool = WorkerPool.connect(start_timeout=10)
            if pool.n_workers() == 2:
                break
            pool.close()
        except OSError:
            pass
        assert time.time() < deadline, "the separately started cluster did not come up"
        time.sleep(1)
    with pool:
        assert not pool.is_local and pool.address == remote_scheduler
        engine = _engine(pool, tmp_path)
        bundle = engine.model("digits_cnn")
        plans = [
            Plan(default=Precision.INT8),
            Plan(default=Precision.FP16),
            Plan(default=Precision.INT8_DYNAMIC),
        ]
        records = engine.evaluate_many(bundle, plans)
        assert [r["status"] for r in records] == ["ok", "ok", "ok"]
        assert len(set(pool.worker_pids().values())) == 2


def test_killing_a_worker_the_scheduler_no_longer_has_is_done_already(pool: WorkerPool) -> None:
    """Helper QA (e2e Stop): cancelling the tasks left when a report raised killed a worker twice when
    two of them sat on it; the second kill's fallback raised KeyError for the worker the first had
    removed, which replaced the Stop with a failure and left the later tasks uncancelled."""
    gone = "tcp://127.0.0.1:1"  # no worker of this cluster
    assert gone not in pool.worker_pids()
    pool._kill_worker(gone)  # nothing to do, and nothing raised
    assert pool.n_workers() >= 1  # the live workers are untouched


def test_a_report_that_raises_ends_the_map_with_its_own_exception(pool: WorkerPool, tmp_path: Path) -> None:
    """The tasks still queued are cancelled (workers killed and replaced), whatever a cancel meets;
    the caller sees the exception that ended the loop."""

    class Stopped(Exception):
        pass

    def stop(_: int, __: object) -> None:
        raise Stopped

    calls = [(time.sleep, (0.2 * (i + 1),), {}) for i in range(6)]  # six queued on two workers
    with pytest.raises(Stopped):
        pool.map_outcomes(calls, timeout_s=60, on_done=stop)
    deadline = time.monotonic() + 60
    while pool.n_workers() < 2:  # the killed ones come back
        assert time.monotonic() < deadline, pool.worker_pids()
        time.sleep(0.5)
    assert [o.ok for o in pool.map_outcomes([(abs, (-1,), {})], timeout_s=60)] == [True]
