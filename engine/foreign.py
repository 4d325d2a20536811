"""Checks and repairs for a model quantdash did not make: run in a worker, never in the app's process.

An upload is a graph from anywhere (another framework's exporter, an old model zoo, a hostile
file). Before the engine prepares it, this module says precisely why it cannot be used, or
brings in weights stored as external data beside the file. Preparation itself (initializers listed as inputs
made plain weights, shape inference, constant folding, opset upgrade) is `model_io.prepare_model`.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import external_data_helper

from engine.model_io import LAYER_OPS, ModelError, default_opset, is_layer

# Domains ONNX Runtime's CPU build runs; anything else is a custom op this tool cannot execute.
KNOWN_DOMAINS = ("", "ai.onnx", "ai.onnx.ml", "com.microsoft")
# A single sample of one input larger than this cannot be a model anyone runs on a CPU here.
MAX_INPUT_ELEMENTS = 64 * 2**20
MAX_WEIGHT_BYTES = 2**31  # protobuf's own limit for a whole model

_ORT_OPSET_LIMIT = re.compile(r"official support for domain ai\.onnx is till opset (\d+)")
# Ops with weights that are not Conv/MatMul/Gemm: what each is, so the user reads why it stays FP32.
_FP32_ONLY_WHY = {
    "ConvTranspose": "transposed convolution: quantdash quantizes Conv, MatMul and Gemm layers",
    "LSTM": "recurrent layer: quantdash quantizes Conv, MatMul and Gemm layers",
    "GRU": "recurrent layer: quantdash quantizes Conv, MatMul and Gemm layers",
    "RNN": "recurrent layer: quantdash quantizes Conv, MatMul and Gemm layers",
    "Gather": "a lookup table (embedding): it does no arithmetic to speed up",
}


def load_upload(path: Path, label: str | None = None) -> onnx.ModelProto:
    """Parse the file's protobuf without following external data yet, or say why it is not a model.

    `label` is the user's name for the file (uploads are stored under generated names)."""
    name = label or path.name
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf's DecodeError and friends: the file is not an ONNX protobuf
        raise ModelError(
            f"{name} is not a readable ONNX model: the file is truncated or not ONNX ({type(e).__name__}). "
            "Expected a .onnx file as written by torch.onnx.export, tf2onnx or onnx.save."
        ) from None
    if not model.graph.node or not model.opset_import:
        raise ModelError(
            f"{name} parsed, but holds no ONNX graph (no nodes or no opset): it is probably not an ONNX "
            "model (random or truncated bytes can parse as an empty one). Expected a .onnx file as written "
            "by torch.onnx.export, tf2onnx or onnx.save."
        )
    return model


def check_domains(model: onnx.ModelProto) -> None:
    """Custom-domain ops cannot run here: name the first ones."""
    custom = sorted({f"{n.domain}:{n.op_type}" for n in model.graph.node if n.domain not in KNOWN_DOMAINS})
    if custom:
        raise ModelError(
            f"the model uses operators from a custom domain, which ONNX Runtime here cannot run: "
            f"{', '.join(custom[:5])}{' ...' if len(custom) > 5 else ''}. Expected only standard ONNX ops "
            "(domain ai.onnx) and ONNX Runtime's com.microsoft ops; export without custom ops, or "
            "replace them with standard ones."
        )


def _elements(dims: list[int]) -> int:
    return int(np.prod([max(d, 0) for d in dims], dtype=np.float64))


def check_dimensions(model: onnx.ModelProto) -> None:
    """Refuse inputs or weights declaring absurd sizes before anything allocates them."""
    inits = {t.name for t in model.graph.initializer}
    for kind, values in (("input", model.graph.input), ("output", model.graph.output)):
        for vi in values:
            if vi.type.HasField("tensor_type") and not vi.type.tensor_type.HasField("shape"):
                raise ModelError(
                    f"{kind} {vi.name!r} declares no shape, not even how many dimensions it has; ONNX "
                    "requires one for a graph's inputs and outputs. Expected a model exported with its "
                    "shapes (torch.onnx.export and tf2onnx write them; a dimension may be named, as 'batch')"
                )
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        # Dynamic dimensions count as 1; the first is the batch, so a sample is the rest.
        dims = [d.dim_value if d.HasField("dim_value") else 1 for d in vi.type.tensor_type.shape.dim]
        if any(d < 0 for d in dims):
            raise ModelError(f"input {vi.name!r} declares a negative dimension {dims}; expected sizes >= 0")
        per_sample = _elements(dims[1:])
        if per_sample > MAX_INPUT_ELEMENTS:
            raise ModelError(
                f"input {vi.name!r} declares shape {_shape_text(vi)}: {per_sample:,.0f} values per sample, "
                f"more than the {MAX_INPUT_ELEMENTS:,} this tool accepts. Expected the real input size "
                "(a dynamic dimension is fine and can be given with --shape)."
            )
    for t in model.graph.initializer:
        declared = _elements(list(t.dims))
        itemsize = _itemsize(t)
        if declared * itemsize > MAX_WEIGHT_BYTES:
            raise ModelError(
                f"weight {t.name!r} declares shape {list(t.dims)} ({declared * itemsize / 1e9:,.1f} GB), "
                "more than an ONNX model can hold (2 GB). Expected the real weight shape."
            )


def _itemsize(t: onnx.TensorProto) -> int:
    """Bytes per element of a weight; a data type ONNX does not define is a damaged file, said so."""
    try:
        return int(onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize)
    except (KeyError, ValueError, TypeError):
        raise ModelError(
            f"weight {t.name!r} has data type {t.data_type}, which ONNX does not define (or numpy cannot "
            "hold); expected a float or integer weight. The file is damaged or was edited."
        ) from None


def _shape_text(vi: onnx.ValueInfoProto) -> str:
    dims = [
        str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?")
        for d in vi.type.tensor_type.shape.dim
    ]
    return "[" + ", ".join(dims) + "]"


def check_weight_sizes(model: onnx.ModelProto) -> None:
    """Each weight's bytes must match its declared shape (after external data is loaded)."""
    for t in model.graph.initializer:
        if not t.HasField("raw_data"):
            continue  # typed fields (float_data ...) are sized by the checker
        expected = _elements(list(t.dims)) * _itemsize(t)
        if len(t.raw_data) != expected:
            raise ModelError(
                f"weight {t.name!r} declares shape {list(t.dims)} ({expected:,.0f} bytes) but holds "
                f"{len(t.raw_data):,} bytes. Expected a weight whose data matches its shape: the file is "
                "damaged or was edited."
            )


def check_external_files_present(model: onnx.ModelProto, folder: Path) -> None:
    """A plain .onnx upload whose weights live in files that were not sent: say to zip them together."""
    missing = sorted(
        {
            entry.value
            for t in model.graph.initializer
            if external_data_helper.uses_external_data(t)
            for entry in t.external_data
            if entry.key == "location"
            and not Path(entry.value).is_absolute()
            and ".." not in Path(entry.value).parts
            and not (folder / entry.value).exists()
        }
    )
    if missing:
        raise ModelError(
            f"the model keeps its weights in external data file(s) {', '.join(missing[:3])}, which were not "
            "given. Expected a .zip holding the .onnx file and those files, in the folders the model names."
        )


def load_external_weights(model: onnx.ModelProto, folder: Path) -> bool:
    """Read external data (already checked by safe_files.check_external_data) into the model.

    The engine keeps every model as one self-contained file (uploads are capped well below
    protobuf's 2 GB), so the weights are embedded. Returns whether there were any.
    """
    had = any(external_data_helper.uses_external_data(t) for t in model.graph.initializer)
    external_data_helper.load_external_data_for_model(model, str(folder))
    return had


def free_batch_dimension(model: onnx.ModelProto) -> list[str]:
    """Make a batch dimension fixed at 1 dynamic (old zoo graphs often fix it); returns the inputs changed.

    Evaluation runs many samples at once and latency is measured at batch 32 too, so a model
    that only takes batch 1 is opened up. Intermediate shapes recorded for batch 1 are dropped
    (shape inference recomputes them). A graph that hard-codes its batch (a Reshape to [1, ...])
    still fails its first run on two samples, and is refused there with the reason.
    """
    inits = {t.name for t in model.graph.initializer}
    changed = []
    for vi in model.graph.input:
        dims = vi.type.tensor_type.shape.dim
        if (
            vi.name not in inits
            and len(dims) >= 2
            and dims[0].HasField("dim_value")
            and dims[0].dim_value == 1
        ):
            dims[0].dim_param = "batch"  # setting the param clears the fixed value (a protobuf oneof)
            changed.append(vi.name)
    if changed:
        for vi in model.graph.output:
            dims = vi.type.tensor_type.shape.dim
            if dims and dims[0].HasField("dim_value") and dims[0].dim_value == 1:
                dims[0].dim_param = "batch"
        del model.graph.value_info[:]
    return changed


def check_runs_here(model_bytes: bytes) -> None:
    """Load the model in ONNX Runtime (a crash here kills this worker, not the app)."""
    try:
        ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    except Exception as e:
        text = str(e)
        limit = _ORT_OPSET_LIMIT.search(text)
        if limit:
            used = default_opset(onnx.load_from_string(model_bytes))
            raise ModelError(
                f"the model uses ONNX opset {used}, newer than ONNX Runtime {ort.__version__} here supports "
                f"(up to opset {limit.group(1)}). Expected opset {limit.group(1)} or older: re-export with "
                f"an older opset (torch.onnx.export(..., opset_version={limit.group(1)}))."
            ) from None
        first = text.strip().splitlines()[0] if text.strip() else type(e).__name__
        raise ModelError(f"ONNX Runtime {ort.__version__} cannot load the model: {first[:400]}") from None


def fp32_only_ops(prepared: onnx.ModelProto) -> list[dict[str, str]]:
    """Ops that carry weights but that no precision can take, each with the reason it stays FP32."""
    inits = {t.name: t for t in prepared.graph.initializer}
    out: list[dict[str, str]] = []
    for node in prepared.graph.node:
        if is_layer(node, inits):
            continue
        if node.op_type in LAYER_OPS:
            out.append(
                {
                    "node": node.name,
                    "op": node.op_type,
                    "why": "its weight is computed while the model runs, not stored, so there is no weight "
                    "to quantize ahead of time",
                }
            )
            continue
        weights = [inits[i] for i in node.input if i in inits and len(inits[i].dims) >= 2]
        if weights:
            why = _FP32_ONLY_WHY.get(
                node.op_type,
                f"{node.op_type} has no quantized kernel here: quantdash quantizes Conv, MatMul and Gemm",
            )
            out.append({"node": node.name, "op": node.op_type, "why": why})
    return out


def weight_count(model: onnx.ModelProto) -> int:
    return int(sum(_elements(list(t.dims)) for t in model.graph.initializer))
