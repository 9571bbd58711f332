"""What import-side folding asks of onnx: static shapes by shape inference, output sizes of one
node before it is evaluated, and one node evaluated on constants by onnx.reference."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

MAX_IMPORT_FOLD_ELEMENTS = 1 << 20


def inferred_graph(model: onnx.ModelProto) -> onnx.GraphProto:
    """The graph with onnx shape inference's value_info (data propagated through Shape,
    Gather, Concat, ...); the model's own graph where inference fails."""
    try:
        return onnx.shape_inference.infer_shapes(model, data_prop=True).graph
    except Exception:  # what the model declares is all there is
        return model.graph


def inferred_shapes(model: onnx.ModelProto, symbols: bool = False,
                    graph: onnx.GraphProto | None = None) -> dict[str, tuple | None]:
    """Static shapes by onnx shape inference (propagating shape values through Shape, Gather,
    Concat, ...): dims are ints, or None where unknown; with `symbols`, a symbolic dim is its
    name (one name is one value in the whole graph, as ONNX defines dim_param). `graph`: the
    `inferred_graph` of the model, when the caller has it."""
    g = inferred_graph(model) if graph is None else graph
    shapes: dict[str, tuple | None] = {}
    for vi in [*g.input, *g.value_info, *g.output]:
        t = vi.type.tensor_type
        if vi.type.HasField("tensor_type") and t.HasField("shape"):
            shapes[vi.name] = tuple(
                d.dim_value if d.HasField("dim_value") else
                d.dim_param if symbols and d.HasField("dim_param") else None
                for d in t.shape.dim)
    return shapes


def one_node_model(model: onnx.ModelProto, node: onnx.NodeProto,
                    inputs: list) -> onnx.ModelProto:
    """`node` alone, reading `inputs` as initializers, under the model's opsets."""
    names = [f"in{i}" if name else "" for i, name in enumerate(node.input)]
    copy = helper.make_node(node.op_type, names, list(node.output), domain=node.domain)
    copy.attribute.extend(node.attribute)
    inits = [numpy_helper.from_array(np.asarray(v), n) for n, v in zip(names, inputs) if n]
    graph = helper.make_graph([copy], "fold", [], [helper.make_value_info(o, onnx.TypeProto())
                                                   for o in node.output], inits)
    return helper.make_model(graph, opset_imports=list(model.opset_import))


def output_sizes(model: onnx.ModelProto, node: onnx.NodeProto, inputs: list) -> list | None:
    """Element counts of `node`'s outputs by shape inference on its constant inputs (nothing
    is evaluated or allocated); None when inference cannot tell."""
    total = sum(np.asarray(v).size for v in inputs if v is not None)
    if total > MAX_IMPORT_FOLD_ELEMENTS:
        return None
    try:
        inferred = onnx.shape_inference.infer_shapes(one_node_model(model, node, inputs),
                                                     strict_mode=True, data_prop=True)
    except Exception:
        return None
    sizes = []
    for vi in inferred.graph.output:
        t = vi.type.tensor_type
        if not vi.type.HasField("tensor_type") or not t.HasField("shape") \
                or any(not d.HasField("dim_value") for d in t.shape.dim):
            return None
        sizes.append(math.prod(d.dim_value for d in t.shape.dim))
    return sizes


def evaluate(model: onnx.ModelProto, node: onnx.NodeProto, inputs: list) -> dict[str, Any]:
    """Run one node on constant inputs with onnx.reference (empty dict if it cannot)."""
    from onnx.reference import ReferenceEvaluator
    try:
        m = one_node_model(model, node, inputs)
        with np.errstate(all="ignore"):
            results = ReferenceEvaluator(m).run(None, {})
    except Exception:  # not computable here: the caller reports the missing constant
        return {}
    return {o: np.asarray(r) for o, r in zip(node.output, results)}
