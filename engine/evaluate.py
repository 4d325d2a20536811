"""One plan's evaluation, as run inside a worker: quantize, then measure size, accuracy, latency.

Everything a plan needs that does not depend on the plan (the prepared model, its layer
table, the FP32 reference outputs, the calibration ranges) is cached on disk under the
cache directory, keyed by content hashes, and in memory for the worker's lifetime, so a
new plan costs one quantization plus its own measurement.
"""

from __future__ import annotations

import collections
import contextlib
import io
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from engine import measure
from engine.calibrate import calibrate, calibration_key
from engine.datasets import EvalSet
from engine.model_io import layer_table, prepare_model, sha256_bytes
from engine.prefix import FP32Model, run_variants
from engine.quantize import quantize_plan
from engine.types import CalibrationMethod, LayerInfo, MeasureSettings, Plan, Precision, stable_hash


class _Memo(collections.OrderedDict[str, Any]):
    """A small LRU: a long-lived worker keeps the few models it is working on, not every one seen."""

    def __init__(self, size: int = 8) -> None:
        super().__init__()
        self.size = size

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)


_MEMO = _Memo()  # per worker process: parsed prepared models, FP32 reference outputs and sessions


@contextlib.contextmanager
def quiet_ort_logging() -> Iterator[None]:
    """ORT's quantizers log expected situations at INFO/WARNING; keep worker output readable."""
    names = ["", *(n for n in logging.root.manager.loggerDict if n.startswith("onnxruntime"))]
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def atomic_write(path: Path, data: bytes) -> None:
    """Write via a temporary file and rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def write_once(path: Path, data: bytes) -> bytes:
    """Write the file unless it exists; either way return what it holds. When two workers race,
    the first file to land wins and both go on with it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    try:
        os.link(tmp, path)  # fails if the file exists, unlike a rename
    except FileExistsError:
        pass
    except OSError:  # a filesystem without hard links: claim the name by creating it exclusively
        _create_exclusively(path, data)
    finally:
        os.unlink(tmp)
    return path.read_bytes()


def _create_exclusively(path: Path, data: bytes) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    except FileExistsError:
        return
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def layers_to_json(layers: list[LayerInfo]) -> list[dict[str, Any]]:
    return [
        {
            "name": layer.name,
            "op_type": layer.op_type,
            "params": layer.params,
            "macs": layer.macs,
            "weight_bytes": layer.weight_bytes,
            "input_shapes": [list(s) for s in layer.input_shapes],
            "output_shapes": [list(s) for s in layer.output_shapes],
            "accepts": [p.value for p in layer.accepts],
            "rejects": {p.value: why for p, why in layer.rejects.items()},
        }
        for layer in layers
    ]


def layers_from_json(data: list[dict[str, Any]]) -> list[LayerInfo]:
    return [
        LayerInfo(
            name=d["name"],
            op_type=d["op_type"],
            params=d["params"],
            macs=d["macs"],
            weight_bytes=d["weight_bytes"],
            input_shapes=tuple(tuple(s) for s in d["input_shapes"]),
            output_shapes=tuple(tuple(s) for s in d["output_shapes"]),
            accepts=tuple(Precision(p) for p in d["accepts"]),
            rejects={Precision(p): why for p, why in d["rejects"].items()},
        )
        for d in data
    ]


def cache_folder(root: Path, model_hash: str) -> Path:
    """Cache folder of a model, per engine and ONNX Runtime version (either may change what is cached)."""
    import onnxruntime

    from engine import __version__

    return (
        Path(root)
        / stable_hash({"model": model_hash, "engine": __version__, "ort": onnxruntime.__version__})[:32]
    )


@dataclass(frozen=True)
class ModelCache:
    """The on-disk cache of one model: cache_dir/<model hash>/..."""

    root: Path
    model_hash: str

    @property
    def folder(self) -> Path:
        return cache_folder(self.root, self.model_hash)

    def prepared(self, model_bytes: bytes) -> Path:
        """Path of the prepared model, preparing it on first use."""
        path = self.folder / "prepared.onnx"
        if not path.is_file():
            with quiet_ort_logging():
                data = prepare_model(model_bytes, work_dir=None)
            atomic_write(path, data)
        return path

    @property
    def _layers_path(self) -> Path:
        return self.folder / "layers.json"

    def cached_layers(self) -> list[LayerInfo] | None:
        """The layer table if it was computed before (reading JSON, not the model), else None."""
        path = self._layers_path
        return layers_from_json(json.loads(path.read_text())) if path.is_file() else None

    def layers(self, model_bytes: bytes) -> list[LayerInfo]:
        cached = self.cached_layers()
        if cached is not None:
            return cached
        layers = layer_table(self.prepared(model_bytes).read_bytes())
        atomic_write(self._layers_path, json.dumps(layers_to_json(layers)).encode())
        return layers

    def calibration(
        self, model_bytes: bytes, inputs: dict[str, np.ndarray], data_hash: str, method: CalibrationMethod
    ) -> Path:
        key = calibration_key(self.model_hash, data_hash, method)[:24]
        path = self.folder / f"calibration-{method.value}-{key}.json"
        if not path.is_file():
            with quiet_ort_logging():
                calibrate(self.prepared(model_bytes), inputs, method, path)
        return path

    def reference(self, model_bytes: bytes, eval_set: EvalSet, threads: int) -> np.ndarray:
        """FP32 outputs on the evaluation set (the yardstick for fidelity and accuracy deltas)."""
        memo_key = f"ref:{self.model_hash}:{eval_set.hash}"
        if memo_key in _MEMO:
            return _MEMO[memo_key]  # type: ignore[no-any-return]
        path = self.folder / f"reference-{sha256_bytes(eval_set.hash.encode())[:24]}.npy"
        if path.is_file():
            ref = np.load(path, allow_pickle=False)
        else:
            session = measure.make_session(str(self.prepared(model_bytes)), threads)
            ref = measure.run_batched(session, eval_set.inputs)
            buf = io.BytesIO()
            np.save(buf, ref)
            atomic_write(path, buf.getvalue())
        _MEMO[memo_key] = ref
        return np.asarray(ref)

    def fp32_latency_ms(
        self, model_bytes: bytes, feeds: dict[str, np.ndarray], settings: MeasureSettings
    ) -> float:
        """The FP32 model's median latency at this batch size, measured once for the model (kept in
        the cache): the one scale that every plan's ratio to FP32 is put on (comparable_ms), so plans
        timed hours apart compare by their ratios, not by the host's state at the time."""
        # Keyed by the inputs' shapes and types (a language model's sequence length counts, not its data),
        # and by how long it is timed: a quick measurement must not become the scale of thorough ones.
        shapes = stable_hash({k: [list(v.shape), str(v.dtype)] for k, v in sorted(feeds.items())})[:16]
        caps = stable_hash([settings.min_runs, settings.max_runs, settings.max_seconds, settings.rel_ci])[:8]
        name = f"fp32-latency-b{measure.batch_of(feeds)}-t{settings.threads}-{shapes}-{caps}.json"
        path = self.folder / name
        if not path.is_file():
            stats = timed(_fp32_session(self.prepared(model_bytes), settings.threads), feeds, settings)
            write_once(path, json.dumps(stats.to_json()).encode())
        return float(json.loads(path.read_text())["median_ms"])


def inspect_task(model_bytes: bytes, cache_dir: str) -> list[dict[str, Any]]:
    """Worker task: the layer table as JSON (preparing and caching the model)."""
    cache = ModelCache(Path(cache_dir), sha256_bytes(model_bytes))
    return layers_to_json(cache.layers(model_bytes))


def _accuracy_metrics(
    eval_set: EvalSet, outputs: np.ndarray, ref: np.ndarray, settings: MeasureSettings, n_classes: int | None
) -> dict[str, Any]:
    if eval_set.labels is None or eval_set.task == "fidelity_only":
        return {"labelled": False}
    task = eval_set.task
    result: dict[str, Any] = {"labelled": True, **measure.task_metrics(task, outputs, eval_set.labels)}
    ref_metrics = measure.task_metrics(task, ref, eval_set.labels)
    result["fp32_accuracy"] = ref_metrics["accuracy"]
    q_scores = measure.per_sample_scores(task, outputs, eval_set.labels)
    r_scores = measure.per_sample_scores(task, ref, eval_set.labels)
    delta, low, high = measure.bootstrap_delta_ci(
        r_scores["correct"], q_scores["correct"], n_boot=settings.bootstrap, seed=settings.seed
    )
    result.update(accuracy_delta=delta, accuracy_delta_ci_low=low, accuracy_delta_ci_high=high)
    result["per_sample_correct"] = measure.encode_scores(q_scores["correct"])
    if "perplexity" in ref_metrics:
        result["fp32_perplexity"] = ref_metrics["perplexity"]
        # Paired bootstrap of the per-sequence mean NLL: exp of its change is the perplexity ratio
        # (sequences have equal length, so the mean of sequence means is the mean over tokens).
        d_nll, lo_nll, hi_nll = measure.bootstrap_delta_ci(
            r_scores["nll"], q_scores["nll"], n_boot=settings.bootstrap, seed=settings.seed
        )
        result.update(
            perplexity_ratio=float(np.exp(d_nll)),
            perplexity_ratio_ci_low=float(np.exp(lo_nll)),
            perplexity_ratio_ci_high=float(np.exp(hi_nll)),
        )
    if task == "classification" and n_classes:
        result["per_class_accuracy"] = measure.per_class_accuracy(outputs, eval_set.labels, n_classes)
        result["fp32_per_class_accuracy"] = measure.per_class_accuracy(ref, eval_set.labels, n_classes)
    return result


@dataclass
class BuiltPlan:
    """A plan's quantized model, the precision each layer got, and how long each step took."""

    model_bytes: bytes
    realized: Mapping[str, Precision]
    stage_seconds: dict[str, float]


def build_plan(
    model_bytes: bytes,
    calibration: dict[str, np.ndarray],
    data_hash: str,
    plan: Plan,
    settings: MeasureSettings,
    cache: ModelCache,
) -> BuiltPlan:
    """Quantize the plan's model (the prepared model, layer table and ranges come from the cache)."""
    t0 = time.perf_counter()
    prepared_path = cache.prepared(model_bytes)
    layers = cache.layers(model_bytes)
    needs_ranges = any(
        p in (Precision.INT8, Precision.W8A16) for p in plan.resolve([x.name for x in layers]).values()
    )
    ranges = (
        cache.calibration(model_bytes, calibration, data_hash, settings.calibration) if needs_ranges else None
    )
    t_prep = time.perf_counter()
    with quiet_ort_logging():
        built = quantize_plan(
            _prepared_proto(prepared_path),
            layers,
            plan,
            calibration_cache=ranges,
            method=settings.calibration,
            work_dir=None,
        )
    t_quant = time.perf_counter()
    stages = {**built.stage_seconds, "prepare_and_calibrate": t_prep - t0, "quantize": t_quant - t_prep}
    return BuiltPlan(built.model_bytes, built.realized, stages)


def build_plan_from_json(
    model_bytes: bytes,
    calibration: dict[str, np.ndarray],
    data_hash: str,
    plan_json: dict[str, Any],
    settings_json: dict[str, Any],
    cache_dir: str,
) -> tuple[MeasureSettings, ModelCache, BuiltPlan]:
    """build_plan from a worker task's arguments; also gives the settings and cache it used."""
    settings = MeasureSettings.from_json(settings_json)
    cache = ModelCache(Path(cache_dir), sha256_bytes(model_bytes))
    built = build_plan(model_bytes, calibration, data_hash, Plan.from_json(plan_json), settings, cache)
    return settings, cache, built


def _prepared_proto(path: Path) -> onnx.ModelProto:
    memo_key = f"prepared:{path}"
    if memo_key not in _MEMO:  # parsed once per worker; quantize_plan works on a copy
        _MEMO[memo_key] = onnx.load(str(path))
    return _MEMO[memo_key]  # type: ignore[no-any-return]


def _task_value(built: BuiltPlan, metrics: dict[str, Any], measure_s: float, threads: int) -> dict[str, Any]:
    metrics["realized"] = {n: p.value for n, p in built.realized.items()}
    metrics["stage_seconds"] = {**built.stage_seconds, "measure": measure_s}
    return {
        "metrics": metrics,
        "model_bytes": built.model_bytes,
        "environment": measure.environment_info(threads),
    }


def evaluate_task(
    model_bytes: bytes,
    eval_set: EvalSet,
    calibration: dict[str, np.ndarray],
    data_hash: str,
    plan_json: dict[str, Any],
    settings_json: dict[str, Any],
    cache_dir: str,
    n_classes: int | None = None,
) -> dict[str, Any]:
    """Worker task: build the plan's model and measure it. Returns metrics, realized plan, model bytes."""
    settings, cache, built = build_plan_from_json(
        model_bytes, calibration, data_hash, plan_json, settings_json, cache_dir
    )
    t = time.perf_counter()
    # An all-FP32 plan builds the prepared model unchanged: its outputs are the FP32 reference.
    unchanged = all(p is Precision.FP32 for p in built.realized.values())
    outputs = cache.reference(model_bytes, eval_set, settings.threads) if unchanged else None
    metrics = measure_built_model(
        built.model_bytes,
        model_bytes,
        eval_set,
        settings,
        cache,
        n_classes,
        outputs=outputs,
        reference=unchanged,
    )
    return _task_value(built, metrics, time.perf_counter() - t, settings.threads)


def evaluate_together_task(
    model_bytes: bytes,
    eval_set: EvalSet,
    calibration: dict[str, np.ndarray],
    data_hash: str,
    plans_json: list[dict[str, Any]],
    settings_json: dict[str, Any],
    cache_dir: str,
    n_classes: int | None = None,
) -> list[dict[str, Any]]:
    """Worker task: several plans that change the same or neighbouring layers (the sensitivity
    probes of a layer or two), the FP32 beginning they leave unchanged run once (engine.prefix).
    Accuracy and fidelity only: latency needs each whole model, so plans measured with latency go
    through evaluate_task.

    One entry per plan: evaluate_task's value, or {"error": ...} for a plan that failed alone.
    """
    settings = MeasureSettings.from_json(settings_json)
    if settings.latency:
        raise ValueError("plans measured together are measured without latency")
    cache = ModelCache(Path(cache_dir), sha256_bytes(model_bytes))
    entries: list[dict[str, Any]] = []
    built: list[tuple[int, BuiltPlan]] = []
    for plan_json in plans_json:
        try:
            one = build_plan(model_bytes, calibration, data_hash, Plan.from_json(plan_json), settings, cache)
        except Exception as e:  # this plan fails alone, as it would in a task of its own
            entries.append({"error": f"{type(e).__name__}: {e}"})
        else:
            built.append((len(entries), one))
            entries.append({})
    t = time.perf_counter()
    fp32 = _fp32_model(cache.prepared(model_bytes))
    outputs = run_variants(fp32, [b.model_bytes for _, b in built], eval_set.inputs, settings.threads)
    shared_s = (time.perf_counter() - t) / max(len(built), 1)  # each plan's share of the inference
    for (index, one), out in zip(built, outputs, strict=True):
        t = time.perf_counter()
        try:
            metrics = measure_built_model(
                one.model_bytes, model_bytes, eval_set, settings, cache, n_classes, outputs=out
            )
        except Exception as e:
            entries[index] = {"error": f"{type(e).__name__}: {e}"}
        else:
            entries[index] = _task_value(one, metrics, shared_s + time.perf_counter() - t, settings.threads)
    return entries


def _fp32_model(prepared_path: Path) -> FP32Model:
    memo_key = f"fp32-index:{prepared_path}"
    if memo_key not in _MEMO:
        _MEMO[memo_key] = FP32Model(_prepared_proto(prepared_path))
    return _MEMO[memo_key]  # type: ignore[no-any-return]


def timed(
    session: ort.InferenceSession,
    feeds: dict[str, np.ndarray],
    settings: MeasureSettings,
    fp32: ort.InferenceSession | None = None,
) -> measure.LatencyStats:
    """measure_latency with the settings' run and time caps."""
    return measure.measure_latency(
        session,
        feeds,
        threads=settings.threads,
        min_runs=settings.min_runs,
        max_runs=settings.max_runs,
        max_seconds=settings.max_seconds,
        rel_ci=settings.rel_ci,
        fp32=fp32,
    )


def _fp32_session(prepared_path: Path, threads: int) -> ort.InferenceSession:
    """The FP32 model every plan of this model is timed against (created once per worker)."""
    memo_key = f"fp32-session:{threads}:{prepared_path}"
    if memo_key not in _MEMO:
        _MEMO[memo_key] = measure.make_session(prepared_path, threads)
    return _MEMO[memo_key]


def _finite_or_none(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def measure_built_model(
    built_bytes: bytes,
    model_bytes: bytes,
    eval_set: EvalSet,
    settings: MeasureSettings,
    cache: ModelCache | None = None,
    n_classes: int | None = None,
    outputs: np.ndarray | None = None,
    reference: bool = False,
) -> dict[str, Any]:
    """Size, accuracy and fidelity vs FP32, and latency at each batch size, of a built model.

    ``outputs``: its first output over the eval set when already computed (engine.prefix), else
    it is run here. ``reference``: the model is the FP32 model itself, so its latency is the FP32
    scale exactly (a ratio of 1 by definition): timed against itself, its ratio would be only the
    method's noise, and every "N x faster than FP32" would then disagree with the plan's own ratio."""
    cache = cache or ModelCache(Path(tempfile.gettempdir()) / "quantdash-cache", sha256_bytes(model_bytes))
    with tempfile.TemporaryDirectory(prefix="measure-") as tmp:
        path = Path(tmp) / "model.onnx"
        path.write_bytes(built_bytes)
        size = measure.model_size_bytes(path)
    fp32_size = measure.model_size_bytes(cache.prepared(model_bytes))
    session = (
        measure.make_session(built_bytes, settings.threads) if outputs is None or settings.latency else None
    )
    if outputs is None:
        assert session is not None
        outputs = measure.run_batched(session, eval_set.inputs)
    ref = cache.reference(model_bytes, eval_set, settings.threads)
    finite = bool(np.isfinite(outputs).all())
    # Top-1 agreement and KL divergence compare scores over classes: SQNR alone for one output value.
    scored = measure.scores_classes(ref)
    metrics: dict[str, Any] = {
        # NaN or Inf outputs: fidelity figures would be meaningless, so none are given.
        "non_finite_outputs": not finite,
        "size_bytes": size,
        "fp32_size_bytes": fp32_size,
        "compression": fp32_size / size if size else None,
        # Identical outputs give an infinite SQNR; store None (JSON has no infinity).
        "sqnr_db": _finite_or_none(measure.sqnr_db(ref, outputs)) if finite else None,
        "agreement": measure.top1_agreement(ref, outputs) if scored else None,
        "kl_divergence": _finite_or_none(measure.kl_divergence(ref, outputs)) if finite and scored else None,
        "eval_size": eval_set.size,
        "synthetic_data": eval_set.synthetic,
    }
    metrics.update(_accuracy_metrics(eval_set, outputs, ref, settings, n_classes))
    latency = {}
    fp32 = _fp32_session(cache.prepared(model_bytes), settings.threads) if settings.interleave_fp32 else None
    for batch in settings.batch_sizes if settings.latency else ():
        assert session is not None
        feeds = measure.make_feeds(eval_set.inputs, batch)
        stats = timed(session, feeds, settings, None if reference else fp32)
        if fp32 is not None:
            stats = replace(stats, fp32_ms=cache.fp32_latency_ms(model_bytes, feeds, settings))
            if reference:
                stats = replace(stats, vs_fp32=1.0, vs_fp32_ci_low=1.0, vs_fp32_ci_high=1.0)
        latency[str(batch)] = stats.to_json()
    metrics["latency"] = latency
    return metrics
