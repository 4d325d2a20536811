"""A recommendation for stakeholders: report.html (self-contained), report.pdf, plot images, bundle.zip.

Everything shown comes from the store: the plans measured for the model, the recommendation for
the goal among them (engine.recommend), and the sensitivity pass if one was run. The HTML inlines
plotly.js, so it works offline; Chromium (engine.render) prints it to PDF and exports each plot.
"""

from __future__ import annotations

import datetime as dt
import html
import platform
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio

from engine import __version__ as ENGINE_VERSION
from engine.api import Engine, EngineError
from engine.charts import distinct_summaries, panel_title, pareto_plot_info, with_derived
from engine.datasets import ModelBundle
from engine.goal import Goal
from engine.handoff import write_bundle
from engine.pareto_figure import ParetoGridInfo, pareto_grid_figure
from engine.presets import PRESETS, preset_plan
from engine.recommend import Recommendation, recommend
from engine.render import RenderError, render_in_subprocess
from engine.search_charts import PRECISION_COLORS, sensitivity_chart_info, sensitivity_figure
from engine.search_trials import CALIBRATION_ORIGINS, objective_point, trials_frame
from engine.sensitivity import sensitivity_frame
from engine.types import LayerInfo, MeasureSettings, Plan, Precision
from engine.units import decimal_bytes

FIGURE_SIZE = {"width": 1000, "height": 440}


@dataclass(frozen=True)
class ReportFiles:
    """What build_report wrote; pdf and images are None/empty when Chromium could not run (render_error)."""

    out_dir: Path
    html: Path
    pdf: Path | None
    bundle: Path | None
    images: tuple[Path, ...]
    recommendation: Recommendation
    render_error: str | None = None


def with_batch_1(settings: MeasureSettings | None) -> MeasureSettings | None:
    """The settings with batch 1 among the latency batch sizes: the report compares batch-1 latency."""
    if settings is None or 1 in settings.batch_sizes:
        return settings
    return replace(settings, batch_sizes=(1, *settings.batch_sizes))


def check_reportable(bundle: ModelBundle) -> None:
    """EngineError unless the model has labelled evaluation data (a goal is judged by accuracy)."""
    if bundle.eval_set.labels is None:
        raise EngineError(
            f"{bundle.name} has no labelled evaluation data, so no plan's accuracy is known and no "
            "recommendation can be judged; put eval.npz with labels beside the model (see the README)"
        )


def ensure_candidates(
    engine: Engine,
    bundle: ModelBundle,
    settings: MeasureSettings | None = None,
    on_done: Callable[[str, dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Measure what a recommendation needs at least: the FP32 baseline and every preset (the store
    serves those already measured); records in PRESETS order, on_done(preset name, record) as each
    lands."""
    check_reportable(bundle)
    layers = engine.layers(bundle)
    names = list(PRESETS)
    plans = [preset_plan(name, layers) for name in names]
    landed = None if on_done is None else lambda i, record: on_done(names[i], record)
    return engine.evaluate_many(
        bundle, plans, settings=with_batch_1(settings), source="report", on_done=landed
    )


def recommendation_for(
    engine: Engine, bundle: ModelBundle, goal: Goal, settings: MeasureSettings | None = None
) -> Recommendation:
    """The recommendation among the model's stored results (the FP32 baseline is measured if missing)."""
    check_reportable(bundle)
    baseline = engine.baseline(bundle, with_batch_1(settings))
    if baseline["status"] != "ok":
        raise EngineError(
            f"the FP32 baseline of {bundle.name} could not be measured ({baseline.get('error')}), so there "
            "is nothing to compare plans with"
        )
    frame = _results_of(engine, (bundle.model_hash, bundle.data_hash), bundle.name)
    searched = bool(engine.store.search_ids(baseline["model_hash"], baseline["data_hash"]))
    return recommend(frame, goal, baseline, bundle.name, engine.store.get, searched=searched)


def _results_of(engine: Engine, network: tuple[str, str], name: str) -> pd.DataFrame:
    """The stored results of a network (model and data hashes), under this name: the same files added
    under another name (or before a removal) were measured under that one, and are this model's too."""
    return engine.store.to_frame(network=network).assign(model_name=name)


# --- figures -------------------------------------------------------------------------------------


def _sized(fig: go.Figure) -> go.Figure:
    fig.update_layout(**FIGURE_SIZE, autosize=False)
    return fig


def pareto_report_figure(engine: Engine, rec: Recommendation) -> go.Figure:
    """Accuracy vs size, accuracy vs latency, size vs latency of the considered plans (Explore's three
    panels); the chosen ringed."""
    keys = set(rec.candidates["key"])
    frame = _results_of(engine, (rec.baseline["model_hash"], rec.baseline["data_hash"]), rec.model_name)
    frame = with_derived(frame[frame["key"].isin(keys)].reset_index(drop=True))
    # Explore's panels, axes and titles: a reader going from the page to the report sees the same plots.
    pairs = (("size", "accuracy"), ("latency", "accuracy"), ("latency", "size"))
    panels = tuple(pareto_plot_info(frame, x, y, selected=rec.chosen_key) for x, y in pairs)
    grid = ParetoGridInfo(panels, tuple(panel_title(x, y) for x, y in pairs), ring_name="recommended")
    return _sized(pareto_grid_figure(grid))


def precision_map_figure(layers: list[LayerInfo], plan: dict[str, str]) -> go.Figure:
    """One bar per layer, in model order, as long as its parameter count and coloured by its precision."""
    fig = go.Figure()
    for precision in Precision:
        rows = [x for x in layers if plan.get(x.name, "fp32") == precision.value]
        if not rows:
            continue
        fig.add_bar(
            x=[x.params for x in rows],
            y=[x.name for x in rows],
            orientation="h",
            name=precision.label,
            marker={"color": PRECISION_COLORS.get(precision.value, "#808495")},
            hovertemplate="%{y}<br>%{x:,} parameters<br>" + precision.label + "<extra></extra>",
        )
    fig.update_layout(
        barmode="overlay",
        title="Precision of each layer (bar length: parameters, log scale)",
        xaxis={"type": "log", "title": "parameters"},
        yaxis={
            "categoryorder": "array",
            "categoryarray": [x.name for x in reversed(layers)],
            "automargin": True,
        },
        legend={"title": "precision"},
        template="plotly_white",
    )
    fig.update_layout(height=max(300, 22 * len(layers) + 120))
    fig.update_layout(width=FIGURE_SIZE["width"], autosize=False)
    return fig


def sensitivity_report_figure(
    engine: Engine, bundle: ModelBundle, settings: MeasureSettings | None
) -> go.Figure | None:
    """The per-layer sensitivity chart, if a sensitivity pass measured anything for this model."""
    frame = sensitivity_frame(engine, bundle, settings)
    if frame.empty or not (frame["status"] == "ok").any():
        return None
    return _sized(sensitivity_figure(sensitivity_chart_info(frame)))


def search_section(engine: Engine, rec: Recommendation) -> str:
    """The latest search of the model: its measured plans beside what the predictor expected."""
    ids = engine.store.search_ids(rec.baseline["model_hash"], rec.baseline["data_hash"])
    fp32 = objective_point(rec.baseline)
    if not ids or fp32 is None:
        return "<p>No mixed-precision search has been run for this model (Sensitivity &amp; search page).</p>"
    trials = trials_frame(engine.store.search_trials(ids[0]), fp32)
    ok = trials[trials["status"] == "ok"]
    if ok.empty:
        return "<p>The latest search of this model has no measured plan yet.</p>"
    # The predictor is judged on the plans it had a word on: not the FP32 baseline (exact by
    # construction) nor the uniform plans whose latency it was calibrated on.
    judged = ok[~ok["origin"].isin(CALIBRATION_ORIGINS)]
    err_drop = (judged["accuracy_drop"] - judged["predicted_accuracy_drop"]).abs().mean()
    err_size = ((judged["size_bytes"] - judged["predicted_size_bytes"]).abs() / judged["size_bytes"]).mean()
    err_lat = ((judged["latency_ms"] - judged["predicted_latency_ms"]).abs() / judged["latency_ms"]).mean()
    others = f" ({len(ids) - 1} earlier searches are not shown)" if len(ids) > 1 else ""
    errors = (
        f"over the {len(judged)} plans it proposed or NSGA-II found, it was off by {100 * err_drop:.2f} "
        f"points of accuracy, {100 * err_size:.1f}% in size and {100 * err_lat:.1f}% in latency on average"
        if len(judged)
        else "no plan beyond the FP32 baseline and the uniform plans is measured yet to judge it by"
    )
    intro = (
        f"<p>The latest search{others} measured {len(ok)} plans; {int(ok['on_front'].sum())} of them are on "
        f"its measured Pareto front. Beside each measurement is what the additive predictor expected: "
        f"{errors}. Where the two differ, layers interact. The uniform plans have no latency prediction: "
        "their measured latency is what the predictor's latency scale was set by.</p>"
    )
    table = pd.DataFrame(
        {
            "plan": distinct_summaries(ok["plan_summary"], ok["result_key"]),
            "found by": ok["origin"],
            # As the plans considered above give it: the change (minus the drop) with its interval.
            "change vs FP32 (95% CI), points, measured": [
                _change_ci(-d, lo, hi)
                for d, lo, hi in zip(ok["accuracy_drop"], ok["ci_low"], ok["ci_high"], strict=True)
            ],
            "predicted": (-100 * ok["predicted_accuracy_drop"]).map(lambda v: f"{v:+.2f}"),
            "size, measured": ok["size_bytes"].map(decimal_bytes),
            "predicted ": ok["predicted_size_bytes"].map(decimal_bytes),
            "latency ms, measured": ok["latency_ms"].map(lambda v: f"{v:.3f}"),
            "predicted  ": ok["predicted_latency_ms"].map(lambda v: f"{v:.3f}" if pd.notna(v) else "—"),
            "on front": ok["on_front"].map({True: "yes", False: ""}),
        }
    )
    return intro + _table(table)


# --- text ---------------------------------------------------------------------------------------


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def _change_ci(change: float, low: float, high: float) -> str:
    """An accuracy change (fraction) in points with its 95% interval; the interval left out only
    where the measurement has none (an old result), never shown as NaN."""
    if pd.isna(low) or pd.isna(high):
        return f"{100 * change:+.2f} (no interval stored)"
    return f"{100 * change:+.2f} ({100 * low:+.2f} to {100 * high:+.2f})"


_SOURCES = {
    "api": "engine",
    "cli": "command line",
    "dashboard": "dashboard",
    "baseline": "FP32 baseline",
    "report": "report (preset)",
    "search": "search",
}


def candidate_table(rec: Recommendation) -> pd.DataFrame:
    """The plans considered, best for the goal first: what a reader compares the choice with."""
    c = rec.candidates.copy()
    order = {"size": "size_bytes", "latency": "latency_ms", "accuracy": "accuracy_drop"}[rec.goal.objective]
    c = c.sort_values(["meets", order], ascending=[False, True])
    fp32 = float(rec.baseline["metrics"]["accuracy"])
    fp32_hash = rec.baseline.get("plan_hash")
    return pd.DataFrame(
        {
            "plan": distinct_summaries(c["plan_summary"], c["key"]),
            "accuracy": c["accuracy"].map(_pct),
            "change vs FP32 (95% CI), points": [
                _change_ci(a - fp32, lo, hi)
                for a, lo, hi in zip(c["accuracy"], c["ci_low"], c["ci_high"], strict=True)
            ],
            "size": c["size_bytes"].map(decimal_bytes),
            "latency, batch 1 (95% CI), ms": [
                f"{v:.3f} ({lo:.3f} to {hi:.3f})"
                if pd.notna(lo) and pd.notna(hi)
                else f"{v:.3f} (the FP32 scale)"
                if base
                else f"{v:.3f}"
                for v, lo, hi, base in zip(
                    c["latency_ms"],
                    c["latency_low_ms"],
                    c["latency_high_ms"],
                    c["plan_hash"] == fp32_hash,
                    strict=True,
                )
            ],
            "calibration": c["calibration"].fillna(""),
            "measured by": c["source"].map(lambda v: _SOURCES.get(str(v).split(":")[0], v)),
            "meets goal": c["meets"].map({True: "yes", False: "no"}),
            "Pareto-optimal": c["on_front"].map({True: "yes", False: ""}),
            "recommended": c["chosen"].map({True: "★", False: ""}),
        }
    )


def manifest(rec: Recommendation, bundle: ModelBundle) -> dict[str, Any]:
    """Everything needed to reproduce the chosen measurement."""
    record = rec.chosen or rec.baseline
    env = record.get("environment") or {}
    settings = (record.get("metrics") or {}).get("settings") or {}
    return {
        "quantdash engine": ENGINE_VERSION,
        "ONNX Runtime": env.get("onnxruntime"),
        "onnx": env.get("onnx"),
        "numpy": env.get("numpy"),
        "Python": env.get("python", platform.python_version()),
        "CPU": env.get("cpu"),
        "CPU flags": ", ".join(env.get("cpu_flags") or []),
        "threads": env.get("threads"),
        "model": bundle.name,
        "model hash (sha256)": record.get("model_hash"),
        "data hash (calibration:evaluation)": record.get("data_hash"),
        "plan hash": record.get("plan_hash"),
        "settings hash": record.get("settings_hash"),
        "result key": record.get("key"),
        "calibration method": settings.get("calibration"),
        "calibration examples": bundle.card.get(
            "calib_size", len(next(iter(bundle.calibration.values()), []))
        ),
        "evaluation examples": (record.get("metrics") or {}).get("eval_size"),
        "bootstrap resamples": settings.get("bootstrap"),
        "bootstrap seed": settings.get("seed"),
        "training seed (sample card)": bundle.card.get("seed"),
        "measured at (UTC)": str(record.get("created_at", ""))[:19].replace("T", " "),
        "goal": rec.goal.text,
        "goal as understood": rec.goal.describe(),
    }


METHOD = """
<p>Each plan was built for real with ONNX Runtime's quantization tools, one precision per layer:
static INT8 as QDQ with per-channel int8 weights (7-bit on CPUs without VNNI, where 8-bit weights
saturate ONNX Runtime's u8·s8 kernels) and activations calibrated once on the model's calibration
split; W8A16 with 8-bit weights and 16-bit activations; dynamic INT8 with activations quantized at
run time; INT4 as 4-bit weights, block-wise on MatMul (MatMulNBits) and per output channel on
Conv (dequantized to float before the Conv); FP16 with casts at the boundaries. After
building, each layer's realized precision was read back from the graph and checked against the
plan.</p>
<p>Size is the model file on disk. Latency is the median of repeated runs in ONNX Runtime on this
machine's CPU after warm-up (at least 20 runs, more until the median's 95% interval is within ±5%,
with a cap), at batch 1. Accuracy is the model's own metric on its fixed evaluation split, disjoint
from the calibration split; its change against FP32 carries a paired bootstrap 95% confidence
interval. The recommendation is the best measured plan for the goal among those that meet its
limits. Every plan in this report was measured; the only predictions are the search section's, shown
beside the measurements they were made for.</p>
"""

_CSS = """
body { font-family: system-ui, -apple-system, Segoe UI, sans-serif; margin: 2em auto; max-width: 1060px;
       color: #1f2328; line-height: 1.45; }
h1 { margin-bottom: 0.1em; } .meta { color: #636c76; margin-top: 0; }
.headline { font-size: 1.25em; font-weight: 600; } .statement { font-size: 1.1em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0 1em; }
th, td { border-bottom: 1px solid #d0d7de; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
td { overflow-wrap: anywhere; }
section { margin-bottom: 1.5em; break-inside: avoid-page; }
.figure { break-inside: avoid; }
@media print { body { margin: 0; max-width: none; } section { break-inside: auto; } }
"""


def _table(frame: pd.DataFrame) -> str:
    return str(frame.to_html(index=False, escape=True, border=0))


def _kv_table(items: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in items.items()
    )
    return f"<table>{rows}</table>"


def render_html(sections: list[tuple[str, str, str]], title: str, subtitle: str) -> str:
    body = "".join(
        f'<section id="{sid}"><h2>{html.escape(heading)}</h2>{content}</section>'
        for sid, heading, content in sections
    )
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"
        f'<p class="meta">{html.escape(subtitle)}</p>{body}</body></html>'
    )


def _figure_html(fig: go.Figure, name: str, first: bool) -> str:
    # plotly.js is inlined once, with the first figure: the file works offline.
    div = pio.to_html(
        fig,
        full_html=False,
        include_plotlyjs=first,
        div_id=f"fig-{name}",
        config={"displaylogo": False, "responsive": False},
    )
    return f'<div class="figure">{div}</div>'


def report_html(
    engine: Engine, bundle: ModelBundle, rec: Recommendation, settings: MeasureSettings | None
) -> str:
    layers = engine.layers(bundle)
    figures: list[tuple[str, go.Figure]] = [("pareto", pareto_report_figure(engine, rec))]
    chosen_plan = (rec.chosen or {}).get("plan", {}).get("layers", {})
    if rec.chosen:
        figures.append(("precision_map", precision_map_figure(layers, chosen_plan)))
    sensitivity = sensitivity_report_figure(engine, bundle, settings)
    if sensitivity is not None:
        figures.append(("sensitivity", sensitivity))
    drawn = {name: _figure_html(fig, name, i == 0) for i, (name, fig) in enumerate(figures)}

    caveats = "".join(f"<li>{html.escape(c)}</li>" for c in rec.caveats)
    summary = (
        f'<p class="headline">{html.escape(rec.headline)}</p>'
        f'<p class="statement">{html.escape(rec.statement)}</p>'
        f"<p>Goal as understood: {html.escape(rec.goal.describe())}.</p>"
        f"<h3>Caveats</h3><ul>{caveats}</ul>"
    )
    if rec.chosen:
        plan_rows = pd.DataFrame(
            {
                "layer": [x.name for x in layers],
                "op": [x.op_type for x in layers],
                "parameters": [f"{x.params:,}" for x in layers],
                "precision": [Precision(chosen_plan.get(x.name, "fp32")).label for x in layers],
            }
        )
        plan_section = drawn["precision_map"] + _table(plan_rows)
    else:
        plan_section = "<p>No plan meets the goal, so there is no chosen plan to show.</p>"
    sections = [
        ("summary", "Summary", summary),
        (
            "pareto",
            "Pareto plots",
            "<p>Every measured plan of the model; Pareto-optimal plans in orange, the FP32 baseline as a "
            "star, the recommended plan ringed.</p>" + drawn["pareto"],
        ),
        ("candidates", "Candidate plans", _table(candidate_table(rec))),
        ("plan", "Chosen plan: precision per layer", plan_section),
        (
            "sensitivity",
            "Per-layer sensitivity",
            drawn.get("sensitivity")
            or "<p>No sensitivity pass has been run for this model (Sensitivity &amp; search page).</p>",
        ),
        ("search", "Mixed-precision search", search_section(engine, rec)),
        ("method", "Method", METHOD),
        ("manifest", "Reproducibility manifest", _kv_table(manifest(rec, bundle))),
    ]
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return render_html(
        sections,
        f"Quantization report: {bundle.name}",
        f"Generated {now} by quantdash {ENGINE_VERSION}. {bundle.card.get('description', '')}",
    )


# --- all of it ----------------------------------------------------------------------------------


def build_report(
    engine: Engine,
    bundle: ModelBundle,
    goal: Goal,
    out_dir: str | Path,
    *,
    settings: MeasureSettings | None = None,
    pdf: bool = True,
    on_step: Callable[[str], None] | None = None,
) -> ReportFiles:
    """Write report.html, report.pdf, images/*.png|svg and bundle.zip for the goal into out_dir.

    The HTML is written first and always; the PDF and images need Chromium, and when it is missing
    or fails, render_error says why and the rest is still written."""
    step = on_step or (lambda _msg: None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # A report built here before (for another goal, say) must not leave files that no longer match.
    for old in (out / "report.pdf", out / "bundle.zip"):
        old.unlink(missing_ok=True)
    shutil.rmtree(out / "images", ignore_errors=True)
    step("choosing the plan")
    rec = recommendation_for(engine, bundle, goal, settings)
    if rec.chosen is not None and not Path(rec.chosen.get("artifact_path") or "").is_file():
        # The measured model file was deleted: build and measure the plan again, then choose again.
        step(f"measuring {rec.chosen['plan_summary']} again (its model file is gone)")
        engine.evaluate(
            bundle,
            Plan.from_json(rec.chosen["plan"]),
            settings=MeasureSettings.from_json(rec.chosen["metrics"]["settings"]),
            force=True,
        )
        rec = recommendation_for(engine, bundle, goal, settings)
    step("writing report.html")
    html_path = out / "report.html"
    tmp = out / "report.html.partial"
    tmp.write_text(report_html(engine, bundle, rec, settings), encoding="utf-8")
    tmp.replace(html_path)
    bundle_path = write_bundle(rec, bundle, out / "bundle.zip") if rec.chosen else None
    pdf_path: Path | None = None
    images: tuple[Path, ...] = ()
    error = None
    if pdf:
        step("printing report.pdf and the plot images in Chromium")
        # Chromium writes into a scratch folder; only a finished render is moved into place.
        scratch = Path(tempfile.mkdtemp(prefix=".render-", dir=out))
        try:
            render_in_subprocess(html_path, scratch / "report.pdf", scratch / "images")
            (scratch / "images").replace(out / "images")
            (scratch / "report.pdf").replace(out / "report.pdf")
            pdf_path = out / "report.pdf"
            images = tuple(sorted((out / "images").iterdir()))
        except RenderError as e:
            error = str(e)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return ReportFiles(out, html_path, pdf_path, bundle_path, images, rec, error)
