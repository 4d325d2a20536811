"""How plans' latencies are compared: by their ratio to FP32, timed alternately in one loop.

On this kind of shared host a model's absolute median moves by +-25% between runs minutes apart
(the host's state, not the model), while its ratio to the FP32 model timed in alternation moves by
a few percent. A result measured with `MeasureSettings.interleave_fp32` stores that ratio
(`vs_fp32`, with its 95% CI) and the FP32 model's median measured once for the model (`fp32_ms`).
Their product is the latency plots, the search and the recommendations compare: every plan of a
model on the same scale. Results stored before the ratio existed fall back to their absolute
median. This module reads record dicts only, so the store and the dashboard can use it without
importing ONNX Runtime.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def has_ratio(stats: Mapping[str, Any]) -> bool:
    return stats.get("vs_fp32") is not None and stats.get("fp32_ms") is not None


def is_reference(stats: Mapping[str, Any]) -> bool:
    """The FP32 model's own result: its ratio is 1 by definition (engine.evaluate, reference)."""
    return (
        has_ratio(stats)
        and stats["vs_fp32"] == stats.get("vs_fp32_ci_low") == stats.get("vs_fp32_ci_high") == 1.0
    )


def comparable_ms(stats: Mapping[str, Any]) -> float:
    """The value alone of comparable_latency (a record may lack the absolute median's CI)."""
    if not has_ratio(stats):
        return float(stats["median_ms"])
    return float(stats["vs_fp32"]) * float(stats["fp32_ms"])


def comparable_latency(stats: Mapping[str, Any]) -> tuple[float, float, float]:
    """(value, 95% CI low, high) in ms of one batch size's latency stats: vs_fp32 x fp32_ms when the
    result has them, else the absolute median and its CI."""
    if not has_ratio(stats):
        return float(stats["median_ms"]), float(stats["ci_low_ms"]), float(stats["ci_high_ms"])
    scale = float(stats["fp32_ms"])
    return (
        float(stats["vs_fp32"]) * scale,
        float(stats["vs_fp32_ci_low"]) * scale,
        float(stats["vs_fp32_ci_high"]) * scale,
    )


def latency_words(stats: Mapping[str, Any]) -> str:
    """The figure with its interval, and how it was obtained:
    '0.234 ms (95% CI 0.229–0.240 ms, from the ratio) = 0.45× FP32 (0.522 ms, timed once for the model) timed
    alternately with it, 70 runs; this run's own median 0.236 ms' or, for an older result, '0.236 ms
    (95% CI 0.229–0.248 ms), 70 runs'."""
    value, low, high = comparable_latency(stats)
    runs = stats.get("runs", "?")
    if is_reference(stats):
        return (
            f"{value:.3f} ms: the FP32 model, the scale every plan of this model is timed against (timed "
            f"once for the model); this run's own median {float(stats['median_ms']):.3f} ms, {runs} runs"
        )
    if not has_ratio(stats):
        return f"{value:.3f} ms (95% CI {low:.3f}–{high:.3f} ms), {runs} runs"
    # The interval is the ratio's: how surely plans of one model differ on its one scale. It does not
    # cover the host's drift in absolute time, which the FP32 scale, timed once, carries for all of them.
    return (
        f"{value:.3f} ms (95% CI {low:.3f}–{high:.3f} ms, from the ratio) = "
        f"{float(stats['vs_fp32']):.2f}× FP32 ({float(stats['fp32_ms']):.3f} ms, timed once for the model) "
        f"timed alternately with it, {runs} runs; this run's own median {float(stats['median_ms']):.3f} ms"
    )


def ratio_excludes_one(stats: Mapping[str, Any]) -> bool:
    """Whether a result timed against FP32 (has_ratio) clearly differs from it: its ratio's 95% CI
    leaves out 1."""
    return not float(stats["vs_fp32_ci_low"]) <= 1.0 <= float(stats["vs_fp32_ci_high"])


def ratio_to_fp32(stats: Mapping[str, Any], fp32_stats: Mapping[str, Any]) -> tuple[float, bool]:
    """(this latency over FP32's, whether they clearly differ): the paired ratio timed alternately
    with FP32 and whether its 95% CI excludes 1, the figure "= N× FP32" gives; for an older result
    without one, the medians' quotient and whether their 95% intervals are apart."""
    if has_ratio(stats):
        return float(stats["vs_fp32"]), ratio_excludes_one(stats)
    (new, new_lo, new_hi), (old, old_lo, old_hi) = comparable_latency(stats), comparable_latency(fp32_stats)
    return new / old, new_lo > old_hi or old_lo > new_hi
