"""Plain-text tables and plain-word figures for the CLI (and anything else that prints)."""

from __future__ import annotations

import math
from typing import Any

from engine.latency_compare import comparable_latency, is_reference, ratio_to_fp32
from engine.types import LayerInfo, Precision


def format_table(headers: list[str], rows: list[list[Any]]) -> str:
    """A left-aligned text table."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def human_bytes(n: float) -> str:
    """Bytes in decimal units (kB = 1,000 bytes), as the dashboard shows them and goals are written:
    binary "KB" made a 2,560-byte layer read 2.50 KB here and 2.56 kB there."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return f"{n:.2f} GB"


def _shape(s: tuple[int | str, ...]) -> str:
    return "x".join(str(d) for d in s)


def layer_rows(layers: list[LayerInfo]) -> tuple[list[str], list[list[Any]]]:
    headers = ["layer", "op", "params", "MACs", "weights", "input", "output", "accepts"]
    rows = [
        [
            layer.name,
            layer.op_type,
            f"{layer.params:,}",
            f"{layer.macs:,}",
            human_bytes(layer.weight_bytes),
            ", ".join(_shape(s) for s in layer.input_shapes),
            ", ".join(_shape(s) for s in layer.output_shapes),
            " ".join(p.value for p in Precision if p in layer.accepts),
        ]
        for layer in layers
    ]
    return headers, rows


def ratio_words(base: float, new: float, more: str, less: str) -> str:
    """'2.1x smaller' / '1.3x larger' — the ratio always >= 1, with the word saying which way."""
    if not base or not new:
        return "n/a"
    r = base / new
    return f"{r:.2f}x {more}" if r >= 1 else f"{1 / r:.2f}x {less}"


def _latency(stats: dict[str, Any]) -> str:
    value, low, high = comparable_latency(stats)
    if is_reference(stats):
        # The FP32 plan's ratio is 1 by definition, so its interval has no width: show the scale as what
        # it is, and this run's own median with its interval beside it.
        text = (
            f"{value:.3f} ms (the FP32 scale; this run's median {float(stats['median_ms']):.3f} "
            f"[{float(stats['ci_low_ms']):.3f}-{float(stats['ci_high_ms']):.3f}])"
        )
    else:
        text = f"{value:.3f} ms [{low:.3f}-{high:.3f}]"
    if stats.get("converged") is False:  # the interval is wider than the target: the run or time cap hit
        text += f" (not converged after {stats.get('runs', '?')} runs)"
    return text


def _latency_change(base: dict[str, Any], new: dict[str, Any]) -> str:
    # Within the 95% interval of no change: the ratio is within noise, so say so instead of a ratio.
    slower, clear = ratio_to_fp32(new, base)
    ratio = ratio_words(1.0, slower, "faster", "slower")
    if not clear:
        return f"no clear difference (within its 95% interval; {ratio})"
    return ratio


def comparison_rows(base: dict[str, Any], result: dict[str, Any]) -> list[list[str]]:
    """Rows of FP32 vs plan: size, latency per batch (with 95% CI), accuracy delta with its CI, fidelity."""
    b, m = base.get("metrics", {}), result.get("metrics", {})
    rows = [
        [
            "size",
            human_bytes(b.get("size_bytes", 0)),
            human_bytes(m.get("size_bytes", 0)),
            ratio_words(b.get("size_bytes", 0), m.get("size_bytes", 0), "smaller", "larger"),
        ]
    ]
    for batch, stats in sorted(m.get("latency", {}).items(), key=lambda kv: int(kv[0])):
        base_stats = b.get("latency", {}).get(batch)
        rows.append(
            [
                f"latency b={batch} (median, 95% CI)",
                _latency(base_stats) if base_stats else "-",
                _latency(stats),
                _latency_change(base_stats, stats) if base_stats else "-",
            ]
        )
    if m.get("labelled"):
        rows.append(
            [
                "accuracy",
                f"{100 * m['fp32_accuracy']:.2f}%",
                f"{100 * m['accuracy']:.2f}%",
                f"{100 * m['accuracy_delta']:+.2f} pt (95% CI {100 * m['accuracy_delta_ci_low']:+.2f} "
                f"to {100 * m['accuracy_delta_ci_high']:+.2f}) on {m['eval_size']} samples",
            ]
        )
        if "perplexity" in m:
            rows.append(
                [
                    "perplexity",
                    f"{m['fp32_perplexity']:.3f}",
                    f"{m['perplexity']:.3f}",
                    f"x{m['perplexity_ratio']:.4f} (95% CI x{m['perplexity_ratio_ci_low']:.4f} "
                    f"to x{m['perplexity_ratio_ci_high']:.4f})"
                    if "perplexity_ratio" in m
                    else "point estimates",
                ]
            )
    else:
        rows.append(["accuracy", "", "unknown: no labelled data given", ""])
    sqnr = m.get("sqnr_db")
    if m.get("non_finite_outputs"):
        fidelity = "n/a: the model produced NaN or Inf outputs"
    else:
        fidelity = "identical" if sqnr is None else f"{sqnr:.1f} dB"
    rows.append(["output SQNR vs FP32", "", fidelity, ""])
    if m.get("agreement") is not None:
        rows.append(["top-1 agreement with FP32", "", f"{100 * m['agreement']:.2f}%", ""])
    return rows


RESULT_HEADERS = [
    "key", "model", "plan", "status", "size (bytes)", "latency b=1 (ms)", "accuracy (%)",
    "change (pt)", "change 95% CI (pt)", "SQNR (dB)", "measured (UTC)",
]  # fmt: skip


def _number(value: Any, spec: str, scale: float = 1.0) -> str:
    # A figure a result does not have (no labels, a failed run, identical outputs) is NaN or None here.
    if value is None or math.isnan(float(value)):
        return "-"
    return format(scale * float(value), spec)


def _points_interval(low: Any, high: Any) -> str:
    low_text, high_text = _number(low, "+.2f", 100), _number(high, "+.2f", 100)
    return "-" if "-" in (low_text, high_text) else f"{low_text} to {high_text}"


def result_rows(records: list[dict[str, Any]]) -> list[list[str]]:
    """Rows under RESULT_HEADERS of stored results (ResultStore.to_frame's records): accuracy in
    percent and its change in points, as `evaluate` prints them; sizes in whole bytes."""
    return [
        [
            str(r["key"])[:10],
            r["model_name"],
            r["plan_summary"],
            r["status"],
            _number(r["size_bytes"], ",.0f"),
            _number(r["latency_ms_b1"], ".3f"),
            _number(r["accuracy"], ".2f", 100),
            _number(r["accuracy_delta"], "+.2f", 100),
            _points_interval(r["accuracy_delta_ci_low"], r["accuracy_delta_ci_high"]),
            _number(r["sqnr_db"], ".1f"),
            str(r["created_at"])[:19].replace("T", " "),
        ]
        for r in records
    ]
