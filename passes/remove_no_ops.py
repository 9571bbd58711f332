"""RemoveNoOpsPass: drop nodes whose output equals their input at inference."""

from __future__ import annotations

from irkit.passes.manager import GraphPass, PassResult

from irkit.ir import Graph, Node, Value
from irkit.ops.base import const_array


class RemoveNoOpsPass(GraphPass):
    """Readers of a no-op's output read its input instead. Cases handled:

    1. Identity;
    2. Dropout in inference mode (training_mode absent or a constant false) whose mask is not
       read: the output is the input, whatever the ratio;
    3. Cast to the dtype the input already has;
    4. Reshape, Expand, Flatten, Squeeze, Unsqueeze whose input and output have the same
       static shape;
    5. when the output is a graph output, the input takes over the output's name, so the
       model's interface is unchanged; a no-op between a graph input (or another graph
       output) and a graph output is kept.
    """

    SAME_SHAPE_OPS = {"Reshape", "Expand", "Flatten", "Squeeze", "Unsqueeze"}

    def call(self, graph: Graph) -> PassResult:
        changed = False
        for node in list(graph.nodes):
            if node.domain == "" and self._is_no_op(node):
                changed = self._bypass(graph, node) or changed
        return PassResult(graph, changed)

    def _is_no_op(self, node: Node) -> bool:
        x = node.inputs[0] if node.inputs else None
        if x is None:
            return False
        out = node.outputs[0]
        if node.op_type == "Identity":
            return True
        if node.op_type == "Dropout":
            mode = node.inputs[2] if len(node.inputs) > 2 else None
            inactive = mode is None or (const_array(mode, "training_mode") is not None
                                        and not bool(const_array(mode, "training_mode")))
            mask_unused = len(node.outputs) < 2 or not (node.outputs[1].uses
                                                        or node.outputs[1] in node.graph.outputs)
            return inactive and mask_unused
        if node.op_type == "Cast":
            return out.dtype == x.dtype
        if node.op_type in self.SAME_SHAPE_OPS:
            return _static(x) and x.shape == out.shape and x.dtype == out.dtype
        return False

    @staticmethod
    def _bypass(graph: Graph, node: Node) -> bool:
        x, out = node.inputs[0], node.outputs[0]
        if out in graph.outputs:
            if x.producer is None or x in graph.outputs:
                return False
            name = out.name
            graph.replace_all_uses_with(out, x)
            graph.remove_node(node)
            graph.rename_value(x, name)
            return True
        graph.replace_all_uses_with(out, x)
        if all(not o.uses and o not in graph.outputs for o in node.outputs):
            graph.remove_node(node)
        return True


def _static(v: Value) -> bool:
    return v.shape is not None and all(isinstance(d, int) for d in v.shape)
