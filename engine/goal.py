"""A goal in plain words -> what to optimise and the limits a plan must meet.

"smallest model within 1 point of FP32 accuracy", "fastest under 5 MB", "most accurate under
2 ms", "smallest within 0.5% of FP32 and under 3 ms". The words are few and fixed; anything with
a number that is not understood is refused with the forms that are, rather than silently ignored.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from engine.search_spec import Constraints
from engine.units import decimal_bytes

OBJECTIVES = {"size": "smallest", "latency": "fastest", "accuracy": "most accurate"}
EXAMPLES = (
    "smallest model within 1 point of FP32 accuracy",
    "fastest under 5 MB",
    "most accurate under 2 ms",
    "smallest within 0.5% of FP32 and under 3 ms",
)

# A sign too, so "within -5 points" is refused as -5, not read as 5; commas only between groups
# of three digits ("1,000 kB"; "1,5 MB" is not a number here), and an exponent ("1.5e3 kB").
_NUMBER = r"(-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:e[-+]?\d+)?)"
_OBJECTIVE_WORDS = (
    ("accuracy", r"\b(most accurate|best accuracy|highest accuracy|most accuracy)\b"),
    ("size", r"\b(smallest|tiniest|lightest|least memory|lowest size|minimum size)\b"),
    ("latency", r"\b(fastest|quickest|lowest latency|least latency|minimum latency)\b"),
)
_DROP = re.compile(
    r"\b(?:within|lose at most|losing at most|at most|no more than|less than)\s+" + _NUMBER
    + r"\s*(percentage points?|points?|pts?|pp|%|percent)"
    # "at most 2% accuracy drop", "1 point of accuracy loss": the words the Search form uses too.
    + r"(?:\s+(?:of\s+)?accuracy(?:\s+(?:drop|loss))?|\s+(?:drop|loss))?",
)  # fmt: skip
_NO_LOSS = re.compile(
    r"\b(no (?:accuracy )?(?:loss|drop)(?: (?:of|in) accuracy)?"
    r"|without (?:any )?(?:accuracy )?loss(?: of accuracy)?"
    r"|without losing(?: any)? accuracy|(?:that )?loses no accuracy|lossless)\b"
)
# Words of a limit or objective left over once everything understood is taken out: the goal said
# something this parser did not read ("within one point", "no slower than FP32"), so it is refused
# rather than silently dropped.
_UNREAD = re.compile(
    r"\b(loss|lose|loses|losing|drop|drops|slower|faster|quicker|speed-?up|bigger|biggest|largest|"
    r"smaller|accuracy|accurate|points?|percent|kb|mb|gb|ms|seconds?|latency|size|"
    r"one|two|three|four|five|six|seven|eight|nine|ten|half)\b"
)
# A limit's opening words left over with what follows: the number after them was not read
# ("within NaN points", "under one MB"), which is what the refusal should point at.
_UNREAD_LIMIT = re.compile(
    r"\b(?:within|under|below|at most|no more than|less than|smaller than|faster than)\s+(\S+)(?:\s+\S+)?"
)
# Filler that may stay: "of FP32 accuracy", "the FP32 baseline", precision names.
_FILLER = re.compile(
    r"\b(?:of|than|to|vs)?\s*(?:the\s+)?(?:fp32|float32|baseline)(?:\s+(?:accuracy|model|baseline))?\b"
    r"|\b(fp16|float16|int8|int4|w8a16|batch 1|at batch 1)\b"
)
_SIZE = re.compile(
    r"(?:\bunder|\bbelow|\bat most|\bno more than|\bsmaller than|\bless than|\bmax(?:imum)?|<=?|≤)\s*"
    + _NUMBER + r"\s*(gb|mb|kb|bytes|b)\b"
)  # fmt: skip
_LATENCY = re.compile(
    r"(?:\bunder|\bbelow|\bat most|\bno more than|\bfaster than|\bless than|\bmax(?:imum)?|<=?|≤)\s*"
    + _NUMBER + r"\s*(ms|milliseconds?|us|µs|microseconds?|s|seconds?)\b"
)  # fmt: skip
_SIZE_UNITS = {"gb": 1e9, "mb": 1e6, "kb": 1e3, "bytes": 1.0, "b": 1.0}
_TIME_UNITS = {  # every spelling _LATENCY accepts -> milliseconds
    "ms": 1.0, "millisecond": 1.0, "milliseconds": 1.0,
    "us": 1e-3, "µs": 1e-3, "microsecond": 1e-3, "microseconds": 1e-3,
    "s": 1e3, "second": 1e3, "seconds": 1e3,
}  # fmt: skip


class GoalError(ValueError):
    """A goal that could not be read; the message shows the forms that can."""


@dataclass(frozen=True)
class Goal:
    """What to optimise ("size", "latency" or "accuracy") under which limits."""

    objective: str
    constraints: Constraints
    text: str = ""

    def describe(self) -> str:
        """The goal as understood, in words: what the user can check against what they typed."""
        parts = [f"the {OBJECTIVES[self.objective]} plan"]
        c = self.constraints
        if c.max_accuracy_drop == 0:
            parts.append("with no accuracy loss against FP32")
        elif c.max_accuracy_drop is not None:
            unit = "% of" if c.relative else (" point of" if c.max_accuracy_drop == 1 else " points of")
            parts.append(f"within {c.max_accuracy_drop:g}{unit} FP32 accuracy")
        if c.max_size_bytes is not None:
            parts.append(f"at most {decimal_bytes(c.max_size_bytes)}")
        if c.max_latency_ms is not None:
            parts.append(f"at most {c.max_latency_ms:g} ms at batch 1")
        return parts[0] + (" " + " and ".join(parts[1:]) if len(parts) > 1 else "")


def _refuse(text: str, why: str, read: bool = False) -> GoalError:
    """read: the goal was read, but a limit in it cannot apply (what the message says first)."""
    examples = "; ".join(f'"{e}"' for e in EXAMPLES)
    opening = f"cannot use the goal {text!r}" if read else f"could not read the goal {text!r}"
    return GoalError(
        f"{opening}: {why}. Say what to optimise (smallest, fastest or most "
        f"accurate) and any limits: within N points (or N%) of FP32 accuracy, under N MB (or kB), "
        f"under N ms. For example: {examples}"
    )


def _number(text: str, written: str) -> float:
    """A number _NUMBER matched, as a float; one too large for a float is refused by name."""
    value = float(written.replace(",", ""))
    if math.isinf(value):
        raise _refuse(text, f"the number {written} is too large to be a limit")
    return value


def parse_goal(text: str) -> Goal:
    """Read a plain-words goal; GoalError says what was not understood and what would be."""
    # "−" (U+2212) as the app itself prints negative numbers: a pasted "−5 points" reads as -5.
    s = " ".join(text.lower().replace("×", "x").replace("−", "-").split())
    if not s:
        raise _refuse(text, "it is empty")
    spans: list[tuple[int, int]] = []

    def take(pattern: re.Pattern[str]) -> list[re.Match[str]]:
        found = list(pattern.finditer(s))
        spans.extend(m.span() for m in found)
        return found

    drop: float | None = None
    relative = False
    drops = take(_DROP)
    no_loss = take(_NO_LOSS)
    if len(drops) + len(no_loss) > 1:
        raise _refuse(text, "it gives more than one accuracy limit")
    if no_loss:
        drop = 0.0
    elif drops:
        drop = _number(text, drops[0].group(1))
        relative = drops[0].group(2) in ("%", "percent")
    sizes = take(_SIZE)
    latencies = take(_LATENCY)
    if len(sizes) > 1 or len(latencies) > 1:
        raise _refuse(text, "it gives more than one size or latency limit")
    size = _number(text, sizes[0].group(1)) * _SIZE_UNITS[sizes[0].group(2)] if sizes else None
    latency = _number(text, latencies[0].group(1)) * _TIME_UNITS[latencies[0].group(2)] if latencies else None

    leftover = s
    for start, end in sorted(spans, reverse=True):
        leftover = leftover[:start] + " " + leftover[end:]
    # The objective is read from what the limits left: "smaller than 5 MB" is a limit, not "smallest".
    objectives = [name for name, pattern in _OBJECTIVE_WORDS if re.search(pattern, leftover)]
    if len(objectives) > 1:
        words = " and ".join(OBJECTIVES[o] for o in objectives)
        raise _refuse(text, f"it asks for {words} at once; pick one and give the others as limits")
    for _, pattern in _OBJECTIVE_WORDS:
        leftover = re.sub(pattern, " ", leftover)
    leftover = _FILLER.sub(" ", leftover)
    if "perplexity" in leftover:  # a language model's second metric: reported, not a limit here
        raise _refuse(
            text,
            "limits are on accuracy, size and latency; perplexity is not one (a language model's report "
            "gives its perplexity ratio beside the accuracy change)",
        )
    unread = _UNREAD_LIMIT.search(leftover)
    if unread and not re.match(r"-?\d", unread.group(1)):
        raise _refuse(
            text,
            f"the part {unread.group(0).strip()!r} is not a limit it understands "
            f"({unread.group(1)!r} is not a number)",
        )
    stray = re.search(r"\d+(?:\.\d+)?\s*\S*", leftover) or _UNREAD.search(leftover)
    if stray:
        # "1,5 MB": a decimal comma is not read (a comma only groups thousands), so say so.
        hint = " (write decimals with a point: 1.5)" if re.search(r"\d,\d", stray.group(0)) else ""
        raise _refuse(text, f"the part {stray.group(0).strip()!r} is not a limit it understands{hint}")
    if objectives:
        objective = objectives[0]
    elif drop is not None:
        objective = "size"  # "within 1 point": the usual question is how small it can get
    elif size is not None or latency is not None:
        objective = "accuracy"  # "under 5 MB": the best accuracy that fits
    else:
        raise _refuse(text, "it names nothing to optimise and no limit")
    try:
        constraints = Constraints(drop, relative, size, latency)
    except ValueError as e:
        raise _refuse(text, str(e), read=True) from None
    return Goal(objective, constraints, text.strip())
