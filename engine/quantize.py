"""Plan -> quantized ONNX model, with every precision combinable per layer in one graph.

The stages run in the one order found to compose (see shared/MIXED_PRECISION_NOTES.md):
static QDQ (INT8 and W8A16 in one call, from cached ranges) -> dynamic INT8 ->
INT4 weight-only (MatMulNBits for MatMul, int4 DequantizeLinear for Conv) -> FP16 last.
Afterwards the graph is walked to check that each layer really got the precision the plan
asked for.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from engine.measure import has_int8_dot_product
from engine.model_io import INT4_BLOCK_SIZE, remove_unused_initializers
from engine.types import CalibrationMethod, LayerInfo, Plan, PlanError, Precision

# Non-layer ops that take the precision of the layers feeding them when those all agree.
# Quantizing the Relu/Add between two INT8 convs is what lets ONNX Runtime fuse
# DQ -> Conv -> Q into one integer kernel; leaving them float costs the speed-up.
ATTACHABLE_OPS = frozenset(
    {
        "Relu", "Clip", "LeakyRelu", "Sigmoid", "Add", "Mul", "MaxPool", "AveragePool",
        "GlobalAveragePool", "Concat", "Flatten", "Reshape", "Transpose", "Squeeze",
        "Unsqueeze", "Resize", "Pad", "Split", "Slice",
    }
)  # fmt: skip
ATTACHING_PRECISIONS = frozenset({Precision.INT8, Precision.FP16})
_QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})
_DYNAMIC_OPS = frozenset({"MatMulInteger", "ConvInteger", "DynamicQuantizeMatMul", "DynamicQuantizeLinear"})


@dataclass(frozen=True)
class QuantizedModel:
    """A built model, the precision each layer really got, and the time per stage."""

    model_bytes: bytes
    realized: Mapping[str, Precision]
    stage_seconds: Mapping[str, float] = field(default_factory=dict)


def resolve_plan(plan: Plan, layers: list[LayerInfo]) -> dict[str, Precision]:
    """Each layer's precision under plan, or PlanError naming the problem and the valid choices.

    Explicit per-layer entries must be valid for their layer. The default applies to every
    layer that accepts it; the others stay FP32 (so "default int4" means "INT4 where possible").
    """
    by_name = {layer.name: layer for layer in layers}
    unknown = [n for n in plan.layers if n not in by_name]
    if unknown:
        names = [layer.name for layer in layers]
        shown = ", ".join(names[:25]) + (f", ... ({len(names)} in all)" if len(names) > 25 else "")
        raise PlanError(f"unknown layer {unknown[0]!r} in plan; valid layer names are: {shown}")
    assignment: dict[str, Precision] = {}
    for layer in layers:
        if layer.name in plan.layers:
            p = plan.layers[layer.name]
            if p not in layer.accepts:
                why = layer.rejects.get(p, "not supported for this op type")
                valid = ", ".join(a.value for a in layer.accepts)
                raise PlanError(
                    f"layer {layer.name!r} ({layer.op_type}) cannot take {p.value}: {why}. "
                    f"It accepts: {valid}"
                )
            assignment[layer.name] = p
        else:
            assignment[layer.name] = plan.default if plan.default in layer.accepts else Precision.FP32
    return assignment


def _producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in model.graph.node for out in node.output}


def _consumers(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    result: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            result.setdefault(name, []).append(node)
    return result


def node_precisions(model: onnx.ModelProto, assignment: Mapping[str, Precision]) -> dict[str, Precision]:
    """Precision of every node: layers as planned; an attachable op follows its direct producers.

    An op joins a precision only when every input comes from a node of that precision or is
    a finite constant: a -inf attention mask, say, must never be quantized.
    """
    producers = _producers(model)
    inits = {t.name: t for t in model.graph.initializer}
    layer_nodes = {node.name: node for node in model.graph.node if node.name in assignment}
    # Activations a W8A16 layer reads must stay float up to its own 16-bit Q/DQ: an INT8 op
    # writing them (a Flatten after an INT8 conv, say) would make ONNX Runtime's quantizer give
    # the tensor one 8-bit scale shared with that op, and the layer would run as INT8.
    w16_inputs = {n.input[0] for name, n in layer_nodes.items() if assignment[name] is Precision.W8A16}
    result: dict[str, Precision] = dict(assignment)
    for node in model.graph.node:  # graph order is topological, so producers are decided first
        if node.name in assignment or node.op_type not in ATTACHABLE_OPS:
            continue
        kinds: set[Precision | None] = set()
        for name in node.input:
            if not name:
                continue
            if name in inits:
                if not np.isfinite(numpy_helper.to_array(inits[name])).all():
                    kinds.add(None)
                continue
            src = producers.get(name)
            kinds.add(result.get(src.name) if src is not None else None)
        if len(kinds) == 1 and (p := kinds.pop()) in ATTACHING_PRECISIONS:
            if p is Precision.INT8 and w16_inputs.intersection(node.output):
                continue
            result[node.name] = p
    return result


def _weight_axis(node: onnx.NodeProto) -> int:
    # Per-channel axis of the weight: output channels for Conv, output columns for MatMul.
    return 0 if node.op_type == "Conv" else 1


def _static_overrides(
    model: onnx.ModelProto, precisions: Mapping[str, Precision]
) -> dict[str, list[dict[str, object]]]:
    """TensorQuantOverrides giving W8A16 layers 16-bit activations and full-range 8-bit weights."""
    from onnxruntime.quantization import QuantType

    consumers = _consumers(model)
    overrides: dict[str, list[dict[str, object]]] = {}
    for node in model.graph.node:
        if precisions.get(node.name) is not Precision.W8A16:
            continue
        act = node.input[0]
        int8_readers = {c.name for c in consumers.get(act, []) if precisions.get(c.name) is Precision.INT8}
        entry: dict[str, object] = {"quant_type": QuantType.QUInt16}
        if int8_readers:
            # One tensor feeding both: 16 bits, converted to 8 for the INT8 readers.
            entry["convert"] = {"quant_type": QuantType.QUInt8, "recv_nodes": int8_readers}
        overrides[act] = [entry]
        # W8A16 weights would inherit reduce_range (7-bit) meant for the u8*s8 kernels.
        overrides[node.input[1]] = [
            {"quant_type": QuantType.QInt8, "reduce_range": False, "axis": _weight_axis(node)}
        ]
    return overrides


def _restore_float_readers(model: onnx.ModelProto, static_nodes: set[str]) -> None:
    """Point non-static readers of a fake-quantized tensor back at the float tensor.

    Static QDQ rewires every consumer of a quantized tensor to its DequantizeLinear
    output, so an FP32, FP16 or dynamic neighbour would silently read quantized values.
    """
    producers = _producers(model)
    for node in model.graph.node:
        if node.name in static_nodes or node.op_type in _QDQ_OPS:
            continue
        for i, name in enumerate(node.input):
            dq = producers.get(name)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            q = producers.get(dq.input[0])
            if q is not None and q.op_type == "QuantizeLinear":
                node.input[i] = q.input[0]


def _stage_static(
    model: onnx.ModelProto,
    precisions: Mapping[str, Precision],
    cache_path: Path,
    method: CalibrationMethod,
    work: Path,
) -> onnx.ModelProto:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    from engine.calibrate import ort_method

    static_nodes = {n for n, p in precisions.items() if p in (Precision.INT8, Precision.W8A16)}
    src, out = work / "static_in.onnx", work / "static_out.onnx"
    onnx.save(model, str(src))
    quantize_static(
        str(src),
        str(out),
        calibration_data_reader=None,
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        # u8 x s8 kernels without VNNI saturate unless weights use 7 bits (measured on this AVX2 CPU:
        # first-conv SQNR 22 dB -> 35-39 dB, same speed). With VNNI the full 8 bits are safe.
        reduce_range=not has_int8_dot_product(),
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        nodes_to_quantize=sorted(static_nodes),
        calibrate_method=ort_method(method),
        calibration_cache_path=str(cache_path),
        extra_options={
            "TensorQuantOverrides": _static_overrides(model, precisions),
            # Keep Relu/Clip as nodes so rewiring float readers never loses an activation;
            # ONNX Runtime still fuses them at load.
            "QDQKeepRemovableActivations": True,
        },
    )
    result = onnx.load(str(out))
    _restore_float_readers(result, static_nodes)
    return result


def _stage_dynamic(model: onnx.ModelProto, layers: list[str], work: Path) -> onnx.ModelProto:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # An Identity alias in front of each dynamic layer's input keeps the dynamic quantizer's
    # tensor names from colliding with the static stage's (<tensor>_QuantizeLinear ...).
    targets = set(layers)
    aliases: dict[str, str] = {}
    new_nodes = []
    for node in model.graph.node:
        if node.name in targets:
            src = node.input[0]
            if src not in aliases:
                aliases[src] = f"{src}__dyn_in"
                new_nodes.append(
                    onnx.helper.make_node("Identity", [src], [aliases[src]], name=f"{src}__dyn_alias")
                )
            node.input[0] = aliases[src]
        new_nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(new_nodes)
    src_path, out = work / "dynamic_in.onnx", work / "dynamic_out.onnx"
    onnx.save(model, str(src_path))
    quantize_dynamic(
        str(src_path),
        str(out),
        per_channel=False,
        reduce_range=not has_int8_dot_product(),
        weight_type=QuantType.QInt8,
        nodes_to_quantize=sorted(targets),
        extra_options={"MatMulConstBOnly": True},
    )
    return onnx.load(str(out))


def _stage_int4(model: onnx.ModelProto, layers: list[str]) -> onnx.ModelProto:
    convs = {n.name for n in model.graph.node if n.name in layers and n.op_type == "Conv"}
    matmuls = [n for n in layers if n not in convs]
    if convs:
        _int4_conv_weights(model, convs)
    return _int4_matmuls(model, matmuls) if matmuls else model


def _int4_matmuls(model: onnx.ModelProto, layers: list[str]) -> onnx.ModelProto:
    from onnxruntime.quantization import matmul_nbits_quantizer
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    # It logs every node it visits at INFO through its own handler.
    matmul_nbits_quantizer.logger.setLevel(logging.WARNING)

    # nodes_to_include is OR-ed with the op type (it quantized every MatMul when asked for
    # one), so exclude every other MatMul instead.
    targets = set(layers)
    exclude = [n.name for n in model.graph.node if n.op_type == "MatMul" and n.name not in targets]
    quantizer = MatMulNBitsQuantizer(
        model,
        bits=4,
        block_size=INT4_BLOCK_SIZE,
        is_symmetric=True,
        # accuracy_level 4 (int8 compute) ran 1.86x FP32 on an MLP here; the default ran 0.33x.
        accuracy_level=4,
        nodes_to_exclude=exclude,
    )
    quantizer.process()
    return quantizer.model.model  # type: ignore[no-any-return]


def _int4_conv_weights(model: onnx.ModelProto, layers: set[str]) -> None:
    """Store each Conv's weight as int4, symmetric per output channel, with a DequantizeLinear
    (opset 21) in front of the float Conv.

    ONNX Runtime has no 4-bit Conv kernel on CPU (MatMulNBits is MatMul only), so this buys size,
    not speed: the weight is dequantized on every run. Per output channel is the layout 4-bit
    convolution weights take where they do run natively (QNN's W4A8/W4A16, AIMET).

    The range is the restricted symmetric one, [-7, 7] with scale max|w| / 7, as ONNX Runtime
    uses [-127, 127] for symmetric int8. Its int4 default, [-8, 7] with scale 2 max|w| / 15,
    clips each channel's largest positive weight: on digits_mobilenet, all Convs at INT4 gave
    8.1 dB output SQNR that way against 12.5 dB with [-7, 7].
    """
    from onnxruntime.quantization.quant_utils import compute_scale_zp, quantize_onnx_initializer

    inits = {t.name: t for t in model.graph.initializer}
    dequantized: dict[str, str] = {}  # float weight -> its int4 DequantizeLinear output
    dq_nodes: list[onnx.NodeProto] = []
    for node in model.graph.node:
        if node.name not in layers:
            continue
        weight_name = node.input[1]
        if weight_name not in dequantized:
            weight = numpy_helper.to_array(inits[weight_name]).astype(np.float32)
            params = [
                compute_scale_zp(ch.min(), ch.max(), np.int8(-7), np.int8(7), symmetric=True) for ch in weight
            ]
            zero_points = np.array([zp for zp, _ in params]).reshape(-1)
            scales = np.array([scale for _, scale in params], dtype=np.float32).reshape(-1)
            q_name, scale_name, out = (f"{weight_name}_int4{s}" for s in ("", "_scale", "_dequantized"))
            model.graph.initializer.extend(
                [
                    quantize_onnx_initializer(
                        inits[weight_name],
                        onnx.TensorProto.INT4,
                        zero_points,
                        scales,
                        axis=0,
                        quant_weight_name=q_name,
                    ),
                    numpy_helper.from_array(scales, scale_name),
                ]
            )
            # Named after the layer, so the profiler counts the dequantization as the layer's time.
            dq_nodes.append(
                onnx.helper.make_node(
                    "DequantizeLinear", [q_name, scale_name], [out], name=f"{node.name}_DQ4", axis=0
                )
            )
            dequantized[weight_name] = out
        node.input[1] = dequantized[weight_name]
    # Constants first keeps the graph topologically sorted.
    nodes = [*dq_nodes, *model.graph.node]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    remove_unused_initializers(model)


def _stage_fp16(model: onnx.ModelProto, fp16_nodes: set[str]) -> onnx.ModelProto:
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST
    from onnxruntime.transformers.onnx_model import OnnxModel

    wrapper = OnnxModel(model)
    block = [n.name for n in model.graph.node if n.name not in fp16_nodes]
    op_block = sorted(
        set(DEFAULT_OP_BLOCK_LIST) | _QDQ_OPS | _DYNAMIC_OPS | {"MatMulNBits", "QLinearConv", "QLinearMatMul"}
    )
    wrapper.convert_float_to_float16(
        use_symbolic_shape_infer=False,
        keep_io_types=True,
        node_block_list=block,
        op_block_list=op_block,
    )
    wrapper.topological_sort()
    result: onnx.ModelProto = wrapper.model
    return result


def quantize_plan(
    prepared: onnx.ModelProto | bytes,
    layers: list[LayerInfo],
    plan: Plan,
    *,
    calibration_cache: Path | None,
    method: CalibrationMethod,
    work_dir: str | Path | None = None,
) -> QuantizedModel:
    """Build the model a plan describes; raise PlanError if it is invalid or was not realized."""
    assignment = resolve_plan(plan, layers)
    model = onnx.ModelProto()
    model.CopyFrom(prepared if isinstance(prepared, onnx.ModelProto) else onnx.load_from_string(prepared))
    precisions = node_precisions(model, assignment)
    used = set(assignment.values())
    times: dict[str, float] = {}
    # Each call gets its own directory: quantize_static writes <model>-inferred.onnx beside its input.
    with tempfile.TemporaryDirectory(dir=work_dir, prefix="quantize-") as tmp:
        work = Path(tmp)
        if any(p.calibrated for p in used):
            if calibration_cache is None:
                raise PlanError("static INT8 and W8A16 layers need calibration data; none was given")
            t = time.perf_counter()
            model = _stage_static(model, precisions, calibration_cache, method, work)
            times["static"] = time.perf_counter() - t
        if Precision.INT8_DYNAMIC in used:
            t = time.perf_counter()
            dyn = [n for n, p in assignment.items() if p is Precision.INT8_DYNAMIC]
            model = _stage_dynamic(model, dyn, work)
            times["dynamic"] = time.perf_counter() - t
        if Precision.INT4 in used:
            t = time.perf_counter()
            model = _stage_int4(model, [n for n, p in assignment.items() if p is Precision.INT4])
            times["int4"] = time.perf_counter() - t
        if Precision.FP16 in used:
            t = time.perf_counter()
            model = _stage_fp16(model, {n for n, p in precisions.items() if p is Precision.FP16})
            times["fp16"] = time.perf_counter() - t
    realized = realized_precisions(model, list(assignment))
    wrong = {n: (assignment[n], realized.get(n)) for n in assignment if realized.get(n) is not assignment[n]}
    if wrong:
        detail = "; ".join(
            f"{n}: planned {want.value}, got {got.value if got else 'nothing (layer missing)'}"
            for n, (want, got) in list(wrong.items())[:10]
        )
        raise PlanError(f"the built model does not match the plan ({len(wrong)} layers): {detail}")
    return QuantizedModel(model.SerializeToString(), realized, times)


def realized_precisions(model: onnx.ModelProto, layer_names: list[str]) -> dict[str, Precision]:
    """Read each layer's precision back from a built graph."""
    producers = _producers(model)
    inits = {t.name: t for t in model.graph.initializer}
    by_name = {n.name: n for n in model.graph.node}
    result: dict[str, Precision] = {}

    def dq_zero_point_type(tensor: str) -> int | None:
        dq = producers.get(tensor)
        if dq is None or dq.op_type != "DequantizeLinear":
            return None
        if len(dq.input) > 2 and dq.input[2] in inits:
            return int(inits[dq.input[2]].data_type)
        if dq.input[0] in inits:
            return int(inits[dq.input[0]].data_type)
        q = producers.get(dq.input[0])
        if q is not None and len(q.input) > 2 and q.input[2] in inits:
            return int(inits[q.input[2]].data_type)
        return None

    for name in layer_names:
        node = by_name.get(name)
        if node is None:
            # Dynamic and INT4 stages replace the node; find it by the names they derive.
            for cand, p in ((f"{name}_quant", Precision.INT8_DYNAMIC), (f"{name}_Q4", Precision.INT4)):
                n = by_name.get(cand)
                if n is not None and n.op_type in (_DYNAMIC_OPS | {"MatMulNBits"}):
                    result[name] = p
            continue
        if node.op_type == "MatMulNBits":
            result[name] = Precision.INT4
            continue
        if node.op_type in _DYNAMIC_OPS:
            result[name] = Precision.INT8_DYNAMIC
            continue
        act_zp = dq_zero_point_type(node.input[0])
        weight_zp = dq_zero_point_type(node.input[1])
        weight_init = inits.get(node.input[1])
        if weight_zp == onnx.TensorProto.INT4 and act_zp is None:
            result[name] = Precision.INT4  # a Conv with int4 weights dequantized in front of it
        elif weight_zp == onnx.TensorProto.INT8 and act_zp == onnx.TensorProto.UINT8:
            result[name] = Precision.INT8
        elif weight_zp == onnx.TensorProto.INT8 and act_zp == onnx.TensorProto.UINT16:
            result[name] = Precision.W8A16
        elif weight_init is not None and weight_init.data_type == onnx.TensorProto.FLOAT16:
            result[name] = Precision.FP16
        elif weight_init is not None and weight_init.data_type == onnx.TensorProto.FLOAT and act_zp is None:
            result[name] = Precision.FP32
    return result
