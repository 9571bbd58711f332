"""Figures of a graph: FLOPs and bytes per node, parameters, depth, critical path, memory.

Everything here reads the IR; `irkit.passes.graph_view` builds the networkx view that depth,
critical path and the exports use (networkx is imported there, lazily, so `import irkit`
never loads it).

Conventions:
1. FLOPs count a multiply-add as 2 (MatMul, Gemm, Conv: 2 * output elements * reduction
   length, plus the bias); elementwise ops 1 per output element, reductions 1 per input
   element, Softmax-like ops 5 per element; data movement (Reshape, Transpose, Gather, ...) 0.
2. Bytes of a node: what it reads plus what it writes.
3. Symbolic dims take their value from `dims` (e.g. {"N": 256}), else from `default` (e.g.
   a batch size for every symbolic dim); others count as 1 and are listed in
   `Figures.unknown_dims` ("?" for a dim inference could not find). A value whose rank is
   unknown counts 0 bytes. `with_batch` re-infers shapes at a concrete batch first.
4. Peak memory is liveness over the execution order (`execution_order`: onnxruntime's
   default order, a depth-first walk back from the nodes nobody reads): a node's outputs are
   live from that node until their last reader (graph outputs until the end); at each node
   the live set is what existed before it plus its outputs, plus the scratch its kernel
   allocates while it runs (`workspace_bytes`); the output of an alias op (`ALIAS_OPS`:
   Reshape, Squeeze, ...) is its input's buffer, held until the last reader of either (an
   alias of a graph input or initializer holds nothing). Graph inputs
   and initializers are counted apart (`inputs_bytes`, `initializer_bytes`), not in the peak.
   `planned_bytes` lays the same lifetimes out in one address range, best fit, as
   onnxruntime's memory-pattern planner does; it is the estimate to compare with
   onnxruntime's measured peak (tests/test_checkpoint_memory.py).
5. A node's part: `backward` if its name starts with `grad/`, `optimizer` for `opt/`,
   otherwise `forward`. A train step keeps alive for the backward pass the forward values
   that backward nodes read (`saved_for_backward`).
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from irkit.ir import Graph, Node, Value
from irkit.ops.dtypes import onnx_dtype, stored_bytes
from irkit.ops.registry import attr, opdef_of

FREE_OPS = {"Reshape", "Transpose", "Gather", "Shape", "Size", "Concat", "Slice", "Squeeze",
            "Unsqueeze", "Identity", "Flatten", "Cast", "Expand", "Constant", "Split", "Tile",
            "ConstantOfShape", "Range", "GatherElements", "GatherND", "Pad", "Dropout",
            "OneHot", "ScatterElements", "ScatterND", "Trilu"}
REDUCE_OPS = {"ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
              "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare", "ArgMax",
              "ArgMin", "GlobalAveragePool", "GlobalMaxPool", "CumSum", "TopK"}
EXPONENT_OPS = {"Softmax", "LogSoftmax", "SoftmaxCrossEntropyLoss", "LayerNormalization",
                "InstanceNormalization", "BatchNormalization", "NegativeLogLikelihoodLoss"}
PARTS = ("forward", "backward", "optimizer")


def part_of(node: Node) -> str:
    """forward, backward (`grad/` names) or optimizer (`opt/` names)."""
    if node.name.startswith("grad/"):
        return "backward"
    if node.name.startswith("opt/"):
        return "optimizer"
    return "forward"


class Sizes:
    """Element counts and bytes of values, with symbolic dims resolved from `dims`."""

    def __init__(self, dims: Mapping[str, int] | None = None, default: int | None = None) -> None:
        self.dims = dict(dims or {})
        self.default = default  # the size of symbolic dims not in `dims` (None: unknown)
        self.unknown: set[str] = set()

    def dim(self, d) -> int:
        """The size of one dim (1 for one not known, which is noted in `unknown`)."""
        if isinstance(d, int):
            return d
        if isinstance(d, str) and d in self.dims:
            return int(self.dims[d])
        if isinstance(d, str) and self.default is not None:
            return self.default
        self.unknown.add("?" if d is None else str(d))
        return 1

    def numel(self, v: Value | None) -> int:
        """Elements of a value (0 if absent or of unknown rank)."""
        if v is None or v.shape is None:
            return 0
        return math.prod(self.dim(d) for d in v.shape)

    def nbytes(self, v: Value | None) -> int:
        """Bytes of a value, as ONNX and onnxruntime store it (int4/uint4/float4 two to a
        byte, int2/uint2 four)."""
        if v is None:
            return 0
        if v.dtype.kind in "OSU":  # strings: a pointer each
            return self.numel(v) * v.dtype.itemsize
        return stored_bytes(onnx_dtype(v.dtype), self.numel(v))


def node_flops(node: Node, sizes: Sizes) -> int:
    """Floating-point operations of one node (see the module docstring, case 1)."""
    op, out = node.op_type, sizes.numel(node.outputs[0]) if node.outputs else 0
    x = node.inputs[0] if node.inputs else None
    if op in FREE_OPS:
        return 0
    if op == "MatMul":
        k = sizes.dim(x.shape[-1]) if x is not None and x.shape else 1
        return 2 * out * k
    if op == "Gemm":
        k = sizes.dim(x.shape[0 if attr(node, "transA") else 1]) if x.shape else 1
        return 2 * out * k + (out if len(node.inputs) > 2 and node.inputs[2] else 0)
    if op in ("Conv", "ConvTranspose"):
        return _conv_flops(node, sizes, out)
    if op in ("MaxPool", "AveragePool"):
        kernel = node.attributes.get("kernel_shape") or [1]
        return out * math.prod(kernel)
    if op in REDUCE_OPS:
        return sizes.numel(x)
    if op in EXPONENT_OPS:
        return 5 * max(out, sizes.numel(x))
    if op == "Einsum":
        return 2 * sum(sizes.numel(v) for v in node.inputs) * max(out, 1)
    return out


def _conv_flops(node: Node, sizes: Sizes, out: int) -> int:
    w = node.inputs[1]
    if w is None or w.shape is None:
        return out
    per_output = math.prod(sizes.dim(d) for d in w.shape[1:])  # C_in/group * kernel
    bias = out if len(node.inputs) > 2 and node.inputs[2] is not None else 0
    if node.op_type == "ConvTranspose":  # every input element meets C_out/group * kernel
        x = node.inputs[0]
        return 2 * sizes.numel(x) * per_output + bias
    return 2 * out * per_output + bias


def node_bytes(node: Node, sizes: Sizes) -> int:
    """Bytes a node reads plus bytes it writes."""
    return sum(sizes.nbytes(v) for v in node.inputs) + sum(sizes.nbytes(v) for v in node.outputs)


def node_figures(graph: Graph, sizes: Sizes) -> list[dict]:
    """One row per node, in execution order: name, op, part, FLOPs, bytes read + written."""
    return [{"name": n.name, "op_type": n.op_type, "part": part_of(n),
             "flops": node_flops(n, sizes), "bytes": node_bytes(n, sizes)} for n in graph.nodes]


def parameters(graph: Graph, names: Iterable[str] | None = None) -> dict[str, tuple]:
    """Floating-point initializers (or the named values) and their shapes."""
    if names is not None:
        return {n: graph.value(n).shape for n in names}
    return {n: v.shape for n, v in graph.initializers.items() if v.dtype.kind == "f"}


def parameter_count(graph: Graph, names: Iterable[str] | None = None) -> int:
    """Elements in the floating-point initializers (or in the named values)."""
    sizes = Sizes()
    if names is not None:
        return sum(sizes.numel(graph.value(n)) for n in names)
    return sum(int(v.const.size) for v in graph.initializers.values() if v.dtype.kind == "f")


def with_batch(graph: Graph, batch: int) -> Graph:
    """A copy whose graph inputs have every non-static dim set to `batch`, with shapes
    inferred again node by node (a node whose inference fails keeps its old shapes), so
    dims that were unknown (e.g. after a Reshape to -1) become numbers."""
    g = graph.copy()
    for v in g.inputs:
        if v.shape is not None:
            v.shape = tuple(d if isinstance(d, int) else batch for d in v.shape)
    propagated = []
    for node in g.nodes:
        try:
            results = opdef_of(node).infer(node)
        except Exception:  # inference that needs more than shapes: keep what the IR had
            continue
        for out, (dtype, shape) in zip(node.outputs, results):
            if shape is not None:
                out.dtype = out.dtype if dtype is None else np.dtype(dtype)
                out.shape = tuple(shape)
        propagated += _propagate_shape_values(node)
    for v in propagated:  # they were constants only for the inference above
        v.const = None
    return g


class BatchSizes(Sizes):
    """Sizes of a graph's values at `batch`, from the shapes `with_batch` infers there: a
    value's own shape may have unknown dims (after a Reshape of a computed shape, as torch's
    exporters write them), each of which `Sizes` would count as 1."""

    def __init__(self, graph: Graph, batch: int) -> None:
        super().__init__(default=batch)
        self.shapes = {v.name: v.shape for v in with_batch(graph, batch).values()}

    def numel(self, v: Value | None) -> int:
        """Elements of a value, with the shape inferred at the batch size."""
        if v is None:
            return 0
        shape = self.shapes.get(v.name, v.shape)
        return 0 if shape is None else math.prod(self.dim(d) for d in shape)


def _propagate_shape_values(node: Node) -> list[Value]:
    """Small results (Shape, Size, and arithmetic on them, e.g. a Cast feeding a Range)
    computed from small constant inputs and stored as the outputs' `const`, so readers such
    as ConstantOfShape and Range infer static shapes."""
    ins = [v for v in node.inputs if v is not None]
    shape_op = node.op_type in ("Shape", "Size") and node.inputs[0].shape is not None and all(
        isinstance(d, int) for d in node.inputs[0].shape)
    constant = not node.inputs and node.op_type == "Constant"
    if not shape_op and not constant and (not ins or not all(
            v.const is not None and v.const.size <= 4096 for v in ins)):
        return []
    if shape_op:
        shape = node.inputs[0].shape
        results = [np.array(shape[attr(node, "start"):attr(node, "end")], dtype=np.int64)
                   if node.op_type == "Shape" else np.array(math.prod(shape), dtype=np.int64)]
    else:
        results = opdef_of(node).compute_small(node, [v.const if v is not None else None
                                                      for v in node.inputs], 64)
        if results is None:  # outputs over 64 elements or of unknown size: not computed
            return []
    done = []
    for out, r in zip(node.outputs, results):
        r = np.asarray(r)
        if r.dtype.kind in "biuf" and r.size <= 64:
            out.const = r
            done.append(out)
    return done


@dataclass
class Memory:
    """Memory over an execution order (see the module docstring, case 4)."""

    peak_bytes: int            # the most bytes live at once
    planned_bytes: int         # the address range a best-fit layout of them needs
    peak_node: str | None
    live_at_peak: list[str]
    inputs_bytes: int
    initializer_bytes: int
    timeline: list[int] = field(default_factory=list)  # live bytes after each node


ALIGNMENT = 64  # bytes; onnxruntime aligns its CPU buffers to 64


def execution_order(graph: Graph) -> list[Node]:
    """The order onnxruntime runs the nodes in by default, which its memory planner lays out:
    a depth-first walk back from the nodes no node reads (the last of them first), a node
    coming after the producers of its inputs, which are walked highest node index first
    (onnxruntime's GraphViewer: ReverseDFSFrom with nodes compared by index; the index is the
    position in `graph.nodes`, which the ONNX export keeps). A gradient that reads only
    forward values (a recomputed batch mean) then runs when the walk first reaches it, which
    may be well before the backward node that needs it."""
    nodes = graph.nodes
    index = {id(n): i for i, n in enumerate(nodes)}
    producers = [sorted({index[id(v.producer)] for v in n.inputs
                         if v is not None and id(v.producer) in index}) for n in nodes]
    read = {j for inputs in producers for j in inputs}
    stack = [(i, False) for i in range(len(nodes)) if i not in read]
    visited, order = [False] * len(nodes), []
    while stack:
        i, leaving = stack.pop()
        if leaving:
            order.append(nodes[i])
        elif not visited[i]:
            visited[i] = True
            stack.append((i, True))
            stack.extend((j, False) for j in producers[i] if not visited[j])
    return order


def workspace_bytes(node: Node, sizes: Sizes) -> int:
    """Scratch a node's onnxruntime kernel allocates while it runs, beyond its outputs:
    BatchNormalization in training mode keeps one buffer the size of its input (measured on
    onnxruntime 1.31: 8.0 MiB more than the outputs for an 8.0 MiB input); 0 for the rest."""
    if node.op_type == "BatchNormalization" and attr(node, "training_mode"):
        return sizes.nbytes(node.inputs[0])
    return 0


def peak_memory(graph: Graph, dims: Mapping[str, int] | None = None,
                order: list[Node] | None = None, sizes: Sizes | None = None) -> Memory:
    """Peak bytes of live intermediate values when the nodes run in `order` (default:
    onnxruntime's, `execution_order`), and the bytes a best-fit layout of them needs
    (`placed_peak`)."""
    sizes = sizes or Sizes(dims)
    order = execution_order(graph) if order is None else list(order)
    last_use = _last_uses(graph, order)
    frees: dict[int, list[Value]] = {}
    for n in order:
        for o in n.outputs:
            frees.setdefault(last_use[id(o)], []).append(o)
    live, peak, peak_at, timeline, live_names = 0, 0, None, [], {}
    best: list[str] = []
    for i, n in enumerate(order):
        for o in n.outputs:
            if last_use[id(o)] < 0:  # an alias: its owner's bytes
                continue
            live += sizes.nbytes(o)
            live_names[id(o)] = o.name
        during = live + workspace_bytes(n, sizes)
        if during > peak:
            peak, peak_at, best = during, n.name, list(live_names.values())
        for o in frees.get(i, []):
            live -= sizes.nbytes(o)
            live_names.pop(id(o), None)
        timeline.append(live)
    return Memory(peak, placed_peak(order, last_use, sizes), peak_at, best,
                  sum(sizes.nbytes(v) for v in graph.inputs),
                  sum(sizes.nbytes(v) for v in graph.initializers.values()), timeline)


# onnxruntime's CPU kernels of these ops write no buffer of their own: the output is the
# input's buffer (KernelDef Alias(0, 0)), which then lives until the last reader of either
ALIAS_OPS = {"Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity"}


def _last_uses(graph: Graph, order: list[Node]) -> dict[int, int]:
    """id(value) -> position of its last reader in `order` (its producer's if none; the end
    for graph outputs); for a buffer that aliases share, the last over all of them, and -1
    for an alias (it holds no bytes of its own: `peak_memory` skips it)."""
    position = {id(n): i for i, n in enumerate(order)}
    last_use: dict[int, int] = {}
    root: dict[int, int | None] = {}  # id(value) -> id(the value owning its buffer)
    for n in order:
        for v in n.outputs:
            uses = [position[id(r)] for r, _ in v.uses if id(r) in position]
            last = len(order) if v in graph.outputs else max(uses, default=position[id(n)])
            source = n.inputs[0] if n.op_type in ALIAS_OPS and n.inputs else None
            if source is None:
                root[id(v)], last_use[id(v)] = id(v), last
                continue
            # an alias of a graph input or initializer costs nothing; else its owner's
            owner = root.get(id(source))
            root[id(v)], last_use[id(v)] = owner, -1
            if owner is not None:
                last_use[owner] = max(last_use[owner], last)
    return last_use


def placed_peak(order: list[Node], last_use: dict[int, int], sizes: Sizes) -> int:
    """The top of the address range when each output, in execution order, is placed into
    the smallest gap between live blocks that holds it (after the last block if none does)
    and leaves after its last reader; sizes rounded up to ALIGNMENT. This is the layout
    onnxruntime's memory-pattern planner makes for a run, so it counts the fragmentation
    that plain liveness does not."""
    blocks: list[tuple[int, int, int]] = []  # (offset, size, last use), sorted by offset
    top = 0
    for i, node in enumerate(order):
        # the outputs, then the kernel's scratch, which leaves with the node
        needs = [(sizes.nbytes(out), last_use[id(out)]) for out in node.outputs
                 if last_use[id(out)] >= 0]
        for nbytes, last in [*needs, (workspace_bytes(node, sizes), i)]:
            size = -(-nbytes // ALIGNMENT) * ALIGNMENT
            if size:
                offset = _best_fit(blocks, size)
                bisect.insort(blocks, (offset, size, last))
                top = max(top, offset + size)
        blocks = [b for b in blocks if b[2] > i]
    return top


def _best_fit(blocks: list[tuple[int, int, int]], size: int) -> int:
    current, best, waste = 0, None, None
    for offset, length, _ in blocks:
        if offset >= current:
            gap = offset - current
            if gap >= size and (waste is None or gap - size < waste):
                best, waste = current, gap - size
        current = max(current, offset + length)
    return current if best is None else best


def saved_for_backward(graph: Graph) -> list[Value]:
    """Forward values (made by forward nodes, or graph inputs/initializers) read by backward
    nodes: what a train step keeps alive between its forward and backward passes."""
    saved: dict[int, Value] = {}
    for node in graph.nodes:
        if part_of(node) != "backward":
            continue
        for v in node.inputs:
            if v is None or id(v) in saved:
                continue
            if v.producer is not None and part_of(v.producer) == "forward":
                saved[id(v)] = v
    return list(saved.values())


@dataclass
class Figures:
    """The summary `irkit inspect` prints."""

    nodes: int
    flops: int
    bytes: int
    parameters: int
    ops: dict[str, int]
    peak: Memory
    parts: dict[str, dict[str, int]]
    saved_for_backward_bytes: int
    saved_for_backward: int
    unknown_dims: list[str]


def figures(graph: Graph, dims: Mapping[str, int] | None = None,
            default: int | None = None) -> Figures:
    """FLOPs, bytes, parameters, op histogram and peak memory of a graph, also per part;
    `dims`/`default` size the symbolic dims (see `Sizes`)."""
    if default is not None:
        graph = with_batch(graph, default)
    sizes = Sizes(dims, default)
    per_part = {p: {"nodes": 0, "flops": 0, "bytes": 0} for p in PARTS}
    flops = total_bytes = 0
    for node in graph.nodes:
        f, b = node_flops(node, sizes), node_bytes(node, sizes)
        row = per_part[part_of(node)]
        row["nodes"] += 1
        row["flops"] += f
        row["bytes"] += b
        flops += f
        total_bytes += b
    memory = peak_memory(graph, sizes=sizes)
    saved = saved_for_backward(graph)
    ops = dict(sorted(Counter(n.op_type for n in graph.nodes).items()))
    return Figures(len(graph.nodes), flops, total_bytes, parameter_count(graph), ops, memory,
                   {p: r for p, r in per_part.items() if r["nodes"]},
                   sum(sizes.nbytes(v) for v in saved), len(saved), sorted(sizes.unknown))
