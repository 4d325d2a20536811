"""Load and prepare ONNX models, and describe their layers.

A *prepared* model is the form every plan is written against: ONNX Runtime's
quantization pre-processing (shape inference, optimisation, Constant weights turned
into initializers), then every Gemm rewritten to MatMul + Add. The MatMul keeps the
Gemm's name, so a layer is called what the user's graph called it.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnx.version_converter
from onnx import numpy_helper

from engine.types import LayerInfo, Precision

# Weight-bearing ops the engine treats as layers. Other ops follow their layers (see quantize).
LAYER_OPS = ("Conv", "MatMul", "Gemm")
INT4_BLOCK_SIZE = 32


class ModelError(ValueError):
    """A model that cannot be used; the message says what is wrong and what is expected."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load_model_bytes(path: str | Path) -> bytes:
    """Read a model file and check it parses as ONNX, or raise ModelError."""
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"model file not found: {p}")
    if p.suffix.lower() != ".onnx":
        raise ModelError(f"{p.name}: expected an ONNX model file ending in .onnx")
    data = p.read_bytes()
    if not data:
        raise ModelError(f"{p.name} is empty (0 bytes); expected an ONNX model")
    try:
        onnx.load_from_string(data)
    except Exception as e:  # protobuf raises a DecodeError subclass we need not name
        raise ModelError(f"{p.name} is not a readable ONNX model ({type(e).__name__}: {e})") from None
    return data


def _name_unnamed_nodes(model: onnx.ModelProto) -> None:
    # Plans address nodes by name, so every node needs a unique, stable one.
    taken = {node.name for node in model.graph.node if node.name}
    seen: set[str] = set()
    for i, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            candidate, n = f"{node.op_type}_{i}", 0
            while candidate in taken:  # never collide with a name the user already gave
                n += 1
                candidate = f"{node.op_type}_{i}_{n}"
            node.name = candidate
            taken.add(candidate)
        seen.add(node.name)


def remove_unused_initializers(model: onnx.ModelProto) -> None:
    used = {name for node in model.graph.node for name in node.input}
    used |= {o.name for o in model.graph.output}
    keep = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)


def drop_initializers_from_inputs(model: onnx.ModelProto) -> int:
    """Old exporters (IR version 3) list every weight as a graph input too; make them plain weights.

    Left as inputs, ONNX Runtime treats them as overridable, so it cannot constant-fold them and the
    quantizer does not see them as weights. Returns how many were dropped.
    """
    inits = {t.name for t in model.graph.initializer}
    keep = [vi for vi in model.graph.input if vi.name not in inits]
    dropped = len(model.graph.input) - len(keep)
    if dropped:
        del model.graph.input[:]
        model.graph.input.extend(keep)
        # IR version 3 required initializers among the inputs; 4 is the first that allows otherwise.
        model.ir_version = max(model.ir_version, 4)
    return dropped


def _rewrite_gemm_to_matmul(model: onnx.ModelProto) -> None:
    """Gemm -> MatMul + Add, the MatMul keeping the Gemm's name (MatMulNBits skips Gemm)."""
    from onnxruntime.quantization.onnx_model import ONNXModel

    gemm_names = {n.name for n in model.graph.node if n.op_type == "Gemm"}
    if not gemm_names:
        return
    ONNXModel(model).replace_gemm_with_matmul()
    for node in model.graph.node:
        if node.op_type == "MatMul" and node.name.endswith("_MatMul") and node.name[:-7] in gemm_names:
            node.name = node.name[:-7]
        elif node.op_type == "Add" and node.name.endswith("_Add") and node.name[:-4] in gemm_names:
            node.name = node.name[:-4] + "/bias_add"
    remove_unused_initializers(model)


def prepare_model(model_bytes: bytes, work_dir: str | Path | None = None) -> bytes:
    """Pre-process a model for quantization and return the prepared model's bytes."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    model = onnx.load_from_string(model_bytes)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as e:
        raise ModelError(f"the ONNX checker rejected the model: {e}") from None
    _name_unnamed_nodes(model)
    drop_initializers_from_inputs(model)
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        # Pass a path, not the proto: quant_pre_process rewrites a proto it is given in place
        # (its weights moved to external data in a temporary folder that is then deleted).
        src, out = Path(tmp) / "input.onnx", Path(tmp) / "prepared.onnx"
        onnx.save(model, str(src))
        quant_pre_process(str(src), str(out), skip_symbolic_shape=False)
        prepared = onnx.load(str(out))
    _name_unnamed_nodes(prepared)
    _rewrite_gemm_to_matmul(prepared)
    prepared = _upgrade_opset(prepared)
    prepared = onnx.shape_inference.infer_shapes(prepared)
    return bytes(prepared.SerializeToString())


QUANT_OPSET = 21  # 16-bit activations (W8A16) need QuantizeLinear from opset 21


def default_opset(model: onnx.ModelProto, missing: int = QUANT_OPSET) -> int:
    """The version of the default (ai.onnx) domain the model imports; `missing` if it imports none."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), missing)


def _upgrade_opset(model: onnx.ModelProto) -> onnx.ModelProto:
    """Convert once to the opset the quantizer needs, instead of once per plan inside quantize_static."""
    version = default_opset(model)
    if version >= QUANT_OPSET:
        return model
    try:
        upgraded = onnx.version_converter.convert_version(model, QUANT_OPSET)
        onnx.checker.check_model(upgraded)
    except Exception:  # an op the converter cannot map: quantize_static will try per plan, as before
        return model
    return upgraded


def _shape_of(vi: onnx.ValueInfoProto) -> tuple[int | str, ...]:
    dims: list[int | str] = []
    for d in vi.type.tensor_type.shape.dim:
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        else:
            dims.append(d.dim_param or "?")
    return tuple(dims)


def _per_sample(shape: tuple[int | str, ...]) -> int:
    # MACs are per sample: the leading (batch) dimension and unknown dims count as 1.
    return int(np.prod([d if isinstance(d, int) else 1 for d in shape[1:]] or [1]))


@dataclass(frozen=True)
class GraphIndex:
    """Lookups over a model's graph that every stage needs."""

    model: onnx.ModelProto

    @property
    def initializers(self) -> dict[str, onnx.TensorProto]:
        return {t.name: t for t in self.model.graph.initializer}

    @property
    def shapes(self) -> dict[str, tuple[int | str, ...]]:
        g = self.model.graph
        return {vi.name: _shape_of(vi) for vi in [*g.input, *g.output, *g.value_info]}


def is_layer(node: onnx.NodeProto, initializers: dict[str, onnx.TensorProto]) -> bool:
    """A layer is a Conv, MatMul or Gemm whose weight (input 1) is a constant initializer."""
    return node.op_type in LAYER_OPS and len(node.input) > 1 and node.input[1] in initializers


def _accepted(node: onnx.NodeProto, weight: np.ndarray) -> tuple[tuple[Precision, ...], dict[Precision, str]]:
    accepts = [Precision.FP32, Precision.FP16, Precision.INT8, Precision.W8A16, Precision.INT8_DYNAMIC]
    rejects: dict[Precision, str] = {}
    if node.op_type == "Conv":
        # 4-bit weights per output channel, dequantized to float in front of the Conv (see quantize).
        accepts.append(Precision.INT4)
    elif node.op_type == "MatMul" and weight.ndim == 2:
        if weight.shape[0] >= INT4_BLOCK_SIZE:
            accepts.append(Precision.INT4)
        else:
            rejects[Precision.INT4] = (
                f"INT4 blocks hold {INT4_BLOCK_SIZE} weights along the input dimension; "
                f"this layer has only {weight.shape[0]}"
            )
    elif node.op_type == "MatMul":
        rejects[Precision.INT4] = "INT4 (MatMulNBits) needs a 2-D weight matrix"
        for p in (Precision.INT8_DYNAMIC,):
            accepts.remove(p)
            rejects[p] = "dynamic INT8 needs a 2-D weight matrix"
    else:
        rejects[Precision.INT4] = f"INT4 weight-only covers Conv and MatMul, not {node.op_type}"
    return tuple(accepts), rejects


def layer_table(prepared_bytes: bytes) -> list[LayerInfo]:
    """Every layer of a prepared model, in graph order, with what it accepts and why not."""
    model = onnx.load_from_string(prepared_bytes)
    index = GraphIndex(model)
    inits = index.initializers
    shapes = index.shapes
    layers: list[LayerInfo] = []
    for node in model.graph.node:
        if not is_layer(node, inits):
            continue
        weight = numpy_helper.to_array(inits[node.input[1]])
        param_names = [n for n in node.input[1:] if n in inits]
        params = sum(int(np.prod(inits[n].dims)) for n in param_names)
        weight_bytes = sum(numpy_helper.to_array(inits[n]).nbytes for n in param_names)
        out_shape = shapes.get(node.output[0], ())
        if node.op_type == "Conv":
            # A Conv weight is [out, in/group, k...]: each output element costs in/group * k MACs.
            macs = _per_sample(out_shape) * int(np.prod(weight.shape[1:]))
        else:
            macs = _per_sample(out_shape) * int(weight.shape[0])
        accepts, rejects = _accepted(node, weight)
        layers.append(
            LayerInfo(
                name=node.name,
                op_type=node.op_type,
                params=params,
                macs=macs,
                weight_bytes=int(weight_bytes),
                input_shapes=(shapes.get(node.input[0], ()),),
                output_shapes=(out_shape,),
                accepts=accepts,
                rejects=rejects,
            )
        )
    return layers
