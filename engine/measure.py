"""Measurement primitives: sessions, size, latency, task metrics and fidelity to FP32."""

from __future__ import annotations

import base64
import functools
import math
import os
import platform
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from scipy.stats import binom

# Largest number of array elements handled at once in float64 (~32 MB), so long LM
# evaluations and big bootstraps do not blow up memory.
_CHUNK_ELEMENTS = 1 << 22
# Convergence of the latency median is checked this often: the CI costs a sort.
_CHECK_EVERY = 10
_TASKS = ("classification", "language_model")
_CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni")


# --- sessions and size -------------------------------------------------------------------------


def make_session(model: bytes | str | os.PathLike[str], threads: int = 1) -> ort.InferenceSession:
    """A CPU session with fixed threading, as every measurement uses."""
    if threads < 1:
        raise ValueError("threads must be >= 1")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Without it ORT turns W8A16 MatMuls into MatMulNBits with int8 activations at load.
    opts.add_session_config_entry("session.qdq_matmulnbits_accuracy_level", "0")
    source = model if isinstance(model, bytes) else os.fspath(model)
    return ort.InferenceSession(source, sess_options=opts, providers=["CPUExecutionProvider"])


def model_size_bytes(path: str | os.PathLike[str]) -> int:
    """Bytes on disk of the model file plus every external-data file it references."""
    path = Path(path)
    model = onnx.load(os.fspath(path), load_external_data=False)
    files: set[Path] = set()
    for tensor in _all_tensors(model.graph):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        for entry in tensor.external_data:
            if entry.key == "location":
                files.add((path.parent / entry.value).resolve())
    return path.stat().st_size + sum(f.stat().st_size for f in files)


def _all_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Initializers and attribute tensors of a graph and its subgraphs."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _all_tensors(attr.g)
            for sub in attr.graphs:
                yield from _all_tensors(sub)


# --- latency -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LatencyStats:
    """Latency of one batch size: median with its 95% CI, p90, and how it was obtained.

    vs_fp32*: this model's time over the FP32 model's, the two run alternately in one loop, as the
    median of the per-pair ratios with its 95% CI. The absolute median moves with this shared
    host's state (by +-25% between runs minutes apart here); the ratio moves by a few percent, so
    it is what plans are compared by. None when no FP32 model was interleaved."""

    batch: int
    median_ms: float
    p90_ms: float
    ci_low_ms: float
    ci_high_ms: float
    runs: int
    threads: int
    converged: bool  # the CI met rel_ci before a run or time cap stopped the loop
    vs_fp32: float | None = None
    vs_fp32_ci_low: float | None = None
    vs_fp32_ci_high: float | None = None
    # The FP32 model's median measured once for the model (engine.evaluate.ModelCache): the scale
    # engine.latency_compare puts vs_fp32 on.
    fp32_ms: float | None = None

    def __post_init__(self) -> None:
        if self.batch < 1 or self.runs < 1 or self.threads < 1:
            raise ValueError("batch, runs and threads must be >= 1")
        if not self.ci_low_ms <= self.median_ms <= self.ci_high_ms:
            raise ValueError("median must lie within its confidence interval")
        ratio = (self.vs_fp32_ci_low, self.vs_fp32, self.vs_fp32_ci_high)
        if any(x is None for x in ratio) != all(x is None for x in ratio):
            raise ValueError("vs_fp32 and its CI bounds are given together or not at all")
        if self.vs_fp32 is not None and not ratio[0] <= ratio[1] <= ratio[2]:  # type: ignore[operator]
            raise ValueError("vs_fp32 must lie within its confidence interval")

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        if self.vs_fp32 is None:  # records measured without it keep their old shape
            for name in ("vs_fp32", "vs_fp32_ci_low", "vs_fp32_ci_high"):
                del out[name]
        if self.fp32_ms is None:
            del out["fp32_ms"]
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LatencyStats:
        return cls(**data)


def measure_latency(
    session: ort.InferenceSession,
    feeds: dict[str, np.ndarray],
    *,
    threads: int,
    min_runs: int = 20,
    max_runs: int = 300,
    max_seconds: float = 3.0,
    rel_ci: float = 0.05,
    warmup: int = 5,
    fp32: ort.InferenceSession | None = None,
) -> LatencyStats:
    """Time session.run until the median's 95% CI is within +-rel_ci, or a run/time cap is hit.

    With an fp32 session, every run of the model is paired with one of the FP32 model, in
    alternating order (so neither always runs on a warmer cache), and the loop also waits for the
    ratio's CI to meet rel_ci. The time cap then covers both models' runs."""
    if not 1 <= min_runs <= max_runs:
        raise ValueError("need 1 <= min_runs <= max_runs")
    deadline = time.perf_counter_ns() + int(max_seconds * 1e9)
    for _ in range(warmup):
        session.run(None, feeds)
        if fp32 is not None:
            fp32.run(None, feeds)
    times_ns: list[int] = []
    ratios: list[float] = []
    while len(times_ns) < max_runs:
        if fp32 is None:
            times_ns.append(_timed_run(session, feeds))
        else:
            fp32_first = len(times_ns) % 2 == 1  # every other pair
            ref_ns = _timed_run(fp32, feeds) if fp32_first else 0
            times_ns.append(_timed_run(session, feeds))
            ref_ns = ref_ns if fp32_first else _timed_run(fp32, feeds)
            ratios.append(times_ns[-1] / max(ref_ns, 1))
        end = time.perf_counter_ns()
        n = len(times_ns)
        if n < min_runs:
            continue
        if (n - min_runs) % _CHECK_EVERY == 0 and _converged(times_ns, ratios, rel_ci):
            break
        if end >= deadline:
            break
    ms = np.sort(np.asarray(times_ns, dtype=np.float64)) / 1e6
    median = float(np.median(ms))
    low, high = median_ci(ms)
    return LatencyStats(
        batch=batch_of(feeds),
        median_ms=median,
        p90_ms=float(np.percentile(ms, 90)),
        ci_low_ms=min(low, median),
        ci_high_ms=max(high, median),
        runs=len(ms),
        threads=threads,
        converged=_converged(times_ns, ratios, rel_ci),
        **_ratio_fields(ratios),
    )


def _timed_run(session: ort.InferenceSession, feeds: dict[str, np.ndarray]) -> int:
    start = time.perf_counter_ns()
    session.run(None, feeds)
    return time.perf_counter_ns() - start


def _converged(times_ns: list[int], ratios: list[float], rel_ci: float) -> bool:
    if not _ci_within(np.asarray(times_ns, dtype=np.float64), rel_ci):
        return False
    return not ratios or _ci_within(np.asarray(ratios), rel_ci)


def _ratio_fields(ratios: list[float]) -> dict[str, float]:
    if not ratios:
        return {}
    median = float(np.median(ratios))
    low, high = median_ci(np.asarray(ratios))
    return {"vs_fp32": median, "vs_fp32_ci_low": min(low, median), "vs_fp32_ci_high": max(high, median)}


def median_ci(samples: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Distribution-free CI of the median from order statistics (binomial ranks)."""
    x = np.sort(np.asarray(samples, dtype=np.float64).ravel())
    n = x.size
    if n == 0:
        raise ValueError("no samples")
    tail = (1.0 - confidence) / 2
    # 1-based ranks j and k with P(j <= #below median < k) >= confidence; n=100 gives 40 and 61.
    j = max(1, int(binom.ppf(tail, n, 0.5)))
    k = min(n, int(binom.ppf(1.0 - tail, n, 0.5)) + 1)
    return float(x[j - 1]), float(x[k - 1])


def _ci_within(samples: np.ndarray, rel_ci: float) -> bool:
    med = float(np.median(samples))
    low, high = median_ci(samples)
    return low >= med * (1 - rel_ci) and high <= med * (1 + rel_ci)


def batch_of(feeds: dict[str, np.ndarray]) -> int:
    first = next(iter(feeds.values()), None)
    if first is None or np.ndim(first) == 0:
        return 1
    return int(np.shape(first)[0])


# --- running the eval set ----------------------------------------------------------------------


def make_feeds(inputs: dict[str, np.ndarray], batch: int) -> dict[str, np.ndarray]:
    """The first `batch` rows of every input, repeating rows when there are fewer."""
    if batch < 1:
        raise ValueError("batch must be >= 1")
    feeds = {}
    for name, arr in inputs.items():
        if arr.shape[0] == 0:
            raise ValueError(f"input {name!r} has no rows")
        feeds[name] = np.ascontiguousarray(np.take(arr, np.arange(batch) % arr.shape[0], axis=0))
    return feeds


def run_batched(
    session: ort.InferenceSession, inputs: dict[str, np.ndarray], batch_size: int = 256
) -> np.ndarray:
    """The model's first output over the whole eval set, concatenated along axis 0."""
    return run_batched_all(session, inputs, batch_size)[0]


def run_batched_all(
    session: ort.InferenceSession, inputs: dict[str, np.ndarray], batch_size: int = 256
) -> list[np.ndarray]:
    """Every output of the model over the whole eval set, each concatenated along axis 0."""
    names = [i.name for i in session.get_inputs()]
    missing = [n for n in names if n not in inputs]
    if missing:
        raise KeyError(f"eval set lacks model inputs {missing}; it has {sorted(inputs)}")
    rows = {int(inputs[n].shape[0]) for n in names}
    if len(rows) != 1:
        raise ValueError(f"model inputs have different numbers of rows: {sorted(rows)}")
    total = rows.pop()
    if total == 0:
        raise ValueError("eval set is empty")
    batches = []
    for start in range(0, total, batch_size):
        feeds = {n: inputs[n][start : start + batch_size] for n in names}
        batches.append([np.asarray(o) for o in session.run(None, feeds)])
    return [np.concatenate(column, axis=0) for column in zip(*batches, strict=True)]


# --- task metrics ------------------------------------------------------------------------------


def per_sample_scores(task: str, logits: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Per-sample scores for paired comparisons: "correct" (and "nll" for language models).

    Language-model labels are the targets aligned with logits positions (already shifted);
    negative labels (e.g. -100 padding) are ignored.
    """
    logits, labels = _check_task(task, logits, labels)
    if task == "classification":
        return {"correct": (np.argmax(logits, axis=-1) == labels).astype(np.float64)}
    correct, nll, valid = _token_scores(logits, labels)
    with np.errstate(invalid="ignore", divide="ignore"):
        tokens = valid.sum(axis=1)
        return {"correct": correct.sum(axis=1) / tokens, "nll": nll.sum(axis=1) / tokens}


def task_metrics(task: str, logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Headline metrics: accuracy; for language models also perplexity (over all tokens)."""
    logits, labels = _check_task(task, logits, labels)
    if task == "classification":
        return {"accuracy": float(np.mean(np.argmax(logits, axis=-1) == labels))}
    correct, nll, valid = _token_scores(logits, labels)
    tokens = int(valid.sum())
    if tokens == 0:
        raise ValueError("no labelled tokens (all labels negative)")
    return {"accuracy": float(correct.sum() / tokens), "perplexity": float(math.exp(nll.sum() / tokens))}


def per_class_accuracy(logits: np.ndarray, labels: np.ndarray, n_classes: int) -> list[float | None]:
    """Accuracy of each true class; None for a class with no samples."""
    logits, labels = _check_task("classification", logits, labels)
    correct = np.argmax(logits, axis=-1) == labels
    out: list[float | None] = []
    for c in range(n_classes):
        mask = labels == c
        out.append(float(correct[mask].mean()) if mask.any() else None)
    return out


def _check_task(task: str, logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if task not in _TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {_TASKS}")
    logits, labels = np.asarray(logits), np.asarray(labels)
    want = 2 if task == "classification" else 3
    if logits.ndim != want or labels.shape != logits.shape[:-1]:
        raise ValueError(
            f"{task}: expected logits of {want} dims and labels of shape logits.shape[:-1]; "
            f"got logits {logits.shape}, labels {labels.shape}"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers, got {labels.dtype}")
    return logits, labels.astype(np.int64)


def _token_scores(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-token correct (0/1), nll and validity mask, each [N, T]; invalid tokens score 0."""
    n, t, v = logits.shape
    flat_logits, flat_labels = logits.reshape(n * t, v), labels.reshape(n * t)
    valid = flat_labels >= 0
    safe = np.where(valid, flat_labels, 0)
    correct = np.zeros(n * t)
    nll = np.zeros(n * t)
    for sl in _row_chunks(n * t, v):
        logp = _log_softmax(flat_logits[sl])
        rows = np.arange(logp.shape[0])
        correct[sl] = np.argmax(logp, axis=-1) == safe[sl]
        nll[sl] = -logp[rows, safe[sl]]
    correct[~valid] = 0.0
    nll[~valid] = 0.0
    return correct.reshape(n, t), nll.reshape(n, t), valid.reshape(n, t)


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    shifted: np.ndarray = x - x.max(axis=-1, keepdims=True)
    return np.asarray(shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True)))


def _row_chunks(rows: int, width: int) -> Iterator[slice]:
    step = max(1, _CHUNK_ELEMENTS // max(1, width))
    for start in range(0, rows, step):
        yield slice(start, min(rows, start + step))


# --- fidelity to the FP32 reference ------------------------------------------------------------


def sqnr_db(ref: np.ndarray, test: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio of test against ref, in dB (+inf when identical)."""
    r, t = _same_shape(ref, test)
    noise = float(np.sum((r - t) ** 2))
    if noise == 0.0:
        return math.inf
    signal = float(np.sum(r**2))
    return -math.inf if signal == 0.0 else 10.0 * math.log10(signal / noise)


def scores_classes(outputs: np.ndarray) -> bool:
    """Whether outputs are scores over classes (a last axis of 2 or more). One output value per example
    (a regressor, a single logit) has no classes: its argmax always agrees and its softmax is always 1,
    so top-1 agreement and KL divergence would read "perfect" whatever the plan."""
    return np.ndim(outputs) >= 2 and np.shape(outputs)[-1] > 1


def fidelity_figures(classes: bool) -> str:
    """The fidelity-to-FP32 figures measured of a model's outputs, in words (see scores_classes)."""
    return "top-1 agreement, SQNR, KL divergence" if classes else "output SQNR"


def top1_agreement(ref_logits: np.ndarray, test_logits: np.ndarray) -> float:
    """Fraction of positions where the argmax over the last axis is the same."""
    r, t = _same_shape(ref_logits, test_logits)
    return float(np.mean(np.argmax(r, axis=-1) == np.argmax(t, axis=-1)))


def kl_divergence(ref_logits: np.ndarray, test_logits: np.ndarray) -> float:
    """Mean KL(softmax(ref) || softmax(test)) over all positions (last axis = classes)."""
    r, t = _same_shape(ref_logits, test_logits)
    v = r.shape[-1]
    r2, t2 = r.reshape(-1, v), t.reshape(-1, v)
    total = 0.0
    for sl in _row_chunks(r2.shape[0], v):
        lp, lq = _log_softmax(r2[sl]), _log_softmax(t2[sl])
        total += float(np.sum(np.exp(lp) * (lp - lq)))
    return total / r2.shape[0]


def _same_shape(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"reference and test outputs differ in shape: {a.shape} vs {b.shape}")
    if a.size == 0:
        raise ValueError("empty outputs")
    return a, b


# --- paired bootstrap --------------------------------------------------------------------------


def bootstrap_delta_ci(
    ref_scores: np.ndarray,
    test_scores: np.ndarray,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, float, float]:
    """(delta, low, high): mean(test) - mean(ref) with a paired-bootstrap percentile interval.

    Pairs where either score is not finite (e.g. a sequence with no labelled tokens) are dropped.
    """
    r = np.asarray(ref_scores, dtype=np.float64).ravel()
    t = np.asarray(test_scores, dtype=np.float64).ravel()
    if r.shape != t.shape:
        raise ValueError(f"paired scores differ in length: {r.size} vs {t.size}")
    keep = np.isfinite(r) & np.isfinite(t)
    # Resampling the per-sample differences is resampling the same indices for both.
    diff = t[keep] - r[keep]
    n = diff.size
    if n == 0:
        raise ValueError("no paired scores")
    if n_boot < 1 or not 0 < alpha < 1:
        raise ValueError("need n_boot >= 1 and 0 < alpha < 1")
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    for sl in _row_chunks(n_boot, n):
        idx = rng.integers(0, n, (sl.stop - sl.start, n))
        means[sl] = diff[idx].mean(axis=1)
    low, high = np.percentile(means, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(diff.mean()), float(low), float(high)


def encode_scores(scores: np.ndarray) -> str:
    """Per-sample scores as compact text for the store (float16, base64): about 2 bytes a sample.

    Kept with every result so that any two results of one model can later be compared pairwise
    (e.g. the accuracy gained by keeping one layer FP32, with its interval).
    """
    return base64.b64encode(np.asarray(scores, dtype="<f2").tobytes()).decode("ascii")


def decode_scores(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f2").astype(np.float64)


# --- environment -------------------------------------------------------------------------------


def environment_info(threads: int) -> dict[str, Any]:
    """What the numbers were measured on: CPU, its SIMD flags, library versions, threads."""
    cpu, flags = _cpuinfo()
    return {
        "cpu": cpu or platform.processor() or platform.machine(),
        "cpu_flags": [f for f in _CPU_FLAGS if f in flags],
        "logical_cores": os.cpu_count(),
        "onnxruntime": ort.__version__,
        "onnx": onnx.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "threads": threads,
    }


@functools.cache
def _cpuinfo() -> tuple[str, frozenset[str]]:
    """CPU model name and flags from /proc/cpuinfo (empty where it is unavailable)."""
    name, flags = "", frozenset[str]()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return name, flags
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not name:
            name = value.strip()
        elif key == "flags" and not flags:
            flags = frozenset(value.split())
    return name, flags


def has_int8_dot_product() -> bool:
    """True where the CPU has VNNI, whose u8*s8 dot products cannot saturate in 16 bits."""
    _, flags = _cpuinfo()
    return bool(flags & {"avx512_vnni", "avx_vnni"})


def machine_fingerprint() -> dict[str, Any]:
    """What makes a measurement from this machine differ from another's: part of a result's key."""
    cpu, flags = _cpuinfo()
    return {"cpu": cpu, "cpu_flags": [f for f in _CPU_FLAGS if f in flags], "onnxruntime": ort.__version__}
