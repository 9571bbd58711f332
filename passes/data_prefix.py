"""The data prefix of step graphs: row-wise work on the batch input that reads only constants
(a Normalize layer's shift and scale), split off so a runner can apply it once to the staged
data rather than in every step.

`split_data_prefix(graphs, input_name)` finds, in each graph:

1. a chain from the batch input through Add, Sub, Mul and Div nodes, each the only reader of
   the value before it (and that value no graph output);
2. whose other operand is a constant (an initializer) that does not vary along the batch axis
   (rank below the value's, or size 1 on axis 0) and broadcasts into the value without
   growing it (so the chain keeps the input's shape and type, and a row of the result depends
   on that row of the input alone);
3. the same in every graph (op, side, constant): the train and eval graphs read one staged
   copy of the data.

It returns the prefix as a graph (input -> prepared input, the input's name and type) and
the graphs with the chain removed, reading the prepared data under the input's name. Each
node of the prefix computes element by element what it computed in the step, so a step on
prepared rows gives the bits a step on raw rows gave. None when there is no chain.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from irkit.ir import Graph, Node, Value
from irkit.ops.base import apply

ROW_WISE = ("Add", "Sub", "Mul", "Div")


@dataclass
class DataPrefix:
    graph: Graph           # raw input -> prepared input
    graphs: list[Graph]    # the given graphs, reading the prepared input


def split_data_prefix(graphs: list[Graph], input_name: str) -> DataPrefix | None:
    """The longest prefix (module docstring) that all `graphs` share on their input
    `input_name`, split off copies of them; None when they share none."""
    chains = [_chain(g, input_name) for g in graphs]
    keys = [[_key(node, side) for node, side in chain] for chain in chains]
    common = 0
    while common < min(map(len, keys)) and all(k[common] == keys[0][common] for k in keys):
        common += 1
    if common == 0:
        return None
    prefix = _prefix_graph(graphs[0], input_name, chains[0][:common])
    return DataPrefix(prefix, [_without(g, input_name, chain[:common])
                               for g, chain in zip(graphs, chains)])


def _chain(graph: Graph, input_name: str) -> list[tuple[Node, int]]:
    """The prefix nodes of `graph` (rules 1-2), each with the operand index the data takes."""
    chain = []
    v = graph.value(input_name)
    while len(v.uses) == 1 and v not in graph.outputs:
        node, side = v.uses[0]
        if node.op_type not in ROW_WISE or node.domain or len(node.inputs) != 2:
            break
        other, out = node.inputs[1 - side], node.outputs[0]
        if other is None or other.const is None or not _row_constant(other.const, v) \
                or out.dtype != v.dtype or out.shape != v.shape:
            break
        chain.append((node, side))
        v = out
    return chain


def _row_constant(const: np.ndarray, v: Value) -> bool:
    """Whether `const` is the same for every row of `v` and broadcasts into it as it is."""
    if v.shape is None or const.ndim > len(v.shape) or const.dtype != v.dtype:
        return False
    if const.ndim == len(v.shape) and const.shape[0] != 1:
        return False
    tail = v.shape[len(v.shape) - const.ndim:] if const.ndim else ()
    return all(c == 1 or c == d for c, d in zip(const.shape, tail))


def _key(node: Node, side: int) -> tuple:
    const = node.inputs[1 - side].const
    return node.op_type, side, const.dtype.str, const.shape, const.tobytes()


def _prefix_graph(graph: Graph, input_name: str, chain: list[tuple[Node, int]]) -> Graph:
    source = graph.value(input_name)
    prefix = Graph("data_prefix")
    v = prefix.add_input(input_name, source.dtype, source.shape)
    for node, side in chain:
        const = prefix.constant(node.inputs[1 - side].const)
        v = apply(prefix, node.op_type, [v, const] if side == 0 else [const, v]).outputs[0]
    prefix.outputs = [v]
    return prefix


def _without(graph: Graph, input_name: str, chain: list[tuple[Node, int]]) -> Graph:
    """A copy of `graph` whose input `input_name` is the chain's end: the chain removed."""
    graph = graph.copy()
    raw = graph.value(input_name)
    nodes = [graph.value(node.outputs[0].name).producer for node, _ in chain]
    end = nodes[-1].outputs[0]
    where = graph.inputs.index(raw)
    graph.rename_value(raw, graph.unique_name(f"{input_name}/raw"))
    prepared = graph.add_input(input_name, end.dtype, end.shape)
    graph.inputs.insert(where, graph.inputs.pop())
    graph.replace_all_uses_with(end, prepared)
    consts = [n.inputs[1 - side] for n, (_, side) in zip(nodes, chain)]
    graph.remove_nodes(nodes)
    graph.remove_input(raw)
    for c in consts:
        if c.name in graph.initializers and not c.uses and c not in graph.outputs:
            graph.remove_initializer(c.name)
    return graph
