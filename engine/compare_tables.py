"""Tables that put results side by side (Compare, and the CLI's comparisons): metrics with their
change against the first result and its interval, the layers whose precision differs, per-class
accuracy. Pure pandas over stored records: what the dashboard shows, tested without it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from engine.charts import batch_latency, finite_number, perplexity_text, size_unit
from engine.latency_compare import comparable_latency, is_reference
from engine.types import Precision


def compare_table(records: list[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per result: metrics, and their change against the first result given."""
    rows = []
    for r in records:
        m = r.get("metrics") or {}
        lat = batch_latency(m)
        latency = comparable_latency(lat) if lat else None
        env = r.get("environment") or {}
        rows.append(
            {
                "plan": r.get("plan_summary"),
                "model": r.get("model_name"),
                "size": float(m.get("size_bytes") or np.nan),
                "latency_ms_b1": latency[0] if latency else np.nan,
                # The FP32 plan is the scale the others are timed against: no interval of its own there.
                "latency_ci_ms": (
                    "the FP32 scale"
                    if lat and is_reference(lat)
                    else f"{latency[1]:.3f}–{latency[2]:.3f}"
                    if latency
                    else ""
                ),
                "accuracy_pct": float(m["accuracy"]) * 100 if finite_number(m.get("accuracy")) else np.nan,
                "accuracy_change_pp": _pp(m.get("accuracy_delta")),
                "accuracy_change_ci_pp": (
                    f"{m['accuracy_delta_ci_low'] * 100:+.2f} to {m['accuracy_delta_ci_high'] * 100:+.2f}"
                    if finite_number(m.get("accuracy_delta_ci_low"))
                    and finite_number(m.get("accuracy_delta_ci_high"))
                    else ""
                ),
                # Fidelity to FP32, measured with or without labels (a model without them has nothing else).
                "agreement_pct": _pp(m.get("agreement")),
                "sqnr_db": _sqnr_text(m),
                "kl_divergence": float(m["kl_divergence"])
                if finite_number(m.get("kl_divergence"))
                else np.nan,
                "measured_on": f"{env.get('cpu', '?')}, ONNX Runtime {env.get('onnxruntime', '?')}",
                "key": r.get("key"),
            }
        )
    table = pd.DataFrame(rows)
    # One unit for the column, the one its largest model reads best in: a 9 kB model read 0.009 MB.
    unit, per = size_unit(table["size"].max() if len(table) else np.nan)
    table["size"] = table["size"] / per
    table.attrs["size_unit"] = unit
    if len(table):
        first = table.iloc[0]
        table["size_vs_first_pct"] = (table["size"] / first["size"] - 1) * 100
        table["latency_vs_first_pct"] = (table["latency_ms_b1"] / first["latency_ms_b1"] - 1) * 100
        table["latency_vs_first_ci_pct"] = [_latency_vs_first_ci(r, records[0]) for r in records]
        table["accuracy_vs_first_pp"] = table["accuracy_pct"] - first["accuracy_pct"]
        table["accuracy_vs_first_ci_pp"] = [_accuracy_vs_first_ci(r, records[0]) for r in records]
    if any(finite_number((r.get("metrics") or {}).get("perplexity")) for r in records):
        table["perplexity"] = [perplexity_text(r.get("metrics") or {}) for r in records]
    return table


def _accuracy_vs_first_ci(record: Mapping[str, Any], first: Mapping[str, Any]) -> str:
    """The accuracy change against the first result, paired example by example over the same eval set
    (each result keeps its per-example correctness), as a 95% interval in points; "" where it cannot be."""
    a, b = ((x.get("metrics") or {}).get("per_sample_correct") for x in (first, record))
    if record is first or not a or not b:
        return ""
    from engine.measure import bootstrap_delta_ci, decode_scores  # ONNX Runtime only once a table needs it

    try:
        _, low, high = bootstrap_delta_ci(decode_scores(a), decode_scores(b), n_boot=1000, seed=0)
    except ValueError:  # another eval set (lengths differ): not paired
        return ""
    return f"{100 * low:+.2f} to {100 * high:+.2f}"


def _latency_vs_first_ci(record: Mapping[str, Any], first: Mapping[str, Any]) -> str:
    """Latency against the first result's, as a 95% interval in % from each one's interval on the
    model's FP32 scale: wide (the two were not timed against each other), so a change it holds 0 in
    is no clear change."""
    a, b = batch_latency(first.get("metrics") or {}), batch_latency(record.get("metrics") or {})
    if record is first or not a or not b:
        return ""
    (_, a_lo, a_hi), (_, b_lo, b_hi) = comparable_latency(a), comparable_latency(b)
    return f"{100 * (b_lo / a_hi - 1):+.1f} to {100 * (b_hi / a_lo - 1):+.1f}"


def _pp(v: Any) -> float:
    return v * 100 if finite_number(v) else np.nan


def _sqnr_text(metrics: Mapping[str, Any]) -> str:
    # Text, not a number: the store has None both for outputs identical to FP32's (an infinite SQNR)
    # and for outputs with NaN or Inf (no SQNR at all), and the two must not read alike.
    sqnr = metrics.get("sqnr_db")
    if finite_number(sqnr):
        return f"{sqnr:.1f}"
    if metrics.get("non_finite_outputs"):
        return "n/a (NaN or Inf outputs)"
    return "∞ (same outputs as FP32)" if "sqnr_db" in metrics else ""


def layer_differences(records: list[Mapping[str, Any]]) -> pd.DataFrame:
    """Layers whose precision differs between the results: one row per layer, one column per result."""
    plans = [((r.get("plan") or {}).get("layers") or {}) for r in records]
    names = list(dict.fromkeys(n for p in plans for n in p))
    columns = _unique_labels(records)
    rows = []
    for n in names:
        values = [Precision(p.get(n, "fp32")).label for p in plans]
        if len(set(values)) > 1:
            rows.append({"layer": n, **dict(zip(columns, values, strict=True))})
    return pd.DataFrame(rows, columns=["layer", *columns])


def per_class_table(records: list[Mapping[str, Any]], classes: list[str] | None = None) -> pd.DataFrame:
    """Per-class accuracy (%) of each result plus FP32, where the task has classes; empty otherwise."""
    first = next((r for r in records if (r.get("metrics") or {}).get("per_class_accuracy")), None)
    if first is None:
        return pd.DataFrame()
    n = len(first["metrics"]["per_class_accuracy"])
    table = pd.DataFrame({"class": classes if classes and len(classes) == n else [str(i) for i in range(n)]})
    fp32 = first["metrics"].get("fp32_per_class_accuracy")
    if fp32:
        # A class absent from the evaluation data has no accuracy (None): NaN, shown as blank.
        table["FP32"] = np.asarray(fp32, dtype=float) * 100
    for label, r in zip(_unique_labels(records), records, strict=True):
        pc = (r.get("metrics") or {}).get("per_class_accuracy")
        if pc and len(pc) == n:
            table[label] = np.asarray(pc, dtype=float) * 100
    return table


def _unique_labels(records: list[Mapping[str, Any]]) -> list[str]:
    # Two plans can share a summary ("5 INT8" in different layers): suffix the key to keep columns apart.
    labels = []
    for i, r in enumerate(records, start=1):
        labels.append(f"#{i} {r.get('plan_summary') or ''} ({str(r.get('key', ''))[:6]})")
    return labels
