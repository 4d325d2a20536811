"""Task functions for test_jobs: a module of their own, so that workers can import them."""

from __future__ import annotations

import os
import signal
import time

import numpy as np


def matrix_trace(n: int, seed: int = 0) -> float:
    """A small numpy computation whose answer the test can check."""
    a = np.random.default_rng(seed).standard_normal((n, n))
    return float(np.trace(a @ a.T))


def sum_of(values: np.ndarray) -> float:
    return float(np.sum(values))


def add(a: int, b: int) -> int:
    return a + b


def pid_after(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def sleep_then(seconds: float, value: object = None) -> object:
    time.sleep(seconds)
    return value


def bad_plan() -> None:
    raise ValueError("bad plan")


def exit_hard() -> None:
    os._exit(1)  # like a native crash: no exception, no cleanup


def exit_hard_whatever(*_: object) -> None:
    """exit_hard in place of a task of any signature."""
    os._exit(1)


def segfault() -> None:
    os.kill(os.getpid(), signal.SIGSEGV)


def hog_memory(step_mb: int = 100, total_mb: int = 4000) -> int:
    """Allocate (and touch) memory step by step, so the nanny sees it grow past the limit."""
    held = []
    for _ in range(total_mb // step_mb):
        held.append(np.ones(step_mb * 2**20, dtype=np.uint8))
        time.sleep(0.02)
    return len(held)


def takes_reserved_kwargs(priority: int, workers: str) -> str:
    """Keyword names that Client.submit would take for itself."""
    return f"{priority}-{workers}"


def environment_variable(name: str) -> str | None:
    return os.environ.get(name)


def loaded_modules(names: list[str]) -> list[str]:
    import sys

    return [n for n in names if n in sys.modules]
