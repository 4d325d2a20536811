"""Pure logic of the Models page's "Add your own model" (no streamlit here, so it is tested directly).

The page hands uploaded bytes to the engine: they are written under generated names in a fresh
temporary folder (only the suffix of the user's file name is kept, so a name cannot steer where a
file goes), and the engine checks them in a worker. Nothing here parses or runs a model.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from dashboard.text import md
from engine import safe_files
from engine.api import Engine
from engine.measure import fidelity_figures
from engine.model_io import ModelError
from engine.store import ResultStore
from engine.synthetic import check_synthetic_sizes
from engine.user_models import AddedModel

FORMATS_HELP = (
    "**Model**: a `.onnx` file, or a `.zip` holding one `.onnx` and its external data files.  \n"
    "**Data** (optional): a `.npz` with one array per model input, keyed by the input's name, plus an "
    "optional `labels` array; a `.zip` of images with a `labels.csv`; or a `.csv` of feature columns "
    "plus an optional `label` column. Without labels, only fidelity to FP32 is measured (SQNR; top-1 "
    "agreement and KL divergence too when the model outputs class scores); without data, inputs are "
    "drawn at random to the model's declared shapes."
)
SYNTHETIC_BANNER = (
    "Accuracy unknown: no data given — size, latency and fidelity to FP32 are measured on random inputs."
)
NO_LABELS_BANNER = (
    "No labels: only fidelity to FP32 ({fidelity}) is measured on your data; "
    "accuracy is not known, so pages that judge plans by accuracy say so instead."
)
_SUFFIX = re.compile(r"\.[a-z0-9]{1,8}")


def label(file_name: str) -> str:
    """The name a user knows an upload by (a folder upload's name holds the folder path too)."""
    return Path(file_name.replace("\\", "/")).name or "upload"


def stored_name(stem: str, file_name: str) -> str:
    """A generated file name keeping only the user's suffix ('My Net.ONNX' -> 'upload.onnx')."""
    suffix = Path(label(file_name)).suffix.lower()
    # An odd suffix is dropped, not kept: the engine then refuses the file, naming what it expects.
    return stem + (suffix if _SUFFIX.fullmatch(suffix) else "")


@dataclass(frozen=True)
class DynamicDim:
    """A dimension the page asks for before drawing random inputs: input `input`, axis `axis`."""

    input_index: int
    input: str
    axis: int
    name: str  # as declared, e.g. 'length'
    shape: tuple[int | str, ...]

    @property
    def label(self) -> str:
        shown = ", ".join(str(d) for d in self.shape)
        return f"{self.input} [{shown}]: size of '{self.name}' (dimension {self.axis})"


def dynamic_dims(declared: Sequence[Mapping[str, Any]]) -> list[DynamicDim]:
    """Dynamic dimensions other than the first (the batch, which the engine sets itself)."""
    return [
        DynamicDim(i, str(inp["name"]), axis, str(d), tuple(inp["shape"]))
        for i, inp in enumerate(declared)
        for axis, d in enumerate(inp["shape"])
        if axis > 0 and not isinstance(d, int)
    ]


def read_size(text: str | None) -> int | str | None:
    """A size as typed: None if nothing is, the whole number it says ("32", "1,024", "1e9"), or the
    text itself when it says none ("2.5", "abc"), for the page to name it rather than change it."""
    typed = (text or "").strip()
    if not typed:
        return None
    # Commas only as thousands separators: "1,5" (a decimal comma) is named, not read as 15.
    if "," in typed and not re.fullmatch(r"\d{1,3}(,\d{3})+", typed):
        return typed
    cleaned = typed.replace(",", "").replace("_", "")
    try:
        return int(cleaned)
    except ValueError:
        pass
    try:
        value = float(cleaned)
    except ValueError:
        return typed
    # Whole, and not absurd: "1e300" is a typo to name, not a 301-digit size to echo.
    return int(value) if value.is_integer() and abs(value) < 1e18 else typed


def unreadable_size(
    dims: Sequence[DynamicDim], sizes: Mapping[tuple[int, int], int | str | None]
) -> str | None:
    """What is wrong with the first size typed that is not a whole number, or None."""
    for d in dims:
        typed = sizes.get((d.input_index, d.axis))
        if isinstance(typed, str):
            return f"{d.label}: {typed!r} is not a size; expected a whole number of at least 1"
    return None


def shapes_for(
    declared: Sequence[Mapping[str, Any]], sizes: Mapping[tuple[int, int], int | str | None]
) -> tuple[dict[str, tuple[int, ...]], list[DynamicDim]]:
    """({input name: (1, d1, ...)} for inputs with dynamic dimensions, the dimensions still missing).

    ``sizes`` maps (input index, axis) to what the user typed (read_size: None while empty). A size
    typed is kept as typed, 0 or -3 too: the engine's check_synthetic_sizes says what is wrong with it,
    which "give a size" would not. Text that is no number counts as missing here (unreadable_size
    names it first).
    """
    dims = dynamic_dims(declared)
    sizes = {k: v for k, v in sizes.items() if not isinstance(v, str)}
    missing = [d for d in dims if sizes.get((d.input_index, d.axis)) is None]
    shapes: dict[str, tuple[int, ...]] = {}
    for i in sorted({d.input_index for d in dims}):
        shape = declared[i]["shape"]
        # A fixed batch size must be given as declared; a dynamic one as 1 (the engine sets the rows).
        batch = shape[0] if isinstance(shape[0], int) else 1
        typed = [sizes.get((i, axis)) for axis in range(len(shape))]
        rest = [
            d if isinstance(d, int) else int(t if t is not None else 0)
            for d, t in zip(shape, typed, strict=True)
        ]
        shapes[str(declared[i]["name"])] = (batch, *rest[1:])
    return shapes, missing


def size_refusal(
    file_name: str, declared: Sequence[Mapping[str, Any]], shapes: Mapping[str, tuple[int, ...]]
) -> str | None:
    """Why random inputs cannot be drawn to the sizes typed (a size below 1, or too large in all), in the
    engine's words as an add would say them, or None. Arithmetic only: nothing is sent to a worker."""
    try:
        check_synthetic_sizes(declared, shapes)
    except ModelError as e:
        return f"{label(file_name)}: {e}"
    return None


def size_caption(kind: str, upload_cap_mb: int) -> str:
    """The largest file each accepted type may be, under the app's upload cap (server.maxUploadSize, MB).

    Streamlit's upload box states the cap itself, but in whole GB once it passes 500 MB: 512 MB reads
    "1GB per file". This says the real figures, with the tighter caps of engine/safe_files.py.
    """
    suffixes = safe_files.MODEL_SUFFIXES if kind == "model" else safe_files.DATA_SUFFIXES
    caps = {s: min(safe_files.MAX_BYTES[s] // 2**20, upload_cap_mb) for s in suffixes}
    if len(set(caps.values())) == 1:
        text = f"Up to {next(iter(caps.values()))} MB per file"
    else:
        text = "Up to " + ", ".join(f"{mb} MB for {s}" for s, mb in caps.items())
    if upload_cap_mb > 500:  # where Streamlit's box switches to whole GB, rounded half up
        shown = max(1, int(upload_cap_mb / 1000 + 0.5))
        text += f"; the box above shows the app's {upload_cap_mb} MB cap rounded to {shown}GB"
    return text + "."


def _write(folder: Path, stem: str, file_name: str, data: bytes) -> Path:
    path = folder / stored_name(stem, file_name)
    path.write_bytes(data)
    return path


def read_declared(engine: Engine, file_name: str, data: bytes) -> list[dict[str, Any]]:
    """The upload's declared inputs, read by the engine in a worker (ModelError if it cannot)."""
    with tempfile.TemporaryDirectory(prefix="quantdash-upload-") as tmp:
        path = _write(Path(tmp), "upload", file_name, data)
        return engine.declared_inputs(path, model_label=label(file_name))


ADD_JOB = "add-model"  # the job kind of an add, as the jobs panel and the Models page find it


def add_upload(
    engine: Engine,
    model: tuple[str, bytes],
    data: tuple[str, bytes] | None = None,
    *,
    name: str | None = None,
    shapes: dict[str, tuple[int, ...]] | None = None,
    jobs: ResultStore | None = None,
    job_id: str | None = None,
) -> AddedModel:
    """Add an uploaded (file name, bytes) model, with optional data, through the engine's checks.

    Raises ModelError (one paragraph naming what is wrong and what is expected) if refused.
    With ``jobs`` and ``job_id``, the check is also a job row of kind ADD_JOB: running while it
    runs, then done (its message what the add said, in markdown) or failed (why). A tab reloaded
    during the check, or another tab, sees its progress and outcome there: the page that started
    it may be gone by the time the worker answers.
    """
    shown = label(model[0])

    def job(state: str, message: str) -> None:
        if jobs is not None and job_id is not None:
            progress = 0.0 if state == "running" else 1.0
            jobs.upsert_job(
                job_id, kind=ADD_JOB, model_name=name, state=state, progress=progress, message=message
            )

    job("running", md(f"Checking {shown} in a worker process (reading it, repairing it, running it)"))
    try:
        with tempfile.TemporaryDirectory(prefix="quantdash-upload-") as tmp:
            folder = Path(tmp)
            model_path = _write(folder, "upload", *model)
            data_path = _write(folder, "data", *data) if data is not None else None
            added = engine.add_model(
                model_path,
                data_path,
                name=name or None,
                shapes=shapes or None,
                model_label=shown,
                data_label=label(data[0]) if data is not None else None,
            )
    except ModelError as e:
        job("failed", md(f"{shown} was not added: {e}"))
        raise
    except BaseException as e:  # the workers failed, or the app is stopping: never left "running"
        job("failed", md(f"{shown} could not be checked ({type(e).__name__}). Add it again."))
        raise
    job("done", added_text(added))
    return added


def data_banner(card: Mapping[str, Any]) -> str | None:
    """What the model's data cannot tell (random inputs, or no labels), or None for labelled data."""
    if card.get("synthetic"):
        return SYNTHETIC_BANNER
    if card.get("task") == "fidelity_only":
        # Cards written before "scores_classes" was kept: a classifier's figures, as they were told.
        return NO_LABELS_BANNER.format(fidelity=fidelity_figures(card.get("scores_classes", True)))
    return None


def fp32_only_frame(card: Mapping[str, Any]) -> pd.DataFrame:
    """The ops that stay FP32 in every plan, with the reason (empty for a sample model)."""
    rows = card.get("fp32_only") or []
    return pd.DataFrame(
        {
            "node": [r.get("node", "") for r in rows],
            "op": [r.get("op", "") for r in rows],
            "why it stays FP32": [r.get("why", "") for r in rows],
        }
    )


def added_text(added: AddedModel) -> str:
    """The success message after an add: the name, what was found, its notes and FP32-only ops (markdown)."""
    card = added.card
    task = {"classification": "classification", "language_model": "language model"}.get(
        card.get("task", ""), "fidelity to FP32 only"
    )
    lines = [
        f"Added **{md(added.name)}** ({task}; {card.get('params', 0):,} parameters, {card.get('layers', 0)} "
        f"layer(s) a plan can set, {card.get('eval_size', '?')} evaluation samples). It is now the model "
        "shown on every page."
    ]
    lines += [f"- {md(n[0].upper() + n[1:])}" for n in added.notes if n]
    fp32_only = card.get("fp32_only") or []
    if fp32_only:
        ops = ", ".join(f"{md(r.get('node', '?'))} ({md(r.get('op', '?'))})" for r in fp32_only[:5])
        more = f" and {len(fp32_only) - 5} more" if len(fp32_only) > 5 else ""
        lines.append(f"- Stays FP32 in every plan: {ops}{more} (reasons in the table below).")
    return "\n".join(lines)
