"""CheckpointActivationsPass: a train step that recomputes activations instead of keeping them.

A train-step graph keeps every forward value its backward (`grad/`) nodes read alive from the
forward pass until the backward pass reaches it. This pass keeps only some of them, the
checkpoints, and gives the backward pass recomputed copies of the others; the result is
still one standard ONNX graph.

How the recomputation stays late and separate under onnxruntime: its graph optimizer (from
ORT_ENABLE_BASIC on) runs common subexpression elimination, which merges a copy that reads
the same inputs as its original back into it, and its scheduler may run a node as soon as
its inputs exist. So each copy that reads nothing copied (a root of the segment's copy) does
not read its checkpoint `c` (or, in the first segment, the batch) but `c + 0 * min(g)`,
where `g` is the output of the backward node that runs just before the segment's first
backward reader. The copies then read a value no forward node reads (nothing to merge) and
depend on the backward pass having got there (nothing to run early);
tests/test_checkpoint_memory.py checks that onnxruntime's optimized model keeps every copy.
`0 * min(g)` is exactly 0 for finite gradients, so the recomputed values and the gradients
are those of the original step (bitwise for MLPs and CNNs; to float32 rounding where
onnxruntime fuses a copy otherwise than its original, as in transformer layers); a step whose
gradients are already inf or NaN gives NaN (it has diverged either way).
"""

from __future__ import annotations

import math

import numpy as np
from irkit.passes.analysis import BatchSizes, Sizes, part_of
from irkit.passes.fold_constants import FoldConstantsPass
from irkit.passes.manager import GraphPass, PassResult

from irkit import ops
from irkit.errors import IRError
from irkit.ir import Graph, Node, Value
from irkit.ops.base import const_array

RECOMPUTE = "grad/recompute/"


class CheckpointActivationsPass(GraphPass):
    """Recompute forward segments in the backward pass. Cases handled:

    1. cut points: positions in the forward order after which one forward value (a float
       output of a deterministic node) is still read by later forward nodes, beside side
       values of at most its bytes (a transformer's attention mask and shapes, read by every
       layer: the copies read them where they are); any graph whose forward part is a chain
       of blocks (MLPs, CNNs, residual stages, transformer layers) has them;
    2. strategy "sqrt": in each run of ceil(sqrt(k)) of the k cut points, the one of the
       fewest bytes (the latest of equals) is a checkpoint; an int
       (bytes, at `batch`): a new checkpoint when the saved values since the last one would
       exceed the budget;
    3. each segment between two checkpoints, except the last (its backward follows at once),
       is copied (only the nodes the backward pass needs) under `grad/recompute/`, fed from
       its gated checkpoint (see the module docstring), and backward nodes read the copies;
    4. random nodes (Dropout in training mode, ...) are never copied: their outputs stay
       saved, so the copies see the same masks; a Dropout of constant ratio 0 is not random;
    5. a graph without `grad/` nodes, or without cut points, is left unchanged;
    6. a graph that already has `grad/recompute/` nodes is left unchanged (applying the pass
       twice, e.g. to a resumed training file's step graph, changes nothing).
    """

    def __init__(self, strategy: str | int = "sqrt", batch: int = 1) -> None:
        if strategy != "sqrt" and not (isinstance(strategy, int) and strategy > 0):
            raise IRError(f"checkpoint strategy {strategy!r}: use 'sqrt' or a byte budget > 0")
        self.strategy, self.batch = strategy, batch
        self.checkpoints: list[str] = []

    def call(self, graph: Graph) -> PassResult:
        forward = [n for n in graph.nodes if part_of(n) == "forward"]
        backward_readers = _backward_readers(graph)
        if not backward_readers or any(n.name.startswith(RECOMPUTE) for n in graph.nodes):
            return PassResult(graph, False)
        sizes = BatchSizes(graph, self.batch)  # exported shapes have dims known only there
        cuts = _cut_points(forward, sizes)
        chosen = self._choose(cuts, forward, backward_readers, sizes)
        self.checkpoints = [forward[i].outputs[0].name for i in chosen]
        groups: list[tuple[Node, list[Node]]] = []
        bounds = [-1, *chosen]
        for start, stop in zip(bounds, bounds[1:]):
            segment = forward[start + 1:stop + 1]
            entry = forward[start].outputs[0] if start >= 0 else None
            group = _recompute_segment(graph, segment, entry, backward_readers)
            if group is not None:
                groups.append(group)
        if not groups:
            return PassResult(graph, False)
        _place(graph, groups)
        return PassResult(graph, True)

    def _choose(self, cuts: list[int], forward: list[Node], readers: dict[int, list],
                sizes: Sizes) -> list[int]:
        if not cuts:
            return []
        if self.strategy == "sqrt":  # in each run of ceil(sqrt(k)) cuts, the smallest value
            every = max(1, math.ceil(math.sqrt(len(cuts))))
            runs = [cuts[i:i + every] for i in range(0, len(cuts) - every + 1, every)]
            return [min(reversed(run), key=lambda c: sizes.nbytes(forward[c].outputs[0]))
                    for run in runs]
        chosen, held = [], 0
        for i, node in enumerate(forward):
            held += sum(sizes.nbytes(o) for o in node.outputs if id(o) in readers)
            if i in cuts and held > self.strategy:
                chosen.append(i)
                held = 0
        return chosen


def _backward_readers(graph: Graph) -> dict[int, list[tuple[Node, int]]]:
    """id(forward value) -> the (backward node, input index) pairs that read it."""
    readers: dict[int, list[tuple[Node, int]]] = {}
    for node in graph.nodes:
        if part_of(node) != "backward":
            continue
        for i, v in enumerate(node.inputs):
            if v is not None and v.producer is not None and part_of(v.producer) == "forward":
                readers.setdefault(id(v), []).append((node, i))
    return readers


def _cut_points(forward: list[Node], sizes: Sizes) -> list[int]:
    """Positions i in `forward` after which node i's one output is read later on, beside
    side values (masks, shapes) of at most its bytes (`sizes`: at the batch size)."""
    position = {id(n): i for i, n in enumerate(forward)}
    last_read: dict[int, int] = {}
    for i, n in enumerate(forward):
        for v in n.inputs:
            if v is not None and v.producer is not None and id(v.producer) in position:
                last_read[id(v)] = i
    cuts, open_values = [], {}
    for i, n in enumerate(forward):
        open_values = {k: v for k, v in open_values.items() if last_read[k] > i}
        open_values.update((id(o), o) for o in n.outputs if last_read.get(id(o), -1) > i)
        out = n.outputs[0]
        if (id(out) in open_values and len(n.outputs) == 1 and out.dtype.kind == "f"
                and not _random(n)
                and sum(sizes.nbytes(v) for k, v in open_values.items() if k != id(out))
                <= sizes.nbytes(out)):
            cuts.append(i)
    return cuts


def _random(node: Node) -> bool:
    """Whether a copy of `node` could differ from it: a random op, except a Dropout that is
    an identity (a constant ratio of 0 or a constant false training flag: a torch export of
    a model built with dropout 0, or in eval mode)."""
    if node.op_type not in FoldConstantsPass.NONDETERMINISTIC:
        return False
    if node.op_type != "Dropout" or node.domain != "":
        return True
    ratio, flag = (const_array(node.inputs[i], "") if len(node.inputs) > i else None
                   for i in (1, 2))
    return not ((ratio is not None and float(ratio) == 0.0) or len(node.inputs) < 3
                or (flag is not None and not bool(flag)))


def _recompute_segment(graph: Graph, segment: list[Node], entry: Value | None,
                       readers: dict[int, list]) -> tuple[Node, list[Node]] | None:
    """Copy what the backward pass reads of `segment` (all but its last node's output, the
    next checkpoint); the first backward reader and the new nodes, or None."""
    inside = {id(n) for n in segment}
    targets = [o for n in segment[:-1] for o in n.outputs
               if id(o) in readers and not _random(n)]
    if not targets:
        return None
    needed = _ancestors_inside(targets, inside)
    first = min((r for t in targets for r, _ in readers[id(t)]), key=graph.nodes.index)
    start = len(graph.nodes)
    copies: dict[int, Value] = {}
    gated: dict[int, Value] = {}
    for node in segment:
        if id(node) not in needed:
            continue
        ins = [copies.get(id(v), v) if v is not None else None for v in node.inputs]
        root = _gated_input(node, entry) if not any(
            v is not None and id(v) in copies for v in node.inputs) else None
        if root is not None:  # a copy reading nothing copied: feed it through the gate
            v = node.inputs[root]
            if id(v) not in gated:
                gated[id(v)] = _gate(graph, v, first)
            ins[root] = gated[id(v)]
        clone = graph.add_node(node.op_type, ins, node.attributes,
                               [(o.dtype, o.shape) for o in node.outputs], domain=node.domain,
                               name=RECOMPUTE + node.name,
                               output_names=[graph.unique_name(RECOMPUTE + o.name)
                                             for o in node.outputs])
        for o, c in zip(node.outputs, clone.outputs):
            copies[id(o)] = c
    for t in targets:
        for reader, index in readers[id(t)]:
            graph.set_input(reader, index, copies[id(t)])
    return first, graph.nodes[start:]


def _gated_input(node: Node, entry: Value | None) -> int | None:
    """Which input of a root copy goes through the gate: the segment's checkpoint if the node
    reads it, else its first float input that is not a constant (e.g. the batch)."""
    ins = list(node.inputs)
    if entry is not None and entry in ins:
        return ins.index(entry)
    return next((i for i, v in enumerate(ins)
                 if v is not None and not v.is_initializer and v.dtype.kind == "f"), None)


def _ancestors_inside(targets: list[Value], inside: set[int]) -> set[int]:
    """ids of the segment nodes the targets depend on (random nodes excluded: not copied)."""
    needed: set[int] = set()
    stack = [t.producer for t in targets]
    while stack:
        node = stack.pop()
        if id(node) in needed or _random(node):
            continue
        needed.add(id(node))
        stack.extend(v.producer for v in node.inputs if v is not None and v.producer is not None
                     and id(v.producer) in inside)
    return needed


def _gate(graph: Graph, checkpoint: Value, first_reader: Node) -> Value:
    """checkpoint + 0 * min(g), g a float output of the backward node just before
    `first_reader` (the checkpoint itself if there is none)."""
    before = graph.nodes[:graph.nodes.index(first_reader)]
    source = next((o for n in reversed(before) if part_of(n) == "backward"
                   for o in n.outputs if o.dtype.kind == "f" and o.shape is not None), None)
    if source is None:
        return checkpoint
    with graph.name_scope(RECOMPUTE):
        low = ops.ReduceMin(source, keepdims=0)
        zero = ops.Mul(low, graph.constant(np.zeros((), low.dtype)))
        if zero.dtype != checkpoint.dtype:
            zero = ops.Cast(zero, to=int(_onnx_type(checkpoint.dtype)))
        return ops.Add(checkpoint, zero)


def _onnx_type(dtype: np.dtype) -> int:
    from onnx import helper
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def _place(graph: Graph, groups: list[tuple[Node, list[Node]]]) -> None:
    """Put each group of new nodes just before its first backward reader."""
    new = {id(n) for _, nodes in groups for n in nodes}
    before: dict[int, list[Node]] = {}
    for reader, nodes in groups:
        before.setdefault(id(reader), []).extend(nodes)
    order = []
    for node in graph.nodes:
        if id(node) in new:
            continue
        order.extend(before.get(id(node), []))
        order.append(node)
    graph.nodes = order


def apply_checkpointing(graph: Graph, strategy: str | int = "sqrt",
                        batch: int = 1) -> list[str]:
    """Rewrite a train-step graph in place to recompute activations (see
    `CheckpointActivationsPass`); returns the names of the checkpointed values."""
    checkpoint = CheckpointActivationsPass(strategy, batch)
    checkpoint(graph)
    return checkpoint.checkpoints
