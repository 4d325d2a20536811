"""Graphs that mimic what other exporters and old model zoos write, built with onnx.helper.

Each is a small seeded CNN (1x8x8 input, 10 classes) with the habits of an older exporter:
an old opset and IR version, every weight also listed as a graph input, a weight computed by a
constant subgraph (a Constant node through Transpose and Mul) instead of stored, and a Gemm head.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# The IR version each opset was released with: an old file carries the old pair.
IR_FOR_OPSET = {7: 3, 8: 3, 9: 4, 10: 5, 11: 6, 12: 7}


def legacy_cnn(
    opset: int,
    seed: int = 0,
    inits_as_inputs: bool = True,
    batch: int | str = "N",
) -> onnx.ModelProto:
    """conv1 -> Relu -> conv2 (weight = Transpose(Constant) * 0.5) -> Relu -> Flatten -> fc (Gemm)."""
    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((8, 1, 3, 3)) * 0.4).astype(np.float32)
    b1 = (rng.standard_normal(8) * 0.1).astype(np.float32)
    # conv2's weight is stored transposed ([in, out, kh, kw]) and scaled at run time: a constant
    # subgraph that preparation must fold into a plain weight before the layer can be quantized.
    w2_stored = (rng.standard_normal((8, 8, 3, 3)) * 0.3).astype(np.float32)
    wfc = (rng.standard_normal((10, 8 * 8 * 8)) * 0.05).astype(np.float32)
    bfc = np.zeros(10, np.float32)
    inits = [
        numpy_helper.from_array(w1, "conv1.weight"),
        numpy_helper.from_array(b1, "conv1.bias"),
        numpy_helper.from_array(wfc, "fc.weight"),
        numpy_helper.from_array(bfc, "fc.bias"),
        numpy_helper.from_array(np.array(0.5, np.float32), "half"),
    ]
    nodes = [
        helper.make_node(
            "Conv", ["x", "conv1.weight", "conv1.bias"], ["h1"], name="conv1", pads=[1, 1, 1, 1]
        ),
        helper.make_node("Relu", ["h1"], ["r1"], name="relu1"),
        helper.make_node(
            "Constant",
            [],
            ["w2_stored"],
            name="w2_const",
            value=numpy_helper.from_array(w2_stored, "w2_value"),
        ),
        helper.make_node("Transpose", ["w2_stored"], ["w2_t"], name="w2_transpose", perm=[1, 0, 2, 3]),
        helper.make_node("Mul", ["w2_t", "half"], ["conv2.weight"], name="w2_scale"),
        helper.make_node("Conv", ["r1", "conv2.weight"], ["h2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["h2"], ["r2"], name="relu2"),
        helper.make_node("Flatten", ["r2"], ["flat"], name="flatten", axis=1),
        helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["logits"], name="fc", transB=1),
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 1, 8, 8])]
    if inits_as_inputs:
        inputs += [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in inits]
    graph = helper.make_graph(
        nodes,
        f"legacy_cnn_opset{opset}",
        inputs,
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 10])],
        inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="old-exporter"
    )
    model.ir_version = IR_FOR_OPSET.get(opset, model.ir_version)
    return model


def with_conv_transpose(seed: int = 0) -> onnx.ModelProto:
    """A Conv followed by a ConvTranspose (no quantized kernel here) and a Gemm head."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array((rng.standard_normal((4, 1, 3, 3)) * 0.4).astype(np.float32), "c.w"),
        numpy_helper.from_array((rng.standard_normal((4, 2, 2, 2)) * 0.4).astype(np.float32), "up.w"),
        numpy_helper.from_array((rng.standard_normal((10, 2 * 16 * 16)) * 0.05).astype(np.float32), "fc.w"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "c.w"], ["h"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("ConvTranspose", ["h", "up.w"], ["u"], name="upsample", strides=[2, 2]),
        helper.make_node("Flatten", ["u"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc.w"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "with_conv_transpose",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def dynamic_width_model() -> onnx.ModelProto:
    """A 1-D conv over a sequence of any length: its second dynamic dimension must be asked for."""
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 2, 3)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], name="conv", pads=[1, 1])],
        "dyn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2, "length"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4, "length"])],
        [w],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def memory_bomb(n: int = 45_000) -> onnx.ModelProto:
    """Loads fine (ONNX Runtime skips folding constants over 1 GiB), then allocates n*n floats when run.

    The hostile upload that exhausts a worker: 45,000^2 x 4 bytes = 8 GB, past any worker's memory limit.
    """
    inits = [
        numpy_helper.from_array(np.ones((1, 1), np.float32), "one"),
        numpy_helper.from_array(np.array([n, n], np.int64), "huge_shape"),
    ]
    nodes = [
        helper.make_node("Expand", ["one", "huge_shape"], ["big"], name="expand"),
        helper.make_node("ReduceSum", ["big"], ["total"], name="sum", keepdims=0),
        helper.make_node("Add", ["x", "total"], ["y"], name="add"),
    ]
    graph = helper.make_graph(
        nodes,
        "memory_bomb",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def run_fp32(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    clean = onnx.ModelProto()
    clean.CopyFrom(model)
    inits = {t.name for t in clean.graph.initializer}
    keep = [vi for vi in clean.graph.input if vi.name not in inits]
    del clean.graph.input[:]
    clean.graph.input.extend(keep)
    clean.ir_version = max(clean.ir_version, 4)
    session = ort.InferenceSession(clean.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {"x": x})[0])
