"""quantdash dashboard: the page router (st.navigation) and the sidebar model picker.

Pages live in app_pages/; they call only the public engine API, through dashboard.cached and
dashboard.runner, and spell session-state keys only through dashboard.state.
"""

from __future__ import annotations

import streamlit as st

from dashboard import cached, state

st.set_page_config(page_title="quantdash", layout="wide")

cards = cached.cards()
names = list(cards)
if not names:
    st.error("No sample models found under sample_models/. Run the train scripts there (see README).")
    st.stop()


def _model_of(result_key: str) -> str | None:
    try:
        return (cached.record(result_key) or {}).get("model_name")
    except Exception:  # the store's runner could not start: said below, where it is started
        return None


state.sync_from_url(names, _model_of)
vanished = state.settle_model(names)  # a model just added is picked; a removed one is not
with st.sidebar:
    st.title("quantdash")
    st.caption("What quantization buys and costs, measured with ONNX Runtime on this machine.")
    st.selectbox("Model", names, key=state.MODEL, help="The model every page shows.")
    missing = state.link_miss()
    if missing:
        st.warning(
            f"The link names the model {missing!r}, which is not here (removed, or added on another "
            f"machine); showing {state.current_model()} instead. Add it on the Models page to see it."
        )

try:
    cached.runner()
except Exception as e:  # no traceback on screen: say what failed and what to try
    st.error(
        f"Could not start the worker processes that quantize and measure models ({type(e).__name__}: {e}). "
        "Check that no other quantdash is using all memory, then reload the page. To use an existing "
        "Dask cluster, set QUANTDASH_SCHEDULER=tcp://host:8786 before starting the app."
    )
    st.stop()

pages = [
    st.Page("app_pages/models.py", title="Models", icon=":material/inventory_2:", default=True),
    st.Page("app_pages/plan.py", title="Plan", icon=":material/tune:", url_path="plan"),
    st.Page("app_pages/explore.py", title="Explore", icon=":material/scatter_plot:", url_path="explore"),
    st.Page("app_pages/compare.py", title="Compare", icon=":material/compare_arrows:", url_path="compare"),
    st.Page(
        "app_pages/search.py", title="Sensitivity & search", icon=":material/troubleshoot:", url_path="search"
    ),
    st.Page("app_pages/report.py", title="Report", icon=":material/summarize:", url_path="report"),
]
page = st.navigation(pages)
if vanished:
    # The page would now be another model's, and a press made for the removed one would act on it
    # (a sensitivity pass started on a model never picked): say so, and do nothing else this run.
    st.warning(
        f"{vanished} was removed (in another tab, or with quantdash remove-model). Nothing you pressed was "
        f"done; this tab now shows {state.current_model()}: pick a model in the sidebar and go on."
    )
    state.select_result(None)  # a result of the removed model is no longer the one shown
    state.sync_to_url()
    st.stop()
state.sync_to_url()
page.run()
