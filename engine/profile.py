"""Each layer's share of inference time, from ONNX Runtime's per-node profiler.

Profiled at ORT_ENABLE_EXTENDED: every fusion the full level does except the NCHWc layout
transform, which renames the nodes after their output tensors so they can no longer be traced
back to the model's layers. Fused nodes (Conv+Relu -> FusedConv, QDQ -> QLinearConv) keep the
name of the layer they came from; INT4 adds a "_Q4" suffix. Time in nodes that are no layer
(activations, adds, casts, quantize/dequantize at precision boundaries) is reported as "other".
"""

from __future__ import annotations

import collections
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from engine.evaluate import build_plan_from_json

OTHER = "(other ops)"


def _owner(node_name: str, layer_names: Sequence[str]) -> str:
    """The layer a profiled node comes from: its own name, or its name with a suffix the
    optimizer adds ("/conv/Conv_Q4", "fused /fc/Gemm/MatMulAddFusion")."""
    name = node_name.removeprefix("fused ")
    for layer in layer_names:
        if name == layer or name.startswith((layer + "_", layer + "/")):
            return layer
    return OTHER


def profile_task(
    model_bytes: bytes, feeds: dict[str, np.ndarray], layer_names: list[str], runs: int, threads: int
) -> dict[str, Any]:
    """Worker task: mean kernel time per run (microseconds) of each layer, and of the other ops."""
    with tempfile.TemporaryDirectory(prefix="profile-") as tmp:
        options = ort.SessionOptions()
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "profile")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
        for _ in range(3):  # warm-up runs are profiled too: they are dropped below
            session.run(None, feeds)
        for _ in range(runs):
            session.run(None, feeds)
        events = json.loads(Path(session.end_profiling()).read_text())
    # Keep the last `runs` model runs: each run is one "model_run" event; node events inside it.
    model_runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    warm_up_end = model_runs[-runs]["ts"] if len(model_runs) >= runs else 0
    totals: dict[str, float] = collections.defaultdict(float)
    for event in events:
        name = event.get("name", "")
        if event.get("cat") != "Node" or not name.endswith("_kernel_time") or event["ts"] < warm_up_end:
            continue
        totals[_owner(name.removesuffix("_kernel_time"), layer_names)] += float(event["dur"])
    return {
        "us_per_run": {k: v / runs for k, v in totals.items()},
        "runs": runs,
        "threads": threads,
        "ort_version": ort.__version__,
    }


def profile_plan_task(
    model_bytes: bytes,
    calibration: dict[str, np.ndarray],
    data_hash: str,
    plan_json: dict[str, Any],
    settings_json: dict[str, Any],
    cache_dir: str,
    feeds: dict[str, np.ndarray],
    layer_names: list[str],
    runs: int,
) -> dict[str, Any]:
    """Worker task: build a plan's model and profile it (profile_task). The plan is not evaluated:
    a profile needs only the model, and evaluating it would cost a pass over the evaluation set."""
    settings, _, built = build_plan_from_json(
        model_bytes, calibration, data_hash, plan_json, settings_json, cache_dir
    )
    return profile_task(built.model_bytes, feeds, layer_names, runs, settings.threads)
