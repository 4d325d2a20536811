"""A local Dask cluster in a process of its own.

Run as ``python -m engine.cluster --address-file PATH``. It starts a ``LocalCluster`` of worker
processes, writes the scheduler address to PATH and stays up until SIGTERM/SIGINT or until the
process given by ``--exit-with-parent`` is gone. It is its own process because a ``LocalCluster``
with worker processes cannot be started from inside a Streamlit script (multiprocessing bootstrap
error), and so that a crash of the app cannot take the scheduler down with it, or the reverse.
``spawn()`` starts it from the app; the ``*_probe``/``worker_killer`` helpers run inside the
scheduler and nannies on behalf of ``engine.jobs``.
"""

from __future__ import annotations

import argparse
import atexit
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import psutil

log = logging.getLogger(__name__)

DASK_SETTINGS: dict[str, object] = {
    # A task that kills its worker (segfault in ONNX Runtime, out of memory) must fail once, not be
    # retried on every other worker in turn.
    "distributed.scheduler.allowed-failures": 0,
    # Large batches of tasks ("root-ish" to the scheduler) wait on the scheduler rather than in a
    # worker's queue, where a worker restart (crash, timeout) would take them down with it.
    "distributed.scheduler.worker-saturation": 1.0,
    # LocalCluster closes a worker's nanny for good when, 15 s (the default) after the worker was
    # lost, no worker of that name is registered, even if it came back and is merely restarting
    # again. Workers restart often here (timeouts, crashes); the nanny alone decides.
    "distributed.deploy.lost-worker-timeout": "365d",
    # The idle cluster took 0.15 of a core, mostly each worker's statistical profiler (a sample
    # every 10 ms, shown only in Dask's own dashboard) and a 20 ms event-loop watchdog tick: CPU
    # the browser and the app lack on a laptop. Now ~0.05 core; the tick only times a warning.
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "1s",
}


def configure_dask() -> None:
    """Apply DASK_SETTINGS here and, through the environment, in every child process; and start
    workers with glibc's own malloc thresholds."""
    import dask
    import distributed  # noqa: F401  (its import puts its defaults in dask.config)

    for name, value in DASK_SETTINGS.items():
        env_name = "DASK_" + name.upper().replace(".", "__").replace("-", "_")
        os.environ[env_name] = str(value)
    dask.config.set(DASK_SETTINGS)
    # Dask starts each worker with MALLOC_TRIM_THRESHOLD_=65536 to hand freed memory back to the OS
    # at once. Setting it also fixes glibc's mmap threshold at 128 KiB, so every array of a batch
    # (tens of MB each, hundreds per plan) is a fresh mmap whose pages fault in one by one: measured
    # on digits_resnet's sensitivity probes in one process, 26.6 s with it against 18.6 s without
    # (system time 6.1 s against 1.4 s). Without it glibc keeps a freed block of up to 64 MiB for
    # reuse; a worker's limit is GiBs. (None unsets a variable, see distributed.nanny.)
    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ"))
    environ["MALLOC_TRIM_THRESHOLD_"] = None
    dask.config.set({"distributed.nanny.pre-spawn-environ": environ})


def write_address(path: Path, address: str) -> None:
    """Write the address atomically, so a reader never sees half of it."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(address, encoding="utf-8")
    os.replace(tmp, path)


@dataclass
class ClusterProcess:
    """A running ``python -m engine.cluster`` child: its scheduler address, process and log."""

    address: str
    process: subprocess.Popen[bytes]
    workdir: Path

    @property
    def log_path(self) -> Path:
        return self.workdir / "cluster.log"

    def log_tail(self, n_chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-n_chars:]
        except OSError:
            return ""

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the cluster (SIGTERM, then SIGKILL) and remove its working directory."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                # Its workers exit on their own once their parent's pipe closes.
                self.process.kill()
                self.process.wait(timeout)
        shutil.rmtree(self.workdir, ignore_errors=True)


def spawn(workers: int = 2, memory_limit: str = "4GiB", start_timeout: float = 60.0) -> ClusterProcess:
    """Start ``python -m engine.cluster`` as a child of this process and wait for its address."""
    workdir = Path(tempfile.mkdtemp(prefix="quantdash-cluster-"))
    address_file = workdir / "scheduler-address"
    cmd = [
        sys.executable,
        "-m",
        "engine.cluster",
        "--address-file",
        str(address_file),
        "--workers",
        str(workers),
        "--memory-limit",
        str(memory_limit),
        "--exit-with-parent",
        str(os.getpid()),
    ]
    env = dict(os.environ)
    # Workers unpickle task functions by reference, so they need this process's import path.
    env["PYTHONPATH"] = os.pathsep.join(p or os.getcwd() for p in sys.path)
    with open(workdir / "cluster.log", "wb") as log_file:
        # A session of its own: Ctrl-C in the app's terminal must not kill the cluster under
        # running tasks; the app closes it, or --exit-with-parent does when the app is gone.
        proc = subprocess.Popen(
            cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    cluster = ClusterProcess(address="", process=proc, workdir=workdir)
    atexit.register(cluster.stop)  # an app that exits without closing its pool still cleans up
    deadline = time.monotonic() + start_timeout
    while not address_file.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            why = "exited" if proc.poll() is not None else f"did not start within {start_timeout:g} s"
            tail = cluster.log_tail()
            cluster.stop()
            raise RuntimeError(f"the local Dask cluster {why}; its log ends with:\n{tail}")
        time.sleep(0.05)
    cluster.address = address_file.read_text(encoding="utf-8").strip()
    return cluster


# The helpers below run inside the scheduler and the nanny. They are built inside functions so
# that cloudpickle ships them by value: those processes need not be able to import quantdash.


def executing_probe() -> Callable[..., dict[str, tuple[str, float | None]]]:
    """For ``client.run_on_scheduler(probe, keys)``: where each key runs, and for how long."""

    def quantdash_executing(
        keys: list[str], dask_scheduler: Any = None
    ) -> dict[str, tuple[str, float | None]]:
        # key -> (worker, seconds it has been executing there per the last heartbeat, or None if waiting)
        out = {}
        for key in keys:
            ts = dask_scheduler.tasks.get(key)
            ws = None if ts is None else ts.processing_on
            if ws is not None:
                out[key] = (ws.address, ws.executing.get(ts))
        return out

    return quantdash_executing


def worker_killer() -> Callable[..., int | None]:
    """For ``client.run(killer, workers=[w], nanny=True)``: SIGKILL the worker, keep its nanny."""

    def quantdash_kill_worker(dask_worker: Any = None) -> int | None:
        # dask_worker is the Nanny here; SIGKILL is what stops a thread stuck in C code, and the
        # nanny then starts a fresh worker at once (a polite restart waits 4 s for the hung thread).
        import psutil

        pid: int | None = dask_worker.pid
        if pid:
            psutil.Process(pid).kill()
        return pid

    return quantdash_kill_worker


def allowed_failures_probe() -> Callable[..., int]:
    """For ``client.run_on_scheduler``: the scheduler's ``allowed-failures``."""

    def quantdash_allowed_failures(dask_scheduler: Any = None) -> int:
        return int(dask_scheduler.allowed_failures)

    return quantdash_allowed_failures


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m engine.cluster", description=__doc__.splitlines()[0])
    p.add_argument("--address-file", type=Path, required=True, help="where to write the scheduler address")
    p.add_argument("--workers", type=int, default=2, help="number of worker processes (default 2)")
    p.add_argument("--memory-limit", default="4GiB", help="per worker; its nanny restarts it beyond this")
    # The scheduler always serves HTTP (health, metrics; the dashboard too when bokeh is installed).
    # A fixed port would collide between two apps on one machine, hence ":0" by default.
    p.add_argument("--dashboard", default=":0", help="HTTP/dashboard address (default ':0', any free port)")
    p.add_argument("--exit-with-parent", type=int, default=None, metavar="PID", help="stop when PID is gone")
    return p


def _parent(pid: int | None) -> psutil.Process | None:
    if pid is None:
        return None
    try:
        # psutil.Process remembers the creation time, so a reused pid does not look alive.
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None


def _alive(proc: psutil.Process) -> bool:
    # A killed parent nobody has reaped yet is a zombie, which is_running() still reports.
    try:
        return bool(proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def main(argv: list[str] | None = None) -> int:
    """Start the cluster, publish its address, wait for a signal or the parent's death."""
    args = _parser().parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(name)s %(levelname)s %(message)s")
    log.setLevel(logging.INFO)
    parent = _parent(args.exit_with_parent)
    if args.exit_with_parent is not None and (parent is None or not _alive(parent)):
        log.error("parent process %d is already gone", args.exit_with_parent)
        return 1

    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)

    configure_dask()
    from distributed import LocalCluster

    # Every run_on_scheduler call (the watchdog in engine.jobs makes some) logs at INFO here.
    logging.getLogger("distributed.worker").setLevel(logging.WARNING)

    with LocalCluster(
        n_workers=args.workers,
        threads_per_worker=1,
        processes=True,
        memory_limit=args.memory_limit,
        host="127.0.0.1",
        scheduler_port=0,
        dashboard_address=args.dashboard,
        preload=["engine.worker_warmup"],  # the heavy imports, before the first task needs them
    ) as cluster:
        write_address(args.address_file, cluster.scheduler_address)
        log.info(
            "scheduler at %s, %d workers, dashboard %s",
            cluster.scheduler_address,
            args.workers,
            cluster.dashboard_link,
        )
        try:
            while not stop.wait(0.5):
                if parent is not None and not _alive(parent):
                    log.info("parent process %d is gone; shutting down", parent.pid)
                    break
        finally:
            args.address_file.unlink(missing_ok=True)  # never leave an address of a dead scheduler
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
