"""Which INT8 format is fastest *and correct* on this CPU? Ranked by measurement, side by side.

On digits_resnet (conv-heavy) at batch 1, one thread: FP32 against four INT8 variants built
with onnxruntime.quantization from the same MinMax ranges:
  * qdq-u8s8-reduce (the engine's default without VNNI): uint8 activations, int8 per-channel
    7-bit weights;
  * qdq-u8s8-full: the same with full 8-bit weights (saturates u8*s8 kernels without VNNI);
  * qdq-s8s8: int8 activations and weights;
  * dynamic: int8 weights, activations quantized at run time (ConvInteger).
Latency: rounds in which every model is timed in turn, each run paired with one of FP32 (the
machine is noisy; the ratio holds when its speed changes); SQNR of the final output against
FP32 on 256 evaluation images.

Run: .venv/bin/python bench/int8_formats.py
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine import measure  # noqa: E402
from engine.datasets import load_sample  # noqa: E402
from engine.evaluate import ModelCache, quiet_ort_logging  # noqa: E402
from engine.types import CalibrationMethod  # noqa: E402


def build_variants(prepared: Path, ranges: Path, work: Path) -> dict[str, bytes]:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    out: dict[str, bytes] = {"fp32": prepared.read_bytes()}
    static = {
        "qdq-u8s8-reduce": (QuantType.QUInt8, True),
        "qdq-u8s8-full": (QuantType.QUInt8, False),
        "qdq-s8s8": (QuantType.QInt8, False),
    }
    for name, (act, reduce) in static.items():
        path = work / f"{name}.onnx"
        quantize_static(
            str(prepared), str(path), None, quant_format=QuantFormat.QDQ, per_channel=True,
            reduce_range=reduce, activation_type=act, weight_type=QuantType.QInt8,
            calibration_cache_path=str(ranges), extra_options={"QDQKeepRemovableActivations": True},
        )  # fmt: skip
        out[name] = path.read_bytes()
    path = work / "dynamic.onnx"
    quantize_dynamic(
        str(prepared), str(path), per_channel=False, reduce_range=True, weight_type=QuantType.QInt8
    )
    out["dynamic"] = path.read_bytes()
    return out


def main() -> None:
    bundle = load_sample("digits_resnet")
    work = Path(tempfile.mkdtemp(prefix="bench-int8-"))
    cache = ModelCache(work / "cache", bundle.model_hash)
    prepared = cache.prepared(bundle.model_bytes)
    ranges = cache.calibration(
        bundle.model_bytes, bundle.calibration, bundle.data_hash, CalibrationMethod.MINMAX
    )
    with quiet_ort_logging():
        variants = build_variants(prepared, ranges, work)

    inputs = {k: v[:256] for k, v in bundle.eval_set.inputs.items()}
    ref = measure.make_session(variants["fp32"]).run(None, inputs)[0]
    sqnr = {}
    for name, data in variants.items():
        sqnr[name] = measure.sqnr_db(ref, measure.make_session(data).run(None, inputs)[0])
    sessions = {name: measure.make_session(data, 1) for name, data in variants.items()}
    feeds = measure.make_feeds(bundle.eval_set.inputs, 1)
    medians: dict[str, list[float]] = {name: [] for name in variants}
    ratios: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(5):
        for name, session in sessions.items():
            # Each run paired with one of FP32 (engine/latency_compare.py): the ratio holds when the
            # host's speed changes between one format's timing and the next.
            stats = measure.measure_latency(
                session, feeds, threads=1, min_runs=50, max_runs=200, fp32=sessions["fp32"]
            )
            medians[name].append(stats.median_ms)
            ratios[name].append(stats.vs_fp32 or float("nan"))
    env = measure.environment_info(1)
    flags = " ".join(env["cpu_flags"])
    print(f"digits_resnet, batch 1, 1 thread, {env['cpu']} (flags: {flags}), ORT {env['onnxruntime']}")
    speed = {}
    for name in variants:
        med = statistics.median(medians[name])
        speed[name] = 1 / statistics.median(ratios[name])
        print(
            f"  {name:16s} {med:7.3f} ms  {speed[name]:5.2f}x FP32 (timed alternately)   output SQNR "
            f"{'inf' if name == 'fp32' else f'{sqnr[name]:5.1f}'} dB"
        )
    print(
        f"RESULT default_speedup={speed['qdq-u8s8-reduce']:.2f} "
        f"u8s8_full_speedup={speed['qdq-u8s8-full']:.2f} "
        f"s8s8_speedup={speed['qdq-s8s8']:.2f} dynamic_speedup={speed['dynamic']:.2f} "
        f"default_sqnr={sqnr['qdq-u8s8-reduce']:.1f} u8s8_full_sqnr={sqnr['qdq-u8s8-full']:.1f}"
    )


if __name__ == "__main__":
    main()
