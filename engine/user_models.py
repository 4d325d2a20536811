"""Models users bring: checked once in a worker process, then usable by name like a sample.

`add_model` takes an uploaded model file (a .onnx, or a .zip of the model and its external
data) and, optionally, an evaluation set. Everything that parses or runs the upload happens in
`check_upload_task`, on a worker with the pool's memory and time limits; this process only
copies files under generated names and moves a finished folder into place. A refused upload
leaves nothing behind; an accepted one lives in ``<home>/models/<name>/`` with the same files
as a sample model (card.json, model.onnx, eval.npz, calib.npz), so every command and page
reads it the same way.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
import unicodedata
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine import foreign, measure, safe_files, user_data
from engine.datasets import (
    ModelBundle,
    load_model_folder,
    sample_names,
)
from engine.model_io import (
    ModelError,
    default_opset,
    drop_initializers_from_inputs,
    layer_table,
    prepare_model,
)
from engine.synthetic import draw as draw_random_inputs

MODELS_DIR = "models"
NAME_RULE = "1 to 48 characters: lower-case letters, digits, '-' and '_', starting with a letter or digit"
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,47}")
_SHAPE = re.compile(r"^([^=\s]+)=(\d+(?:x\d+)*)$")


@dataclass(frozen=True)
class AddedModel:
    """A model added to the home: its name, folder, card and what the user should know about it."""

    name: str
    folder: Path
    card: dict[str, Any]

    @property
    def notes(self) -> list[str]:
        return list(self.card.get("notes", []))


def models_dir(home: Path) -> Path:
    return Path(home) / MODELS_DIR


def user_model_names(home: Path) -> list[str]:
    folder = models_dir(home)
    if not folder.is_dir():
        return []
    # Staging folders start with '.', so a half-added model is never listed.
    return sorted(
        p.name for p in folder.iterdir() if not p.name.startswith(".") and (p / "card.json").is_file()
    )


def user_cards(home: Path) -> dict[str, dict[str, Any]]:
    return {n: json.loads((models_dir(home) / n / "card.json").read_text()) for n in user_model_names(home)}


def card_stamp(name: str, home: Path) -> int:
    """When the added model `name` was written (ns; 0 if gone): a model removed and added again under
    the same name, by another process, gets a new stamp, so a long-running app knows to reload it."""
    try:
        return (models_dir(home) / name / "card.json").stat().st_mtime_ns
    except OSError:
        return 0


def load_user_model(name: str, home: Path) -> ModelBundle:
    folder = models_dir(home) / name
    # Raw bytes: this may be the app's process, which never parses a user's model (checked at add).
    return load_model_folder(folder, name, model_bytes=(folder / "model.onnx").read_bytes())


def remove_model(name: str, home: Path) -> None:
    folder = models_dir(home) / name
    if name not in user_model_names(home):
        raise ModelError(
            f"no added model named {name!r}; added models: {', '.join(user_model_names(home)) or 'none'}"
        )
    shutil.rmtree(folder)


def parse_shapes(texts: list[str] | None) -> dict[str, tuple[int, ...]]:
    """`--shape NAME=1x3x224x224` (repeatable) -> {NAME: (1, 3, 224, 224)}."""
    shapes: dict[str, tuple[int, ...]] = {}
    for text in texts or []:
        m = _SHAPE.match(text.strip())
        if not m:
            raise ModelError(f"--shape {text!r}: expected NAME=DIMxDIM..., for example input=1x3x224x224")
        shapes[m.group(1)] = tuple(int(d) for d in m.group(2).split("x"))
    return shapes


def _check_name(name: str, home: Path) -> str:
    if not _NAME.fullmatch(name):
        raise ModelError(f"model name {name!r} is not allowed; expected {NAME_RULE}")
    if name in sample_names():
        raise ModelError(f"{name!r} is the name of a bundled sample model; choose another name")
    if name in user_model_names(home):
        raise ModelError(
            f"a model named {name!r} was already added; choose another name, or remove it first "
            f"(Models page, or quantdash remove-model {name})"
        )
    return name


# Letters NFKD leaves whole, spelled in ASCII (either case: the name is lower-cased after).
_LATIN_SPELLED_OUT = str.maketrans(
    {
        letter: ascii_text
        for letters, ascii_text in [
            ("ßẞ", "ss"),
            ("æÆ", "ae"),
            ("œŒ", "oe"),
            ("þÞ", "th"),
            ("łŁ", "l"),
            ("øØ", "o"),
            ("đĐðÐ", "d"),
            ("ħĦ", "h"),
            ("ı", "i"),
        ]
        for letter in letters
    }
)


def suggest_name(file_name: str, home: Path) -> str:
    """A free model name from an uploaded file's name ('My Net v2.onnx' -> 'my-net-v2',
    'Übersetzer.onnx' -> 'ubersetzer')."""
    # Accents are dropped, not the letters they sit on: 'ü' had become '-'. Letters that NFKD
    # does not split into a base and an accent ('ß', 'ł', 'ø', ...) are spelled out first: they
    # were dropped ('straße' -> 'strae').
    stem = Path(file_name).name.split(".")[0].translate(_LATIN_SPELLED_OUT)
    decomposed = unicodedata.normalize("NFKD", stem)
    stem = decomposed.encode("ascii", "ignore").decode().lower()
    base = re.sub(r"[^a-z0-9_-]+", "-", stem).strip("-_")[:40] or "model"
    taken = set(sample_names()) | set(user_model_names(home))
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}-{n}"
    return name


def add_model(
    model_file: Path,
    data_file: Path | None = None,
    *,
    home: Path,
    run_task: Callable[..., Any],
    name: str | None = None,
    shapes: dict[str, tuple[int, ...]] | None = None,
    model_label: str | None = None,
    data_label: str | None = None,
) -> AddedModel:
    """Check an upload in a worker and add it under `name`; ModelError (one paragraph) if refused.

    `run_task(fn, *args)` runs fn on a worker (Engine.run_task). The labels are the file names the
    user knows (uploads arrive under temporary names), used in every message.
    """
    model_file, model_label = Path(model_file), model_label or Path(model_file).name
    suffix = safe_files.check_upload_file(model_file, "model", model_label)
    if data_file is not None:
        data_label = data_label or Path(data_file).name
        data_suffix = safe_files.check_upload_file(Path(data_file), "data", data_label)
    name = _check_name(name, home) if name else suggest_name(model_label, home)
    _remove_abandoned_staging(home)
    staging = models_dir(home) / f".incoming-{uuid.uuid4().hex}"
    staging.mkdir(parents=True)
    try:
        upload = staging / "upload"
        upload.mkdir()
        if suffix == ".zip":
            model_path = _onnx_in_zip(model_file, upload, model_label)
            external_base = model_path.parent
        else:
            # Stored under a generated name; external data may only come from the model's own folder.
            model_path, external_base = upload / "model.onnx", model_file.resolve().parent
            shutil.copyfile(model_file, model_path)
        data_path = None
        if data_file is not None:
            data_path = staging / f"data{data_suffix}"
            shutil.copyfile(data_file, data_path)
        outcome = run_task(
            check_upload_task,
            str(model_path),
            str(external_base),
            str(data_path) if data_path else None,
            {"model": model_label, "data": data_label},
            dict(shapes or {}),
            str(staging),
        )
        if outcome.get("error"):
            raise ModelError(outcome["error"])
        card = {
            **outcome["card"],
            "name": name,
            "uploaded_at": time.strftime("%Y-%m-%d %H:%M:%S"),
            "source": {"model_file": model_label, "data_file": data_label},
        }
        shutil.rmtree(upload)
        if data_path is not None:
            data_path.unlink()
        (staging / "card.json").write_text(json.dumps(card, indent=2))
        final = models_dir(home) / name
        try:
            staging.rename(final)  # atomic: a model is listed whole or not at all
        except OSError:  # another add took the name meanwhile
            raise ModelError(f"a model named {name!r} was added meanwhile; choose another name") from None
        return AddedModel(name, final, card)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _onnx_in_zip(archive: Path, dest: Path, label: str) -> Path:
    """Unpack a model .zip (checked member by member) into `dest`; the one .onnx file in it.

    The metadata macOS's Finder adds to every zip it makes (``__MACOSX/``, ``._name`` files) is
    not the user's: it is ignored, so a zipped ``model.onnx`` is not counted twice.
    """
    try:
        members = safe_files.safe_extract_zip(archive, dest)
    except ModelError as e:  # safe_files sees only the stored copy: the message names the upload
        raise type(e)(_from_file(label, str(e))) from None
    onnx_files = [
        p
        for p in members
        if p.suffix.lower() == ".onnx"
        and "__MACOSX" not in p.relative_to(dest).parts
        and not p.name.startswith("._")
    ]
    if len(onnx_files) != 1:
        found = ", ".join(str(p.relative_to(dest)) for p in onnx_files) or "none"
        raise ModelError(
            f"{label}: a model .zip must hold exactly one .onnx file (plus its external data files); "
            f"found {len(onnx_files)} ({found})"
        )
    return onnx_files[0]


def _remove_abandoned_staging(home: Path, older_than_s: float = 24 * 3600) -> None:
    """Staging folders of adds whose process was killed: never listed, removed after a day."""
    folder = models_dir(home)
    for p in folder.glob(".incoming-*") if folder.is_dir() else ():
        if time.time() - p.stat().st_mtime > older_than_s:
            shutil.rmtree(p, ignore_errors=True)


# --- the worker side ------------------------------------------------------------------------------


def check_upload_task(
    model_path: str,
    external_base: str,
    data_path: str | None,
    labels: dict[str, str | None],
    shapes: dict[str, tuple[int, ...]],
    out_dir: str,
) -> dict[str, Any]:
    """Worker task: check, repair and describe an upload; write model.onnx, eval.npz, calib.npz.

    Returns {"card": ...} or {"error": message}: a refusal is an answer, not a failure of the
    worker. A crash or hang here (a model that kills ONNX Runtime) ends the task, not the app.
    """
    try:
        return {
            "card": _check_upload(
                Path(model_path), Path(external_base), data_path, labels, shapes, Path(out_dir)
            )
        }
    except user_data.DataError as e:  # about the data file, which the message names first
        return {"error": _from_file(labels.get("data") or "the data", str(e))}
    except ModelError as e:
        return {"error": _from_file(labels.get("model") or Path(model_path).name, str(e))}
    except Exception as e:  # a case no check foresaw: still an answer about this file, in one line
        who = labels.get("model") or Path(model_path).name
        return {
            "error": f"{who} could not be checked ({safe_files.error_words(e)}). Expected an ONNX model "
            "that onnx.checker and ONNX Runtime accept"
        }


def _from_file(who: str, text: str) -> str:
    return text if text.startswith(who) else f"{who}: {text}"


def _check_upload(
    model_path: Path,
    external_base: Path,
    data_path: str | None,
    labels: dict[str, str | None],
    shapes: dict[str, tuple[int, ...]],
    out: Path,
) -> dict[str, Any]:
    notes: list[str] = []
    model = _sanitized_model(model_path, external_base, notes, labels.get("model"))
    model_bytes = model.SerializeToString()
    specs = user_data.input_specs(model)
    if not specs:
        raise ModelError(
            "the model has no inputs (every graph input is a weight); expected at least one input"
        )
    _check_batch_axis(specs)
    # The data is checked before the slower preparation, so a wrong file is reported in a moment.
    if data_path is not None:
        # Unpacked images are only read here: unpacked next to, never into, the model's folder.
        with tempfile.TemporaryDirectory(prefix="data-work-", dir=out) as work:
            inputs, y = user_data.read_dataset(Path(data_path), specs, Path(work), labels.get("data"), notes)
        task = user_data.task_for(y)
        calib, eval_inputs, eval_labels = user_data.split_calibration(
            user_data.cast_to_specs(inputs, specs, notes), y
        )
    else:
        eval_inputs, calib = draw_random_inputs(model_bytes, specs, shapes)
        task, eval_labels = "fidelity_only", None
        notes.append(
            "accuracy unknown: no data given. Size, latency and fidelity to FP32 are measured on random "
            "inputs"
        )
    batch_fixed = any("batch dimension" in n and "fixed at 1" in n for n in notes)
    first_outputs = _first_outputs(model_bytes, eval_inputs, batch_fixed)
    classes = _labels_fit_outputs(task, eval_labels, first_outputs)
    scores_classes = measure.scores_classes(first_outputs)
    if task == "fidelity_only" and data_path is not None:
        notes.append(
            f"no labels: only fidelity to FP32 ({measure.fidelity_figures(scores_classes)}) is measured"
        )
    layers, fp32_only = _prepared_layers(model, out, notes)

    (out / "model.onnx").write_bytes(model_bytes)
    _save_arrays(
        out / "eval.npz", {**eval_inputs, **({"labels": eval_labels} if eval_labels is not None else {})}
    )
    _save_arrays(out / "calib.npz", calib)
    synthetic = data_path is None
    return {
        "description": f"Added by you from {labels.get('model')}"
        + (f" with data {labels.get('data')}." if data_path else " (no data: synthetic inputs)."),
        "task": task,
        "metrics": {"classification": ["accuracy"], "language_model": ["accuracy", "perplexity"]}.get(
            task, []
        ),
        "inputs": [
            {"name": s.name, "shape": _stored_shape(s, eval_inputs), "dtype": s.dtype.name} for s in specs
        ],
        "output": model.graph.output[0].name,
        "classes": classes,
        "scores_classes": scores_classes,  # whether top-1 agreement and KL can be measured (measure.py)
        "calib_size": len(next(iter(calib.values()))),
        "eval_size": len(next(iter(eval_inputs.values()))),
        "params": foreign.weight_count(model),
        "opset": default_opset(model),
        "layers": len(layers),
        "synthetic": synthetic,
        "fp32_only": fp32_only,
        "notes": notes,
        "provenance": (
            "Uploaded by a user without data: calibration and evaluation inputs are random draws "
            "(standard normal floats, integers 0 or 1) to the declared shapes."
            if synthetic
            else "Uploaded by a user; not trained here. Calibration: the first samples of the given data "
            "(see calib_size); evaluation: the rest (disjoint)."
        ),
    }


def _check_batch_axis(specs: list[user_data.InputSpec]) -> None:
    """The first axis is the batch: evaluation runs many samples at once, latency is timed at 1 and 32.

    A batch fixed at 1 was made dynamic already (foreign.free_batch_dimension); one fixed at
    another size cannot be opened up safely, so it is refused with what to do instead.
    """
    for s in specs:
        if s.shape and isinstance(s.shape[0], int) and s.shape[0] != 1:
            raise ModelError(
                f"input {s.name!r} fixes its first (batch) dimension at {s.shape[0]}: {s.shape_text}. "
                "quantdash runs a model on 1 sample and on many at once; expected a dynamic batch axis "
                "(torch.onnx.export(..., dynamic_axes={'" + s.name + "': {0: 'batch'}})) or a batch of 1"
            )


def _save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    # numpy's stubs type **kwds of savez as its allow_pickle flag; the arrays are plain numeric.
    np.savez(path, **arrays)  # type: ignore[arg-type]


def _sanitized_model(model_path: Path, external_base: Path, notes: list[str], label: str | None) -> Any:
    """Parse, check and repair the upload into one self-contained, checked ONNX model."""
    import onnx

    model = foreign.load_upload(model_path, label)
    foreign.check_domains(model)
    foreign.check_dimensions(model)
    foreign.check_external_files_present(model, external_base)
    safe_files.check_external_data(model, external_base)
    if foreign.load_external_weights(model, external_base):
        notes.append("external weight data was read and embedded: the model is kept as one file")
    foreign.check_weight_sizes(model)
    dropped = drop_initializers_from_inputs(model)
    if dropped:
        notes.append(
            f"{dropped} weights were also listed as graph inputs (an old exporter's habit): "
            "treated as weights"
        )
    freed = foreign.free_batch_dimension(model)
    if freed:
        notes.append(
            f"the batch dimension of {', '.join(map(repr, freed))} was fixed at 1; made dynamic so that "
            "many samples run at once"
        )
    foreign.check_runs_here(model.SerializeToString())
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as e:
        raise ModelError(f"the ONNX checker rejected the model: {str(e).strip().splitlines()[0]}") from None
    return model


def _prepared_layers(model: Any, out: Path, notes: list[str]) -> tuple[list[Any], list[dict[str, str]]]:
    """Prepare the model as every plan will (checked here, once) and list its layers and FP32-only ops."""
    import onnx

    try:
        prepared_bytes = prepare_model(model.SerializeToString(), work_dir=out)
    except ModelError:
        raise
    except Exception as e:  # the quantizer's pre-processing on a graph it cannot handle
        raise ModelError(
            f"could not prepare the model for quantization ({safe_files.error_words(e)})"
        ) from None
    prepared = onnx.load_from_string(prepared_bytes)
    before, after = default_opset(model), default_opset(prepared)
    if before != after:
        notes.append(f"opset upgraded from {before} to {after}, as ONNX Runtime's quantizer needs")
    layers = layer_table(prepared_bytes)
    if not layers:
        notes.append("no Conv, MatMul or Gemm layer with stored weights: every plan of this model is FP32")
    return layers, foreign.fp32_only_ops(prepared)


def _stored_shape(spec: user_data.InputSpec, arrays: dict[str, np.ndarray]) -> list[int | str]:
    """The declared shape with the batch dimension named, as in a sample model's card."""
    shape = list(spec.shape) if spec.shape else list(arrays[spec.name].shape)
    if shape and isinstance(shape[0], str):
        shape[0] = "batch"
    return shape


def _first_outputs(
    model_bytes: bytes, inputs: dict[str, np.ndarray], batch_fixed: bool = False
) -> np.ndarray:
    """Run the model on the first two samples: a graph that fails on this data fails here, clearly."""
    import onnxruntime as ort

    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    feed = {k: v[:2] for k, v in inputs.items()}
    try:
        return np.asarray(session.run(None, feed)[0])
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if batch_fixed:
            raise ModelError(
                f"the model declares a batch of 1 and fails on 2 samples at once ({first[:300]}): the graph "
                "fixes its batch size inside (for example a Reshape to [1, ...]). Expected a model exported "
                "with a dynamic batch axis (torch.onnx.export(..., dynamic_axes={'input': {0: 'batch'}}))"
            ) from None
        raise ModelError(
            f"the model failed on the given inputs in ONNX Runtime: {first[:400]}. Expected inputs that the "
            "model accepts (check shapes and value ranges against how it was trained)"
        ) from None


def _labels_fit_outputs(task: str, labels: np.ndarray | None, outputs: np.ndarray) -> list[str]:
    """Labels must index the model's output classes; returns class names for the card."""
    if task == "fidelity_only" or labels is None:
        return []
    if task == "classification":
        if outputs.ndim != 2:
            raise ModelError(
                "the labels are one class per sample, so the model's first output should be "
                f"[batch, classes] "
                f"scores; it is {list(outputs.shape)} for 2 samples"
            )
        n = outputs.shape[1]
    else:
        if outputs.ndim != 3 or outputs.shape[1] != labels.shape[1]:
            raise ModelError(
                f"the labels are one class per position ({labels.shape[1]} positions), so the model's first "
                f"output should be [batch, {labels.shape[1]}, classes]; it is {list(outputs.shape)} "
                "for 2 samples"
            )
        n = outputs.shape[2]
    top = int(labels.max())
    if top >= n and n == 1:  # one output value: a score or a regression, not class scores
        raise ModelError(
            f"the labels go up to {top}, but the model has one output value per sample, so it does not "
            "score classes (a regressor or a single score?); expected a classifier whose output has one "
            "score per class, or add it without labels to measure its fidelity to FP32"
        )
    if top >= n:
        raise ModelError(
            f"the labels go up to {top}, but the model's output has {n} classes (0 to {n - 1}); expected "
            "labels that index the output"
        )
    return [str(i) for i in range(n)]


def declared_inputs(
    model_file: Path, *, run_task: Callable[..., Any], model_label: str | None = None
) -> list[dict[str, Any]]:
    """The upload's inputs as declared ({name, shape, dtype}), read in a worker: the page asks for
    the sizes of dynamic dimensions before adding a model without data."""
    model_file = Path(model_file)
    label = model_label or model_file.name
    suffix = safe_files.check_upload_file(model_file, "model", label)
    with tempfile.TemporaryDirectory(prefix="quantdash-inputs-") as tmp:
        path = _onnx_in_zip(model_file, Path(tmp), label) if suffix == ".zip" else model_file
        outcome = run_task(declared_inputs_task, str(path), label)
    if outcome.get("error"):
        raise ModelError(outcome["error"])
    return list(outcome["inputs"])


def declared_inputs_task(model_path: str, label: str) -> dict[str, Any]:
    """Worker task: parse the model (without its weights' external data) and list its inputs."""
    try:
        model = foreign.load_upload(Path(model_path), label)
        drop_initializers_from_inputs(model)
        specs = user_data.input_specs(model)
    except ModelError as e:
        return {"error": _from_file(label, str(e))}
    except Exception as e:  # a case no check foresaw: an answer about this file, in one line
        return {"error": f"{label}: its inputs could not be read ({safe_files.error_words(e)})"}
    return {"inputs": [{"name": s.name, "shape": list(s.shape), "dtype": s.dtype.name} for s in specs]}
