"""Explore: Pareto plots of accuracy, size and latency; click a point to inspect, reuse or download it."""

from __future__ import annotations

import functools
import json

import pandas as pd
import streamlit as st

from dashboard import cached, editing, state, widgets
from engine.charts import filter_results, is_baseline, model_identity, panel_title
from engine.pareto_figure import selected_key
from engine.types import Precision

CHARTS = (("size", "accuracy"), ("latency", "accuracy"), ("latency", "size"))

model = state.current_model()
st.header(f"Explore · {model}")
widgets.jobs_panel()

version = cached.store_version()
frame = cached.results(version)
c1, c2, c3 = st.columns([3, 1, 1])
mix = c1.multiselect(
    "Precisions a plan may use (FP32 always)",
    [p.value for p in Precision if p is not Precision.FP32],
    default=[p.value for p in Precision if p is not Precision.FP32],
    key=state.EXPLORE_PRECISIONS,
    persist_state=state.KEEP,
    format_func=lambda v: Precision(v).label,
)
relative = c2.toggle("% change vs FP32", key=state.EXPLORE_RELATIVE, persist_state=state.KEEP)
all_models = c3.toggle(
    "All models", key=state.EXPLORE_MODELS, persist_state=state.KEEP, help="Each model keeps its own front."
)
listed = list(cached.cards())
# Only the results of the models listed now, as they are now: a removed model's, or those of an
# earlier model under a reused name, would be drawn as a second baseline and front of this one.
# This model first: results of identical files listed under two names are shown under the first asked for.
view_models = tuple(
    cached.model_id(n) for n in ([model, *(n for n in listed if n != model)] if all_models else [model])
)
shown = filter_results(frame, view_models, mix)

if shown.empty:
    st.info(f"No measured plans for {model} yet. On the Plan page, pick a preset and press Evaluate.")
    st.stop()


# The model each shown result is of (with All models on, not only the sidebar's): a selection goes with it.
model_of = dict(zip(shown["key"], shown["model_name"], strict=True))


def _picked(trace_keys: tuple[tuple[str, ...], ...]) -> None:
    # A click on the plots: map the selected marker back to its result.
    key = selected_key(trace_keys, st.session_state.get(state.chart_key("pareto")))
    if key:
        state.select_result(key, model_of.get(key))


selected = state.selected_result()
# Accuracy needs labels; a model added without them has only its fidelity to FP32 (engine.evaluate).
unlabelled = shown["metrics"].map(lambda m: (m or {}).get("labelled") is False)
no_labels = sorted(set(shown.loc[unlabelled, "model_name"]))
charts: tuple[tuple[str, str], ...] = CHARTS
# Nothing to plot accuracy of: plot fidelity to FP32 in its place. Top-1 agreement needs classes;
# a model with one output value per example (engine.evaluate gives it none) has its SQNR instead.
fidelity = "agreement" if shown["agreement"].notna().any() else "sqnr"
if unlabelled.all():
    charts = tuple((x, fidelity if y == "accuracy" else y) for x, y in CHARTS)
# The three plots are panels of one figure: the browser draws one chart instead of three.
figure, trace_keys, missing = cached.pareto_charts(
    version, view_models, tuple(mix), charts, relative, selected
)
st.plotly_chart(
    figure,
    key=state.chart_key("pareto"),
    on_select=functools.partial(_picked, trace_keys),
    selection_mode="points",
    width="stretch",
    # The figure brings its own look; Streamlit's theme, applied to a copy after the first draw,
    # made plotly.js draw all markers a second time (see engine.pareto_figure._draw_once).
    theme=None,
)
if no_labels:
    names = ", ".join(no_labels)
    instead = {
        "agreement": "top-1 agreement with FP32 instead (the share of inputs where a plan's top output "
        "is FP32's)",
        "sqnr": "the output SQNR against FP32 instead (one output value per input: no classes to agree "
        "on); FP32 itself has none, its outputs being its own",
    }[fidelity]
    drawn = (
        f"the plots show {instead}"
        if charts != CHARTS
        else f"{'its' if len(no_labels) == 1 else 'their'} {int(unlabelled.sum())} plan(s) are left out "
        "of the accuracy plots"
    )
    st.caption(f"{names}: no labelled data, so accuracy cannot be measured; {drawn}.")
for (x, y), left_off in zip(charts, missing, strict=True):
    if y == "accuracy":
        left_off -= int(unlabelled.sum())  # said above
    elif y == "sqnr":
        left_off -= int(shown["plan"].map(is_baseline).sum())  # FP32: said above
    if left_off:
        st.caption(
            f"{panel_title(x, y)}: {left_off} plan(s) not drawn, no FP32 baseline or metric to compare with."
        )
envs = {(e.get("cpu"), e.get("onnxruntime")) for e in shown["environment"] if e}
st.caption(
    "Latency: median at batch 1, one intra-op thread, measured on "
    + "; ".join(f"{cpu}, ONNX Runtime {ort}" for cpu, ort in sorted(envs, key=str))
    + ". Hover a point for its 95% intervals. Larger orange points are Pareto-optimal; grey ones are beaten "
    "on both axes by another plan; the star is FP32."
    + (
        " Each model's front is a line of its own colour and dash; hover a point for its model."
        if all_models
        else ""
    )
)

# --- the selected result --------------------------------------------------------------------------
options = list(shown.sort_values("created_at", ascending=False)["key"])
# Built column-wise: iterrows over 1,000 results cost a tenth of a second per re-render.
base_label = shown["plan_summary"] + " · " + shown["model_name"]
size_label = shown["size_bytes"].map(widgets.fmt_bytes)
# Strings even where accuracy is missing: a model without labels has none at all (a float column).
acc_label = shown["accuracy"].map(lambda a: "" if pd.isna(a) else f"acc {a:.2%}")
labels = dict(
    zip(
        shown["key"],
        base_label.where(shown["accuracy"].isna(), base_label + " · " + size_label + " · " + acc_label),
        strict=True,
    )
)
if selected in labels:
    state.put(state.EXPLORE_PICK, selected)


def _pick() -> None:
    key = state.get(state.EXPLORE_PICK)
    state.select_result(key, model_of.get(key))


st.selectbox(
    "Selected plan (or click a point)",
    options,
    key=state.EXPLORE_PICK,
    index=None,
    format_func=lambda k: labels.get(k, k),
    on_change=_pick,
    placeholder="Click a point on a plot, or choose here",
)
if selected is None:
    st.stop()
record = cached.record(selected)
if record is None:
    st.warning("The result in this link is not in the store (it may have been deleted). Pick another plan.")
    st.stop()
in_view = set(filter_results(frame, view_models)["key"])
if selected not in labels and selected in in_view:
    # The details follow the plots: a plan they no longer draw is not shown as if it were picked.
    st.info(
        f"The selected plan, {record['plan_summary']}, is hidden by the precision filter: allow its "
        "precisions above to see it again."
    )
    st.stop()
if selected not in in_view:
    # Another model's result (a link naming this model with another's plan): shown here, it read as
    # this model's, and Load switched the sidebar to the other model. A removed model's, or an earlier
    # one's under a reused name, is in no model's view now: it is shown below for reference.
    others = filter_results(frame, [cached.model_id(n) for n in listed])
    owner = others.loc[others["key"] == selected, "model_name"]
    if not owner.empty:
        st.info(
            f"The selected plan, {record['plan_summary']}, is a result of {owner.iloc[0]}, not of {model}: "
            f"pick {owner.iloc[0]} in the sidebar (or turn on All models) to see it."
        )
        st.stop()

# The same files under another name (or before a removal) were measured under that name; the plots
# show the result as this model's (engine.charts.filter_results), and so do its details, Load and link.
shown_as = model_of.get(selected)
if shown_as and shown_as != record["model_name"]:
    record = {**record, "model_name": shown_as}

m = record["metrics"]
st.subheader(f"{record['plan_summary']} · {record['model_name']}")
c1, c2, c3 = st.columns(3)
comp = m.get("fp32_size_bytes", 0) / m["size_bytes"] if m.get("size_bytes") else None
# FP32 itself gets no "1.00× smaller" delta: it is what the others are compared with.
smaller = f"{comp:.2f}× smaller than FP32" if comp and not is_baseline(record["plan"]) else None
c1.metric("Size", widgets.fmt_bytes(m.get("size_bytes")), smaller)
if m.get("accuracy") is None and m.get("agreement") is not None:  # no labels: fidelity instead
    c2.metric("Top-1 agreement with FP32", f"{m['agreement']:.2%}")
else:
    c2.metric("Accuracy", f"{m['accuracy']:.2%}" if m.get("accuracy") is not None else "n/a (no labels)")
c3.metric("SQNR vs FP32", f"{m['sqnr_db']:.1f} dB" if m.get("sqnr_db") is not None else "identical")
st.caption(f"Accuracy: {widgets.accuracy_text(record)}")
for batch in m.get("latency", {}):
    st.caption(f"Latency at batch {batch}: {widgets.latency_text(record, batch)}")

realized = m.get("realized") or {}
st.dataframe(
    pd.DataFrame(
        {
            "layer": list(record["plan"]["layers"]),
            "precision": [Precision(v).label for v in record["plan"]["layers"].values()],
            "realized in the graph": [
                Precision(realized[n]).label if n in realized else "?" for n in record["plan"]["layers"]
            ],
        }
    ),
    hide_index=True,
)


def _load() -> None:
    # Put the plan in the editor of its own model and show that model.
    state.put(state.MODEL, record["model_name"])
    calibration = (record["metrics"].get("settings") or {}).get("calibration")
    editing.set_plan(
        record["model_name"],
        dict(record["plan"]["layers"]),
        editing.measured_with(record["plan"], calibration),
    )


def _not_loadable() -> str | None:
    """Why the plan cannot go into a plan editor (its model is gone), or None."""
    name = record["model_name"]
    if name not in listed:
        return f"{name} was removed; its results stay for reference but its plan cannot be loaded."
    current = cached.model_id(name)
    if current != name and model_identity(name, record["model_hash"], record["data_hash"]) != current:
        return (
            f"This result is of an earlier model named {name}, since replaced by another; it stays for "
            "reference but its plan cannot be loaded."
        )
    return None


c1, c2, c3 = st.columns(3)
# A result of a removed model is reached by a link or a selection kept from before the removal.
# Loading it would open another model's editor (the sidebar falls back to the first model).
why_not = _not_loadable()
if c1.button("Load into plan editor", key="qd_load_plan", on_click=_load, disabled=why_not is not None):
    st.switch_page("app_pages/plan.py")
if why_not:
    c1.caption(why_not)
plan_json = json.dumps(record["plan"], indent=2, sort_keys=True)
stem = f"{record['model_name']}-{record['key'][:8]}"
c2.download_button(
    "Download plan JSON", plan_json, file_name=f"{stem}-plan.json", mime="application/json", key="qd_dl_plan"
)
path = record.get("artifact_path")
try:
    c3.download_button(
        "Download quantized ONNX",
        cached.artifact_bytes(path),
        file_name=f"{stem}.onnx",
        mime="application/octet-stream",
        key="qd_dl_onnx",
    )
except (OSError, TypeError):
    c3.warning("The quantized file is no longer on disk; press Evaluate with this plan to make it again.")
st.caption(
    f"Link to this view: `?model={record['model_name']}&result={record['key']}` (the address bar has it too)."
)
