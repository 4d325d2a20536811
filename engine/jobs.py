"""Background work on Dask: a local cluster by default, a real one when asked.

``WorkerPool.connect()`` joins the scheduler named by ``QUANTDASH_SCHEDULER`` or starts a local
cluster in a child process (``engine.cluster``). Every task ends in a ``TaskOutcome``: its value,
its exception ("failed"), the death of its worker ("crashed") or the time limit ("timeout").
Dask has no per-task time limit, so a watchdog thread kills the worker of an overdue task; its
nanny starts a fresh one. Workers return results; the submitting process stores them.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import dask
from distributed import Client, Future
from distributed.protocol import pickle as dask_pickle
from distributed.scheduler import KilledWorker

from engine.cluster import ClusterProcess, allowed_failures_probe, executing_probe, spawn, worker_killer

log = logging.getLogger(__name__)

SCHEDULER_ENV = "QUANTDASH_SCHEDULER"
STATUSES = ("ok", "failed", "crashed", "timeout")
_POLL_S = 0.25  # watchdog period: the time limit is enforced to within about this much

Call = tuple[Callable[..., Any], Sequence[Any], Mapping[str, Any]]


@dataclass(frozen=True)
class TaskOutcome:
    """How one task ended. ``duration_s``: time it ran on its worker (or waited, if that is unknown)."""

    status: str
    value: Any = None
    error: str | None = None
    duration_s: float = 0.0
    traceback: str | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"unknown task status {self.status!r}; expected one of {STATUSES}")
        if self.status != "ok" and not self.error:
            raise ValueError(f"a {self.status!r} outcome needs an error message")

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def _pickled_call(call: Call) -> bytes:
    """A call as bytes the scheduler passes on without reading.

    Dask's scheduler unpickles every task it is sent, so a task that names a function of
    engine.evaluate, or carries an EvalSet, made it import onnx, ONNX Runtime and the quantizers
    (3 to 5 s, its event loop stalled meanwhile) on the first such task after it started.
    """
    fn, args, kwargs = call
    return bytes(dask_pickle.dumps((fn, tuple(args), dict(kwargs))))


def _timed_call(payload: bytes) -> tuple[Any, float]:
    """Run on a worker: call the pickled fn, and measure how long it ran here rather than in the queue."""
    fn, args, kwargs = dask_pickle.loads(payload)
    start = time.perf_counter()
    value = fn(*args, **kwargs)
    return value, time.perf_counter() - start


def _crash_message(exc: BaseException) -> str:
    return (
        "the worker process died while running this task (e.g. ONNX Runtime crashed or ran out of "
        f"memory): {exc}"
    )


class JobHandle:
    """One submitted task with its time limit. ``outcome()`` is always set in the end."""

    def __init__(self, pool: WorkerPool, call: Call, timeout_s: float, key: str) -> None:
        self.key = key
        self._first_key = key
        self.timeout_s = timeout_s
        self._pool = pool
        self._payload = _pickled_call(call)  # once: a resubmission sends the same bytes
        self._lock = threading.Lock()
        self._settled = threading.Event()
        self._outcome: TaskOutcome | None = None
        self._listeners: list[Callable[[JobHandle], None]] = []
        self._future: Future[Any] | None = None
        self._submitted = time.monotonic()
        self._resubmits = 0
        # Watchdog state: since when the scheduler shows the task on a worker, and when to look again.
        self._processing_since: float | None = None
        self._next_check = 0.0

    def done(self) -> bool:
        return self._settled.is_set()

    def outcome(self, wait: float | None = None) -> TaskOutcome | None:
        """The outcome; ``wait=None`` blocks until there is one, else None if not there after ``wait`` s."""
        self._settled.wait(wait)
        return self._outcome

    def cancel(self) -> None:
        """Stop the task; if it is already running, its worker is killed and restarted."""
        self._pool._stop(self, "failed", "cancelled before it finished")

    def __repr__(self) -> str:
        state = self._outcome.status if self._outcome else "pending"
        return f"<JobHandle {self.key} {state}>"

    def _elapsed(self) -> float:
        return time.monotonic() - (self._processing_since or self._submitted)

    def _settle(self, outcome: TaskOutcome) -> bool:
        """Record the outcome unless one is already there (first writer wins); tell listeners."""
        with self._lock:
            if self._outcome is not None:
                return False
            self._outcome = outcome
            self._settled.set()
            listeners = list(self._listeners)
        self._pool._forget(self)
        for listener in listeners:
            listener(self)
        return True

    def _on_future_done(self, future: Future[Any]) -> None:
        # Runs in Dask's callback thread. A resubmission replaces the future: ignore the old one.
        if future is not self._future or self.done():
            return
        try:
            outcome = self._outcome_of(future)
        except Exception as exc:  # e.g. the result cannot be unpickled here
            outcome = TaskOutcome("failed", error=f"{type(exc).__name__}: {exc}", duration_s=self._elapsed())
        if outcome is not None:
            self._settle(outcome)

    def _outcome_of(self, future: Future[Any]) -> TaskOutcome | None:
        if future.status == "finished":
            value, ran_s = future.result()
            return TaskOutcome("ok", value=value, duration_s=ran_s)
        if future.status == "error":
            exc = future.exception()
            if isinstance(exc, KilledWorker):
                if self._pool._was_killed_by_us(exc.last_worker.address):
                    # The watchdog killed this worker for another task while this one was queued
                    # there or had just been sent there: not its fault, so run it again. This ends,
                    # as every such kill ends a timed-out or cancelled task.
                    self._resubmits += 1
                    # A fresh key: the old one may still be erred on the scheduler for a moment.
                    self.key = f"{self._first_key}-retry{self._resubmits}"
                    self._pool._launch(self)
                    return None
                return TaskOutcome("crashed", error=_crash_message(exc), duration_s=self._elapsed())
            tb = future.traceback()
            return TaskOutcome(
                "failed",
                error=f"{type(exc).__name__}: {exc}",
                duration_s=self._elapsed(),
                traceback="".join(traceback.format_tb(tb)) if tb is not None else None,
            )
        # Cancelled without us asking: the scheduler went away or dropped the task.
        return TaskOutcome(
            "crashed",
            error=_crash_message(RuntimeError(f"the cluster dropped the task (future {future.status})")),
            duration_s=self._elapsed(),
        )


class WorkerPool:
    """A Dask client plus the watchdog; a plain object so that Streamlit can cache it."""

    def __init__(self, client: Client, address: str, cluster: ClusterProcess | None = None) -> None:
        self.client = client
        self.address = address
        self.is_local = cluster is not None
        self._cluster = cluster
        self._lock = threading.Lock()
        self._pending: set[JobHandle] = set()
        self._killed_workers: set[str] = set()
        self._closed = threading.Event()
        self._watchdog = threading.Thread(target=self._watch, name="quantdash-watchdog", daemon=True)
        self._watchdog.start()

    @classmethod
    def connect(
        cls,
        address: str | None = None,
        *,
        workers: int = 2,
        memory_limit: str = "4GiB",
        start_timeout: float = 60.0,
    ) -> WorkerPool:
        """Join ``address``, else ``$QUANTDASH_SCHEDULER``, else a local cluster started as a child."""
        address = address or os.environ.get(SCHEDULER_ENV) or None
        cluster = None
        if address is None:
            cluster = spawn(workers=workers, memory_limit=memory_limit, start_timeout=start_timeout)
            address = cluster.address
        try:
            # set_as_default=False: dask.compute elsewhere in the app must not land on this cluster.
            # Tasks carry a model and its data (tens of MB): expected here, so no warning per task.
            dask.config.set({"distributed.admin.large-graph-warning-threshold": "1GB"})
            client = Client(address, timeout=start_timeout, set_as_default=False)
        except BaseException:
            if cluster is not None:
                cluster.stop()
            raise
        pool = cls(client, address, cluster)
        if cluster is None:
            pool._check_remote_config()
        return pool

    @property
    def dashboard_link(self) -> str | None:
        link: str | None = self.client.dashboard_link
        return link

    def submit(
        self, fn: Callable[..., Any], /, *args: Any, timeout_s: float, key: str | None = None, **kwargs: Any
    ) -> JobHandle:
        """Start ``fn(*args, **kwargs)`` on a worker; ``timeout_s`` counts from when it starts running."""
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s!r}")
        if self._closed.is_set():
            raise RuntimeError("this WorkerPool is closed")
        key = key or f"{getattr(fn, '__name__', 'task')}-{uuid.uuid4().hex}"
        handle = JobHandle(self, (fn, args, kwargs), float(timeout_s), key)
        self._launch(handle)
        return handle

    def run(self, fn: Callable[..., Any], /, *args: Any, timeout_s: float, **kwargs: Any) -> TaskOutcome:
        """Run ``fn(*args, **kwargs)`` on a worker and wait for its outcome."""
        outcome = self.submit(fn, *args, timeout_s=timeout_s, **kwargs).outcome()
        assert outcome is not None  # outcome() without a wait only returns once settled
        return outcome

    def map_outcomes(
        self,
        calls: Sequence[Call],
        timeout_s: float | Sequence[float],
        on_done: Callable[[int, TaskOutcome], None] | None = None,
    ) -> list[TaskOutcome]:
        """Run every ``(fn, args, kwargs)``; return their outcomes in order.

        ``timeout_s``: one time limit for every call, or one per call.

        ``on_done(index, outcome)`` is called as each call ends, in this (the submitting) thread:
        that is what lets the submitting process be the single writer of the store.
        If ``on_done`` raises (or the caller is interrupted), the calls still running are cancelled.
        """
        finished: queue.SimpleQueue[JobHandle] = queue.SimpleQueue()
        handles: list[JobHandle] = []
        index_of: dict[int, int] = {}
        results: list[TaskOutcome | None] = [None] * len(calls)
        limits = [timeout_s] * len(calls) if isinstance(timeout_s, int | float) else list(timeout_s)
        if len(limits) != len(calls):
            raise ValueError(f"{len(limits)} time limits for {len(calls)} calls")
        try:
            for index, (fn, args, kwargs) in enumerate(calls):
                key = f"{getattr(fn, '__name__', 'task')}-{uuid.uuid4().hex}"
                handle = JobHandle(self, (fn, tuple(args), dict(kwargs)), float(limits[index]), key)
                handle._listeners.append(finished.put)
                handles.append(handle)
                index_of[id(handle)] = index
                self._launch(handle)
            for _ in handles:
                done = finished.get()
                index = index_of[id(done)]
                outcome = done.outcome()
                assert outcome is not None
                results[index] = outcome
                if on_done is not None:
                    on_done(index, outcome)
        finally:
            for handle in handles:
                if not handle.done():
                    try:
                        handle.cancel()
                    except Exception:  # cancel the others, and keep the exception that ended the loop
                        log.exception("could not cancel %s", handle.key)
        return [r for r in results if r is not None]

    def n_workers(self) -> int:
        return len(self.client.nthreads())

    def worker_pids(self) -> dict[str, int]:
        """Worker address -> process id, for the workers that answer (one being replaced may not)."""
        pids = self.client.run(os.getpid, on_error="return")
        return {worker: pid for worker, pid in pids.items() if isinstance(pid, int)}

    def close(self) -> None:
        """Disconnect; stop the local cluster if this pool started it."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._watchdog.join(timeout=10)
        try:
            self.client.close()
        finally:
            if self._cluster is not None:
                self._cluster.stop()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- internals shared with JobHandle --

    def _launch(self, handle: JobHandle) -> None:
        if handle._future is not None:
            handle._future.release()
        with self._lock:
            self._pending.add(handle)
        handle._processing_since = None
        # Our own wrapper, so that task kwargs cannot clash with submit's (priority, workers ...).
        future = self.client.submit(_timed_call, handle._payload, key=handle.key, pure=False)
        handle._future = future
        future.add_done_callback(handle._on_future_done)

    def _forget(self, handle: JobHandle) -> None:
        with self._lock:
            self._pending.discard(handle)

    def _was_killed_by_us(self, worker: str) -> bool:
        # Workers come back on new ports, so an address never names two workers in practice.
        with self._lock:
            return worker in self._killed_workers

    def _stop(self, handle: JobHandle, status: str, error: str, worker: str | None = None) -> None:
        """Settle the handle, drop its task, and kill the worker running it, if any."""
        if not handle._settle(TaskOutcome(status, error=error, duration_s=handle._elapsed())):
            return
        future = handle._future
        if worker is None and future is not None:
            worker = next((w for w, keys in self.client.processing().items() if handle.key in keys), None)
        if worker is not None:
            with self._lock:
                self._killed_workers.add(worker)
        # Cancel first: were the worker killed first, the scheduler could hand the task to another
        # worker. Tasks queued on that worker, or sent to it in between, die with it; _on_future_done
        # recognises them by the worker's address and resubmits them.
        if future is not None:
            self.client.cancel([future])
        if worker is not None:
            self._kill_worker(worker)

    def _kill_worker(self, worker: str) -> None:
        try:
            killed = self.client.run(worker_killer(), workers=[worker], nanny=True, on_error="return")
        except Exception as exc:
            killed = {}
            log.warning("could not reach the nanny of %s: %s", worker, exc)
        if not killed:
            # No nanny: ask the scheduler to remove the worker; a deployment system may restart it.
            try:
                self.client.restart_workers([worker], raise_for_error=False)
            except KeyError:  # the scheduler has no such worker now (an earlier kill): it is gone already
                log.info("worker %s is gone already", worker)

    def _check_remote_config(self) -> None:
        try:
            allowed = self.client.run_on_scheduler(allowed_failures_probe())
        except Exception as exc:  # a scheduler may refuse to run pickled functions
            log.warning("could not read the scheduler's allowed-failures: %s", exc)
            return
        if allowed > 0:
            log.warning(
                "the scheduler at %s retries a task whose worker died %d more time(s); a model that "
                "crashes its worker will take that many workers down. Set "
                "distributed.scheduler.allowed-failures=0 there.",
                self.address,
                allowed,
            )

    def _watch(self) -> None:
        while not self._closed.wait(_POLL_S):
            try:
                self._check_deadlines()
            except Exception:
                if not self._closed.is_set():
                    log.exception("watchdog check failed")

    def _check_deadlines(self) -> None:
        with self._lock:
            pending = [h for h in self._pending if not h.done() and not math.isinf(h.timeout_s)]
        if not pending:
            return
        # client.processing() is cheap and quiet; only tasks that might be overdue are then
        # probed for how long they have really been executing (a worker may hold a queued one).
        where = {key: w for w, keys in self.client.processing().items() for key in keys}
        now = time.monotonic()
        suspects = []
        for handle in pending:
            if handle.key not in where:
                handle._processing_since = None
            elif handle._processing_since is None:
                handle._processing_since = now
            elif now - handle._processing_since >= handle.timeout_s and now >= handle._next_check:
                suspects.append(handle)
        if not suspects:
            return
        running = self.client.run_on_scheduler(executing_probe(), [h.key for h in suspects])
        for handle in suspects:
            worker, executing_s = running.get(handle.key, (None, None))
            if worker is None:
                continue
            if executing_s is not None and executing_s >= handle.timeout_s:
                error = f"exceeded the time limit of {handle.timeout_s:g} s; the worker was restarted"
                self._stop(handle, "timeout", error, worker=worker)
            else:
                # Not started yet, or started later than it was sent: look again when it could be due.
                handle._next_check = now + max(_POLL_S, handle.timeout_s - (executing_s or 0.0))
