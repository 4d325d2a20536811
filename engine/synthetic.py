"""Random inputs for a model added without data: the sizes checked before anything is drawn,
then the draw (evaluation and calibration samples, to the declared shapes and the sizes given)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine import user_data
from engine.datasets import synthetic_inputs
from engine.model_io import ModelError

SYNTHETIC_EVAL_ROWS = 64
SYNTHETIC_CALIB_ROWS = 32
# All random inputs of a model added without data (evaluation and calibration samples together),
# counted as numpy draws them: 64 bits a value (engine.datasets.synthetic_inputs draws float64 or
# int64, then casts), whatever the input's own type. They are drawn in the worker that checks the
# upload, and the cast copy comes on top, so drawing peaks at under twice this: 1 GiB keeps the peak
# at half a worker's 4 GiB memory limit (engine/jobs.py). Counted in the inputs' own types, a uint8
# image would pass at 1 GiB and need 9 GiB to draw. Real inputs stay far below it: 96 samples of a
# 3x640x640 image take 900 MiB as drawn, of 8,192 tokens 6 MiB. A size past it is a slip of the
# keyboard, refused by name before anything is allocated (not an out-of-memory error later).
MAX_SYNTHETIC_BYTES = 2**30
DRAWN_BYTES_PER_VALUE = 8


def draw(
    model_bytes: bytes,
    specs: list[user_data.InputSpec],
    shapes: dict[str, tuple[int, ...]],
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Random (evaluation, calibration) inputs; every dynamic dimension but the batch must be given
    (the page or --shape asks)."""
    unknown = [s for s in shapes if s not in {x.name for x in specs}]
    if unknown:
        raise ModelError(
            f"--shape names {', '.join(map(repr, unknown))}, which the model does not have; "
            f"its inputs are {', '.join(repr(s.name) for s in specs)}"
        )
    for s in specs:
        if s.name in shapes:
            dims = shapes[s.name]
            if len(dims) != len(s.shape):
                raise ModelError(
                    f"--shape {s.name}={'x'.join(map(str, dims))} has {len(dims)} dimensions; "
                    f"input {s.name!r} has {len(s.shape)}: {s.shape_text}"
                )
            for d, declared in zip(dims, s.shape, strict=True):
                if isinstance(declared, int) and declared != d:
                    raise ModelError(
                        f"--shape {s.name}={'x'.join(map(str, dims))} does not fit the declared shape "
                        f"{s.shape_text}; expected the fixed dimensions as declared"
                    )
        elif any(isinstance(d, str) for d in s.shape[1:]):
            example = "x".join(str(d) if isinstance(d, int) else "N" for d in s.shape)
            raise ModelError(
                f"input {s.name!r} has dynamic dimensions {s.shape_text}; without data, give its "
                f"size to draw random inputs: --shape {s.name}={example.replace('N', '1', 1)} "
                "(each N a number)"
            )
    check_synthetic_sizes(
        [{"name": s.name, "shape": list(s.shape), "dtype": s.dtype.name} for s in specs], shapes
    )

    def drawn(rows: int, seed: int) -> dict[str, np.ndarray]:
        # The batch dimension is the synthetic set's row count, whatever the user typed.
        given = {name: (rows, *dims[1:]) for name, dims in shapes.items()}
        return synthetic_inputs(model_bytes, rows=rows, seed=seed, shapes=given)

    return drawn(SYNTHETIC_EVAL_ROWS, 0), drawn(SYNTHETIC_CALIB_ROWS, 1)


def check_synthetic_sizes(inputs: Sequence[Mapping[str, Any]], shapes: Mapping[str, Sequence[int]]) -> None:
    """Refuse sizes that random inputs cannot be drawn to, before anything is allocated (ModelError).

    A size given for a dynamic dimension must be a whole number of at least 1, and all random samples
    (SYNTHETIC_EVAL_ROWS + SYNTHETIC_CALIB_ROWS of each input) must fit in MAX_SYNTHETIC_BYTES.
    `inputs` as declared_inputs lists them ({name, shape, dtype}), `shapes` as add_model takes them;
    only arithmetic on the declared shapes, so the page may ask before it sends anything to a worker.
    """
    rows = SYNTHETIC_EVAL_ROWS + SYNTHETIC_CALIB_ROWS
    drawn: list[_Drawn] = []
    for inp in inputs:
        name, declared = str(inp["name"]), list(inp["shape"])
        given = shapes.get(name)
        opened: list[tuple[int, str, int]] = []
        dims: list[int] = []
        for axis, d in enumerate(declared[1:], start=1):  # the first is the batch: `rows` of it
            if isinstance(d, int):
                dims.append(d)
            elif given is not None and axis < len(given):
                size = given[axis]
                if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 1:
                    raise ModelError(
                        f"input {name!r} dimension {axis} ({d!r}): {size} is not a size; "
                        "expected a whole number of at least 1"
                    )
                opened.append((axis, d, int(size)))
                dims.append(int(size))
            else:
                dims.append(1)  # not given: refused by name where it matters (draw)
        dtype = np.dtype(inp["dtype"])
        per_sample = math.prod(dims)  # Python ints: a typo's size cannot overflow
        nbytes = rows * per_sample * max(DRAWN_BYTES_PER_VALUE, dtype.itemsize)
        drawn.append(_Drawn(nbytes, name, declared, opened, per_sample, dtype))
    total = sum(d.nbytes for d in drawn)
    if total <= MAX_SYNTHETIC_BYTES:
        return
    worst = max(drawn, key=lambda d: d.nbytes)
    shape = "[" + ", ".join(str(d) for d in worst.declared) + "]"
    set_to = " and ".join(f"dimension {axis} ({d!r}) set to {size:,}" for axis, d, size in worst.opened)
    head = f"input {worst.name!r} {shape}" + (f" with {set_to}" if set_to else "")
    together = " (all inputs together)" if len(drawn) > 1 else ""
    text = (
        f"{head} makes each random sample {worst.per_sample:,} {worst.dtype.name} values: "
        f"{_bytes_text(total)}{together} for the {rows} samples drawn ({SYNTHETIC_EVAL_ROWS} to evaluate, "
        f"{SYNTHETIC_CALIB_ROWS} to calibrate; drawn at 64 bits a value), over the "
        f"{_bytes_text(MAX_SYNTHETIC_BYTES)} limit for random inputs. "
    )
    if len(worst.opened) == 1:
        size = worst.opened[0][2]
        per_unit = worst.nbytes // size  # the bytes one more of that size adds (size divides per_sample)
        most = (MAX_SYNTHETIC_BYTES - (total - worst.nbytes)) // per_unit
        text += "Expected the size the model really takes (a sequence length, an image side)"
        text += f": at most {most:,} here" if most >= 1 else ""
    elif worst.opened:
        text += "Expected the sizes the model really takes (a sequence length, an image side)"
    else:
        text += "Give evaluation data instead (--data, or the data file on the Models page)"
    raise ModelError(text)


@dataclass(frozen=True)
class _Drawn:
    """What one input's random samples would take, and the sizes the user gave for it."""

    nbytes: int
    name: str
    declared: list[int | str]
    opened: list[tuple[int, str, int]]  # (axis, declared name, size given)
    per_sample: int
    dtype: np.dtype


def _bytes_text(n: int) -> str:
    value, unit = (n / 2**30, "GiB") if n >= 2**30 else (n / 2**20, "MiB")
    return f"{value:,.1f}".removesuffix(".0") + f" {unit}"
