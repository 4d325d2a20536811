"""Pieces several pages share: the running-jobs panel, what a button press said, number formatting."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import streamlit as st

from dashboard import cached, state
from engine.charts import is_baseline, perplexity_text
from engine.latency_compare import comparable_latency, has_ratio, is_reference, latency_words

_RECENT = timedelta(minutes=10)  # how long a failure stays on screen after a reload


def _active_jobs() -> list[dict[str, Any]]:
    return cached.runner().store.list_jobs(["queued", "running"])


def jobs_panel() -> None:
    """Progress of running evaluations, refreshed every second while any runs; failures in plain words.

    When a watched job ends, the whole app reruns, so the new point appears without a manual refresh.
    """
    run_every = 1.0 if _active_jobs() else None

    @st.fragment(run_every=run_every)
    def panel() -> None:
        active = _active_jobs()
        ids = {j["job_id"] for j in active}
        watched = set(state.get(state.WATCHED, set()))
        if watched - ids:  # something this page was showing has finished
            state.put(state.WATCHED, ids)
            st.rerun(scope="app")
        state.put(state.WATCHED, watched | ids)
        stops = cached.runner().stops
        for job in active:
            job_id = job["job_id"]
            text = f"⏳ {job['message']} · started {_ago(job['created_at'])}. You can keep working."
            if stops.asked(job_id):  # it ends at its next progress report: a plan landing, a profile
                text = f"⏹ Stopping when the next plan lands: {job['message']}."
            if not stops.stoppable(job_id):
                st.progress(max(0.02, float(job["progress"] or 0)), text=text)
                continue
            bar, button = st.columns([12, 1], vertical_alignment="bottom")
            bar.progress(max(0.02, float(job["progress"] or 0)), text=text)
            # A callback: it runs before the rerun the press starts, so that run already says "Stopping".
            button.button(
                "Stop",
                key=f"qd_stop_{job_id}",
                disabled=stops.asked(job_id),
                help="Stops when the next plan lands; plans still being measured then are cancelled. What "
                "was measured is kept: start it again to continue from there.",
                on_click=_stop,
                args=(job_id,),
            )
        _failures()
        _stopped()

    panel()


def _stop(job_id: str) -> None:
    # No toast here: elements drawn in a fragment's callback land at the top of the page.
    cached.runner().stops.request(job_id)


# What to press to run a job again that a restart interrupted, by the job's kind.
_AGAIN = {
    "evaluate": "Press Evaluate again to re-run it.",
    "sensitivity": "Press Run sensitivity pass again: what was measured is kept.",
    "search": "Press Find best plans again with the same settings: it continues where it stopped.",
    "report": "Press Build report again.",
    "add-model": "Add it again on the Models page.",
    "presets": "Press Measure the presets first on the Report page again: what was measured is kept.",
}


def _recent(states: list[str]) -> list[dict[str, Any]]:
    """Jobs in these states that changed in the last minutes and this session has not dismissed."""
    dismissed = set(state.get(state.DISMISSED, set()))
    since = (datetime.now(UTC) - _RECENT).isoformat()
    jobs = cached.runner().store.list_jobs(states)
    return [j for j in jobs if j["updated_at"] >= since and j["job_id"] not in dismissed]


def _said(job: dict[str, Any], text: str, kind: str) -> None:
    """What a job said, as an st.error, st.info or st.success (`kind`), with Dismiss beside it."""
    cols = st.columns([12, 1])
    {"error": cols[0].error, "info": cols[0].info, "success": cols[0].success}[kind](
        text, icon="⏹" if kind == "info" else None
    )
    if cols[1].button("Dismiss", key=f"qd_dismiss_{job['job_id']}"):
        dismiss(job["job_id"])
        st.rerun(scope="app")


def _failures() -> None:
    for job in _recent(["failed", "stale"]):
        if job["state"] == "stale":
            again = _AGAIN.get(job.get("kind") or "", _AGAIN["evaluate"])
            text = f"{job['message']}: interrupted because the app restarted. {again}"
        else:
            text = job["message"] or "The evaluation failed for an unknown reason. Try again."
        _said(job, text, "error")


def _stopped() -> None:
    """Jobs the user stopped in the last minutes: what they kept and how to continue, until dismissed
    (the bar that had the Stop button is gone, and a stopped search shows its plans as if it had ended)."""
    for job in _recent(["done"]):
        if job.get("outcome") == "stopped":
            _said(job, job["message"], "info")


def recent_done(kind: str) -> None:
    """What jobs of `kind` that ended well in the last minutes said (markdown), each with Dismiss:
    for work whose own page may be gone (a reload during an add), so its outcome is not lost."""
    for job in _recent(["done"]):
        if job.get("kind") == kind:
            _said(job, job["message"], "success")


def dismiss(job_id: str) -> None:
    """Show no more what a job said, in this session (its page said it already, or the user closed it)."""
    state.put(state.DISMISSED, set(state.get(state.DISMISSED, set())) | {job_id})


def keep_outcome(key: str, attempt: object, message: str | None, kind: str = "error") -> None:
    """Remember what pressing a button on `attempt` (what the press acted on) said; None: nothing to say."""
    state.put(key, None if message is None else (attempt, kind, message))


def show_outcome(key: str, attempt: object) -> None:
    """What the last press said, while what it acted on is unchanged, drawn on every rerun and not only in
    the press's own: a background job ending reruns the app, which would wipe it the moment it appeared."""
    show_outcome_while(key, lambda kept_attempt: kept_attempt == attempt)


def show_outcome_while(key: str, holds: Callable[[Any], bool]) -> None:
    """What the last press said, while `holds(what it acted on)`: for a message that stops holding
    through something other than the page's inputs (a failed plan measured since, say)."""
    kept = state.get(key)
    if kept is not None and holds(kept[0]):
        {"error": st.error, "warning": st.warning}[kept[1]](kept[2])


def _ago(iso: str) -> str:
    try:
        seconds = (datetime.now(UTC) - datetime.fromisoformat(iso)).total_seconds()
    except ValueError:
        return "a moment ago"
    return f"{seconds:.0f} s ago"


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "?"
    return f"{n / 1e6:.2f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


def latency_text(record: dict[str, Any], batch: str = "1") -> str:
    """'0.068 ms (95% CI 0.066–0.070) on AMD EPYC, ONNX Runtime 1.32.0, 1 thread'."""
    lat = ((record.get("metrics") or {}).get("latency") or {}).get(batch)
    if not lat:
        return "not measured"
    env = record.get("environment") or {}
    return (
        f"{latency_words(lat)} on {env.get('cpu', '?')}, ONNX Runtime {env.get('onnxruntime', '?')}, "
        f"{lat.get('threads', '?')} thread(s)"
    )


def measured_text(record: dict[str, Any]) -> str:
    """A measured plan in one line, all three objectives: '4 INT8 · 1 FP32 · accuracy 97.50%, -0.20 pp
    vs FP32 (95% CI ...) · size 24.1 kB, 3.21× smaller than FP32 · latency 0.234 ms (95% CI
    0.229–0.240), 0.45× FP32, on AMD EPYC, ONNX Runtime 1.23.2'."""
    m = record.get("metrics") or {}
    size, fp32 = m.get("size_bytes"), m.get("fp32_size_bytes")
    fp32_plan = is_baseline(record.get("plan"))
    size_words = f"size {fmt_bytes(size)}"
    if size and fp32 and not fp32_plan:
        size_words += f", {fp32 / size:.2f}× smaller than FP32"
    accuracy = ("accuracy " if m.get("accuracy") is not None else "") + accuracy_text(record)
    parts = [str(record.get("plan_summary") or "?"), accuracy, size_words]
    lat = (m.get("latency") or {}).get("1")
    if lat:
        value, low, high = comparable_latency(lat)
        if is_reference(lat):  # its interval is the scale's, zero-wide by definition
            words = f"latency at batch 1 {value:.3f} ms (the FP32 scale the plans are timed against)"
        else:
            words = f"latency at batch 1 {value:.3f} ms (95% CI {low:.3f}–{high:.3f})"
        if has_ratio(lat) and not is_reference(lat):
            words += f", {float(lat['vs_fp32']):.2f}× FP32"
        env = record.get("environment") or {}
        parts.append(f"{words}, on {env.get('cpu', '?')}, ONNX Runtime {env.get('onnxruntime', '?')}")
    return " · ".join(parts)


def accuracy_text(record: dict[str, Any]) -> str:
    """Accuracy with its change vs FP32 and that change's CI; the FP32 plan's alone (against itself it
    is +0.00 pp with a zero-width interval, which says nothing)."""
    m = record.get("metrics") or {}
    plan = record.get("plan")
    with_delta = plan is None or not is_baseline(plan)  # a record without its plan: say what it holds
    if m.get("accuracy") is None:
        ppl = m.get("perplexity")
        return f"perplexity {ppl:.3f}" if ppl is not None else "no accuracy (no labels)"
    text = f"{m['accuracy']:.2%}"
    if with_delta and m.get("accuracy_delta") is not None:
        text += f", {m['accuracy_delta'] * 100:+.2f} pp vs FP32"
        if m.get("accuracy_delta_ci_low") is not None:
            lo, hi = m["accuracy_delta_ci_low"] * 100, m["accuracy_delta_ci_high"] * 100
            text += f" (95% CI {lo:+.2f} to {hi:+.2f})"
    if m.get("perplexity") is not None:  # a language model: its second metric, with its ratio's interval
        text += f"; perplexity {perplexity_text(m) if with_delta else format(m['perplexity'], '.3f')}"
    return text
