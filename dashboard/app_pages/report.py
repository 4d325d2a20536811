"""Report: the plan to ship for a goal in plain words, and a one-click report for stakeholders."""

from __future__ import annotations

import functools
from pathlib import Path

import streamlit as st

from dashboard import cached, report_files, state, widgets
from dashboard.runner import PRESETS_JOB, explain_failure
from dashboard.text import md, one_line
from engine.goal import EXAMPLES, GoalError, parse_goal
from engine.presets import PRESETS
from engine.report import candidate_table

MIN_CANDIDATES = 3  # fewer measured plans than this: offer to measure the presets first

model = state.current_model()
runner = cached.runner()

st.header(f"Report · {model}")
widgets.jobs_panel()
if not cached.has_labels(model):
    st.info(
        f"{model} has no labelled evaluation data, so no plan's accuracy is known and a goal cannot be "
        "judged. Add it again with labels on the Models page to get a recommendation and a report."
    )
    st.stop()


def _read(path: str) -> bytes:
    return Path(path).read_bytes()


# --- the goal ---------------------------------------------------------------------------------------
goal_text = st.text_input(
    "Goal, in plain words",
    value=EXAMPLES[0],
    key=state.REPORT_GOAL,
    persist_state=state.KEEP,
    help="Say what to optimise (smallest, fastest or most accurate) and any limits, for example:\n"
    + "\n".join(f"- {e}" for e in EXAMPLES),
)
try:
    goal = parse_goal(goal_text)
except GoalError as e:
    st.error(md(f"This page {e}"))
    st.stop()
st.caption(md(f"Understood as: {goal.describe()}."))

# The Models page may be measuring the FP32 baseline right now: wait for it rather than measure it twice.
base_key = cached.baseline_key(model)
measuring = {j["result_key"] for j in runner.store.list_jobs(["queued", "running"])}
if base_key in measuring and runner.store.get_ok(base_key) is None:
    st.info(
        f"The FP32 baseline of {model} is being measured (progress above); the recommendation appears "
        "as soon as it lands."
    )
    st.stop()

try:
    rec = cached.recommendation(model, goal_text, cached.store_version())
except Exception as e:  # no traceback on screen: what failed and what to try
    st.error(
        md(
            f"No recommendation could be made for {model} ({one_line(e)}). Check the model's FP32 "
            "result on the Models page, then reload this page."
        )
    )
    st.stop()

# --- too few plans measured: offer the presets ------------------------------------------------------
# Measured in a job (progress in the jobs panel): a reload or another tab sees it run, and the page is
# rerun with the new plans when it ends. What it could not measure is read from the store, so any tab
# says it, until each of those plans has been measured since.
failed = runner.preset_failures(model)
if failed:
    st.warning(
        md(
            f"{len(failed)} of {len(PRESETS)} preset plans could not be measured, so they are not "
            "candidates: " + " ".join(explain_failure(r) for r in failed)
        )
    )
if len(rec.candidates) < MIN_CANDIDATES:
    measuring_presets = bool(runner.active_jobs(PRESETS_JOB, model))
    c1, c2 = st.columns([4, 1], vertical_alignment="center")
    if measuring_presets:
        c1.info(
            f"The FP32 baseline and every preset plan of {model} are being measured (progress above). "
            f"Until they land the choice is among the {len(rec.candidates)} measured plan(s) below; this "
            "page updates when they do."
        )
    else:
        c1.info(
            f"Only {len(rec.candidates)} measured plan(s) of {model} to choose from. Measure the FP32 "
            "baseline and every preset plan first (each is really quantized and measured; plans already "
            "measured are served from the store): about a minute, then the choice is among all of them."
        )
    if c2.button(
        "Measuring the presets…" if measuring_presets else "Measure the presets first",
        key=state.REPORT_MEASURE,
        type="primary",
        disabled=measuring_presets,
        help="Measured in the background: you can keep working, or reload; this page updates when it is "
        "done.",
    ):
        runner.submit_presets(model)  # the running job's id if another tab pressed first
        st.toast(f"Measuring the preset plans of {model} in the background.")
        st.rerun()

# --- the recommendation -----------------------------------------------------------------------------
if rec.chosen is None:
    st.warning(f"**{md(rec.headline)}**  \n{md(rec.statement)}")
else:
    st.subheader(md(rec.headline))
    st.markdown(f"**{md(rec.statement)}**")
if rec.caveats:
    st.markdown("**Caveats**\n\n" + "\n".join(f"- {md(c)}" for c in rec.caveats))
st.markdown("#### Plans considered")
st.dataframe(candidate_table(rec), hide_index=True)
st.caption(
    "Every measured plan of the model with accuracy, size and batch-1 latency, the ones meeting the goal "
    "first, best first. Accuracy changes are in percentage points with their 95% bootstrap interval."
)

# --- the report ----------------------------------------------------------------------------------------
st.markdown("#### Report for stakeholders")
st.caption(
    "report.html (self-contained: opens offline), report.pdf and PNG/SVG images of its plots (printed "
    "by headless Chromium), and bundle.zip: the chosen quantized model with its plan, its measurements and "
    "how to run it with ONNX Runtime. Built from what the store holds now; nothing is measured again."
)
building = bool(runner.active_jobs("report", model))
if st.button(
    "Build report",
    key=state.REPORT_BUILD,
    type="primary",
    disabled=building,
    help="Built in the background: you can keep working, and the files are offered here when it is done."
    + (" A report of this model is being built now." if building else ""),
):
    runner.submit_report(model, goal, goal_text)
    st.toast(f"Building the report of {model} in the background.")
    st.rerun()

# The newest report finished on disk, wherever the user was when it finished (a job, not this run).
built = report_files.latest(runner.engine.home / "reports", model, cached.model_id(model))
if built is not None:
    st.caption(md(f"Built {built['built_at']} for {built['goal']}, in {built['out_dir']}."))
    # Only plans the report would consider (rec.candidates: by network, so the same files measured under
    # another name count); a sensitivity probe, with no latency, is none it could show.
    bundle = runner.model(model)
    results = runner.store.to_frame(network=(bundle.model_hash, bundle.data_hash))
    later = report_files.measured_since(results[results["key"].isin(rec.candidates["key"])], built)
    if later:
        st.info(
            f"{later} plan{' was' if later == 1 else 's were'} measured after this report was built: "
            "build it again to include them."
        )
    downloads = [
        ("html", "report.html", "text/html", state.REPORT_DL_HTML),
        ("pdf", "report.pdf", "application/pdf", state.REPORT_DL_PDF),
        ("bundle", "bundle.zip", "application/zip", state.REPORT_DL_BUNDLE),
        ("images", "images.zip", "application/zip", state.REPORT_DL_IMAGES),
    ]
    present = [d for d in downloads if built[d[0]] and Path(built[d[0]]).is_file()]
    for col, (field, name, mime, key) in zip(st.columns(len(downloads)), present, strict=False):
        col.download_button(
            f"Download {name}",
            functools.partial(_read, built[field]),  # read on click, not on every rerun
            file_name=f"{model}-{name}",
            mime=mime,
            key=key,
            on_click="ignore",
            icon=":material/download:",
        )
    if built["bundle"] is None:
        st.caption("No bundle.zip: no plan meets the goal, so there is no model to hand off.")
    if built["render_error"]:
        st.warning(md(f"No PDF or plot images: {built['render_error']}"))
