"""Models: each model's card (the samples and the ones you add), its layer table from the engine, its
measured FP32 baseline, and "Add your own model"."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import uuid
from typing import Any

import pandas as pd
import streamlit as st

from dashboard import cached, drafts, state, upload_logic, widgets
from dashboard.text import md, one_line
from engine.latency_compare import comparable_ms, ratio_to_fp32
from engine.model_io import ModelError
from engine.presets import preset_plan
from engine.types import Plan, Precision
from engine.user_models import NAME_RULE, suggest_name

cards = cached.cards()
added = set(cached.added_models())
runner = cached.runner()
st.header("Models")


def _fp32_accuracy(name: str, card: dict[str, Any]) -> float | None:
    """A sample's from its card (measured when it was trained, on the same split); an added model's
    card has none (it read "None" although its baseline was measured), so its stored FP32 result's.
    Only added models are looked up: finding a result's key loads the model, and loading every
    sample took 3 s on this page's first run."""
    if name not in added:
        return card.get("fp32_metrics", {}).get("accuracy")
    try:
        base = runner.store.get_ok(cached.baseline_key(name))
    except Exception:  # a model whose files cannot be read now: nothing measured to show
        return None
    return ((base or {}).get("metrics") or {}).get("accuracy")


st.dataframe(
    pd.DataFrame(
        [
            {
                "model": name,
                "kind": "added" if name in added else "sample",
                "task": c["task"].replace("_", " "),
                "parameters": c.get("params"),
                "FP32 accuracy": _fp32_accuracy(name, c),
                "what it is": c.get("description", ""),
            }
            for name, c in cards.items()
        ]
    ),
    hide_index=True,
    column_config={
        "parameters": st.column_config.NumberColumn(format="localized"),
        "FP32 accuracy": st.column_config.NumberColumn(
            format="percent",
            help="A sample's from its card; an added model's once its FP32 baseline is measured here.",
        ),
    },
)


def _dimension_sizes(declared: list[dict[str, Any]]) -> dict[tuple[int, int], int | str | None]:
    """Ask for each dynamic dimension but the batch; (input index, axis) -> the size typed
    (upload_logic.read_size: None if empty, the text itself if it is no whole number)."""
    dims = upload_logic.dynamic_dims(declared)
    if not dims:
        return {}
    st.markdown(
        "The model leaves these input sizes open. Give each one, so random inputs can be drawn "
        "(the first, batch dimension is set for you):"
    )
    sizes = {}
    for col, d in zip(itertools.cycle(st.columns(min(len(dims), 3))), dims, strict=False):
        # Text, not a number field: the browser's number field turned "1e9" into 1 and "2.5" into 2
        # without a word, and Streamlit drops what is below a min_value. What was typed is read here,
        # and what is wrong with it named (upload_logic.unreadable_size, the engine's size check).
        typed = col.text_input(
            d.label, placeholder="a size, e.g. 32", key=state.upload_key(f"dim_{d.input_index}_{d.axis}")
        )
        sizes[(d.input_index, d.axis)] = upload_logic.read_size(typed)
    return sizes


def add_section() -> None:
    """Upload a model (and data), check it in a worker, add it, and show it on every page."""
    st.markdown(upload_logic.FORMATS_HELP)
    c1, c2 = st.columns(2)
    model_file = c1.file_uploader(
        "Model (.onnx, or .zip with external data)", type=["onnx", "zip"], key=state.upload_key("model")
    )
    data_file = c2.file_uploader(
        "Evaluation data (optional: .npz, .zip of images with labels.csv, or .csv)",
        type=["npz", "zip", "csv"],
        key=state.upload_key("data"),
    )
    # Streamlit's box rounds the cap to whole GB (512 MB reads "1GB per file"); these say it exactly.
    upload_cap_mb = int(st.get_option("server.maxUploadSize"))
    c1.caption(upload_logic.size_caption("model", upload_cap_mb))
    c2.caption(upload_logic.size_caption("data", upload_cap_mb))
    if model_file is None:
        st.caption("Choose a model file to start. Nothing runs here: a worker process checks it.")
        return
    label = upload_logic.label(model_file.name)
    state.put(state.MODELS_NOTE, None)  # a new upload under way: the last one's message is done with
    name = st.text_input(
        "Name",
        value=suggest_name(label, runner.engine.home),
        # One field per model file name: another file suggests its own name, a fixed copy keeps yours.
        key=state.upload_key("name_" + hashlib.sha1(label.encode()).hexdigest()[:8]),
        help=f"How the model is listed in the sidebar: {NAME_RULE}.",
    )
    shapes: dict[str, tuple[int, ...]] = {}
    declared: list[dict[str, Any]] = []
    missing: list[upload_logic.DynamicDim] = []
    sizes: dict[tuple[int, int], int | str | None] = {}
    not_a_size: str | None = None  # a size typed that is no whole number
    unreadable = False
    if data_file is None:
        st.info(
            "No data given: accuracy will be unknown. Size, latency and fidelity to FP32 are measured on "
            "random inputs drawn to the model's declared input shapes."
        )
        try:
            outcome = cached.declared_inputs(model_file.file_id, model_file.name, model_file.getvalue())
        except Exception as e:  # the worker failed, not the file: not cached, so the next run tries again
            st.warning(
                md(
                    f"The model's inputs could not be read ({one_line(e)}). Press Add model: the "
                    "full check runs in a fresh worker and says what is wrong, if anything."
                )
            )
        else:
            if "error" in outcome:  # the file was refused: adding it would be refused the same way
                st.error(md(outcome["error"]))
                unreadable = True
            else:
                declared = outcome["inputs"]
                sizes = _dimension_sizes(declared)
                shapes, missing = upload_logic.shapes_for(declared, sizes)
                not_a_size = upload_logic.unreadable_size(upload_logic.dynamic_dims(declared), sizes)
    # What this press of Add model tries: the same files, name and sizes (as typed) are the same attempt.
    attempt = (model_file.file_id, data_file and data_file.file_id, name, tuple(sorted(sizes.items())))
    if st.button("Add model", key=state.UPLOAD_ADD, type="primary", disabled=unreadable):
        said = md(not_a_size) if not_a_size else None
        said = said or _refusal(model_file, data_file, name, shapes, declared, missing)
        widgets.keep_outcome(state.UPLOAD_OUTCOME, attempt, said)
    widgets.show_outcome(state.UPLOAD_OUTCOME, attempt)


def _refusal(
    model_file: Any,
    data_file: Any,
    name: str,
    shapes: dict[str, tuple[int, ...]],
    declared: list[dict[str, Any]],
    missing: list[upload_logic.DynamicDim],
) -> str | None:
    """Add the uploads as a model (then rerun, showing it), or say in markdown why they were not added."""
    label = upload_logic.label(model_file.name)
    if missing:
        return md("Give a size for each open input dimension first: " + "; ".join(d.label for d in missing))
    # Sizes no random input can take are refused here, in the engine's words, before any worker runs.
    wrong_size = upload_logic.size_refusal(model_file.name, declared, shapes)
    if wrong_size is not None:
        return md(wrong_size)
    # The check is a job row too: a reload or another tab sees it run and end (upload_logic.add_upload).
    # Once this page has kept the outcome to say itself, its session no longer shows the job's; not
    # before: a press elsewhere during the check reruns the script (a BaseException at the spinner's
    # end) before the page keeps anything, and the job's row is then all this tab has.
    job_id = f"{upload_logic.ADD_JOB}-{uuid.uuid4().hex[:12]}"
    try:
        with st.spinner("Checking the model in a worker process (reading it, repairing it, running it) ..."):
            new = upload_logic.add_upload(
                runner.engine,
                (model_file.name, model_file.getvalue()),
                (data_file.name, data_file.getvalue()) if data_file is not None else None,
                name=name.strip() or None,
                shapes=shapes,
                jobs=runner.store,
                job_id=job_id,
            )
    except ModelError as e:  # refused: the message names what is wrong; the uploads stay for a retry
        widgets.dismiss(job_id)
        return md(str(e))
    except Exception as e:  # the workers failed, not the file
        widgets.dismiss(job_id)
        return md(
            f"{label} could not be checked ({one_line(e)}). Your files are kept: press Add model again; "
            "if it repeats, restart the app (its worker processes restart with it)."
        )
    cached.models_changed(new.name)
    state.put(state.MODELS_NOTE, (new.name, upload_logic.added_text(new)))
    widgets.dismiss(job_id)
    state.clear_upload()
    state.show_model(new.name)
    st.rerun()
    return None  # not reached: st.rerun raises


with st.expander("Add your own model", icon=":material/upload_file:"):
    add_section()
widgets.recent_done(upload_logic.ADD_JOB)  # adds that ended while this tab was reloading, or in another

# --- the model picked in the sidebar ----------------------------------------------------------------
model = state.current_model()
# What the last add said stays while its model is shown: the reruns that land its measurements keep it.
note = state.get(state.MODELS_NOTE)
if note is not None and note[0] == model:
    st.success(note[1])
elif note is not None:
    state.put(state.MODELS_NOTE, None)
card = cards[model]
is_added = model in added
st.subheader(model)
banner = upload_logic.data_banner(card)
if banner is not None:
    (st.warning if card.get("synthetic") else st.info)(banner)
st.write(md(card.get("description", "")) if is_added else card.get("description", ""))
cols = st.columns(4)
cols[0].metric("Task", card["task"].replace("_", " "))
cols[1].metric("Parameters", f"{card.get('params', 0):,}")
eval_size = card.get("eval_size", "?")
language_model = card["task"] == "language_model"
if language_model:  # scored per token: say what a sample is, and how many predictions it makes
    length = next(iter(card.get("inputs") or []), {}).get("shape", [None, None])[-1]
    cols[2].metric(
        "Evaluation sequences",
        eval_size,
        help=f"Each of {length} tokens: accuracy counts {eval_size * length:,} next-token predictions."
        if isinstance(length, int) and isinstance(eval_size, int)
        else None,
    )
else:
    cols[2].metric("Evaluation samples", f"{eval_size} (random)" if card.get("synthetic") else eval_size)
cols[3].metric("Vocabulary (tokens)" if language_model else "Classes", len(card.get("classes", [])) or "—")
if is_added:
    if card.get("notes"):
        st.markdown(
            "**What the check found**\n\n"
            + "\n".join(f"- {md(n[0].upper() + n[1:])}" for n in card["notes"] if n)
        )
    fp32_only = upload_logic.fp32_only_frame(card)
    if not fp32_only.empty:
        st.markdown("**Ops that stay FP32 in every plan**")
        st.dataframe(fp32_only, hide_index=True)
with st.expander("Provenance (data, training, export)"):
    st.write(
        md(card.get("provenance", "not recorded")) if is_added else card.get("provenance", "not recorded")
    )
    if is_added:
        source = card.get("source") or {}
        st.caption(
            md(
                f"Added {card.get('uploaded_at', '?')} from {source.get('model_file', '?')}"
                + (f" with data {source['data_file']}" if source.get("data_file") else ", without data")
                + f"; opset {card.get('opset', '?')}, {card.get('calib_size', '?')} calibration samples."
            )
        )
if is_added:
    c1, c2 = st.columns([3, 1], vertical_alignment="center")
    confirm = c1.checkbox(
        f"Remove {model}: its files go, results measured on it stay in the store",
        key=state.remove_confirm_key(model),
    )
    if c2.button("Remove this model", key=state.REMOVE_MODEL, disabled=not confirm):
        drafts.remove(runner.engine.home, cached.model_id(model))  # by its files' hashes: before they go
        with contextlib.suppress(ModelError):  # removed meanwhile (another session, the CLI): gone anyway
            runner.engine.remove_model(model)
        st.toast(f"Removed {model}; results measured on it stay in the store.")
        cached.models_changed(model)
        state.forget_model(model)
        st.rerun()

widgets.jobs_panel()


def measured(key: str, plan: Plan, what: str) -> dict[str, Any] | None:
    """The model's stored result of a plan, measured in the background on first sight.

    A failed measurement is shown with its reason and tried again only when asked (not on every rerun).
    """
    record = runner.store.get(key)
    if record is not None and record.get("status") == "ok":
        return record
    if any(j["result_key"] == key for j in runner.store.list_jobs(["queued", "running"])):
        st.info(f"Measuring {what} in a worker process; it appears here when done.")
        return None
    if record is not None:
        reason = (record.get("error") or "no reason was recorded").strip().splitlines()[0]
        st.warning(md(f"{what[0].upper() + what[1:]} could not be measured: {reason}"))
        if not st.button(f"Measure {what} again", key=f"qd_measure_again_{key[:12]}"):
            return None
    runner.submit(model, plan, with_baseline=False)
    st.rerun()
    return None  # not reached: st.rerun raises


st.markdown("#### FP32 baseline, measured here")
# Every other page compares against this, so it is measured as soon as the model is looked at.
base = measured(cached.baseline_key(model), Plan(default=Precision.FP32), "the FP32 baseline")
if base is not None:
    m = base["metrics"]
    cols = st.columns(3)
    cols[0].metric("Size", widgets.fmt_bytes(m.get("size_bytes")))
    if m.get("accuracy") is not None:
        cols[1].metric(
            "Accuracy",
            f"{m['accuracy']:.2%}",
            help=f"Perplexity {m['perplexity']:.3f}" if m.get("perplexity") is not None else None,
        )
    else:
        cols[1].metric("Quality", widgets.accuracy_text(base))
    cols[2].metric("Latency, batch 1 (median)", f"{comparable_ms(m['latency']['1']):.3f} ms")
    for batch in m.get("latency", {}):
        st.caption(f"Latency at batch {batch}: {widgets.latency_text(base, batch)}")

layers = cached.layers(model)
if is_added and base is not None and any(Precision.INT8 in x.accepts for x in layers):
    # A model just added: what quantization does to it, without a trip to the Plan page.
    st.markdown("#### What INT8 does to it (preset int8, measured here)")
    job = runner.engine.job(runner.model(model), preset_plan("int8", layers))
    int8 = measured(job.key, job.plan, "the INT8 preset")
    if int8 is not None:
        q, b = int8["metrics"], base["metrics"]
        cols = st.columns(3)
        cols[0].metric(
            "Size",
            widgets.fmt_bytes(q["size_bytes"]),
            delta=f"{q['size_bytes'] / b['size_bytes'] - 1:+.0%} vs FP32",
            delta_color="inverse",
        )
        lat = comparable_ms(q["latency"]["1"])
        slower, clear = ratio_to_fp32(q["latency"]["1"], b["latency"]["1"])  # as every "× FP32" reads
        cols[1].metric(
            "Latency, batch 1 (median)",
            f"{lat:.3f} ms",
            delta=f"{slower - 1:+.0%} vs FP32" + ("" if clear else " (within noise)"),
            delta_color="inverse" if clear else "off",
        )
        if q.get("accuracy") is not None:
            cols[2].metric("Accuracy", widgets.accuracy_text(int8))
        elif q.get("agreement") is not None:
            cols[2].metric("Top-1 agreement with FP32", f"{q['agreement']:.1%}")
        fidelity = [
            f"SQNR {q['sqnr_db']:.1f} dB" if q.get("sqnr_db") is not None else "SQNR: identical outputs"
        ]
        if q.get("kl_divergence") is not None:
            fidelity.append(f"KL divergence {q['kl_divergence']:.4f}")
        st.caption(
            f"{int8['plan_summary']}. Output fidelity to FP32: {', '.join(fidelity)}. Latency: "
            f"{widgets.latency_text(int8)}; changes inside the 95% intervals are noise. "
            "Other plans: Plan page; all results side by side: Explore."
        )

st.markdown("#### Layers (the weight-bearing nodes a plan sets)")
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
