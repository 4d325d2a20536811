"""Plotly figures built from result tables, as pure functions.

As in optuna's visualization module, each chart is two steps: ``*_info(frame, ...)`` computes a
frozen dataclass holding everything the figure shows (tests compare these), and ``*_figure(info)``
only draws it. The frame is ``ResultStore.to_frame()``, optionally with an ``environment`` column.
"""

from __future__ import annotations

import collections
import hashlib
import math
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeGuard

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from engine.latency_compare import (
    comparable_latency,
    has_ratio,
    is_reference,
    latency_words,
    ratio_excludes_one,
)
from engine.pareto import non_dominated
from engine.types import Precision


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


def _latency(metrics: Mapping[str, Any] | None, batch: str = "1") -> Mapping[str, Any]:
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
    # The latest FP32 result of each model (network and data, not name) is its latency reference.
    base = out[out["baseline"]].sort_values("created_at").groupby("model_id")["latency_ms_b1"].last()
    ref = out["model_id"].map(base).astype(float)
    # A plan timed alternately with FP32 compares by that paired ratio, what its "= N× FP32" says;
    # the FP32 plan is the reference itself; older results by their median over the FP32 result's.
    paired = out["metrics"].map(lambda m: _paired_ratio(_latency(m))).astype(float)
    slower = paired.where(paired.notna(), out["latency_ms_b1"] / ref).where(~out["baseline"], 1.0)
    out["latency_change_pct"] = (slower - 1) * 100
    # Only a paired ratio has an interval against FP32 (an older result's median over FP32's has none).
    for end in ("low", "high"):
        ratio = out["metrics"].map(lambda m, e=end: _ratio_end(_latency(m), e)).astype(float)
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
    if _finite(size):
        ratio = ""
        if _finite(fp32) and size and not row.get("baseline"):
            r = fp32 / size
            ratio = f" ({r:.2f}× smaller than FP32)" if r >= 1 else f" ({1 / r:.2f}× larger than FP32)"
        lines.append(f"size {_fmt_size(size)}{ratio}")
    lat = _latency(m)
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
        if _finite(speed) and not row.get("baseline"):
            word = "faster" if speed >= 1 else "slower"
            factor = speed if speed >= 1 else 1 / speed
            clear = not has_ratio(lat) or ratio_excludes_one(lat)
            lines.append(
                f"{factor:.2f}× {word} than FP32" if clear else "no clear latency difference from FP32"
            )
    acc = row.get("accuracy")
    if _finite(acc):
        text = f"accuracy {acc:.2%}"
        d, lo, hi = (
            row.get(c) for c in ("accuracy_delta", "accuracy_delta_ci_low", "accuracy_delta_ci_high")
        )
        if _finite(d):
            text += f", change vs FP32 {d * 100:+.2f} pp"
            if _finite(lo) and _finite(hi):
                text += f" (95% CI {lo * 100:+.2f} to {hi * 100:+.2f})"
        lines.append(text)
        if _finite(m.get("perplexity")):
            lines.append(f"perplexity {perplexity_text(m)}")
    elif _finite(m.get("agreement")):  # no labels: fidelity to FP32 is what there is
        lines.append(f"top-1 agreement with FP32 {m['agreement']:.2%}")
    return "<br>".join(lines)


def _finite(v: Any) -> TypeGuard[float]:
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


def _reach(ends: list[float], values: list[float], sign: float) -> list[float]:
    """How far each interval end lies from its value, in plain lists (see _draw_once); none: 0."""
    return [max(0.0, sign * (e - v)) if math.isfinite(e) else 0.0 for e, v in zip(ends, values, strict=True)]


def _error_bars(points: list[ParetoPoint], color: str) -> dict[str, Any]:
    """error_x / error_y of the points' 95% intervals, where any has one: a change vs FP32 drawn
    without its interval looked surer than it is (two plans 0.2 points apart, inside each other's
    intervals, read as one beating the other)."""
    out: dict[str, Any] = {}
    for axis, ends, at in (("error_x", "x_interval", "x"), ("error_y", "y_interval", "y")):
        lows = [getattr(p, ends)[0] for p in points]
        highs = [getattr(p, ends)[1] for p in points]
        if not any(math.isfinite(v) for v in lows + highs):
            continue
        values = [getattr(p, at) for p in points]
        out[axis] = {
            "type": "data",
            "symmetric": False,
            "array": _reach(highs, values, 1.0),
            "arrayminus": _reach(lows, values, -1.0),
            "thickness": 1,
            "width": 0,
            "color": color,
        }
    return out


def _in_unit(objective: Objective, frame: pd.DataFrame) -> Objective:
    """Size in the unit the frame's largest model reads best in (Compare's too): a 23 kB model's
    axis ran 0.015 to 0.02 MB."""
    if objective.name != "size" or not len(frame) or size_unit(frame["size_bytes"].max())[0] == "MB":
        return objective
    return replace(objective, column="size_kb", title="Model size (kB)")


_STYLE = {
    "dominated": {"color": "#9aa5b1", "opacity": 0.35, "symbol": "circle", "size": 8, "name": "dominated"},
    "pareto": {"color": "#d9480f", "opacity": 1.0, "symbol": "circle", "size": 11, "name": "Pareto-optimal"},
    "baseline": {"color": "#1c7ed6", "opacity": 1.0, "symbol": "star", "size": 16, "name": "FP32 baseline"},
}
# Each model's front line, in the order of the models' names: the first keeps the Pareto points'
# orange (a one-model view looks as it always did); a dash pattern tells them apart without colour.
_FRONT_LINES = (
    ("#d9480f", "solid"), ("#2f9e44", "dash"), ("#7048e8", "dot"), ("#0c8599", "dashdot"),
    ("#c2255c", "longdash"), ("#e67700", "longdashdot"),
)  # fmt: skip
_TEXT = "#808495"  # grey text that reads on white and on near-black pages
_GRID = "rgba(128, 132, 149, 0.2)"


@dataclass(frozen=True)
class ParetoGridInfo:
    """Several Pareto plots drawn side by side as the panels of one figure."""

    panels: tuple[ParetoPlotInfo, ...]
    titles: tuple[str, ...]
    ring_name: str = "selected"  # the legend's name for the ringed plan (a search's "recommended")

    def __post_init__(self) -> None:
        if len(self.panels) != len(self.titles) or not self.panels:
            raise ValueError("a Pareto grid needs one title per panel, and at least one panel")

    def trace_keys(self) -> tuple[tuple[str, ...], ...]:
        """Result keys of each data trace of ``pareto_grid_figure``, in trace order.

        Panel ``i`` owns traces ``3*i .. 3*i+2`` (dominated, Pareto-optimal, baseline); the line and
        ring traces come after all of them, so a selection's curve number never depends on them.
        """
        return tuple(keys for info in self.panels for keys in info.trace_keys().values())


def pareto_figure(info: ParetoPlotInfo) -> go.Figure:
    """Draw one ParetoPlotInfo: dimmed dominated points, highlighted front with its line, starred baseline."""
    return pareto_grid_figure(ParetoGridInfo((info,), ("",)))


MAIN_WIDTH_PX = 900  # Streamlit's main column at a 1280 px window, sidebar open (the narrow case)
PLOT_HEIGHT_PX = 310  # the panels' own height, margins aside
CHAR_PX = 7  # an average character at the figures' 12 px font


def wrapped(title: str, chars: int) -> str:
    """An axis title broken into lines of at most `chars` characters (plotly breaks at <br> only);
    its own <br> breaks stay."""
    return "<br>".join(line for part in title.split("<br>") for line in textwrap.wrap(part, chars) or [part])


def _legend_rows(names: Iterable[str]) -> int:
    """How many rows a horizontal legend of these entries takes in the main column (each entry is its
    symbol, about 40 px, and its text)."""
    rows, used = 1, 0
    for name in dict.fromkeys(names):
        need = 40 + CHAR_PX * len(name)
        if used and used + need > MAIN_WIDTH_PX:
            rows, used = rows + 1, 0
        used += need
    return rows


def pareto_grid_figure(grid: ParetoGridInfo) -> go.Figure:
    """Draw the panels of a ParetoGridInfo side by side in one figure with one legend.

    One figure instead of one per plot: one plotly.js chart for the browser to lay out and draw
    instead of three, and drawing is most of a re-render with 1,000 results. Margins are fixed
    (no axis automargin, no autoexpand): what pushes a margin makes plotly.js draw every marker
    again. For the same reason the figure survives being handed over again as an equal copy, as
    Streamlit does right after the first draw: see ``_draw_once``.
    """
    n = len(grid.panels)
    gap = 0.07  # room for the tick labels and title of the next panel's y axis
    width = (1 - gap * (n - 1)) / n
    fig = go.Figure()
    lines: list[go.Scatter] = []
    rings: list[go.Scatter] = []
    # One look per model across all panels, so a model's legend entry matches its line in each.
    models = sorted({p.model_name for info in grid.panels for p in info.points})
    line_of = {m: _FRONT_LINES[i % len(_FRONT_LINES)] for i, m in enumerate(models)}
    for i, info in enumerate(grid.panels):
        axes = {"xaxis": f"x{i + 1 if i else ''}", "yaxis": f"y{i + 1 if i else ''}"}
        by_key = {p.key: p for p in info.points}
        for name, keys in info.trace_keys().items():
            style = _STYLE[name]
            pts = [by_key[k] for k in keys]
            # Uniform marker styles per trace: per-point size/line arrays make the browser restyle
            # every SVG marker, which dominated re-render time with 1,000 results.
            fig.add_trace(
                go.Scatter(
                    # Plain lists, not numpy arrays: see _draw_once.
                    x=[p.x for p in pts],
                    y=[p.y for p in pts],
                    mode="markers",
                    name=style["name"],
                    legendgroup=name,
                    showlegend=i == 0,
                    customdata=np.array([p.key for p in pts], dtype=object),
                    hovertext=np.array([p.hover for p in pts], dtype=object),
                    hoverinfo="text",
                    **_error_bars(pts, str(style["color"])),
                    marker={
                        "color": style["color"],
                        "opacity": style["opacity"],
                        "symbol": style["symbol"],
                        "size": style["size"],
                    },
                    **axes,
                )
            )
        for model in dict.fromkeys(by_key[k].model_name for k in info.front):
            line = [by_key[k] for k in info.front if by_key[k].model_name == model]
            lines.append(
                go.Scatter(
                    x=[p.x for p in line],
                    y=[p.y for p in line],
                    mode="lines",
                    line={"color": line_of[model][0], "dash": line_of[model][1], "width": 1.5, "shape": "hv"},
                    name=f"front · {model}",
                    legendgroup=f"front · {model}",
                    showlegend=not any(t.name == f"front · {model}" for t in lines),
                    hoverinfo="skip",
                    **axes,
                )
            )
        if info.selected in by_key:
            p = by_key[info.selected]
            rings.append(
                go.Scatter(
                    x=[p.x],
                    y=[p.y],
                    mode="markers",
                    name=grid.ring_name,
                    legendgroup="selected",
                    showlegend=not rings,
                    customdata=[p.key],
                    hovertext=[p.hover],
                    hoverinfo="text",
                    marker={"size": 18, "color": "rgba(0,0,0,0)", "line": {"width": 3, "color": "#212529"}},
                    **axes,
                )
            )
    # Lines, then the selected plan's ring, after every panel's data traces: trace numbers stay put.
    fig.add_traces([*lines, *rings])
    layout: dict[str, Any] = {}
    # The figure fills Streamlit's main column, about 900 px at a 1280 px window with the sidebar open:
    # a panel's x title longer than its width ran into the next panel's, so it wraps instead.
    panel_chars = max(20, int(MAIN_WIDTH_PX * width / CHAR_PX))
    legend_rows = _legend_rows([t.name for t in [*fig.data, *lines, *rings] if t.showlegend is not False])
    extra = 18 * (legend_rows - 1)  # a legend row the bottom margin would clip (fixed margins)
    for i, info in enumerate(grid.panels):
        suffix = str(i + 1) if i else ""
        left = i * (width + gap)
        layout[f"xaxis{suffix}"] = {
            "domain": [left, left + width],
            "anchor": f"y{suffix}",
            "title": {"text": wrapped(info.x_title, panel_chars)},
            "automargin": False,
            "showgrid": False,
            "zeroline": False,
        }
        layout[f"yaxis{suffix}"] = {
            "anchor": f"x{suffix}",
            "title": {"text": info.y_title, "standoff": 4},
            "automargin": False,
            "gridcolor": _GRID,
            "zerolinecolor": _GRID,
        }
    fig.update_layout(
        **layout,
        annotations=[
            {
                "text": f"<b>{t}</b>",
                "x": i * (width + gap),
                "xanchor": "left",
                "xref": "paper",
                "y": 1.0,
                "yanchor": "bottom",
                "yref": "paper",
                "showarrow": False,
                "font": {"size": 14},
            }
            for i, t in enumerate(grid.titles)
            if t
        ],
        margin={"l": 60, "r": 10, "t": 40, "b": 110 + extra, "autoexpand": False},
        # Below the (up to two-line) x titles, in pixels from the plots' bottom edge.
        legend={"orientation": "h", "x": 0, "xanchor": "left", "y": -78 / PLOT_HEIGHT_PX, "yanchor": "top"},
        # Click-to-select works in plotly's zoom and pan drag modes; "select" mode swallows clicks.
        clickmode="event+select",
        height=PLOT_HEIGHT_PX + 40 + 110 + extra,
        # Its own look, readable on light and dark pages: there is no template to inherit one from.
        font={"family": '"Source Sans", sans-serif', "size": 12, "color": _TEXT},
        paper_bgcolor="rgba(0,0,0,0)",
        plot_bgcolor="rgba(0,0,0,0)",
        hoverlabel={"bgcolor": "white", "bordercolor": _GRID, "font": {"color": "#31333f"}},
    )
    _draw_once(fig, grid)
    return fig


def _draw_once(fig: go.Figure, grid: ParetoGridInfo) -> None:
    """Let plotly.js skip a redraw when it is handed an equal copy of this figure.

    Plotly.react redraws every marker when a data array or the template is a new object, even an
    equal one. Streamlit's chart does exactly that right after mounting a new figure (it re-applies
    its theme to a copy), which doubled the cost of every Explore re-render. So: no template (the
    look is spelled out above; the page draws the figure with Streamlit's theme off), data arrays
    as JSON lists, and a data revision, which plotly.js compares instead of the lists' identity.
    (Typed arrays, which plotly.py makes of numpy arrays, are compared by identity regardless.)
    """
    fig.layout.template = None
    # Everything the arrays hold is in the repr of the frozen info objects.
    fig.layout.datarevision = hashlib.blake2b(repr(grid).encode(), digest_size=8).hexdigest()


def selected_key(
    trace_keys: Mapping[str, tuple[str, ...]] | Sequence[tuple[str, ...]], selection: Mapping[str, Any] | None
) -> str | None:
    """The result key a plotly selection event points at (the first selected marker), or None.

    ``trace_keys`` is the ``trace_keys()`` of the ParetoPlotInfo or ParetoGridInfo the figure drew.
    """
    points = ((selection or {}).get("selection") or {}).get("points") or []
    traces = list(trace_keys.values()) if isinstance(trace_keys, Mapping) else list(trace_keys)
    for point in points:
        custom = point.get("customdata")
        if isinstance(custom, list) and custom:
            custom = custom[0]
        if isinstance(custom, str) and custom:
            return custom
        curve, index = point.get("curve_number"), point.get("point_index")
        if (
            isinstance(curve, int)
            and isinstance(index, int)
            and curve < len(traces)
            and index < len(traces[curve])
        ):
            return traces[curve][index]
    return None


# --- comparing results -----------------------------------------------------------------------


def compare_table(records: list[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per result: metrics, and their change against the first result given."""
    rows = []
    for r in records:
        m = r.get("metrics") or {}
        lat = _latency(m)
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
                "accuracy_pct": float(m["accuracy"]) * 100 if _finite(m.get("accuracy")) else np.nan,
                "accuracy_change_pp": _pp(m.get("accuracy_delta")),
                "accuracy_change_ci_pp": (
                    f"{m['accuracy_delta_ci_low'] * 100:+.2f} to {m['accuracy_delta_ci_high'] * 100:+.2f}"
                    if _finite(m.get("accuracy_delta_ci_low")) and _finite(m.get("accuracy_delta_ci_high"))
                    else ""
                ),
                # Fidelity to FP32, measured with or without labels (a model without them has nothing else).
                "agreement_pct": _pp(m.get("agreement")),
                "sqnr_db": _sqnr_text(m),
                "kl_divergence": float(m["kl_divergence"]) if _finite(m.get("kl_divergence")) else np.nan,
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
    if any(_finite((r.get("metrics") or {}).get("perplexity")) for r in records):
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
    a, b = _latency(first.get("metrics") or {}), _latency(record.get("metrics") or {})
    if record is first or not a or not b:
        return ""
    (_, a_lo, a_hi), (_, b_lo, b_hi) = comparable_latency(a), comparable_latency(b)
    return f"{100 * (b_lo / a_hi - 1):+.1f} to {100 * (b_hi / a_lo - 1):+.1f}"


def perplexity_text(metrics: Mapping[str, Any]) -> str:
    """A language model's perplexity, with its ratio to FP32's and that ratio's 95% interval."""
    ppl = metrics.get("perplexity")
    if not _finite(ppl):
        return ""
    text = f"{ppl:.3f}"
    ratio, lo, hi = (
        metrics.get(k) for k in ("perplexity_ratio", "perplexity_ratio_ci_low", "perplexity_ratio_ci_high")
    )
    if _finite(ratio) and _finite(lo) and _finite(hi):
        text += f" (×{ratio:.3f} vs FP32, 95% CI ×{lo:.3f} to ×{hi:.3f})"
    return text


def _pp(v: Any) -> float:
    return v * 100 if _finite(v) else np.nan


def _sqnr_text(metrics: Mapping[str, Any]) -> str:
    # Text, not a number: the store has None both for outputs identical to FP32's (an infinite SQNR)
    # and for outputs with NaN or Inf (no SQNR at all), and the two must not read alike.
    sqnr = metrics.get("sqnr_db")
    if _finite(sqnr):
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
