"""What the result plots show, computed from result tables as pure functions.

As in optuna's visualization module, each chart is two steps: ``*_info(frame, ...)`` here computes a
frozen dataclass holding everything the figure shows (tests compare these), and a figure function
(engine.pareto_figure) only draws it. The frame is ``ResultStore.to_frame()``, optionally with an
``environment`` column. Also here: the derived columns (changes vs FP32, hover texts) and the
filters by model and precision that every page applies. Tables of results side by side are
engine.compare_tables.
"""

from __future__ import annotations

import collections
import math
import textwrap
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeGuard

import numpy as np
import pandas as pd

from engine.latency_compare import (
    has_ratio,
    latency_words,
    ratio_excludes_one,
)
from engine.pareto import non_dominated


@dataclass(frozen=True)
class Objective:
    """One plotted metric: its absolute column, its relative (vs FP32) column, and its direction."""

    name: str
    column: str
    relative_column: str
    title: str
    relative_title: str
    maximize: bool


OBJECTIVES: dict[str, Objective] = {
    "accuracy": Objective(
        "accuracy", "accuracy_pct", "accuracy_change_pp", "Accuracy (%)",
        "Accuracy change vs FP32 (percentage points)", True,
    ),
    "size": Objective(
        "size", "size_mb", "size_change_pct", "Model size (MB)", "Size change vs FP32 (%)", False,
    ),
    "latency": Objective(
        "latency", "latency_ms_b1", "latency_change_pct", "Latency, batch 1 (ms, median, timed against FP32)",
        "Latency change vs FP32 (%)", False,
    ),
    # What stands in for accuracy when a model has no labels: how often a plan's top output is FP32's.
    "agreement": Objective(
        "agreement", "agreement_pct", "agreement_change_pp", "Top-1 agreement with FP32 (%)",
        "Top-1 agreement change vs FP32 (percentage points)", True,
    ),
    # ... and when its output is one value per example (no classes to agree on): output SQNR, which
    # is already relative to FP32 (FP32 itself has none: its outputs are its own).
    "sqnr": Objective(
        "sqnr", "sqnr_db", "sqnr_db", "Output SQNR vs FP32 (dB)", "Output SQNR vs FP32 (dB)", True,
    ),
}  # fmt: skip


def panel_title(x: str, y: str) -> str:
    """A Pareto panel's title from its objectives: 'Accuracy vs size', 'SQNR vs latency'."""
    return f"{'SQNR' if y == 'sqnr' else y.capitalize()} vs {x}"


def precision_mix(plan: Mapping[str, Any] | None) -> tuple[str, ...]:
    """The precisions a stored plan uses (every layer is spelled out in stored plans), sorted."""
    if not plan:
        return ()
    used = set((plan.get("layers") or {}).values())
    if not plan.get("layers"):
        used.add(plan.get("default", "fp32"))
    return tuple(sorted(used))


def is_baseline(plan: Mapping[str, Any] | None) -> bool:
    """True for the all-FP32 plan."""
    return precision_mix(plan) in ((), ("fp32",))


def distinct_summaries(summaries: Iterable[Any], keys: Iterable[Any]) -> list[str]:
    """Plan summaries for a table's rows, the result key's first 6 characters added where two rows
    share one ("3 INT4 · 1 FP32 · 1 INT8" with INT8 in different layers), as Compare names plans."""
    pairs = [(str(s or ""), str(k or "")) for s, k in zip(summaries, keys, strict=True)]
    counts = collections.Counter(s for s, _ in pairs)
    return [f"{s} ({k[:6]})" if counts[s] > 1 else s for s, k in pairs]


def model_identity(name: Any, model_hash: Any, data_hash: Any) -> str:
    """One model as its results know it: name, network and data. A model added under a removed
    one's name shares the name only, so its results must not be mixed with the old ones."""
    return f"{name}@{model_hash}/{data_hash}"


def filter_results(
    frame: pd.DataFrame, models: Iterable[str] | None = None, precisions: Iterable[str] | None = None
) -> pd.DataFrame:
    """Rows of the given models whose plans use only the given precisions (the FP32 baseline always stays).

    A model is given by name (every result stored under it) or by ``model_identity`` (the results of
    that network and data, whatever name they were stored under); a name holds no "@", so the two
    cannot be confused. Results are keyed by content, so the same files added under a second name
    (or again after a removal) are served the results stored under the first: those rows are
    returned under the name asked for, else that model's pages would never show its own plans.
    """
    keep = pd.Series(True, index=frame.index)
    owner = pd.Series(np.nan, index=frame.index, dtype=object)  # the identity a row is shown under
    if models is not None:
        wanted = list(models)
        by_network: dict[str, str] = {}
        for identity in wanted:
            if "@" in identity:  # two models of the same files: their rows go to the first asked for
                by_network.setdefault(_network(identity), identity)
        owner = _identities(frame).map(lambda i: by_network.get(_network(i)))
        keep &= frame["model_name"].isin(wanted) | owner.notna()
    if precisions is not None:
        allowed = set(precisions) | {"fp32"}
        keep &= frame["plan"].map(lambda p: set(precision_mix(p)) <= allowed)
    return _shown_under(frame[keep], owner[keep])


def _network(identity: str) -> str:
    """What results of a model identity share: its network and data (the part after the name)."""
    return identity.split("@", 1)[-1]


def _shown_under(frame: pd.DataFrame, owner: pd.Series) -> pd.DataFrame:
    """Rows stored under another name than the identity they were asked by, renamed to it."""
    moved = owner.notna() & (_identities(frame) != owner)
    if not moved.any():
        return frame
    out = frame.copy()
    out.loc[moved, "model_name"] = owner[moved].map(lambda i: i.split("@", 1)[0])
    if "model_id" in out.columns:
        out.loc[moved, "model_id"] = owner[moved]
    if "hover" in out.columns:  # it names the model
        out.loc[moved, "hover"] = [hover_text(r) for r in out.loc[moved].to_dict("records")]
    return out


def batch_latency(metrics: Mapping[str, Any] | None, batch: str = "1") -> Mapping[str, Any]:
    """One batch size's latency stats of a result's metrics ({} where it has none)."""
    lat = (metrics or {}).get("latency") or {}
    return lat.get(batch) or {}


def _identities(frame: pd.DataFrame) -> pd.Series:
    if "model_id" in frame.columns:  # with_derived computed them once
        return frame["model_id"]
    columns = (frame[c] for c in ("model_name", "model_hash", "data_hash"))
    return pd.Series(
        [model_identity(*v) for v in zip(*columns, strict=True)], index=frame.index, dtype=object
    )


def with_derived(frame: pd.DataFrame) -> pd.DataFrame:
    """Add display and relative-to-FP32 columns; relative latency needs the model's FP32 result."""
    out = frame.copy()
    out["model_id"] = _identities(out)
    out["size_mb"] = out["size_bytes"] / 1e6
    out["size_kb"] = out["size_bytes"] / 1e3
    out["accuracy_pct"] = out["accuracy"] * 100
    fp32_size = out["metrics"].map(lambda m: (m or {}).get("fp32_size_bytes", np.nan)).astype(float)
    out["size_change_pct"] = (out["size_bytes"] / fp32_size - 1) * 100
    out["accuracy_change_pp"] = out["accuracy_delta"] * 100
    out["accuracy_change_pp_low"] = out["accuracy_delta_ci_low"] * 100
    out["accuracy_change_pp_high"] = out["accuracy_delta_ci_high"] * 100
    out["agreement_pct"] = out["agreement"] * 100
    out["agreement_change_pp"] = out["agreement_pct"] - 100  # FP32 agrees with itself on every input
    out["baseline"] = out["plan"].map(is_baseline).astype(bool)
    # The latest FP32 result of each model (its identity: name, network and data) is its latency reference.
    base = out[out["baseline"]].sort_values("created_at").groupby("model_id")["latency_ms_b1"].last()
    ref = out["model_id"].map(base).astype(float)
    # A plan timed alternately with FP32 compares by that paired ratio, what its "= N× FP32" says;
    # the FP32 plan is the reference itself; older results by their median over the FP32 result's.
    paired = out["metrics"].map(lambda m: _paired_ratio(batch_latency(m))).astype(float)
    slower = paired.where(paired.notna(), out["latency_ms_b1"] / ref).where(~out["baseline"], 1.0)
    out["latency_change_pct"] = (slower - 1) * 100
    # Only a paired ratio has an interval against FP32 (an older result's median over FP32's has none).
    for end in ("low", "high"):
        ratio = out["metrics"].map(lambda m, e=end: _ratio_end(batch_latency(m), e)).astype(float)
        out[f"latency_change_pct_{end}"] = ((ratio - 1) * 100).where(~out["baseline"], np.nan)
    out["speedup"] = 1 / slower
    out["hover"] = [hover_text(r) for r in out.to_dict("records")]
    return out


HOVER_WIDTH = 90  # characters a hover line holds before it is wrapped


def _paired_ratio(stats: Mapping[str, Any]) -> float:
    return float(stats["vs_fp32"]) if has_ratio(stats) else np.nan


def _ratio_end(stats: Mapping[str, Any], end: str) -> float:
    value = stats.get(f"vs_fp32_ci_{end}") if has_ratio(stats) else None
    return float(value) if value is not None else np.nan


def size_unit(nbytes: float) -> tuple[str, float]:
    """The unit sizes up to `nbytes` read best in, and its bytes: MB from 100 kB on, kB below."""
    return ("kB", 1e3) if nbytes < 1e5 else ("MB", 1e6)


def _fmt_size(nbytes: float) -> str:
    unit, per = size_unit(nbytes)
    return f"{nbytes / per:.3f} MB" if unit == "MB" else f"{nbytes / per:.1f} kB"


def hover_text(row: Mapping[str, Any]) -> str:
    """What a point says about itself: plan summary, size, latency with its interval and machine, accuracy."""
    m = row.get("metrics") or {}
    lines = [f"<b>{row.get('plan_summary') or '?'}</b> · {row.get('model_name')}"]
    size, fp32 = row.get("size_bytes"), m.get("fp32_size_bytes")
    if finite_number(size):
        ratio = ""
        if finite_number(fp32) and size and not row.get("baseline"):
            r = fp32 / size
            ratio = f" ({r:.2f}× smaller than FP32)" if r >= 1 else f" ({1 / r:.2f}× larger than FP32)"
        lines.append(f"size {_fmt_size(size)}{ratio}")
    lat = batch_latency(m)
    if lat:
        env = row.get("environment") or {}
        where = (
            f"{env.get('cpu', 'CPU ?')}, ONNX Runtime {env.get('onnxruntime', '?')}, "
            f"{lat.get('threads', '?')} thread(s)"
        )
        # Wrapped: a hover label is one box, and a 200-character line runs past the plot's edge.
        lines.append(
            "<br>".join(textwrap.wrap(f"latency b1 {latency_words(lat)}", HOVER_WIDTH)) + f"<br>on {where}"
        )
        speed = row.get("speedup")
        if finite_number(speed) and not row.get("baseline"):
            word = "faster" if speed >= 1 else "slower"
            factor = speed if speed >= 1 else 1 / speed
            clear = not has_ratio(lat) or ratio_excludes_one(lat)
            lines.append(
                f"{factor:.2f}× {word} than FP32" if clear else "no clear latency difference from FP32"
            )
    acc = row.get("accuracy")
    if finite_number(acc):
        text = f"accuracy {acc:.2%}"
        d, lo, hi = (
            row.get(c) for c in ("accuracy_delta", "accuracy_delta_ci_low", "accuracy_delta_ci_high")
        )
        if finite_number(d) and not row.get("baseline"):  # FP32 against itself: +0.00, a 0-wide CI
            text += f", change vs FP32 {d * 100:+.2f} pp"
            if finite_number(lo) and finite_number(hi):
                text += f" (95% CI {lo * 100:+.2f} to {hi * 100:+.2f})"
        lines.append(text)
        if finite_number(m.get("perplexity")):
            lines.append(f"perplexity {perplexity_text(m)}")
    else:  # no labels: fidelity to FP32 is what there is
        if finite_number(m.get("agreement")):
            lines.append(f"top-1 agreement with FP32 {m['agreement']:.2%}")
        # A one-output model has no agreement; its plot's y is the SQNR, so the label must say it.
        if finite_number(row.get("sqnr_db")) and not row.get("baseline"):
            lines.append(f"output SQNR vs FP32 {row['sqnr_db']:.1f} dB")
    return "<br>".join(lines)


def finite_number(v: Any) -> TypeGuard[float]:
    """A real, finite number (not None, NaN, a bool or text)."""
    # A TypeGuard, so that callers may do arithmetic on a value once it passed.
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


@dataclass(frozen=True)
class ParetoPoint:
    key: str
    model_name: str
    x: float
    y: float
    summary: str
    hover: str
    pareto: bool
    baseline: bool
    # 95% intervals drawn as error bars (a change vs FP32 has one); NaN ends where none is known.
    x_interval: tuple[float, float] = (np.nan, np.nan)
    y_interval: tuple[float, float] = (np.nan, np.nan)


@dataclass(frozen=True)
class ParetoPlotInfo:
    """Everything a two-objective Pareto plot shows."""

    x_title: str
    y_title: str
    points: tuple[ParetoPoint, ...]
    front: tuple[str, ...]  # keys of the non-dominated points, in order of x (the frontier line)
    selected: str | None
    missing: int  # results left out because they lack one of the two metrics

    def trace_keys(self) -> dict[str, tuple[str, ...]]:
        """Result keys per trace, in trace order: what a selection's (curve, index) points at."""
        return {
            "dominated": tuple(p.key for p in self.points if not p.pareto and not p.baseline),
            "pareto": tuple(p.key for p in self.points if p.pareto and not p.baseline),
            "baseline": tuple(p.key for p in self.points if p.baseline),
        }


def pareto_plot_info(
    frame: pd.DataFrame, x: str, y: str, *, relative: bool = False, selected: str | None = None
) -> ParetoPlotInfo:
    """Points, Pareto front and baseline marks for objective ``y`` against objective ``x``."""
    ox, oy = _in_unit(OBJECTIVES[x], frame), _in_unit(OBJECTIVES[y], frame)
    cx = ox.relative_column if relative else ox.column
    cy = oy.relative_column if relative else oy.column
    # A frame that already went through with_derived (the dashboard caches that) is used as is.
    if "hover" in frame.columns:
        data = frame
    else:
        data = with_derived(frame) if len(frame) else frame.assign(**{cx: [], cy: [], "hover": []})
    ok = data[np.isfinite(data[cx].astype(float)) & np.isfinite(data[cy].astype(float))]
    # Fronts are per model: a point of one model does not dominate another model's plans.
    front_mask = pd.Series(False, index=ok.index)
    for _, group in ok.groupby("model_name"):
        mask = non_dominated(group[[cx, cy]].to_numpy(float), [ox.maximize, oy.maximize])
        front_mask[group.index] = mask
    columns = [ok[c].tolist() for c in ("key", "model_name", cx, cy, "plan_summary", "hover", "baseline")]
    x_intervals, y_intervals = (_intervals(ok, c) if relative else None for c in (cx, cy))
    points = tuple(
        ParetoPoint(
            str(k),
            str(m),
            float(x),
            float(y),
            s or "",
            h,
            bool(f),
            bool(b),
            *((xi[i] if xi else (np.nan, np.nan)) for xi in (x_intervals, y_intervals)),
        )
        for i, (k, m, x, y, s, h, b, f) in enumerate(zip(*columns, front_mask.tolist(), strict=True))
    )
    front = tuple(
        p.key for p in sorted((p for p in points if p.pareto), key=lambda p: (p.model_name, p.x, p.y))
    )
    return ParetoPlotInfo(
        x_title=ox.relative_title if relative else ox.title,
        y_title=oy.relative_title if relative else oy.title,
        points=points,
        front=front,
        selected=selected,
        missing=len(frame) - len(ok),
    )


# A change vs FP32's 95% interval, by the column plotted (with_derived makes them).
_INTERVALS = {
    "accuracy_change_pp": ("accuracy_change_pp_low", "accuracy_change_pp_high"),
    "latency_change_pct": ("latency_change_pct_low", "latency_change_pct_high"),
}


def _intervals(frame: pd.DataFrame, column: str) -> list[tuple[float, float]] | None:
    ends = _INTERVALS.get(column)
    if ends is None or not set(ends) <= set(frame.columns):
        return None
    return list(zip(frame[ends[0]].astype(float), frame[ends[1]].astype(float), strict=True))


def _in_unit(objective: Objective, frame: pd.DataFrame) -> Objective:
    """Size in the unit the frame's largest model reads best in (Compare's too): a 23 kB model's
    axis ran 0.015 to 0.02 MB."""
    if objective.name != "size" or not len(frame) or size_unit(frame["size_bytes"].max())[0] == "MB":
        return objective
    return replace(objective, column="size_kb", title="Model size (kB)")


def perplexity_text(metrics: Mapping[str, Any]) -> str:
    """A language model's perplexity, with its ratio to FP32's and that ratio's 95% interval."""
    ppl = metrics.get("perplexity")
    if not finite_number(ppl):
        return ""
    text = f"{ppl:.3f}"
    ratio, lo, hi = (
        metrics.get(k) for k in ("perplexity_ratio", "perplexity_ratio_ci_low", "perplexity_ratio_ci_high")
    )
    if finite_number(ratio) and finite_number(lo) and finite_number(hi):
        text += f" (×{ratio:.3f} vs FP32, 95% CI ×{lo:.3f} to ×{hi:.3f})"
    return text
