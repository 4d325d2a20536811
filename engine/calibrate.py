"""Activation ranges for static quantization, computed once per (model, data, method) and cached."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from onnxruntime.quantization import CalibrationDataReader
from onnxruntime.quantization import CalibrationMethod as OrtCalibrationMethod
from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data
from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

from engine.types import CalibrationMethod, stable_hash

_ORT_METHOD = {
    CalibrationMethod.MINMAX: OrtCalibrationMethod.MinMax,
    CalibrationMethod.ENTROPY: OrtCalibrationMethod.Entropy,
    CalibrationMethod.PERCENTILE: OrtCalibrationMethod.Percentile,
}
CALIBRATION_BATCH = 16
# ONNX Runtime's Entropy defaults (128 histogram bins, 128 quantized bins) leave the KL search a
# single candidate, the full range: Entropy then gives exactly MinMax's ranges (measured here on
# every sample). 2048 bins searched down to 128, as TensorRT's KL calibration does (and as
# onnxruntime PR #10261 proposed), makes it a real search that can clip outliers.
_CALIBRATOR_OPTIONS = {
    CalibrationMethod.MINMAX: {},
    CalibrationMethod.ENTROPY: {"num_bins": 2048, "num_quantized_bins": 128},
    CalibrationMethod.PERCENTILE: {},
}


def ort_method(method: CalibrationMethod) -> OrtCalibrationMethod:
    return _ORT_METHOD[method]


class ArrayReader(CalibrationDataReader):  # type: ignore[misc]
    """Feeds named arrays to a calibrator in fixed-size batches."""

    def __init__(self, inputs: dict[str, np.ndarray], batch: int = CALIBRATION_BATCH) -> None:
        self.inputs = inputs
        self.batch = batch
        self._it: Iterator[dict[str, np.ndarray]] | None = None

    def _batches(self) -> Iterator[dict[str, np.ndarray]]:
        n = len(next(iter(self.inputs.values())))
        for start in range(0, n, self.batch):
            yield {k: v[start : start + self.batch] for k, v in self.inputs.items()}

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._it is None:
            self._it = self._batches()
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = None


def calibration_key(model_hash: str, data_hash: str, method: CalibrationMethod) -> str:
    options: dict[str, object] = dict(_CALIBRATOR_OPTIONS[method])
    if method is not CalibrationMethod.MINMAX:
        # Ranges computed before calibration_batch fed every sample in one call differ for a split
        # that is no multiple of 16: a key of their own, so none of those is read back as these.
        options["feed"] = "one call"
    return stable_hash({"model": model_hash, "data": data_hash, "method": method.value, "options": options})


def calibration_batch(n: int, method: CalibrationMethod) -> int:
    """The batch size the calibrator is fed n samples in.

    ONNX Runtime's histogram calibrators (Entropy, Percentile) stack what one collect_data call
    gathered, so a last batch smaller than the others failed with "inhomogeneous shape" (30 samples:
    16 + 14). Nor can that batch go in a second call: a histogram merged with wider data keeps its bin
    width and grows its bin count with the range, and Entropy's search grows with the square of the
    bins (an outlier 50x the first batches' range in the last 14 samples ran for over 10 minutes).
    So all n go in one call, in the largest batch up to 16 that divides n (1 for a prime above 16). MinMax
    takes each batch's extremes and takes any batches."""
    if method is CalibrationMethod.MINMAX:
        return CALIBRATION_BATCH
    return max(d for d in range(1, min(CALIBRATION_BATCH, max(n, 1)) + 1) if n % d == 0)


def calibrate(
    prepared_path: str | Path,
    inputs: dict[str, np.ndarray],
    method: CalibrationMethod,
    cache_path: str | Path,
) -> Path:
    """Compute activation ranges of every tensor the quantizer may need and save them to cache_path.

    Calibrates over all quantizable op types: a narrower set later fails with
    "Quantization parameters are not specified" for tensors of other ops.
    """
    cache = Path(cache_path)
    if cache.is_file():
        return cache
    op_types = sorted(set(QLinearOpsRegistry) | set(QDQRegistry))
    cache.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache.parent) as tmp:
        # The calibrator writes (then deletes) `<model>-inferred.onnx` beside the model it reads:
        # workers calibrating one shared prepared.onnx at once deleted each other's file. A
        # private copy gives each its own.
        model_copy = Path(tmp) / "model.onnx"
        shutil.copyfile(prepared_path, model_copy)
        calibrator = create_calibrator(
            model_copy,
            op_types,
            augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=ort_method(method),
            extra_options=_CALIBRATOR_OPTIONS[method],
        )
        # The histogram calibrators print progress to stdout; a CLI's --json output must stay clean.
        with contextlib.redirect_stdout(io.StringIO()):
            n = len(next(iter(inputs.values())))
            calibrator.collect_data(ArrayReader(inputs, calibration_batch(n, method)))
            ranges = calibrator.compute_data()
        # A tensor with an infinite range (an attention mask of -inf, say) cannot be quantized;
        # dropping it keeps the quantizer from computing NaN scales for it.
        ranges.data = {
            name: r
            for name, r in ranges.data.items()
            if np.isfinite(np.asarray(r.range_value, dtype=float)).all()
        }
        partial = Path(tmp) / "ranges.json"
        save_tensors_data(ranges, partial)
        # Rename is atomic: two workers calibrating at once never leave a half-written cache.
        os.replace(partial, cache)
    return cache
