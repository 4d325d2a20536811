"""What the command line is given, read and checked: a plan file, batch sizes, threads and timeouts.

Each check raises UsageError with one line naming what is wrong and what is expected; engine/cli.py
prints it and exits with status 2, before any work starts.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

from engine.types import Plan

PLAN_FORMAT = '{"default": "int8", "layers": {"<layer name>": "fp32"}}'

# The inputs of one run (batch x one sample) are allocated at once: a batch of a billion ended in a
# MemoryError stored as failed results instead of a refusal.
MAX_BATCH = 1024


class UsageError(ValueError):
    """Bad input from the command line; printed as one paragraph, exit status 2."""


def read_plan(path: str) -> Plan:
    """Parse a plan file, or raise UsageError saying what is wrong and what is expected."""
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"{p} is a folder; expected a plan .json file like {PLAN_FORMAT}")
    if not p.is_file():
        raise UsageError(f"plan file not found: {p}")
    try:
        # JSON is UTF-8; "-sig" forgives the byte-order mark some editors write.
        text = p.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UsageError(
            f"{p.name} is not valid JSON (not UTF-8 text: byte {e.object[e.start]:#04x} at position "
            f"{e.start}); expected a plan like {PLAN_FORMAT}"
        ) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(
            f"{p.name} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}); "
            f"expected a plan like {PLAN_FORMAT}"
        ) from None
    try:
        return Plan.from_json(data)
    except ValueError as e:
        raise UsageError(f"{p.name}: {e}") from None


def batch_sizes(text: str) -> tuple[int, ...]:
    """`--batch-sizes 1,32` -> (1, 32), or UsageError naming the bad item and the expected form."""
    expected = (
        f"expected whole numbers from 1 to {MAX_BATCH}, comma-separated, e.g. 1,32 "
        "(the inputs of one run are allocated at once)"
    )
    sizes: list[int] = []
    for item in (s.strip() for s in text.split(",")):
        if not item:
            why = "an empty item"
        elif not re.fullmatch(r"[0-9]+", item):
            why = f"{item!r} is not a whole number"
        elif not 1 <= int(item) <= MAX_BATCH:
            why = f"{item} is out of range"
        elif int(item) in sizes:
            why = f"{item} is given twice"
        else:
            sizes.append(int(item))
            continue
        raise UsageError(f"--batch-sizes {text}: {why}; {expected}")
    return tuple(sizes)


def check_threads(threads: int) -> int:
    """More threads than CPUs only contend for them; 100000 hung creating them."""
    cpus = os.cpu_count() or 1
    if not 1 <= threads <= cpus:
        raise UsageError(f"--threads {threads}: expected 1 to {cpus}, the CPUs of this machine")
    return threads


def check_timeout(seconds: float) -> float:
    """A limit at or below 0 stopped every worker at once; NaN and infinity (1e400) are no limits."""
    if not (math.isfinite(seconds) and seconds > 0):
        raise UsageError(f"--timeout {seconds:g}: must be above 0 seconds and finite; expected e.g. 600")
    return seconds
