"""SimplifyShapesPass: shape arithmetic the static shapes already answer becomes constants."""

from __future__ import annotations

import numpy as np
from irkit.passes.manager import GraphPass, PassResult

from irkit.ir import Graph, Node, Value
from irkit.ops.base import const_array
from irkit.ops.registry import attr


class SimplifyShapesPass(GraphPass):
    """Replace shape computations by constants. Cases handled:

    1. Constant nodes become initializers (so constant folding sees their readers);
    2. Shape (with start/end) of a value whose dims in that range are static: a constant;
    3. Size of a value of fully static shape: a constant;
    4. Gather(Shape(x), indices) with constant indices naming static dims of x: a constant;
    5. Reshape(data, Concat(...)) whose pieces are constants or
       Unsqueeze(Gather(Shape(data), [j])) at position j: the shape becomes a constant, each
       copied dim spelled 0 ("copy from the input", allowzero 0);
    6. Reshape(Reshape(x, s1), s2) with a constant s2 free of zeros: Reshape(x, s2).
    """

    def call(self, graph: Graph) -> PassResult:
        changed = False
        for node in list(graph.nodes):
            if node.domain != "" or not graph.holds(node):
                continue
            handler = getattr(self, f"_{node.op_type.lower()}", None)
            if handler is not None and handler(graph, node):
                changed = True
        if changed:
            graph.toposort()
        return PassResult(graph, changed)

    @staticmethod
    def _set_constant(graph: Graph, node: Node, data: np.ndarray) -> bool:
        out = node.outputs[0]
        if out in graph.outputs:  # keep the interface's names
            return False
        const = graph.add_initializer(graph.unique_name(f"{node.name}_value"),
                                      np.asarray(data, dtype=out.dtype))
        graph.replace_all_uses_with(out, const)
        if all(not o.uses for o in node.outputs):
            graph.remove_node(node)
        return True

    def _constant(self, graph: Graph, node: Node) -> bool:
        data = const_array(node.outputs[0], "value")
        if data is None:
            return False
        return self._set_constant(graph, node, data)

    def _shape(self, graph: Graph, node: Node) -> bool:
        dims = _dims(node)
        if dims is None or not all(isinstance(d, int) for d in dims):
            return False
        return self._set_constant(graph, node, np.array(dims, dtype=np.int64))

    def _size(self, graph: Graph, node: Node) -> bool:
        x = node.inputs[0]
        if x.shape is None or not all(isinstance(d, int) for d in x.shape):
            return False
        return self._set_constant(graph, node, np.array(int(np.prod(x.shape)), dtype=np.int64))

    def _gather(self, graph: Graph, node: Node) -> bool:
        source = node.inputs[0].producer
        indices = const_array(node.inputs[1], "indices")
        if source is None or source.op_type != "Shape" or indices is None:
            return False
        dims = _dims(source)
        if dims is None or attr(node, "axis") != 0:
            return False
        picked = np.asarray(dims, dtype=object)[np.asarray(indices)]
        if not all(isinstance(d, int) for d in np.ravel(picked)):
            return False
        return self._set_constant(graph, node, np.asarray(picked, dtype=np.int64))

    def _reshape(self, graph: Graph, node: Node) -> bool:
        return self._copy_dims(graph, node) or self._collapse(graph, node)

    def _copy_dims(self, graph: Graph, node: Node) -> bool:
        data, shape = node.inputs[0], node.inputs[1]
        concat = shape.producer
        if concat is None or concat.op_type != "Concat" or attr(node, "allowzero"):
            return False
        pieces: list[int] = []
        for piece in concat.inputs:
            data_piece = const_array(piece, "shape")
            if data_piece is not None and data_piece.ndim == 1:
                pieces.extend(int(d) for d in data_piece)
            elif _is_copied_dim(piece, data, len(pieces)):
                pieces.append(0)
            else:
                return False
        const = graph.add_initializer(graph.unique_name(f"{node.name}_shape"),
                                      np.array(pieces, dtype=np.int64))
        graph.set_input(node, 1, const)
        return True

    @staticmethod
    def _collapse(graph: Graph, node: Node) -> bool:
        inner = node.inputs[0].producer
        target = const_array(node.inputs[1], "shape")
        if inner is None or inner.op_type != "Reshape" or target is None or (target == 0).any():
            return False
        graph.set_input(node, 0, inner.inputs[0])
        return True


def _dims(shape_node: Node) -> list | None:
    """The dims a Shape node returns (start/end applied), or None if the rank is unknown."""
    x = shape_node.inputs[0]
    if x.shape is None:
        return None
    rank = len(x.shape)
    start = attr(shape_node, "start")
    end = attr(shape_node, "end")
    start = max(0, start + rank if start < 0 else start)
    end = rank if end is None else min(rank, end + rank if end < 0 else end)
    return list(x.shape[start:end])


def _is_copied_dim(piece: Value, data: Value, position: int) -> bool:
    """piece is Unsqueeze(Gather(Shape(data), j)) (or Gather with a [j] index) and j is the
    position it lands at: Reshape's 0 copies exactly that dim."""
    p = piece.producer
    if p is not None and p.op_type == "Unsqueeze":
        axes = const_array(p.inputs[1], "axes") if len(p.inputs) > 1 else None
        if axes is None or list(np.ravel(axes)) != [0]:
            return False
        p = p.inputs[0].producer
    if p is None or p.op_type != "Gather" or attr(p, "axis") != 0:
        return False
    index = const_array(p.inputs[1], "indices")
    source = p.inputs[0].producer
    if index is None or source is None or source.op_type != "Shape" or index.size != 1:
        return False
    rank = data.rank
    j = int(np.ravel(index)[0])
    j = j + rank if (j < 0 and rank is not None) else j
    start = attr(source, "start") or 0
    return source.inputs[0] is data and start == 0 and j == position
