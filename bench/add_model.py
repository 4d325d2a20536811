"""How soon after an upload does a user see what INT8 does to size and speed? (target: a minute)

Side by side in one run, each from an empty store with a real worker pool (as the dashboard runs):

* upload: `add_model` of a bare .onnx file with no data (digits_resnet's file, 1-5 M parameters,
  as a user would bring it: the engine knows nothing of it), then the FP32 baseline and the INT8
  preset on its synthetic inputs: the user's first size and latency comparison;
* sample: the same two evaluations of the bundled sample by name (its data already in place).

The ratio is what accepting an upload costs on top of measuring it (the upload is measured on
64 synthetic samples, the sample on its evaluation split: the work differs, the user's wait is
what is compared).

Run: .venv/bin/python bench/add_model.py [SAMPLE]   (default: digits_resnet)
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.api import Engine  # noqa: E402
from engine.datasets import SAMPLES_DIR  # noqa: E402
from engine.jobs import WorkerPool  # noqa: E402
from engine.latency_compare import comparable_ms  # noqa: E402
from engine.store import ResultStore  # noqa: E402
from engine.types import Plan, Precision  # noqa: E402


def first_comparison(engine: Engine, name: str) -> tuple[float, dict, dict]:
    start = time.perf_counter()
    bundle = engine.model(name)
    base = engine.baseline(bundle)
    int8 = engine.evaluate(bundle, Plan(default=Precision.INT8))
    return time.perf_counter() - start, base, int8


def main() -> None:
    sample = sys.argv[1] if len(sys.argv) > 1 else "digits_resnet"
    work = Path(tempfile.mkdtemp(prefix="bench-add-model-"))
    upload = work / "upload" / "their_model.onnx"
    upload.parent.mkdir()
    shutil.copyfile(SAMPLES_DIR / sample / "model.onnx", upload)
    with WorkerPool.connect() as pool:
        # Warm the workers' imports once, so neither side pays for the pool's first task.
        warm = Engine(store=ResultStore(work / "warm.sqlite"), pool=pool, home=work / "warm")
        warm.layers(warm.model(sample))
        up = Engine(store=ResultStore(work / "up.sqlite"), pool=pool, home=work / "up")
        t0 = time.perf_counter()
        added = up.add_model(upload)
        add_s = time.perf_counter() - t0
        eval_s, base, int8 = first_comparison(up, added.name)
        upload_s = add_s + eval_s
        ref = Engine(store=ResultStore(work / "ref.sqlite"), pool=pool, home=work / "ref")
        sample_s, _, _ = first_comparison(ref, sample)
    for r in (base, int8):
        assert r["status"] == "ok", r["error"]
    b, q = base["metrics"], int8["metrics"]
    print(
        f"{sample} uploaded without data: add {add_s:.1f} s, FP32 + INT8 measured {eval_s:.1f} s -> "
        f"{upload_s:.1f} s to the first comparison (size {b['size_bytes'] / 1e6:.2f} -> "
        f"{q['size_bytes'] / 1e6:.2f} MB, batch-1 latency {comparable_ms(b['latency']['1']):.3f} -> "
        f"{comparable_ms(q['latency']['1']):.3f} ms, SQNR {q['sqnr_db']:.1f} dB on synthetic inputs)"
    )
    print(f"the bundled sample by name, same two evaluations: {sample_s:.1f} s")
    shutil.rmtree(work, ignore_errors=True)
    print(
        f"RESULT upload_to_first_comparison_s={upload_s:.1f} target_s=60 "
        f"overhead_vs_sample={upload_s / sample_s:.2f}"
    )


if __name__ == "__main__":
    main()
