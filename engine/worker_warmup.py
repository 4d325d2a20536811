"""Dask worker preload: import what an evaluation needs, in the background, as a worker starts.

ONNX Runtime's quantization pre-processing and its float16 converter import its symbolic shape
inference, which imports torch and sympy; the evaluation imports onnx, scipy and the quantizers:
about 3 s that would otherwise fall on the first task of every worker (and again after each
restart). A background thread, so the worker registers at once; a task that arrives meanwhile
waits on Python's import lock for the same modules, no longer than it would have anyway.
"""

from __future__ import annotations

import threading
from typing import Any


def import_heavy_modules() -> None:
    import onnxruntime.quantization.shape_inference  # noqa: F401
    import onnxruntime.tools.symbolic_shape_infer  # noqa: F401  (torch, sympy)

    import engine.evaluate  # noqa: F401  (onnx, onnxruntime, the quantizers)


def dask_setup(worker: Any) -> None:
    threading.Thread(target=import_heavy_modules, name="quantdash-warmup", daemon=True).start()
