"""Models: each sample model's card, its layer table from the engine, and its measured FP32 baseline."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import cached, state, widgets
from engine.types import Plan, Precision

cards = cached.cards()
st.header("Models")
st.dataframe(
    pd.DataFrame(
        [
            {
                "model": name,
                "task": c["task"],
                "parameters": c.get("params"),
                "FP32 accuracy (card)": c.get("fp32_metrics", {}).get("accuracy"),
                "what it is": c.get("description", ""),
            }
            for name, c in cards.items()
        ]
    ),
    hide_index=True,
    column_config={"FP32 accuracy (card)": st.column_config.NumberColumn(format="percent")},
)

model = state.current_model()
card = cards[model]
st.subheader(model)
st.write(card.get("description", ""))
cols = st.columns(4)
cols[0].metric("Task", card["task"].replace("_", " "))
cols[1].metric("Parameters", f"{card.get('params', 0):,}")
cols[2].metric("Evaluation samples", card.get("eval_size", "?"))
cols[3].metric("Classes", len(card.get("classes", [])) or "—")
with st.expander("Provenance (data, training, export)"):
    st.write(card.get("provenance", "not recorded"))

widgets.jobs_panel()

st.markdown("#### FP32 baseline, measured here")
runner = cached.runner()
base_key = cached.baseline_key(model)
base = runner.store.get_ok(base_key)
if base is None:
    busy = any(j["result_key"] == base_key for j in runner.store.list_jobs(["queued", "running"]))
    if not busy:
        # Every other page compares against this, so measure it as soon as the model is looked at.
        runner.submit(model, Plan(default=Precision.FP32), with_baseline=False)
        st.rerun()
    st.info("Measuring the FP32 baseline in a worker process; it appears here when done.")
else:
    m = base["metrics"]
    cols = st.columns(3)
    cols[0].metric("Size", widgets.fmt_bytes(m.get("size_bytes")))
    if m.get("accuracy") is not None:
        cols[1].metric("Accuracy", f"{m['accuracy']:.2%}")
    else:
        cols[1].metric("Quality", widgets.accuracy_text(base))
    cols[2].metric("Latency, batch 1 (median)", f"{m['latency']['1']['median_ms']:.3f} ms")
    for batch in m.get("latency", {}):
        st.caption(f"Latency at batch {batch}: {widgets.latency_text(base, batch)}")

st.markdown("#### Layers (the weight-bearing nodes a plan sets)")
layers = cached.layers(model)
st.dataframe(
    pd.DataFrame(
        {
            "layer": [x.name for x in layers],
            "op": [x.op_type for x in layers],
            "params": [x.params for x in layers],
            "MACs / sample": [x.macs for x in layers],
            "weights (kB, FP32)": [x.weight_bytes / 1e3 for x in layers],
            "accepts": [", ".join(p.label for p in x.accepts) for x in layers],
            "cannot take": ["; ".join(f"{p.label}: {why}" for p, why in x.rejects.items()) for x in layers],
        }
    ),
    hide_index=True,
)
