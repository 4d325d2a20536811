"""PyTorch weights without pickle: safetensors plus the user's own model code, exported to ONNX.

A `.pt`/`.pth` checkpoint is a pickle, and unpickling can run any code, so quantdash never
opens one. What it accepts instead, on the command line only, is the pair a PyTorch user has
anyway: weights saved with `safetensors.torch.save_file(model.state_dict(), ...)` and a Python
function that builds the (untrained) module. The function is the user's own code, named
explicitly on their own command line; the weights file is plain tensors and runs nothing.
"""

from __future__ import annotations

import importlib.util
import io
import math
import re
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from engine.model_io import ModelError
from engine.synthetic import MAX_SYNTHETIC_BYTES

T = TypeVar("T")
_ENTRY = re.compile(r"^(?P<file>.+\.py):(?P<function>[A-Za-z_][A-Za-z0-9_]*)$")


def _run_user_code(source: Path, what: str, call: Callable[[], T]) -> T:
    """Run code from the user's own file; what it raises becomes one line naming the error and
    the line of their file it came from (their code's traceback is not ours to print)."""
    try:
        return call()
    except Exception as e:
        own = [
            f for f in traceback.extract_tb(e.__traceback__) if Path(f.filename).resolve() == source.resolve()
        ]
        where = f" at {source.name} line {own[-1].lineno}" if own else ""
        if isinstance(e, SyntaxError) and e.lineno:
            where = f" at {source.name} line {e.lineno}"
        raise ModelError(
            f"--entry: {what} raised {type(e).__name__}{where}: {e}; expected it to build the model "
            "without error"
        ) from None


def export_safetensors(weights: Path, entry: str, shapes: dict[str, tuple[int, ...]]) -> bytes:
    """Build the module with `entry` (FILE.py:FUNCTION), load `weights` strictly, export ONNX bytes.

    `shapes` names each input and its example shape (batch first); the batch axis is exported
    as dynamic. Raises ModelError naming what does not fit.
    """
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    m = _ENTRY.match(entry)
    if not m:
        raise ModelError(f"--entry {entry!r}: expected FILE.py:FUNCTION, for example my_model.py:build")
    if not shapes:
        raise ModelError(
            "--shape is needed with --entry: the example input to export with, e.g. input=1x3x32x32"
        )
    for name, shape in shapes.items():  # checked before torch allocates it (a typo is not a MemoryError)
        written = "x".join(map(str, shape))
        if any(d < 1 for d in shape):
            raise ModelError(f"--shape {name}={written}: every size must be a whole number of at least 1")
        if math.prod(shape) * 4 > MAX_SYNTHETIC_BYTES:  # the example is float32
            raise ModelError(
                f"--shape {name}={written}: an example input of {math.prod(shape) * 4 / 2**30:.1f} GiB; "
                f"expected at most {MAX_SYNTHETIC_BYTES / 2**30:g} GiB (the batch can be 1: it is "
                "exported as dynamic)"
            )
    source = Path(m["file"])
    if not source.is_file():
        raise ModelError(
            f"--entry: {source} not found; expected the Python file that defines {m['function']}()"
        )
    spec = importlib.util.spec_from_file_location(f"quantdash_entry_{source.stem}", source)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    loader = spec.loader
    _run_user_code(source, f"running {source.name}", lambda: loader.exec_module(module))
    build = getattr(module, m["function"], None)
    if not callable(build):
        raise ModelError(f"--entry: {source} defines no function {m['function']!r}")
    net = _run_user_code(source, f"{m['function']}()", build)
    if not isinstance(net, torch.nn.Module):
        raise ModelError(
            f"--entry: {m['function']}() returned {type(net).__name__}; expected a torch.nn.Module"
        )
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelError(f"{weights.name} is not a readable safetensors file ({e})") from None
    try:
        result = net.load_state_dict(state, strict=False)
    except RuntimeError as e:  # same names, other shapes: torch lists each mismatch; the first says enough
        first = str(e).strip().splitlines()
        detail = next((line.strip() for line in first if "size mismatch" in line), first[-1] if first else "")
        raise ModelError(
            f"{weights.name} does not fit {m['function']}(): {detail[:300]}; expected the state_dict of the "
            "same module, built with the same sizes"
        ) from None
    if result.missing_keys or result.unexpected_keys:
        raise ModelError(
            f"{weights.name} does not fit {m['function']}(): missing {list(result.missing_keys)[:5]}, "
            f"unexpected {list(result.unexpected_keys)[:5]}; expected the state_dict of the same module"
        )
    examples = tuple(torch.zeros(shape) for shape in shapes.values())
    names = list(shapes)
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                net.eval(),
                examples,
                buf,  # type: ignore[arg-type]  # a file-like object works; the stubs name paths only
                input_names=names,
                output_names=["output"],
                dynamic_axes={**{n: {0: "batch"} for n in names}, "output": {0: "batch"}},
                opset_version=17,
                dynamo=False,
            )
    except Exception as e:  # the exporter's many error types: say which, and where it came from
        raise ModelError(f"exporting {m['function']}() to ONNX failed ({type(e).__name__}: {e})") from None
    return buf.getvalue()
