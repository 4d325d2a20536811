"""Compare: two or more results side by side: metric deltas, differing layers, per-class accuracy."""

from __future__ import annotations

import streamlit as st

from dashboard import cached, state, widgets
from engine.charts import compare_table, layer_differences, per_class_table

model = state.current_model()
st.header(f"Compare · {model}")
widgets.jobs_panel()

frame = cached.results(cached.store_version())
frame = frame[frame["model_name"] == model].sort_values("created_at", ascending=False)
if len(frame) < 2:
    st.info(
        f"Compare needs two measured plans of {model}; {len(frame)} so far. Evaluate some on the Plan page."
    )
    st.stop()

labels = {r["key"]: f"{r['plan_summary']} ({r['key'][:6]})" for _, r in frame.iterrows()}
if state.get(state.COMPARE) is None:
    # Start from the selected result against the FP32 baseline, the comparison people ask for first.
    # (or the latest result when none is selected).
    start = [k for k in (cached.baseline_key(model), state.selected_result()) if k in labels]
    state.put(state.COMPARE, list(dict.fromkeys(start + list(labels)))[:2])
picked = st.multiselect(
    "Results (the first is the reference)", list(labels), key=state.COMPARE, format_func=labels.get
)
if len(picked) < 2:
    st.info("Pick at least two results.")
    st.stop()
records = [cached.record(k) for k in picked]

st.markdown("#### Metrics, and change against the first")
table = compare_table(records)
st.dataframe(
    table.drop(columns=["key"]),
    hide_index=True,
    column_config={
        "size_mb": st.column_config.NumberColumn("size (MB)", format="%.3f"),
        "latency_ms_b1": st.column_config.NumberColumn("latency b1 (ms)", format="%.3f"),
        "latency_ci_ms": "latency 95% CI (ms)",
        "accuracy_pct": st.column_config.NumberColumn("accuracy (%)", format="%.2f"),
        "accuracy_change_pp": st.column_config.NumberColumn("Δ acc vs FP32 (pp)", format="%+.2f"),
        "accuracy_change_ci_pp": "Δ acc 95% CI (pp)",
        "size_vs_first_pct": st.column_config.NumberColumn("size vs first (%)", format="%+.1f"),
        "latency_vs_first_pct": st.column_config.NumberColumn("latency vs first (%)", format="%+.1f"),
        "accuracy_vs_first_pp": st.column_config.NumberColumn("accuracy vs first (pp)", format="%+.2f"),
    },
)
st.caption("Latency differences inside the 95% intervals are noise on this shared machine.")

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
