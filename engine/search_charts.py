"""Figures of the sensitivity pass and the mixed-precision search, as pure functions.

Same split as engine/charts.py: ``*_info(frame, ...)`` computes a frozen dataclass of what the
figure shows (tests compare these), ``*_figure(info)`` only draws it. Kept apart from charts.py,
which holds the result-store figures and is long enough already.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeGuard

import pandas as pd
import plotly.graph_objects as go

from engine.charts import pareto_plot_info
from engine.pareto_figure import CHAR_PX, MAIN_WIDTH_PX, ParetoGridInfo, wrapped
from engine.profile import OTHER
from engine.sensitivity import ALONE, KEEP_FP32
from engine.types import Precision

SORTS = {
    "accuracy": "accuracy (most sensitive layers first)",
    "latency": "share of FP32 time (largest first)",
    "layer": "layer order in the model",
}
VIEW_TITLES = {
    ALONE: "Accuracy change vs FP32, this layer alone at the precision (percentage points)",
    KEEP_FP32: "Accuracy won back by keeping this layer FP32, rest INT8 (points vs all-INT8)",
}
# A model without labelled data has no accuracy: its probes are drawn by output SQNR instead.
SQNR_TITLES = {
    ALONE: "Output SQNR vs FP32 (dB, lower = further from FP32), this layer alone at the precision",
    KEEP_FP32: "Output SQNR vs FP32 (dB), this layer kept FP32, every other layer INT8",
}
METRIC_COLUMNS = {"accuracy": "accuracy_change", "sqnr": "sqnr_db"}
SHARE_TITLE = "Share of FP32 time (%)<br>batch 1, this machine"
PRECISION_COLORS = {  # one colour per precision, shared by every chart that colours by it
    "fp32": "#1c7ed6",
    "fp16": "#4dabf7",
    "int8": "#d9480f",
    "int8-dynamic": "#f08c00",
    "w8a16": "#7048e8",
    "int4": "#2b8a3e",
}
_TEXT = "#808495"
_GRID = "rgba(128, 132, 149, 0.2)"


@dataclass(frozen=True)
class SensitivityBar:
    """One measured probe: a layer at a precision, its accuracy change and 95% interval (points),
    or its output SQNR in dB (no interval) where the chart is drawn by SQNR."""

    layer: str
    precision: str  # plan spelling
    change_pp: float
    minus_pp: float  # distance from change_pp down to the interval's low end (NaN: no interval)
    plus_pp: float
    hover: str


@dataclass(frozen=True)
class SensitivityChartInfo:
    """Everything the per-layer sensitivity figure shows."""

    view: str  # engine.sensitivity.ALONE or KEEP_FP32
    x_title: str
    layers: tuple[str, ...]  # top to bottom, in the chosen order
    traces: tuple[tuple[str, tuple[SensitivityBar, ...]], ...]  # (precision, its bars), one trace each
    shares_pct: tuple[float, ...]  # each layer's share of FP32 time in % (NaN: not profiled yet)
    share_hover: tuple[str, ...]
    measured: int
    pending: int
    failed: int

    def trace_keys(self) -> tuple[tuple[tuple[str, str], ...], ...]:
        """(layer, precision) of each bar, per precision in trace order (see sensitivity_figure)."""
        return tuple(tuple((b.layer, b.precision) for b in bars) for _, bars in self.traces)


def _finite(v: Any) -> TypeGuard[float]:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _bar_hover(row: Mapping[str, Any], view: str) -> str:
    label = Precision(row["precision"]).label
    lo, hi = row.get("ci_low"), row.get("ci_high")
    ci = f" (95% CI {lo * 100:+.2f} to {hi * 100:+.2f})" if _finite(lo) and _finite(hi) else ""
    if view == ALONE:
        lines = [f"<b>{row['layer']}</b> ({row['op_type']}) at {label}, every other layer FP32"]
        against = "accuracy change vs FP32"
    else:
        lines = [f"<b>{row['layer']}</b> ({row['op_type']}) kept FP32, every other layer INT8"]
        against = "accuracy vs all-INT8"
    if _finite(row.get("accuracy_change")):
        lines.append(f"{against} {row['accuracy_change'] * 100:+.2f} pp{ci}")
    if _finite(row.get("sqnr_db")):
        lines.append(f"output SQNR vs FP32 {row['sqnr_db']:.1f} dB")
    if _finite(row.get("size_change_bytes")):
        lines.append(f"size change {row['size_change_bytes'] / 1e3:+.1f} kB")
    return "<br>".join(lines)


def sensitivity_chart_info(
    frame: pd.DataFrame,
    profile: pd.DataFrame | None = None,
    view: str = ALONE,
    sort: str = "accuracy",
    metric: str = "accuracy",
) -> SensitivityChartInfo:
    """Bars of one view of a sensitivity frame (engine.sensitivity.sensitivity_frame), with each
    layer's FP32 time share from a layer profile (engine.sensitivity.layer_profile), sorted.

    metric "accuracy": each bar is the accuracy change in points with its 95% interval; "sqnr"
    (for a model without labels): the output SQNR against FP32 in dB, which has no interval."""
    if view not in VIEW_TITLES:
        raise ValueError(f"view must be one of {sorted(VIEW_TITLES)}, got {view!r}")
    if sort not in SORTS:
        raise ValueError(f"sort must be one of {sorted(SORTS)}, got {sort!r}")
    if metric not in METRIC_COLUMNS:
        raise ValueError(f"metric must be one of {sorted(METRIC_COLUMNS)}, got {metric!r}")
    column = METRIC_COLUMNS[metric]
    rows = frame[frame["view"] == view]
    layers = list(dict.fromkeys(rows["layer"]))
    ok = rows[(rows["status"] == "ok") & rows[column].map(_finite)]
    shares: dict[str, float] = {}
    us: dict[str, float] = {}
    if profile is not None and len(profile):
        fp32 = profile[(profile["precision"] == Precision.FP32.value) & (profile["layer"] != OTHER)]
        shares = {str(r.layer): float(r.share) * 100 for r in fp32.itertuples()}
        us = {str(r.layer): float(r.us_per_run) for r in fp32.itertuples()}

    def effect(layer: str) -> float:
        # The size of the layer's largest effect: its worst loss alone (lowest accuracy or SQNR),
        # its largest gain when kept.
        changes = ok.loc[ok["layer"] == layer, column]
        if changes.empty:
            return -math.inf
        return float(-changes.min() if view == ALONE else changes.max())

    if sort == "accuracy":
        layers.sort(key=effect, reverse=True)
    elif sort == "latency":
        layers.sort(key=lambda n: shares.get(n, -math.inf), reverse=True)
    order = {n: i for i, n in enumerate(layers)}
    traces = []
    present = set(ok["precision"])
    for precision in (p.value for p in Precision if p.value in present):
        chosen = ok[ok["precision"] == precision]
        bars = []
        for row in sorted(chosen.to_dict("records"), key=lambda r: order[r["layer"]]):
            change = row[column] * (100 if metric == "accuracy" else 1)
            lo, hi = (row.get("ci_low"), row.get("ci_high")) if metric == "accuracy" else (None, None)
            bars.append(
                SensitivityBar(
                    layer=str(row["layer"]),
                    precision=precision,
                    change_pp=float(change),
                    minus_pp=max(change - lo * 100, 0.0) if _finite(lo) else math.nan,
                    plus_pp=max(hi * 100 - change, 0.0) if _finite(hi) else math.nan,
                    hover=_bar_hover(row, view),
                )
            )
        traces.append((precision, tuple(bars)))
    share_hover = tuple(
        f"<b>{n}</b>: {shares[n]:.1f}% of the FP32 model's kernel time "
        f"({us[n]:.1f} µs per run, batch 1, ONNX Runtime profiler on this machine)"
        if n in shares
        else f"<b>{n}</b>: not profiled yet"
        for n in layers
    )
    pending = int((rows["status"] == "pending").sum())
    return SensitivityChartInfo(
        view=view,
        x_title=(VIEW_TITLES if metric == "accuracy" else SQNR_TITLES)[view],
        layers=tuple(layers),
        traces=tuple(traces),
        shares_pct=tuple(shares.get(n, math.nan) for n in layers),
        share_hover=share_hover,
        measured=int((rows["status"] == "ok").sum()),
        pending=pending,
        failed=len(rows) - pending - int((rows["status"] == "ok").sum()),
    )


def sensitivity_figure(info: SensitivityChartInfo) -> go.Figure:
    """Horizontal bars per layer and precision, a dot with its 95% whisker at each bar's end, and
    the layers' FP32 time share beside.

    Trace order: one bar trace per precision, then one dot trace per precision, then the shares.
    The dots are there because a layer with no measurable effect has a bar of zero length, which
    can be neither seen nor clicked; its dot at zero can.
    """
    n = max(len(info.traces), 1)
    row = {layer: i for i, layer in enumerate(info.layers)}
    step = 0.8 / n  # each layer's row holds one slot per precision

    def y(bars: tuple[SensitivityBar, ...], j: int) -> list[float]:
        return [row[b.layer] + (j - (n - 1) / 2) * step for b in bars]

    def name(precision: str) -> str:
        return "FP32 (kept)" if info.view == KEEP_FP32 else Precision(precision).label

    fig = go.Figure()
    for j, (precision, bars) in enumerate(info.traces):
        fig.add_trace(
            go.Bar(
                orientation="h",
                x=[b.change_pp for b in bars],
                y=y(bars, j),
                width=step * 0.9,
                name=name(precision),
                legendgroup=precision,
                marker={"color": PRECISION_COLORS.get(precision, _TEXT), "opacity": 0.55},
                customdata=[[b.layer, b.precision] for b in bars],
                hovertext=[b.hover for b in bars],
                hoverinfo="text",
            )
        )
    for j, (precision, bars) in enumerate(info.traces):
        fig.add_trace(
            go.Scatter(
                mode="markers",
                x=[b.change_pp for b in bars],
                y=y(bars, j),
                name=name(precision),
                legendgroup=precision,
                showlegend=False,
                marker={"color": PRECISION_COLORS.get(precision, _TEXT), "size": 8},
                error_x={
                    "type": "data",
                    "symmetric": False,
                    # No interval: no whisker (plotly draws nothing for a null).
                    "array": [None if math.isnan(b.plus_pp) else b.plus_pp for b in bars],
                    "arrayminus": [None if math.isnan(b.minus_pp) else b.minus_pp for b in bars],
                    "color": "#495057",
                    "thickness": 1.2,
                    "width": 3,
                },
                customdata=[[b.layer, b.precision] for b in bars],
                hovertext=[b.hover for b in bars],
                hoverinfo="text",
            )
        )
    fig.add_trace(
        go.Bar(
            orientation="h",
            x=[None if math.isnan(s) else s for s in info.shares_pct],
            y=list(range(len(info.layers))),
            width=0.6,
            name="share of FP32 time",
            marker={"color": "#adb5bd"},
            hovertext=list(info.share_hover),
            hoverinfo="text",
            xaxis="x2",
        )
    )
    longest = max((len(n) for n in info.layers), default=10)
    left = min(360, 20 + 7 * longest)
    # Titles wrap to their axis's width in the main column: at 1280 px the long one ran into the
    # share axis's title, and that one was clipped at the right edge.
    plot_chars = (MAIN_WIDTH_PX - left - 10) / CHAR_PX
    fig.update_layout(
        barmode="overlay",  # the slots are placed by hand above
        xaxis={
            "domain": [0.0, 0.72],
            "anchor": "y",
            "title": {"text": wrapped(info.x_title, int(0.72 * plot_chars))},
            "zeroline": True,
            "zerolinecolor": "#868e96",
            "gridcolor": _GRID,
        },
        xaxis2={
            "domain": [0.78, 1.0],
            "anchor": "y",
            "title": {"text": wrapped(SHARE_TITLE, max(12, int(0.22 * plot_chars)))},
            "gridcolor": _GRID,
            "rangemode": "tozero",
        },
        yaxis={
            "tickmode": "array",
            "tickvals": list(range(len(info.layers))),
            "ticktext": list(info.layers),
            "range": [len(info.layers) - 0.5, -0.5],  # the first layer of the order at the top
            "showgrid": False,
            "zeroline": False,
            "automargin": False,
        },
        height=140 + len(info.layers) * max(26, 11 * n + 8),
        margin={"l": left, "r": 10, "t": 30, "b": 95},
        legend={"orientation": "h", "x": 0, "xanchor": "left", "y": 1.0, "yanchor": "bottom"},
        hovermode="closest",
        # A click selects one bar (and pins it on the page); "select" drag mode would swallow clicks.
        clickmode="event+select",
        dragmode="zoom",
        font={"family": '"Source Sans", sans-serif', "size": 12, "color": _TEXT},
        paper_bgcolor="rgba(0,0,0,0)",
        plot_bgcolor="rgba(0,0,0,0)",
        hoverlabel={"bgcolor": "white", "bordercolor": _GRID, "font": {"color": "#31333f"}},
    )
    fig.layout.template = None
    return fig


def picked_bar(info: SensitivityChartInfo, selection: Mapping[str, Any] | None) -> tuple[str, str] | None:
    """(layer, precision) of the first selected accuracy bar of a plotly selection event, or None."""
    points = ((selection or {}).get("selection") or {}).get("points") or []
    traces = info.trace_keys()
    for point in points:
        custom = point.get("customdata")
        if isinstance(custom, list | tuple) and len(custom) == 2 and all(isinstance(c, str) for c in custom):
            return str(custom[0]), str(custom[1])
        curve, index = point.get("curve_number"), point.get("point_index")
        if not (isinstance(curve, int) and isinstance(index, int)) or curve >= 2 * len(traces):
            continue  # the time-share panel: a layer, but no precision to pin
        keys = traces[curve % len(traces)]  # a bar trace, or the dot trace of the same precision
        if index < len(keys):
            return keys[index]
    return None


def search_front_info(results: pd.DataFrame, recommended: str | None) -> ParetoGridInfo:
    """Accuracy vs size and accuracy vs latency of a search's measured plans (plus the FP32 baseline
    the caller includes), the recommended plan ringed. ``results`` is a derived store frame."""
    panels = tuple(
        pareto_plot_info(results, x, "accuracy", selected=recommended) for x in ("size", "latency")
    )
    return ParetoGridInfo(
        panels, ("Accuracy vs size", "Accuracy vs latency (batch 1)"), ring_name="recommended"
    )
