"""The Pareto figure: ParetoPlotInfo panels (engine.charts) drawn side by side in one plotly figure
with one legend, error bars for changes vs FP32, and the click mapping back to results. Sized for
Streamlit's main column; the report draws the same figure."""

from __future__ import annotations

import hashlib
import math
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import plotly.graph_objects as go

from engine.charts import ParetoPlotInfo, ParetoPoint


def _reach(ends: list[float], values: list[float], sign: float) -> list[float]:
    """How far each interval end lies from its value, in plain lists (see _draw_once); none: 0."""
    return [max(0.0, sign * (e - v)) if math.isfinite(e) else 0.0 for e, v in zip(ends, values, strict=True)]


def _faded(color: str, opacity: float) -> str:
    """A #rrggbb colour at this opacity: a marker's opacity does not reach its error bars."""
    r, g, b = (int(color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r}, {g}, {b}, {opacity})"


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
                    # Dimmed with their points: a dominated plan's full-strength bars drew the eye.
                    **_error_bars(pts, _faded(str(style["color"]), float(str(style["opacity"])))),
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
