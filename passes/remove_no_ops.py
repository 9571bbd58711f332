"""RemoveNoOpsPass: drop nodes whose output equals their input at inference."""

from __future__ import annotations

import numpy as np
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
    5. x + 0, 0 + x, x - 0, x * 1, 1 * x, x / 1 with a constant 0 or 1 (every element) that
       does not broadcast x to a larger shape;
    6. when the output is a graph output, the input takes over the output's name, so the
       model's interface is unchanged; a no-op between a graph input (or another graph
       output) and a graph output is kept.
    """

    # op -> (the neutral element, the input positions x may take)
    NEUTRAL = {"Add": (0, (0, 1)), "Sub": (0, (0,)), "Mul": (1, (0, 1)), "Div": (1, (0,))}

    SAME_SHAPE_OPS = {"Reshape", "Expand", "Flatten", "Squeeze", "Unsqueeze"}

    def call(self, graph: Graph) -> PassResult:
        changed = False
        for node in list(graph.nodes):
            if node.domain == "" and self._is_no_op(node):
                changed = self._bypass(graph, node) or changed
        return PassResult(graph, changed)

    def _is_no_op(self, node: Node) -> bool:
        if node.op_type in self.NEUTRAL:
            return self._neutral_input(node) is not None
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

    def _neutral_input(self, node: Node) -> int | None:
        """Which input passes through unchanged (the other is the neutral constant)."""
        neutral, positions = self.NEUTRAL[node.op_type]
        out = node.outputs[0]
        for i in positions:
            x, other = node.inputs[i], node.inputs[1 - i]
            data = const_array(other, "operand")
            if (data is not None and data.size and np.all(data == neutral)
                    and x.shape is not None and x.shape == out.shape and x.dtype == out.dtype
                    and (other.shape is not None and len(other.shape) <= len(x.shape))):
                return i
        return None

    def _bypass(self, graph: Graph, node: Node) -> bool:
        index = self._neutral_input(node) if node.op_type in self.NEUTRAL else 0
        x, out = node.inputs[index], node.outputs[0]
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
