"""Evaluation data users bring: read it, check it against the model's inputs, split it.

A user uploads an ONNX model and an evaluation set (.npz, a .zip of images, or a .csv). The set is
read into arrays keyed by the model's input names and checked against the model *before* any
calibration runs, so a wrong file is reported in a moment with what was expected and what was
found. Then it is split, once and for all, into a calibration part and an evaluation part.

Nothing here runs anything from the user: .npz files are read with ``allow_pickle=False``, image
archives are unpacked by ``safe_files.safe_extract_zip`` and decoded by Pillow (PNG, JPEG, BMP, GIF
only), CSV cells are parsed as numbers.
"""

from __future__ import annotations

import collections
import csv
import math
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from engine import safe_files
from engine.datasets import _NP_DTYPES
from engine.model_io import ModelError

MIN_SAMPLES = 4
MAX_CALIBRATION = 256
# Decoded arrays larger than this are refused before they are allocated (images, .npz members).
MAX_DATA_BYTES = 2 * 1024**3
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
_PIL_FORMATS = ["PNG", "JPEG", "BMP", "GIF"]
LABELS_FILE = "labels.csv"
LABELS_KEY = "labels"
# Language-model targets may mark positions to ignore with -100 (as measure.per_sample_scores does).
IGNORE_INDEX = -100
# Files an operating system adds to an archive it makes (macOS Finder, Windows Explorer).
_OS_JUNK_DIRS = ("__MACOSX",)
_OS_JUNK_FILES = (".DS_Store", "Thumbs.db", "desktop.ini")

# Element types besides the ones synthetic data knows (datasets._NP_DTYPES) that plain numpy holds.
_EXTRA_NP_DTYPES = {
    onnx.TensorProto.INT16: np.int16,
    onnx.TensorProto.UINT16: np.uint16,
    onnx.TensorProto.UINT32: np.uint32,
    onnx.TensorProto.UINT64: np.uint64,
}
# Data types accepted for a model input without being an error; cast_to_specs converts them.
_CASTS = {(np.dtype(np.float64), np.dtype(np.float32)), (np.dtype(np.int32), np.dtype(np.int64))}

DATA_FORMATS_HELP = """\
Evaluation data formats (the first 1/4 of the samples, at most 256, calibrate; the rest evaluate):
  .npz  one array per model input, named like the input, samples along the first axis;
        optional 'labels' (integers: [samples] for classification, [samples, positions] for a
        language model). Plain numeric arrays only (no Python objects).
  .zip  images (.png .jpg .jpeg .bmp .gif) for a model with one image input [N, C, H, W] or
        [N, H, W, C], C = 1 (grey) or 3 (RGB); images are not resized and must be H x W; pixels
        are scaled to [0, 1] (a model trained on other normalisation should be given an .npz);
        optional labels.csv with columns file,label.
  .csv  a header row; optional integer 'label' column; every other column a numeric feature,
        for a model with one input [N, features].
At least 4 samples; without labels, only fidelity to the FP32 model is measured."""


class DataError(ModelError):
    """Evaluation data that does not fit the model; the message says what was expected and found."""


@dataclass(frozen=True)
class InputSpec:
    """One real input of a model: name, numpy dtype and shape (a str dimension is dynamic).

    An empty shape means the model does not declare one: only the name and dtype are checked.
    """

    name: str
    dtype: np.dtype
    shape: tuple[int | str, ...]

    @property
    def shape_text(self) -> str:
        return _shape_text(self.shape) if self.shape else "(shape not declared)"


def _shape_text(shape: tuple[int | str, ...] | list[int | str]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _inputs_text(specs: list[InputSpec]) -> str:
    return ", ".join(f"{s.name!r} {s.shape_text} {s.dtype.name}" for s in specs) or "none"


def _names_text(names: list[str]) -> str:
    return ", ".join(repr(n) for n in names) or "none"


def _few(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def input_specs(model: onnx.ModelProto) -> list[InputSpec]:
    """The model's real inputs (graph inputs that are not initializers), in order."""
    inits = {t.name for t in model.graph.initializer}
    specs: list[InputSpec] = []
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        if not vi.type.HasField("tensor_type"):
            raise ModelError(
                f"input {vi.name!r} is not a tensor (it is a {vi.type.WhichOneof('value')}); "
                "expected tensor inputs only"
            )
        tt = vi.type.tensor_type
        np_type = _NP_DTYPES.get(tt.elem_type) or _EXTRA_NP_DTYPES.get(tt.elem_type)
        if np_type is None:
            type_name = onnx.TensorProto.DataType.Name(tt.elem_type) if tt.elem_type else "undefined"
            raise ModelError(
                f"input {vi.name!r} has element type {type_name}; expected a numeric type numpy holds "
                "(float32, float16, float64, int8..int64, uint8..uint64 or bool)"
            )
        dims: list[int | str] = []
        for d in tt.shape.dim:
            dims.append(int(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?"))
        specs.append(InputSpec(vi.name, np.dtype(np_type), tuple(dims)))
    return specs


# --- checks ------------------------------------------------------------------------------------


def _check_shape(name: str, a: np.ndarray, spec: InputSpec) -> list[str]:
    if a.ndim == 0:
        return [f"input {name!r}: expected an array with samples along its first axis, found a single value"]
    if not spec.shape:
        return []
    found = _shape_text(list(a.shape))
    if a.ndim != len(spec.shape):
        return [
            f"input {name!r}: expected {len(spec.shape)} dimensions {spec.shape_text}, "
            f"found {a.ndim} dimensions {found}"
        ]
    wrong = [
        i
        for i, (want, got) in enumerate(zip(spec.shape, a.shape, strict=True))
        if isinstance(want, int) and want != got
    ]
    if not wrong:
        return []
    where = ", ".join(f"dimension {i} is {a.shape[i]} instead of {spec.shape[i]}" for i in wrong)
    msg = f"input {name!r}: expected shape {spec.shape_text}, found {found} ({where})"
    if 0 in wrong:
        msg += (
            "; the model fixes its batch (first) dimension, so it can only run that many samples at once: "
            "expected a model exported with a dynamic batch dimension"
        )
    return [msg]


def _check_dtype(name: str, a: np.ndarray, spec: InputSpec) -> list[str]:
    if a.dtype == spec.dtype or (a.dtype, spec.dtype) in _CASTS:
        return []
    hint = ""
    if a.dtype == object:
        hint = " (Python objects are refused: save plain numeric arrays)"
    elif spec.dtype.kind == "f" and a.dtype.kind in "biu":
        hint = f" (convert it, e.g. array.astype(np.{spec.dtype.name}), scaled as the model was trained)"
    elif spec.dtype.kind in "iu" and a.dtype.kind == "f":
        hint = " (this input takes integers, e.g. token ids)"
    return [
        f"input {name!r}: expected {spec.dtype.name} values (the model's input type), found {a.dtype}{hint}"
    ]


def _check_finite(name: str, a: np.ndarray) -> list[str]:
    if a.dtype.kind != "f" or a.size == 0:
        return []
    bad = ~np.isfinite(a)
    count = int(np.count_nonzero(bad))
    if not count:
        return []
    nan = int(np.count_nonzero(np.isnan(a)))
    first = int(np.argmax(bad.reshape(len(a), -1).any(axis=1)))
    return [
        f"input {name!r}: expected finite numbers, found {count} non-finite values "
        f"({nan} NaN, {count - nan} Inf), the first in sample {first} (counting from 0)"
    ]


def _check_named_dims(inputs: dict[str, np.ndarray], specs: list[InputSpec]) -> list[str]:
    # A dim_param shared by several inputs (e.g. 'sequence') must have one size across them.
    seen: dict[str, tuple[str, int]] = {}
    problems: list[str] = []
    for spec in specs:
        a = inputs.get(spec.name)
        if a is None or a.ndim != len(spec.shape):
            continue
        for i, dim in enumerate(spec.shape[1:], start=1):
            if not isinstance(dim, str) or dim == "?":
                continue
            if dim in seen and seen[dim][1] != a.shape[i]:
                other, size = seen[dim]
                problems.append(
                    f"dimension {dim!r} is {size} in input {other!r} but {a.shape[i]} in input "
                    f"{spec.name!r}; expected one size for it across inputs"
                )
            seen.setdefault(dim, (spec.name, int(a.shape[i])))
    return problems


def _check_labels(labels: np.ndarray, n: int | None) -> list[str]:
    problems: list[str] = []
    if labels.ndim not in (1, 2):
        return [
            f"labels: expected [samples] (classification) or [samples, positions] (language model), "
            f"found {labels.ndim} dimensions {_shape_text(list(labels.shape))}"
        ]
    if n is not None and len(labels) != n:
        problems.append(f"labels: expected one per sample ({n}), found {len(labels)}")
    if labels.dtype.kind == "f":
        if labels.size and not np.all(np.isfinite(labels)):
            return [*problems, "labels: expected integer class indices, found NaN or Inf values"]
        fractional = labels != np.round(labels)
        if np.any(fractional):
            first = int(np.argmax(fractional.reshape(len(labels), -1).any(axis=1)))
            return [
                *problems,
                f"labels: expected integer class indices, found fractional values (the first in sample "
                f"{first}, counting from 0)",
            ]
    elif labels.dtype.kind not in "iu":
        return [*problems, f"labels: expected integer class indices, found {labels.dtype} values"]
    negative = labels < 0
    if labels.ndim == 2:
        negative &= labels != IGNORE_INDEX
    if labels.size and np.any(negative):
        first = int(np.argmax(negative.reshape(len(labels), -1).any(axis=1)))
        extra = (
            f" (in language-model targets, {IGNORE_INDEX} marks a position to ignore)"
            if labels.ndim == 2
            else ""
        )
        problems.append(
            f"labels: expected class indices >= 0{extra}, found {int(np.count_nonzero(negative))} negative "
            f"values, the first in sample {first} (counting from 0)"
        )
    return problems


def check_dataset(inputs: dict[str, np.ndarray], labels: np.ndarray | None, specs: list[InputSpec]) -> None:
    """Check data against the model's inputs, or raise DataError listing every problem found.

    Each problem says what was expected and what was found: missing and unexpected input names;
    rank; every static dimension (a dynamic one, shown by name, may take any size; a dynamic name
    shared by inputs must take one size); dtype equal to the model's, except that float64 data for a
    float32 input and int32 data for an int64 input pass (``cast_to_specs`` converts them); no NaN
    or Inf in float inputs; the same number of samples in every input; at least MIN_SAMPLES
    samples; labels one per sample, integer (whole-number floats pass), none negative (2-D
    language-model targets may use -100 for ignored positions).
    """
    problems: list[str] = []
    names = [s.name for s in specs]
    missing = [n for n in names if n not in inputs]
    unexpected = [k for k in inputs if k not in names]
    if missing:
        problems.append(
            f"no data for model input {_few(missing)}; expected one array per model input "
            f"({_names_text(names)}), found {_names_text(list(inputs))}"
        )
    if unexpected:
        problems.append(
            f"unexpected data {_few(unexpected)}: the model has no such input; expected only "
            f"{_names_text(names)}"
        )
    for spec in specs:
        a = inputs.get(spec.name)
        if a is None:
            continue
        a = np.asarray(a)
        shape_problems = _check_shape(spec.name, a, spec)
        dtype_problems = _check_dtype(spec.name, a, spec)
        problems += shape_problems + dtype_problems
        if not shape_problems and not dtype_problems:
            problems += _check_finite(spec.name, a)
    problems += _check_named_dims(inputs, specs)
    sizes = {k: len(v) for k, v in inputs.items() if np.ndim(v) > 0}
    n: int | None = None
    if len(set(sizes.values())) > 1:
        found = ", ".join(f"{k!r}: {v}" for k, v in sizes.items())
        problems.append(f"expected every input to hold the same number of samples, found {found}")
    elif sizes:
        n = next(iter(sizes.values()))
        if n < MIN_SAMPLES:
            problems.append(
                f"expected at least {MIN_SAMPLES} samples (some calibrate, the rest evaluate), found {n}"
            )
    if labels is not None:
        problems += _check_labels(np.asarray(labels), n)
    if len(problems) == 1:
        raise DataError(problems[0])
    if problems:
        raise DataError(f"{len(problems)} problems with the data:\n- " + "\n- ".join(problems))


def cast_to_specs(
    inputs: dict[str, np.ndarray], specs: list[InputSpec], notes: list[str] | None = None
) -> dict[str, np.ndarray]:
    """float64 -> float32 and int32 -> int64 where the model asks for it; other arrays unchanged.
    Each conversion is said in a line appended to ``notes`` (float64 to float32 rounds values)."""
    wanted = {s.name: s.dtype for s in specs}
    out: dict[str, np.ndarray] = {}
    for name, a in inputs.items():
        want = wanted.get(name)
        if want is not None and (a.dtype, want) in _CASTS:
            if notes is not None:
                notes.append(
                    f"input {name!r}: {a.dtype.name} data converted to {want.name}, the model's type"
                )
            a = a.astype(want)
        out[name] = a
    return out


def task_for(labels: np.ndarray | None) -> str:
    """None -> 'fidelity_only'; 1-D -> 'classification'; 2-D (one label per position) -> 'language_model'."""
    if labels is None:
        return "fidelity_only"
    if labels.ndim == 1:
        return "classification"
    if labels.ndim == 2:
        return "language_model"
    raise DataError(
        f"labels: expected [samples] (classification) or [samples, positions] (language model), "
        f"found {labels.ndim} dimensions"
    )


def split_calibration(
    inputs: dict[str, np.ndarray], labels: np.ndarray | None
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray | None]:
    """Disjoint, fixed split: the first n_cal = min(256, max(2, n // 4)) samples calibrate, the rest evaluate.

    Returns (calibration inputs, evaluation inputs, evaluation labels).
    """
    n = len(next(iter(inputs.values())))
    n_cal = min(MAX_CALIBRATION, max(2, n // 4))
    if n - n_cal < 1:
        raise DataError(
            f"expected at least {MIN_SAMPLES} samples to split into calibration and evaluation, found {n}"
        )
    calib = {k: v[:n_cal] for k, v in inputs.items()}
    evaluate = {k: v[n_cal:] for k, v in inputs.items()}
    return calib, evaluate, (None if labels is None else labels[n_cal:])


# --- reading -----------------------------------------------------------------------------------


def read_dataset(
    path: Path,
    specs: list[InputSpec],
    work_dir: Path,
    original_name: str | None = None,
    notes: list[str] | None = None,
) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Read an evaluation set into inputs keyed by model input name, and labels (int64) or None.

    The format follows the suffix (of ``path``, else of ``original_name``); ``original_name`` is
    the user's file name, which messages show (uploads are stored under generated names).

    - ``.npz``: one array per model input, keyed by the input's name; optional ``labels``. Any
      other key is an error. Read with ``allow_pickle=False``: object arrays are refused.
    - ``.zip`` of images with an optional ``labels.csv`` (columns ``file,label``; without it there
      are no labels and images are taken in sorted name order; with it, in its row order): only for
      a model with ONE input of rank 4, NCHW or NHWC with C = 1 (decoded as grey, PIL mode L) or
      3 (RGB). Images are NOT resized: each must be the model's H x W (dynamic H/W: all images one
      size). Pixels are scaled to [0, 1] in the input's float type (float32 for a float32 input;
      a uint8 input gets the raw 0-255 values). A model trained on other normalisation (mean/std,
      [-1, 1], BGR...) should be given an .npz instead. Members may be .png .jpg .jpeg .bmp .gif
      (plus labels.csv and folders; a single top folder and macOS/Windows metadata files are
      ignored); anything else is an error. The archive is unpacked under ``work_dir`` by
      ``safe_files.safe_extract_zip``.
    - ``.csv``: a header row; optional column ``label`` (integers); every other column a numeric
      feature, for a model with ONE input [batch, features] whose features dimension (unless
      dynamic) equals the number of feature columns. Errors name the row (1-based, the header is
      row 1, as a spreadsheet shows it) and the column.

    Images whose colours were changed to fit the input (colour to grey, grey to RGB, transparency
    dropped) are counted in a line appended to ``notes``, so the user knows what the model saw.

    Then ``check_dataset``. Any problem raises DataError naming the file; an archive refused by
    ``safe_files`` (zip slip, link, bomb...) raises ``safe_files.UnsafeUpload``, also a ModelError.
    """
    path = Path(path)
    label = original_name or path.name
    suffix = path.suffix.lower()
    if suffix not in (".npz", ".zip", ".csv") and original_name:
        suffix = Path(original_name).suffix.lower()
    try:
        if suffix == ".npz":
            inputs, labels = _read_npz(path, specs, label)
        elif suffix == ".zip":
            inputs, labels = _read_image_zip(path, specs, Path(work_dir), label, notes)
        elif suffix == ".csv":
            inputs, labels = _read_csv(path, specs, label)
        else:
            raise DataError(
                f"{label}: expected an evaluation set ending in .npz, .zip or .csv, found "
                f"{suffix or 'no suffix'}\n{DATA_FORMATS_HELP}"
            )
    except MemoryError:
        raise DataError(f"{label}: the data is too large to hold in memory") from None
    try:
        check_dataset(inputs, labels, specs)
    except DataError as e:
        raise DataError(f"{label}: {e}") from None
    if labels is not None:
        labels = labels.astype(np.int64)
    return inputs, labels


def _native(a: np.ndarray) -> np.ndarray:
    # Arrays saved on a big-endian machine: same values, in the byte order the model runs with.
    return a.astype(a.dtype.newbyteorder("=")) if a.dtype.byteorder not in ("=", "|") else a


def _read_npz(
    path: Path, specs: list[InputSpec], label: str
) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    names = [s.name for s in specs]
    inputs: dict[str, np.ndarray] = {}
    labels: np.ndarray | None = None
    try:
        # allow_pickle=False: an npz must never run code when read.
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise DataError(
                f"{label} holds a single array (an .npy file); expected an .npz (numpy.savez) with one "
                f"array per model input ({_names_text(names)}) and optionally {LABELS_KEY!r}"
            )
        with loaded as data:
            members = data.zip.infolist() if data.zip is not None else []
            declared: int = sum(int(i.file_size) for i in members)
            if declared > MAX_DATA_BYTES:
                raise DataError(
                    f"{label}: its arrays hold {declared / 1e9:,.1f} GB; expected at most "
                    f"{MAX_DATA_BYTES / 1e9:,.1f} GB of evaluation data"
                )
            extra = [k for k in data.files if k not in names and k != LABELS_KEY]
            if extra:
                raise DataError(
                    f"{label}: unexpected array {_few(extra)}; expected one array per model input "
                    f"({_names_text(names)}) and optionally {LABELS_KEY!r}; "
                    f"it holds {_names_text(data.files)}"
                )
            for key in data.files:
                try:
                    a = data[key]
                except ValueError as e:
                    if "allow_pickle" in str(e) or "Object arrays" in str(e):
                        raise DataError(
                            f"{label}: array {key!r} holds Python objects (dtype=object), which would have "
                            "to be unpickled, and unpickling can run code: refused. Expected plain numeric "
                            "arrays (e.g. float32, int64)"
                        ) from None
                    raise
                if not isinstance(a, np.ndarray):  # a member that is not .npy comes back as bytes
                    raise DataError(
                        f"{label}: member {key!r} is not a numpy array; expected an .npz written by "
                        "numpy.savez"
                    )
                a = _native(a)
                if key == LABELS_KEY:
                    labels = a
                else:
                    inputs[key] = a
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(
            f"{label} is not a readable .npz of plain arrays ({safe_files.error_words(e)}); expected a file "
            "written by numpy.savez or numpy.savez_compressed"
        ) from None
    return inputs, labels


# --- images ------------------------------------------------------------------------------------


def _image_layout(specs: list[InputSpec], label: str) -> tuple[InputSpec, str, int]:
    """The one image input, 'NCHW' or 'NHWC', and its channel count; DataError otherwise."""
    fits = (
        "an image .zip fits a model with one input of shape [N, C, H, W] or [N, H, W, C] with "
        "C = 1 or 3 and a float or uint8 type"
    )
    if len(specs) != 1 or len(specs[0].shape) != 4:
        raise DataError(
            f"{label}: {fits}; this model's inputs are {_inputs_text(specs)}. Give an .npz with one "
            "array per input instead"
        )
    spec = specs[0]
    _, d1, _, d3 = spec.shape
    if d1 in (1, 3):  # [N, 3, H, 3] is read as NCHW, ONNX's usual layout
        layout, channels = "NCHW", int(d1)
    elif d3 in (1, 3):
        layout, channels = "NHWC", int(d3)
    else:
        raise DataError(
            f"{label}: {fits}; this model's input {spec.name!r} is {spec.shape_text}, with no channel "
            "dimension of 1 or 3 in position 1 or 3. Give an .npz instead"
        )
    if spec.dtype.kind != "f" and spec.dtype != np.uint8:
        raise DataError(
            f"{label}: {fits}; this model's input {spec.name!r} takes {spec.dtype.name}. Give an .npz instead"
        )
    return spec, layout, channels


def _relative_members(files: list[Path], root: Path) -> dict[str, Path]:
    """Extracted files keyed by their path in the archive, without OS metadata or one shared top folder."""
    members: dict[str, Path] = {}
    for p in files:
        if not p.is_file():
            continue
        rel = p.resolve().relative_to(root.resolve()).as_posix()
        parts = rel.split("/")
        if parts[0] in _OS_JUNK_DIRS or parts[-1] in _OS_JUNK_FILES:
            continue
        members[rel] = p
    tops = {rel.split("/")[0] for rel in members}
    if len(tops) == 1 and all("/" in rel for rel in members):
        top = next(iter(tops)) + "/"
        members = {rel[len(top) :]: p for rel, p in members.items()}
    return members


def _parse_label(text: str) -> int:
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        value = float(text)  # ValueError for text that is no number at all
        if not math.isfinite(value) or value != int(value):
            raise ValueError(text) from None
        return int(value)


def _read_labels_csv(path: Path, label: str) -> dict[str, int]:
    where = f"{label}: {LABELS_FILE}"
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(
            f"{where} is not a readable UTF-8 CSV file ({safe_files.error_words(e)}); "
            "expected columns file,label"
        ) from None
    header = [h.strip().lower() for h in rows[0]] if rows else []
    if header[:2] != ["file", "label"] or len([h for h in header if h]) != 2:
        raise DataError(
            f"{where}: expected a header row 'file,label', "
            f"found {','.join(rows[0]) if rows else 'an empty file'}"
        )
    out: dict[str, int] = {}
    for row_no, row in enumerate(rows[1:], start=2):
        cells = [c.strip() for c in row]
        if not any(cells):
            continue
        if len(cells) < 2 or any(cells[2:]) or not cells[0]:
            raise DataError(f"{where}, row {row_no}: expected 2 cells (file, label), found {','.join(row)!r}")
        name = cells[0].replace("\\", "/").removeprefix("./")
        try:
            value = _parse_label(cells[1])
        except ValueError:
            raise DataError(
                f"{where}, row {row_no}, column 'label': expected an integer class index, found {cells[1]!r}"
            ) from None
        if name in out:
            raise DataError(f"{where}, row {row_no}: {name!r} is listed twice; expected one row per image")
        out[name] = value
    return out


def _read_image_zip(
    path: Path, specs: list[InputSpec], work_dir: Path, label: str, notes: list[str] | None
) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    spec, layout, channels = _image_layout(specs, label)
    work_dir.mkdir(parents=True, exist_ok=True)
    dest = Path(tempfile.mkdtemp(prefix="images-", dir=work_dir))
    try:
        files = safe_files.safe_extract_zip(path, dest)
    except safe_files.UnsafeUpload as e:  # a zip slip, a link, a bomb...: kept as a security refusal
        raise safe_files.UnsafeUpload(f"{label}: {e}") from None
    except ModelError as e:
        raise DataError(f"{label}: {e}") from None
    except (OSError, zipfile.BadZipFile, RuntimeError, NotImplementedError) as e:
        raise DataError(f"{label} is not a readable .zip archive ({safe_files.error_words(e)})") from None
    members = _relative_members(files, dest)
    labels_path = members.pop(LABELS_FILE, None)
    images = sorted(m for m in members if Path(m).suffix.lower() in IMAGE_SUFFIXES)
    others = sorted(m for m in members if Path(m).suffix.lower() not in IMAGE_SUFFIXES)
    if others:
        raise DataError(
            f"{label}: unexpected file {_few(others)}; expected only images "
            f"({' '.join(IMAGE_SUFFIXES)}) and an optional {LABELS_FILE}"
        )
    if not images:
        raise DataError(f"{label}: expected images ({' '.join(IMAGE_SUFFIXES)}), found none in the archive")
    labels: np.ndarray | None = None
    if labels_path is not None:
        table = _read_labels_csv(labels_path, label)
        absent = [f for f in table if f not in members]
        if absent:
            raise DataError(
                f"{label}: {LABELS_FILE} names {_few(absent)}, not in the archive; expected a row for each "
                f"image in it (e.g. {images[0]!r})"
            )
        unlabelled = [f for f in images if f not in table]
        if unlabelled:
            raise DataError(
                f"{label}: image {_few(unlabelled)} has no row in {LABELS_FILE}; "
                "expected a label for every image"
            )
        images = list(table)
        labels = np.array([table[f] for f in images], dtype=np.int64)
    pixels, changed = _decode_images(images, members, spec, layout, channels, label)
    if notes is not None:
        notes += [f"{n} of {len(images)} images in {label} {what}" for what, n in changed.items()]
    return {spec.name: pixels}, labels


def _decode_images(
    names: list[str], members: dict[str, Path], spec: InputSpec, layout: str, channels: int, label: str
) -> tuple[np.ndarray, collections.Counter[str]]:
    """The pixels, and how many images had their colours changed to fit the input, by change."""
    from PIL import Image  # Pillow comes with streamlit; imported here to keep `engine` light

    h_dim, w_dim = (spec.shape[2], spec.shape[3]) if layout == "NCHW" else (spec.shape[1], spec.shape[2])
    want_h = h_dim if isinstance(h_dim, int) else None
    want_w = w_dim if isinstance(w_dim, int) else None
    mode = "L" if channels == 1 else "RGB"
    changed: collections.Counter[str] = collections.Counter()
    out: np.ndarray | None = None
    for i, name in enumerate(names):
        try:
            with Image.open(members[name], formats=_PIL_FORMATS) as im:
                width, height = im.size
                if (want_w is not None and width != want_w) or (want_h is not None and height != want_h):
                    exp_w = want_w if want_w is not None else w_dim
                    exp_h = want_h if want_h is not None else h_dim
                    expected = f"{exp_w} x {exp_h}"
                    why = f"the size the model's input {spec.name!r} {spec.shape_text} takes"
                    if out is not None and not (isinstance(h_dim, int) and isinstance(w_dim, int)):
                        why = f"the size of the first image, {names[0]!r}: images must share one size"
                    raise DataError(
                        f"{label}: image {name!r} is {width} x {height} pixels (width x height); expected "
                        f"{expected}, {why}. Images are not resized: resize them first"
                    )
                if im.mode.startswith("I") or im.mode == "F":
                    raise DataError(
                        f"{label}: image {name!r} has {im.mode} pixels (16-bit or float); expected 8-bit "
                        "grey or colour images. Give an .npz for other pixel depths"
                    )
                if out is None:
                    want_w, want_h = width, height
                    nbytes = len(names) * width * height * channels * spec.dtype.itemsize
                    if nbytes > MAX_DATA_BYTES:
                        raise DataError(
                            f"{label}: {len(names)} images of {width} x {height} make {nbytes / 1e9:,.1f} GB "
                            f"of pixels; expected at most {MAX_DATA_BYTES / 1e9:,.1f} GB"
                        )
                    out = np.empty((len(names), height, width, channels), dtype=spec.dtype)
                arr = np.asarray(im.convert(mode))
                changed.update(_colour_changes(im, channels))
        except DataError:
            raise
        except Exception as e:  # Pillow raises many kinds (UnidentifiedImageError, SyntaxError, bomb errors)
            raise DataError(
                f"{label}: image {name!r} could not be decoded ({safe_files.error_words(e)}); expected a "
                "PNG, JPEG, BMP or GIF file"
            ) from None
        arr = arr.reshape(height, width, channels)
        out[i] = arr if spec.dtype == np.uint8 else arr / np.float32(255)
    assert out is not None  # names is not empty
    if layout == "NCHW":
        out = np.ascontiguousarray(out.transpose(0, 3, 1, 2))
    return out, changed


def _has_see_through_pixels(im: Any) -> bool:
    """Whether any pixel is less than fully opaque: an alpha channel of all 255 drops nothing."""
    if "A" in im.mode:
        alpha = im.getchannel("A")
    elif isinstance(im.info.get("transparency"), int) and len(im.getbands()) == 1 and im.mode != "P":
        # A grey file (8 or 16 bits) with one transparent value: converting a 16-bit one to RGBA
        # loses it (Pillow), so look for the value itself.
        return bool((np.asarray(im) == im.info["transparency"]).any())
    elif "transparency" in im.info:  # a palette or RGB file with one transparent colour
        alpha = im.convert("RGBA").getchannel("A")
    else:
        return False
    return bool(alpha.getextrema()[0] < 255)


def _colour_changes(im: Any, channels: int) -> list[str]:
    """What fitting a decoded image to a 1- or 3-channel input changes that the user may not expect."""
    out = []
    if _has_see_through_pixels(im):
        out.append("had transparency, dropped (pixels kept as stored)")
    if channels == 3 and im.mode in ("1", "L", "LA"):
        out.append("were grey, repeated into the 3 channels the model's input takes")
    elif channels == 1 and im.mode not in ("1", "L", "LA"):
        rgb = np.asarray(im.convert("RGB"))
        # A palette or RGB file of grey pixels loses nothing; only real colour is worth a word.
        if not ((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()):
            out.append("were in colour, converted to grey for the model's 1-channel input")
    return out


# --- CSV ---------------------------------------------------------------------------------------


def _column_letter(index: int) -> str:
    letters = ""
    index += 1
    while index:
        index, rem = divmod(index - 1, 26)
        letters = chr(ord("A") + rem) + letters
    return letters


def _read_csv(
    path: Path, specs: list[InputSpec], label: str
) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    if len(specs) != 1 or len(specs[0].shape) != 2:
        raise DataError(
            f"{label}: a .csv fits a model with one input of shape [N, features]; this model's inputs are "
            f"{_inputs_text(specs)}. Give an .npz with one array per input instead"
        )
    spec = specs[0]
    if spec.dtype.kind not in "fiu":
        raise DataError(
            f"{label}: a .csv holds numbers; the model's input {spec.name!r} takes {spec.dtype.name}"
        )
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{label} is not a readable UTF-8 CSV file ({safe_files.error_words(e)})") from None
    if not rows:
        raise DataError(f"{label} is empty; expected a header row, then one row per sample")
    header = [h.strip() for h in rows[0]]
    label_cols = [i for i, h in enumerate(header) if h.lower() == "label"]
    if len(label_cols) > 1:
        raise DataError(f"{label}: expected at most one 'label' column, found {len(label_cols)}")
    label_col = label_cols[0] if label_cols else None
    features = [i for i in range(len(header)) if i != label_col]
    want = spec.shape[1]
    if isinstance(want, int) and len(features) != want:
        raise DataError(
            f"{label}: expected {want} feature columns (the model's input {spec.name!r} is "
            f"{spec.shape_text}) plus an optional 'label' column, found {len(features)}: "
            f"{_few([header[i] for i in features], 8)}"
        )
    if not features:
        raise DataError(f"{label}: expected at least one feature column, found only {header}")

    def column(i: int) -> str:
        return f"column {header[i] or '(unnamed)'!r} ({_column_letter(i)})"

    values: list[list[float]] = []
    targets: list[int] = []
    for row_no, row in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in row):
            continue  # blank lines (a trailing newline) are not samples
        if len(row) != len(header):
            raise DataError(
                f"{label}, row {row_no}: expected {len(header)} cells like the header, found {len(row)}"
            )
        sample: list[float] = []
        for i in features:
            cell = row[i].strip()
            try:
                value = float(cell)
            except ValueError:
                found = repr(cell) if cell else "an empty cell"
                raise DataError(
                    f"{label}, row {row_no}, {column(i)}: expected a number, found {found}"
                ) from None
            if not math.isfinite(value):
                raise DataError(
                    f"{label}, row {row_no}, {column(i)}: expected a finite number, found {cell!r}"
                )
            if spec.dtype.kind in "iu" and value != int(value):
                raise DataError(
                    f"{label}, row {row_no}, {column(i)}: expected an integer ({spec.dtype.name} input), "
                    f"found {cell!r}"
                )
            sample.append(value)
        values.append(sample)
        if label_col is not None:
            cell = row[label_col].strip()
            try:
                targets.append(_parse_label(cell))
            except ValueError:
                found = repr(cell) if cell else "an empty cell"
                raise DataError(
                    f"{label}, row {row_no}, {column(label_col)}: "
                    f"expected an integer class index, found {found}"
                ) from None
    data = np.array(values, dtype=np.float64).reshape(len(values), len(features))
    inputs = {spec.name: data.astype(spec.dtype)}
    labels = np.array(targets, dtype=np.int64) if label_col is not None else None
    return inputs, labels
