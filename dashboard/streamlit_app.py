"""quantdash landing page: the bundled sample models and their FP32 metrics.

The full dashboard (plan editor, Pareto plots) builds on this; the page reads only the
sample cards and the result store, and never loads a model in this process.
"""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from engine.datasets import SAMPLES_DIR, sample_names
from engine.store import ResultStore, default_store_path

st.set_page_config(page_title="quantdash", layout="wide")
st.title("quantdash")
st.caption("What quantization buys and costs, measured for real with ONNX Runtime on this machine.")

cards = [json.loads((SAMPLES_DIR / n / "card.json").read_text()) for n in sample_names()]
if not cards:
    st.error("No sample models found under sample_models/. Run the train scripts there (see README).")
    st.stop()

rows = []
for card in cards:
    metrics = card.get("fp32_metrics", {})
    rows.append(
        {
            "model": card["name"],
            "task": card["task"],
            "parameters": card.get("params"),
            "FP32 accuracy": metrics.get("accuracy"),
            "FP32 perplexity": metrics.get("perplexity"),
            "eval samples": card.get("eval_size"),
            "what it is": card.get("description", ""),
        }
    )
st.subheader("Sample models")
st.dataframe(
    pd.DataFrame(rows),
    hide_index=True,
    column_config={"FP32 accuracy": st.column_config.NumberColumn(format="percent")},
)

with ResultStore(default_store_path()) as store:
    results = store.to_frame()
st.subheader(f"Measured plans ({len(results)})")
if results.empty:
    st.info("No plans measured yet. Try: `.venv/bin/quantdash evaluate digits_resnet --preset int8`")
else:
    st.dataframe(
        results[["model_name", "plan_summary", "size_bytes", "latency_ms_b1", "accuracy", "accuracy_delta"]],
        hide_index=True,
    )
