"""Run several variants of one model that share its unchanged FP32 beginning, that beginning once.

A sensitivity probe changes one layer; every node before it still computes what the FP32 model
computes. For the probes of one layer (FP16, INT8, dynamic INT8, INT4, W8A16 ...) the FP32 model
is run once up to the tensors the changed part reads (the cut), and each variant runs only from
there: on a residual CNN that saves about half of each probe's inference.

A variant's node is "unchanged" when a node of the same name in the FP32 model has the same op,
attributes and initializer values, and reads tensors that are themselves unchanged. Tensor names
may differ (the float16 converter renames every output it passes); they are mapped, not assumed.
Anything not recognised falls back to running the whole variant, so the outputs are always those
of the variant's full graph (up to float rounding where ONNX Runtime fuses across the cut).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from engine import measure

# The FP32 tensors a group of variants shares are held in memory for the whole evaluation set;
# past this, each variant runs whole instead (a worker has a few GiB).
MAX_HELD_BYTES = 768 * 2**20


@dataclass(frozen=True)
class Cut:
    """Where a variant leaves the FP32 model: its changed nodes, and the FP32 tensors they read."""

    changed: list[onnx.NodeProto]
    reads: dict[str, str]  # the variant's tensor name -> the FP32 model's name for the same values


def _has_subgraphs(model: onnx.ModelProto) -> bool:
    return any(
        a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
        for n in model.graph.node
        for a in n.attribute
    )


def _attributes(node: onnx.NodeProto) -> list[bytes]:
    return [a.SerializeToString() for a in sorted(node.attribute, key=lambda a: a.name)]


class FP32Model:
    """The FP32 model variants are compared with, parsed and indexed once."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.usable = not _has_subgraphs(model) and len({n.name for n in model.graph.node}) == len(
            model.graph.node
        )
        self.nodes = {n.name: n for n in model.graph.node}
        self.initializers = {t.name: t for t in model.graph.initializer}
        # Fed inputs only: an older model may also list its initializers as graph inputs.
        self.inputs = {i.name for i in model.graph.input} - set(self.initializers)
        self._arrays: dict[str, np.ndarray] = {}
        inferred = onnx.shape_inference.infer_shapes(model)
        self.value_info = {
            v.name: v for v in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]
        }

    def held_bytes(self, names: Sequence[str], rows: int) -> float:
        """Memory the tensors `names` take over `rows` samples (infinite if a size is unknown)."""
        total = 0.0
        for name in names:
            tensor = self.value_info[name].type.tensor_type
            dims = [d.dim_value if d.HasField("dim_value") else 0 for d in tensor.shape.dim][1:]
            if not tensor.HasField("shape") or any(d <= 0 for d in dims):
                return float("inf")
            itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).itemsize
            total += rows * itemsize * float(np.prod(dims))
        return total

    def array(self, name: str) -> np.ndarray:
        if name not in self._arrays:
            self._arrays[name] = numpy_helper.to_array(self.initializers[name])
        return self._arrays[name]

    def cut(self, variant: onnx.ModelProto) -> Cut | None:
        """Where `variant` leaves this model, or None when it cannot be told (then run it whole)."""
        if not self.usable or _has_subgraphs(variant):
            return None
        variant_inits = {t.name: t for t in variant.graph.initializer}
        same = {
            i.name: i.name
            for i in variant.graph.input
            if i.name in self.inputs and i.name not in variant_inits
        }
        changed = []
        for node in variant.graph.node:  # graph nodes are in topological order
            base = self.nodes.get(node.name) if node.name else None
            if base is not None and self._same_node(node, base, same, variant_inits):
                same.update(zip(node.output, base.output, strict=True))
            else:
                changed.append(node)
        if not changed or any(o.name in same for o in variant.graph.output):
            return None  # nothing changed, or an output comes straight from the FP32 part
        reads = {x: same[x] for n in changed for x in n.input if x in same}
        if any(same_name not in self.value_info for same_name in reads.values()):
            return None  # a cut tensor of unknown type cannot become a graph input
        return Cut(changed, reads)

    def _same_node(
        self,
        node: onnx.NodeProto,
        base: onnx.NodeProto,
        same: dict[str, str],
        variant_inits: dict[str, onnx.TensorProto],
    ) -> bool:
        if (node.op_type, node.domain, len(node.input), len(node.output)) != (
            base.op_type,
            base.domain,
            len(base.input),
            len(base.output),
        ) or _attributes(node) != _attributes(base):
            return False
        for x, b in zip(node.input, base.input, strict=True):
            if not x and not b:
                continue
            if x in same:
                if same[x] != b:
                    return False
            elif x in variant_inits and b in self.initializers:
                # Same values, however stored (quantizers rewrite untouched initializers' encoding).
                mine = numpy_helper.to_array(variant_inits[x])
                theirs = self.array(b)
                if (
                    mine.dtype != theirs.dtype
                    or mine.shape != theirs.shape
                    or not np.array_equal(mine, theirs)
                ):
                    return False
            else:
                return False
        return True

    def prefix(self, outputs: Sequence[str]) -> onnx.ModelProto:
        """The FP32 model cut down to what computes `outputs` (graph inputs in, those tensors out)."""
        needed, nodes = set(outputs), []
        for node in reversed(self.model.graph.node):
            if any(o in needed for o in node.output):
                nodes.append(node)
                needed.update(x for x in node.input if x)
        nodes.reverse()
        graph = onnx.helper.make_graph(
            nodes,
            "fp32_prefix",
            [i for i in self.model.graph.input if i.name in needed],
            [self.value_info[o] for o in outputs],
            [t for t in self.model.graph.initializer if t.name in needed],
        )
        return _model_like(self.model, graph)

    def suffix(self, variant: onnx.ModelProto, cut: Cut) -> onnx.ModelProto:
        """The variant's changed part alone: the cut tensors in, the variant's outputs out."""
        used = {x for n in cut.changed for x in n.input}
        inputs = []
        for mine, theirs in cut.reads.items():
            info = onnx.ValueInfoProto()
            info.CopyFrom(self.value_info[theirs])
            info.name = mine
            inputs.append(info)
        graph = onnx.helper.make_graph(
            cut.changed,
            "variant_suffix",
            inputs,
            list(variant.graph.output),
            [t for t in variant.graph.initializer if t.name in used],
        )
        return _model_like(variant, graph)


def _model_like(model: onnx.ModelProto, graph: onnx.GraphProto) -> onnx.ModelProto:
    out = onnx.helper.make_model(graph, opset_imports=list(model.opset_import))
    out.ir_version = model.ir_version
    return out


def run_variants(
    fp32: FP32Model, variants: Sequence[bytes], inputs: dict[str, np.ndarray], threads: int
) -> list[np.ndarray]:
    """The first output of each variant over `inputs`, the FP32 part they share computed once."""
    parsed = [onnx.load_from_string(v) for v in variants]
    cuts = [fp32.cut(v) for v in parsed]
    wanted = sorted({t for c in cuts if c is not None for t in c.reads.values() if t not in fp32.inputs})
    rows = max((len(v) for v in inputs.values()), default=0)
    if wanted and fp32.held_bytes(wanted, rows) > MAX_HELD_BYTES:
        cuts, wanted = [None] * len(parsed), []  # too much to hold: every variant runs whole
    shared: dict[str, np.ndarray] = {n: inputs[n] for n in fp32.inputs if n in inputs}
    if wanted:
        session = measure.make_session(fp32.prefix(wanted).SerializeToString(), threads)
        shared.update(zip(wanted, measure.run_batched_all(session, inputs), strict=True))
    outputs = []
    for data, model, cut in zip(variants, parsed, cuts, strict=True):
        if cut is None:
            session = measure.make_session(data, threads)
            outputs.append(measure.run_batched(session, inputs))
            continue
        session = measure.make_session(fp32.suffix(model, cut).SerializeToString(), threads)
        outputs.append(
            measure.run_batched(session, {mine: shared[theirs] for mine, theirs in cut.reads.items()})
        )
    return outputs
