"""How fast the Explore page re-renders with 1,000 results in the store, next to 10 results.

The results are SYNTHETIC: records with plausible, randomly drawn metrics written through
ResultStore.put (no model is quantized), because this measures the dashboard, not the engine.
Each figure is the time from a user action in Chromium (switching the model in the sidebar, or
toggling the "% change vs FP32" filter) until all three Pareto plots show the new data, measured
with Playwright against a real `streamlit run`. Median of several repeats.

    .venv/bin/python bench/ui_latency.py
"""

from __future__ import annotations

import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.api import Engine  # noqa: E402
from engine.store import ResultStore  # noqa: E402
from engine.types import Precision  # noqa: E402
from tests.e2e.conftest import CHROMIUM_ARGS, start_server  # noqa: E402
from tests.e2e.test_dashboard_flow import choose  # noqa: E402

MODELS = ("digits_cnn", "digits_resnet")
REPEATS = 5
CHOICES = [p.value for p in Precision]


def synthetic_record(
    rng: random.Random, model: str, layers: list[str], i: int, baseline: bool
) -> dict[str, Any]:
    """One plausible-looking result (labelled synthetic in its source and environment)."""
    plan = {n: "fp32" if baseline else rng.choice(CHOICES) for n in layers}
    fp32_size, fp32_lat, fp32_acc = 360_000.0 if model == "digits_cnn" else 11_000_000.0, 1.0, 0.985
    bits = sum(Precision(p).weight_bits for p in plan.values()) / (32 * len(plan))
    size = fp32_size * (0.05 + 0.95 * bits)
    lat = fp32_lat * (1 if baseline else rng.uniform(0.4, 2.5))
    delta = 0.0 if baseline else -abs(rng.gauss(0, 0.02)) * (1 - bits)
    counts: dict[str, int] = {}
    for p in plan.values():
        counts[Precision(p).label] = counts.get(Precision(p).label, 0) + 1
    return {
        "key": f"synthetic-{model}-{i:05d}",
        "model_name": model,
        "status": "ok",
        "source": "synthetic (bench/ui_latency.py)",
        "plan": {"default": "fp32", "layers": plan},
        "plan_summary": " · ".join(f"{n} {p}" for p, n in sorted(counts.items(), key=lambda kv: -kv[1])),
        "metrics": {
            "size_bytes": size,
            "fp32_size_bytes": fp32_size,
            "accuracy": fp32_acc + delta,
            "fp32_accuracy": fp32_acc,
            "accuracy_delta": delta,
            "accuracy_delta_ci_low": delta - 0.01,
            "accuracy_delta_ci_high": delta + 0.01,
            "latency": {
                "1": {
                    "median_ms": lat,
                    "ci_low_ms": lat * 0.95,
                    "ci_high_ms": lat * 1.05,
                    "runs": 20,
                    "threads": 1,
                }
            },
            "per_class_accuracy": [fp32_acc + delta] * 10,
        },
        "environment": {"cpu": "synthetic", "onnxruntime": "synthetic", "threads": 1},
    }


def fill(home: Path, per_model: int, layer_names: dict[str, list[str]]) -> None:
    rng = random.Random(0)
    with ResultStore(home / "results.sqlite") as store:
        for model in MODELS:
            for i in range(per_model):
                store.put(synthetic_record(rng, model, layer_names[model], i, baseline=i == 0))


_PLOTS_SHOW = """([prefix, relative]) => {
    // The three Pareto plots, whether drawn as one figure each or as the panels (x axes x, x2, x3) of one.
    const panels = [];
    for (const gd of document.querySelectorAll('.js-plotly-plot')) {
        if (!gd.data || !gd.layout) return false;
        for (const name of Object.keys(gd.layout).filter(k => /^xaxis[0-9]*$/.test(k))) {
            const id = 'x' + name.slice(5);
            panels.push({axis: gd.layout[name], traces: gd.data.filter(t => (t.xaxis || 'x') === id)});
        }
    }
    if (panels.length !== 3) return false;
    return panels.every(p => p.traces.some(t => (t.customdata || []).some(k => String(k).startsWith(prefix)))
        && (relative === null || ((p.axis.title || {}).text || '').includes('change') === relative));
}"""


def timed(page: Any, action: Any, prefix: str, relative: bool | None) -> float:
    t = time.perf_counter()
    action()
    page.wait_for_function(_PLOTS_SHOW, arg=[prefix, relative], polling="raf", timeout=60_000)
    return time.perf_counter() - t


def measure(browser: Any, per_model: int, layer_names: dict[str, list[str]]) -> tuple[float, float]:
    """Median seconds to re-render after (model switch, filter toggle)."""
    home = Path(tempfile.mkdtemp(prefix="qd-bench-"))
    fill(home, per_model, layer_names)
    server = start_server(home, {"QUANTDASH_QUICK": "1"})
    try:
        page = browser.new_page(viewport={"width": 1500, "height": 1100})
        page.goto(f"{server.url}/explore?model={MODELS[0]}")
        page.wait_for_function(_PLOTS_SHOW, arg=[f"synthetic-{MODELS[0]}", None], timeout=180_000)
        switches, toggles = [], []
        for r in range(REPEATS + 1):  # the first round warms the caches and is not counted
            a, b = (MODELS[1], MODELS[0])
            s1 = timed(page, lambda m=a: choose(page, "qd_model", m), f"synthetic-{a}", None)
            s2 = timed(page, lambda m=b: choose(page, "qd_model", m), f"synthetic-{b}", None)
            t1 = timed(
                page, lambda: page.locator(".st-key-qd_explore_relative label").click(), "synthetic", True
            )
            t2 = timed(
                page, lambda: page.locator(".st-key-qd_explore_relative label").click(), "synthetic", False
            )
            if r:
                switches += [s1, s2]
                toggles += [t1, t2]
        page.close()
        return statistics.median(switches), statistics.median(toggles)
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)


def main() -> None:
    probe = Path(tempfile.mkdtemp(prefix="qd-bench-probe-"))
    engine = Engine(store=ResultStore(probe / "r.sqlite"), home=probe)
    layer_names = {m: [x.name for x in engine.layers(engine.model(m))] for m in MODELS}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS)
        small = measure(browser, 5, layer_names)
        large = measure(browser, 500, layer_names)
        browser.close()
    shutil.rmtree(probe, ignore_errors=True)
    print("Explore page re-render, seconds (median of", REPEATS * 2, "actions each; SYNTHETIC results):")
    print(f"{'results':>8} {'switch model':>13} {'toggle filter':>14}")
    print(f"{10:>8} {small[0]:>13.3f} {small[1]:>14.3f}")
    print(f"{1000:>8} {large[0]:>13.3f} {large[1]:>14.3f}")
    print(f"ratio 1000/10: switch {large[0] / small[0]:.2f}×, filter {large[1] / small[1]:.2f}×")
    print(f"RESULT rerender_s_1000={max(large):.3f} rerender_s_10={max(small):.3f}")


if __name__ == "__main__":
    main()
