"""Compare: two or more results side by side: metric deltas, differing layers, per-class accuracy."""

from __future__ import annotations

import streamlit as st

from dashboard import cached, state, widgets
from engine.charts import filter_results, is_baseline
from engine.compare_tables import compare_table, layer_differences, per_class_table
from engine.measure import fidelity_figures

# The results picked are kept per model (state.COMPARE_PICKS), not only in the widget's key:
# Streamlit drops a widget's value in a run that does not draw it (on another page), and the widget
# holds the pick of one model at a time, so a switch of model and back would lose it too.

model = state.current_model()
st.header(f"Compare · {model}")
widgets.jobs_panel()

# Only this model's results as it is now: a removed model of the same name left its results behind.
frame = filter_results(cached.results(cached.store_version()), [cached.model_id(model)])
frame = frame.sort_values("created_at", ascending=False)
if len(frame) < 2:
    st.info(
        f"Compare needs two measured plans of {model}; {len(frame)} so far. Evaluate some on the Plan page."
    )
    st.stop()

labels = {r["key"]: f"{r['plan_summary']} ({r['key'][:6]})" for _, r in frame.iterrows()}
kept = state.get(state.COMPARE_PICKS, {}).get(model)
still = [k for k in kept or [] if k in labels]  # a result deleted since, or of an earlier model: gone
if kept is None or (kept and not still):
    # Start from the selected result against the FP32 baseline, the comparison people ask for first.
    # (or the latest result when none is selected).
    # The latest FP32 result from the results themselves: finding the baseline's key would load the
    # model, whose files may not be readable now.
    fp32 = next((k for k, plan in zip(frame["key"], frame["plan"], strict=True) if is_baseline(plan)), None)
    start = [k for k in (fp32, state.selected_result()) if k in labels]
    still = list(dict.fromkeys(start + list(labels)))[:2]
# An emptied pick stays empty (the user is choosing two others); it is not refilled with the default.
state.put(state.COMPARE, still)


def _keep() -> None:
    state.put(
        state.COMPARE_PICKS,
        {**state.get(state.COMPARE_PICKS, {}), model: list(state.get(state.COMPARE) or [])},
    )


picked = st.multiselect(
    "Results (the first is the reference)",
    list(labels),
    key=state.COMPARE,
    format_func=labels.get,
    on_change=_keep,
)
if len(picked) < 2:
    st.info("Pick at least two results.")
    st.stop()
records = [cached.record(k) for k in picked]

st.markdown("#### Metrics, and change against the first")
table = compare_table(records)
accuracy_columns = ["accuracy_pct", "accuracy_change_pp", "accuracy_change_ci_pp"]
accuracy_columns += ["accuracy_vs_first_pp", "accuracy_vs_first_ci_pp"]
labelled = table["accuracy_pct"].notna().any()
# A model with one output value per input has no classes: no top-1 agreement nor KL (engine.evaluate).
classless = [c for c in ("agreement_pct", "kl_divergence") if table[c].isna().all()]
st.dataframe(
    # Without labels every accuracy cell would read "None": leave the columns out and say why below.
    table.drop(columns=["key", *classless] if labelled else ["key", *accuracy_columns, *classless]),
    hide_index=True,
    column_config={
        "size": st.column_config.NumberColumn(f"size ({table.attrs['size_unit']})", format="%.3f"),
        "latency_ms_b1": st.column_config.NumberColumn("latency b1 (ms)", format="%.3f"),
        "latency_ci_ms": "latency 95% CI (ms)",
        "accuracy_pct": st.column_config.NumberColumn("accuracy (%)", format="%.2f"),
        "accuracy_change_pp": st.column_config.NumberColumn("Δ acc vs FP32 (pp)", format="%+.2f"),
        "accuracy_change_ci_pp": "Δ acc 95% CI (pp)",
        "agreement_pct": st.column_config.NumberColumn("top-1 agreement with FP32 (%)", format="%.2f"),
        "sqnr_db": "SQNR vs FP32 (dB)",
        "kl_divergence": st.column_config.NumberColumn("KL divergence from FP32", format="%.2e"),
        "size_vs_first_pct": st.column_config.NumberColumn("size vs first (%)", format="%+.1f"),
        "latency_vs_first_pct": st.column_config.NumberColumn("latency vs first (%)", format="%+.1f"),
        "latency_vs_first_ci_pct": "latency vs first 95% CI (%)",
        "accuracy_vs_first_pp": st.column_config.NumberColumn("accuracy vs first (pp)", format="%+.2f"),
        "accuracy_vs_first_ci_pp": "accuracy vs first 95% CI (pp, paired)",
        "perplexity": "perplexity (vs FP32, 95% CI)",
    },
)
if not labelled:
    figures = fidelity_figures("agreement_pct" not in classless)
    st.caption(
        f"Accuracy: n/a (no labels). {model} was added without labelled data, so accuracy cannot be "
        f"measured; compare the plans by their fidelity to FP32 instead: {figures}."
    )
st.caption(
    "Latency differences inside the 95% intervals are noise on this shared machine. Against the first "
    + (
        "plan, accuracy is compared example by example (a paired interval); latency "
        if labelled
        else "plan, latency "
    )
    + "from each plan's interval on the model's FP32 scale, so its interval is wide: a change it holds 0 in "
    "is no clear change."
)

st.markdown("#### Layers that differ")
diff = layer_differences(records)
if diff.empty:
    st.write("Every layer has the same precision in these plans.")
else:
    st.dataframe(diff, hide_index=True)

classes = cached.cards().get(model, {}).get("classes")
per_class = per_class_table(records, classes)
if not per_class.empty:
    st.markdown("#### Accuracy per class (%)")
    st.dataframe(per_class.style.format(precision=1), hide_index=True)
    st.bar_chart(per_class.set_index("class"), stack=False, height=260)
