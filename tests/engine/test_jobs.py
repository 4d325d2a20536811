"""WorkerPool against real schedulers and real worker processes, killed for real."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest
from distributed import Client

from engine.jobs import SCHEDULER_ENV, TaskOutcome, WorkerPool
from tests.engine import jobs_tasks as tasks

REPO = Path(__file__).resolve().parents[2]


def _gone(pid: int, within: float = 15.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


def _worker_running(pool: WorkerPool, key: str, within: float = 15.0) -> str:
    """The address of the worker the scheduler shows running ``key``."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        for worker, keys in pool.client.processing().items():
            if key in keys:
                return worker
        time.sleep(0.05)
    raise AssertionError(f"{key} never started")


@pytest.fixture(scope="module")
def pool() -> Iterator[WorkerPool]:
    os.environ.pop(SCHEDULER_ENV, None)
    # 1 GiB: a warmed worker holds about 460 MB (torch, sympy, ONNX Runtime's quantizers); under
    # 512 MiB Dask paused both at once (it pauses past 80% of the limit).
    with WorkerPool.connect(workers=2, memory_limit="1GiB") as p:
        yield p


@pytest.fixture
def healthy(pool: WorkerPool) -> WorkerPool:
    """The shared pool, with both workers back after whatever the previous test killed."""
    try:
        pool.client.wait_for_workers(2, timeout=30)
    except Exception:
        print({a: w["status"] for a, w in pool.client.scheduler_info()["workers"].items()})
        print(pool._cluster.log_tail(6000))
        raise
    return pool


@pytest.mark.timeout(60)
def test_local_pool_runs_a_task(healthy: WorkerPool) -> None:
    assert healthy.is_local
    assert healthy.n_workers() == 2
    outcome = healthy.run(tasks.matrix_trace, 50, seed=3, timeout_s=30)
    assert outcome == TaskOutcome("ok", value=tasks.matrix_trace(50, seed=3), duration_s=outcome.duration_s)
    assert outcome.ok
    assert 0 <= outcome.duration_s < 5


@pytest.mark.timeout(60)
def test_workers_keep_glibc_malloc_thresholds_and_are_warmed(healthy: WorkerPool) -> None:
    # Dask starts workers with MALLOC_TRIM_THRESHOLD_=65536, which pins glibc's mmap threshold low:
    # every large array a fresh mapping faulted in page by page (engine/cluster.py). Unset here.
    values = healthy.client.run(tasks.environment_variable, "MALLOC_TRIM_THRESHOLD_")
    assert len(values) == 2 and set(values.values()) == {None}, values
    # The preload imports what a first build needs, the float16 converter's shape inference too.
    heavy = ["engine.evaluate", "onnxruntime.tools.symbolic_shape_infer"]
    deadline = time.monotonic() + 45
    while time.monotonic() < deadline:
        loaded = healthy.client.run(tasks.loaded_modules, heavy)
        if all(sorted(v) == sorted(heavy) for v in loaded.values()):
            break
        time.sleep(0.5)
    assert all(sorted(v) == sorted(heavy) for v in loaded.values()), loaded


@pytest.mark.timeout(60)
def test_submit_passes_keys_and_reserved_kwarg_names(healthy: WorkerPool) -> None:
    handle = healthy.submit(tasks.add, 2, b=3, timeout_s=30, key="add-two-three")
    assert handle.key == "add-two-three"
    outcome = handle.outcome(wait=30)
    assert outcome is not None and outcome.value == 5
    # "priority" and "workers" are Client.submit's own keywords; they must reach the task.
    assert healthy.run(tasks.takes_reserved_kwargs, priority=1, workers="w", timeout_s=30).value == "1-w"


@pytest.mark.timeout(60)
def test_the_scheduler_does_not_import_what_a_task_names(healthy: WorkerPool) -> None:
    # Dask's scheduler unpickles the tasks it is sent; a task naming engine.evaluate once made it
    # import onnx and ONNX Runtime (seconds, its event loop stalled). The call travels as bytes.
    assert healthy.run(tasks.sum_of, np.arange(3.0), timeout_s=30).value == 3.0
    # A lambda travels by value: looking does not import the module looked for.
    imported = lambda name: name in sys.modules  # noqa: E731
    assert all(healthy.client.run(imported, tasks.__name__).values())
    assert not healthy.client.run_on_scheduler(imported, tasks.__name__)


@pytest.mark.timeout(60)
def test_exception_is_failed_with_its_message(healthy: WorkerPool) -> None:
    outcome = healthy.run(tasks.bad_plan, timeout_s=30)
    assert outcome.status == "failed"
    assert outcome.error == "ValueError: bad plan"
    assert outcome.traceback is not None and "bad_plan" in outcome.traceback


@pytest.mark.timeout(60)
@pytest.mark.parametrize("task", [tasks.exit_hard, tasks.segfault])
def test_worker_death_is_crashed_and_pool_recovers(healthy: WorkerPool, task: object) -> None:
    before = set(healthy.worker_pids().values())
    outcome = healthy.run(task, timeout_s=30)  # type: ignore[arg-type]
    assert outcome.status == "crashed"
    assert outcome.error is not None and "worker process died" in outcome.error
    healthy.client.wait_for_workers(2, timeout=30)
    assert healthy.run(tasks.add, 1, 1, timeout_s=30).value == 2
    assert set(healthy.worker_pids().values()) != before  # the nanny started a fresh worker


@pytest.mark.timeout(60)
def test_hung_task_times_out_and_its_worker_is_replaced(healthy: WorkerPool) -> None:
    pids = healthy.worker_pids()
    start = time.monotonic()
    outcome = healthy.run(tasks.sleep_then, 1000, timeout_s=3)
    elapsed = time.monotonic() - start
    assert outcome.status == "timeout"
    assert outcome.error == "exceeded the time limit of 3 s; the worker was restarted"
    assert 3 <= elapsed < 6
    assert healthy.run(tasks.add, 2, 2, timeout_s=30).value == 4
    healthy.client.wait_for_workers(2, timeout=30)
    killed = set(pids.values()) - set(healthy.worker_pids().values())
    assert len(killed) == 1 and _gone(killed.pop())


@pytest.mark.timeout(60)
def test_time_limit_counts_from_start_not_from_submit(healthy: WorkerPool) -> None:
    # Four 1.5 s tasks on two workers: the last two wait ~1.5 s, yet none exceeds its 2.5 s limit.
    calls = [(tasks.sleep_then, (1.5, i), {}) for i in range(4)]
    outcomes = healthy.map_outcomes(calls, timeout_s=2.5)
    assert [o.status for o in outcomes] == ["ok"] * 4
    assert [o.value for o in outcomes] == [0, 1, 2, 3]


@pytest.mark.timeout(60)
def test_map_outcomes_takes_a_time_limit_per_call(healthy: WorkerPool) -> None:
    calls = [(tasks.sleep_then, (4, "short limit"), {}), (tasks.sleep_then, (4, "long limit"), {})]
    outcomes = healthy.map_outcomes(calls, timeout_s=[1.5, 30])
    assert [o.status for o in outcomes] == ["timeout", "ok"]
    assert outcomes[1].value == "long limit"
    with pytest.raises(ValueError, match="1 time limits for 2 calls"):
        healthy.map_outcomes(calls, timeout_s=[30])


@pytest.mark.timeout(60)
def test_map_outcomes_reports_each_index_once(healthy: WorkerPool) -> None:
    seen: list[tuple[int, str]] = []
    # 5 s: a worker the last test replaced may still be importing its warm-up modules (about 3 s,
    # torch among them), and the tasks behind the slow one wait for that import to end.
    calls = [
        (tasks.sleep_then, (5.0, "slow"), {}),
        (tasks.add, (1, 2), {}),
        (tasks.bad_plan, (), {}),
        (tasks.matrix_trace, (10,), {"seed": 1}),
    ]
    outcomes = healthy.map_outcomes(calls, timeout_s=30, on_done=lambda i, o: seen.append((i, o.status)))
    assert sorted(seen) == [(0, "ok"), (1, "ok"), (2, "failed"), (3, "ok")]
    assert seen[-1] == (0, "ok")  # reported as it finished, not in submission order
    assert [o.value for o in outcomes] == ["slow", 3, None, tasks.matrix_trace(10, seed=1)]


@pytest.mark.timeout(60)
def test_timeouts_in_a_sweep_spare_the_queued_tasks(healthy: WorkerPool) -> None:
    # Both workers hang. As each hung task is cancelled, the scheduler hands its worker a queued
    # task, which then dies with the worker: the pool must run those again, not report them.
    calls = [(tasks.sleep_then, (1000,), {})] * 2 + [(tasks.add, (i, i), {}) for i in range(4)]
    outcomes = healthy.map_outcomes(calls, timeout_s=2)
    assert [o.status for o in outcomes] == ["timeout"] * 2 + ["ok"] * 4
    assert [o.value for o in outcomes[2:]] == [0, 2, 4, 6]


@pytest.mark.timeout(60)
def test_sigkill_of_a_busy_worker_is_crashed(healthy: WorkerPool) -> None:
    handle = healthy.submit(tasks.sleep_then, 60, timeout_s=120)
    worker = _worker_running(healthy, handle.key)
    os.kill(healthy.worker_pids()[worker], signal.SIGKILL)
    outcome = handle.outcome(wait=30)
    assert outcome is not None and outcome.status == "crashed"
    assert healthy.run(tasks.add, 3, 3, timeout_s=30).value == 6


@pytest.mark.timeout(60)
def test_over_memory_limit_is_crashed(healthy: WorkerPool) -> None:
    info = healthy.client.scheduler_info()["workers"]
    assert {w["memory_limit"] for w in info.values()} == {2**30}
    outcome = healthy.run(tasks.hog_memory, timeout_s=60)
    assert outcome.status == "crashed"
    assert healthy.run(tasks.add, 4, 4, timeout_s=30).value == 8


@pytest.mark.timeout(60)
def test_cancel_of_a_running_task_frees_its_worker(healthy: WorkerPool) -> None:
    handle = healthy.submit(tasks.sleep_then, 1000, timeout_s=2000)
    worker = _worker_running(healthy, handle.key)
    pid = healthy.worker_pids()[worker]
    handle.cancel()
    outcome = handle.outcome(wait=0)
    assert outcome is not None and outcome.status == "failed" and "cancelled" in (outcome.error or "")
    assert _gone(pid)


@pytest.mark.timeout(60)
def test_close_stops_the_local_cluster() -> None:
    p = WorkerPool.connect(workers=1, memory_limit="1GiB")
    cluster_pid = p._cluster.process.pid  # type: ignore[union-attr]
    worker_pid = next(iter(p.worker_pids().values()))
    assert p.run(tasks.add, 1, 2, timeout_s=30).value == 3
    p.close()
    assert _gone(cluster_pid) and _gone(worker_pid)


@pytest.mark.timeout(60)
def test_cluster_exits_with_its_parent(tmp_path: Path) -> None:
    parent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    address_file = tmp_path / "address"
    cmd = [sys.executable, "-m", "engine.cluster", "--address-file", str(address_file), "--workers", "1"]
    cluster = subprocess.Popen([*cmd, "--exit-with-parent", str(parent.pid)], cwd=REPO)
    try:
        deadline = time.monotonic() + 30
        while not address_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert address_file.read_text().startswith("tcp://127.0.0.1:")
        worker_pids = [c.pid for c in psutil.Process(cluster.pid).children(recursive=True)]
        parent.kill()
        parent.wait()
        assert cluster.wait(timeout=15) == 0
        assert all(_gone(pid) for pid in worker_pids)
    finally:
        for proc in (parent, cluster):
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def remote_scheduler() -> Iterator[str]:
    """A scheduler and a two-process worker started the way an operator would, on loopback."""
    address = f"tcp://127.0.0.1:{_free_port()}"
    dask = str(Path(sys.executable).with_name("dask"))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    port = address.rsplit(":", 1)[1]
    procs = [
        subprocess.Popen(
            [dask, "scheduler", "--host", "127.0.0.1", "--port", port, "--no-dashboard"],
            cwd=REPO,
            env=env,
            start_new_session=True,
            stderr=subprocess.DEVNULL,
        )
    ]
    try:
        procs.append(
            subprocess.Popen(
                [
                    dask,
                    "worker",
                    address,
                    "--nworkers",
                    "2",
                    "--nthreads",
                    "1",
                    "--host",
                    "127.0.0.1",
                    "--no-dashboard",
                ],
                cwd=REPO,
                env=env,
                start_new_session=True,
                stderr=subprocess.DEVNULL,
            )
        )
        with Client(address, timeout=30, set_as_default=False) as client:
            client.wait_for_workers(2, timeout=30)
        yield address
    finally:
        for proc in reversed(procs):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.timeout(90)
def test_remote_scheduler_from_env(remote_scheduler: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SCHEDULER_ENV, remote_scheduler)
    with WorkerPool.connect() as remote:
        assert not remote.is_local
        assert remote.address == remote_scheduler
        assert remote.n_workers() == 2
        handles = [remote.submit(tasks.pid_after, 1.0, timeout_s=30) for _ in range(2)]
        pids = {h.outcome(wait=30).value for h in handles}  # type: ignore[union-attr]
        assert pids == set(remote.worker_pids().values()) and len(pids) == 2
        outcome = remote.run(tasks.sleep_then, 1000, timeout_s=2)
        assert outcome.status == "timeout"
        assert remote.run(np.add, 1, 2, timeout_s=30).value == 3
