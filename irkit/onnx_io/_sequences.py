"""Import-side rewrite of tensor sequences that are only a split in disguise.

torch's dynamo exporter without its optimizer (`torch.onnx.export(..., optimize=False)`)
writes `torch.split`/`chunk` as SplitToSequence followed by one SequenceAt per part (GPT-2's
query/key/value split). irkit's IR holds tensors only; such a pair is one Split.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from irkit.onnx_io._compat import constant_value
from irkit.onnx_io._infer import inferred_shapes


def sequences_to_split(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rewrite each SplitToSequence whose readers are all SequenceAt nodes with constant
    indices, and whose part sizes are known at import, as one Split.

    1. `split` a 1-D constant: those sizes.
    2. `split` a scalar constant s: parts of s along the axis (the last one smaller), the
       axis' dim from shape inference (through computed shapes).
    3. no `split`: parts of 1 (`keepdims=0` squeezes the axis: Split, then Squeeze each).
    Any other sequence is left as it is (refused later as an unsupported op, in one line).
    """
    g = model.graph
    if not any(n.op_type == "SplitToSequence" for n in g.node):
        return model
    model = onnx.ModelProto.FromString(model.SerializeToString())
    g = model.graph
    consts = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    consts.update({n.output[0]: v for n in g.node if (v := constant_value(n)) is not None})
    readers: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for name in n.input:
            readers.setdefault(name, []).append(n)
    for vi in g.output:  # a sequence the graph returns stays one
        readers.setdefault(vi.name, []).append(vi)
    shapes = inferred_shapes(model)  # dynamo's views: computed shapes (data propagated)
    replaced, nodes = set(), []
    for n in g.node:
        if id(n) in replaced:
            continue
        new = _as_split(n, readers.get(n.output[0], []), consts, shapes) \
            if n.op_type == "SplitToSequence" else None
        if new is None:
            nodes.append(n)
            continue
        replaced.update(id(r) for r in readers[n.output[0]])
        nodes.extend(new)
    del g.node[:]
    g.node.extend(nodes)
    return model


def _as_split(n: onnx.NodeProto, readers: list, consts: dict,
              shapes: dict) -> list[onnx.NodeProto] | None:
    """The Split (and Squeezes) replacing SplitToSequence `n` and its SequenceAt `readers`."""
    attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
    axis, keepdims = int(attrs.get("axis", 0)), int(attrs.get("keepdims", 1))
    if not readers or any(not isinstance(r, onnx.NodeProto) or r.op_type != "SequenceAt"
                          or r.input[1] not in consts
                          for r in readers):
        return None
    given = n.input[1] if len(n.input) > 1 and n.input[1] else None
    if given is not None and given not in consts:
        return None
    shape = shapes.get(n.input[0])
    dim = shape[axis] if shape is not None and -len(shape) <= axis < len(shape) else None
    sizes = np.ravel(consts[given]).astype(np.int64) if given is not None else None
    if sizes is None or consts[given].ndim == 0:
        step = 1 if sizes is None else int(sizes[0])
        if not isinstance(dim, int) or step <= 0:
            return None
        sizes = np.array([step] * (dim // step) + ([dim % step] if dim % step else []),
                         np.int64)
    parts = [f"{n.output[0]}_part{i}" for i in range(len(sizes))]
    sizes_name = f"{n.output[0]}_sizes"
    out = [helper.make_node("Constant", [], [sizes_name], value=numpy_helper.from_array(sizes)),
           helper.make_node("Split", [n.input[0], sizes_name], parts, axis=axis,
                            name=n.name or None)]
    squeeze = given is None and not keepdims
    for r in readers:
        index = int(np.ravel(consts[r.input[1]])[0])
        if not -len(parts) <= index < len(parts):
            return None
        op, inputs = ("Squeeze", [parts[index], f"{n.output[0]}_axis"]) if squeeze else \
            ("Identity", [parts[index]])
        out.append(helper.make_node(op, inputs, list(r.output), name=r.name or None))
    if squeeze:
        out.insert(0, helper.make_node("Constant", [], [f"{n.output[0]}_axis"],
                                       value=numpy_helper.from_array(np.array([axis]))))
    return out
