"""Models and their data: the bundled samples, or a bare .onnx file with synthetic inputs."""

from __future__ import annotations

import functools
import hashlib
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from engine.model_io import ModelError, load_model_bytes, sha256_bytes

SAMPLES_DIR = Path(__file__).resolve().parent.parent / "sample_models"
TASKS = ("classification", "language_model", "fidelity_only")
SYNTHETIC_ROWS = 64
_NP_DTYPES = {
    onnx.TensorProto.FLOAT: np.float32,
    onnx.TensorProto.FLOAT16: np.float16,
    onnx.TensorProto.DOUBLE: np.float64,
    onnx.TensorProto.INT64: np.int64,
    onnx.TensorProto.INT32: np.int32,
    onnx.TensorProto.UINT8: np.uint8,
    onnx.TensorProto.INT8: np.int8,
    onnx.TensorProto.BOOL: np.bool_,
}


def arrays_hash(arrays: dict[str, np.ndarray]) -> str:
    """Content hash of named arrays (names, dtypes, shapes and bytes)."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class EvalSet:
    """Inputs keyed by the model's input names, with labels when the task has them."""

    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None
    task: str
    synthetic: bool = False

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; expected one of {', '.join(TASKS)}")
        if not self.inputs:
            raise ValueError("an evaluation set needs at least one input array")
        sizes = {k: len(v) for k, v in self.inputs.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"input arrays differ in length: {sizes}")
        if self.labels is not None and len(self.labels) != self.size:
            raise ValueError(f"{len(self.labels)} labels for {self.size} samples; expected one per sample")

    @property
    def size(self) -> int:
        return len(next(iter(self.inputs.values())))

    @functools.cached_property
    def hash(self) -> str:
        arrays = dict(self.inputs)
        if self.labels is not None:
            arrays["__labels__"] = self.labels
        return arrays_hash(arrays) + ":" + self.task


@dataclass(frozen=True)
class ModelBundle:
    """Everything needed to evaluate plans on one model."""

    name: str
    model_bytes: bytes
    eval_set: EvalSet
    calibration: dict[str, np.ndarray]
    card: dict[str, Any] = field(default_factory=dict)
    path: str | None = None

    # Cached: every result key names them, and hashing a 10 MB model costs ~20 ms a time.
    # (functools.cached_property writes the instance __dict__, so it works on a frozen dataclass.)
    @functools.cached_property
    def model_hash(self) -> str:
        return sha256_bytes(self.model_bytes)

    @functools.cached_property
    def data_hash(self) -> str:
        return arrays_hash(self.calibration) + ":" + self.eval_set.hash

    @property
    def metrics(self) -> list[str]:
        return list(self.card.get("metrics", ["accuracy"] if self.eval_set.labels is not None else []))


def sample_names() -> list[str]:
    """Names of the bundled sample models."""
    if not SAMPLES_DIR.is_dir():
        return []
    return sorted(p.name for p in SAMPLES_DIR.iterdir() if (p / "card.json").is_file())


def _load_npz(path: Path, input_names: list[str]) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    try:
        return _read_npz(path, input_names)
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        # allow_pickle=False refuses object arrays with a ValueError: reported like any bad file.
        raise ModelError(f"{path.name} is not a readable .npz of plain arrays ({e})") from None


def _read_card(folder: Path) -> dict[str, Any]:
    path = folder / "card.json"
    try:
        card = json.loads(path.read_text())
        card["inputs"] = [{"name": str(i["name"]), **i} for i in card["inputs"]]
        if card["task"] not in TASKS:
            raise ValueError(f"task {card['task']!r} is not one of {', '.join(TASKS)}")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ModelError(
            f"{path} is not a valid model card ({type(e).__name__}: {e}); it needs 'task' and "
            "'inputs': [{'name': ...}], as in sample_models/*/card.json"
        ) from None
    return dict(card)


def _eval_set(
    inputs: dict[str, np.ndarray], labels: np.ndarray | None, task: str, synthetic: bool = False
) -> EvalSet:
    try:
        return EvalSet(inputs, labels, task, synthetic=synthetic)
    except ValueError as e:
        raise ModelError(f"evaluation data does not fit: {e}") from None


def _read_npz(path: Path, input_names: list[str]) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    # allow_pickle=False: an npz must never run code when read.
    with np.load(path, allow_pickle=False) as data:
        missing = [n for n in input_names if n not in data.files]
        if missing:
            raise ModelError(
                f"{path.name} has no array for input {missing[0]!r}; it holds {sorted(data.files)}"
            )
        inputs = {n: data[n] for n in input_names}
        labels = data["labels"] if "labels" in data.files else None
    return inputs, labels


def load_sample(name: str) -> ModelBundle:
    """A bundled sample model with its card, calibration split and evaluation split."""
    folder = SAMPLES_DIR / name
    if not (folder / "card.json").is_file():
        raise ModelError(f"unknown sample model {name!r}; available: {', '.join(sample_names()) or 'none'}")
    return load_model_folder(folder, name, model_bytes=load_model_bytes(folder / "model.onnx"))


def load_model_folder(folder: Path, name: str, model_bytes: bytes) -> ModelBundle:
    """A model's folder as a sample's is laid out: card.json, model.onnx, eval.npz, calib.npz.

    `model_bytes` is read by the caller: a sample's are parsed to check them, an added model's
    were checked when it was added and are never parsed in the app's process.
    """
    card = _read_card(folder)
    input_names = [i["name"] for i in card["inputs"]]
    eval_inputs, labels = _load_npz(folder / "eval.npz", input_names)
    calib, _ = _load_npz(folder / "calib.npz", input_names)
    return ModelBundle(
        name=name,
        model_bytes=model_bytes,
        eval_set=_eval_set(eval_inputs, labels, card["task"], synthetic=bool(card.get("synthetic"))),
        calibration=calib,
        card=card,
        path=str(folder / "model.onnx"),
    )


def synthetic_inputs(
    model_bytes: bytes,
    rows: int = SYNTHETIC_ROWS,
    seed: int = 0,
    shapes: dict[str, tuple[int, ...]] | None = None,
) -> dict[str, np.ndarray]:
    """Random inputs drawn to the model's declared shapes; dynamic dims take `shapes` or 1."""
    model = onnx.load_from_string(model_bytes)
    inits = {t.name for t in model.graph.initializer}
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        dtype = _NP_DTYPES.get(tt.elem_type)
        if dtype is None:
            raise ModelError(f"input {vi.name!r} has an element type this tool cannot synthesize data for")
        if shapes and vi.name in shapes:
            dims = list(shapes[vi.name])
        else:
            dims = [d.dim_value if d.HasField("dim_value") else 1 for d in tt.shape.dim]
        if not dims:
            raise ModelError(f"input {vi.name!r} is a scalar; synthetic data needs a batch dimension")
        # Only a dynamic leading dimension is a batch we may fill; a static or given one is kept.
        given = bool(shapes and vi.name in shapes)
        if not given and tt.shape.dim and not tt.shape.dim[0].HasField("dim_value"):
            dims[0] = rows
        if np.issubdtype(dtype, np.integer):
            out[vi.name] = rng.integers(0, 2, dims).astype(dtype)
        elif dtype is np.bool_:
            out[vi.name] = rng.random(dims) > 0.5
        else:
            out[vi.name] = rng.standard_normal(dims).astype(dtype)
    return out


def load_model(name_or_path: str) -> ModelBundle:
    """A sample model by name, or an .onnx file (with samples-style data beside it, else synthetic)."""
    if name_or_path in sample_names():
        return load_sample(name_or_path)
    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        raise ModelError(
            f"{name_or_path!r} is neither a sample model ({', '.join(sample_names())}) nor an .onnx file"
        )
    # Results of a file are kept under its file name, suffix and all ("foo.onnx"): no sample or added
    # model can be named so (names hold no "."), so `results foo` never mixes a file's plans in.
    data = load_model_bytes(path)
    folder = path.parent
    if (folder / "card.json").is_file() and (folder / "eval.npz").is_file():
        card = _read_card(folder)
        names = [i["name"] for i in card["inputs"]]
        eval_inputs, labels = _load_npz(folder / "eval.npz", names)
        calib = _load_npz(folder / "calib.npz", names)[0] if (folder / "calib.npz").is_file() else eval_inputs
        return ModelBundle(
            path.name, data, _eval_set(eval_inputs, labels, card["task"]), calib, card, str(path)
        )
    inputs = synthetic_inputs(data)
    card = {"task": "fidelity_only", "metrics": [], "description": "no data given: synthetic inputs"}
    return ModelBundle(
        path.name, data, EvalSet(inputs, None, "fidelity_only", synthetic=True), inputs, card, str(path)
    )
