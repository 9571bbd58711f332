"""TieCopiesPass: an exporter's untied copy of a weight read as that weight again.

torch ties weights (GPT-2's `lm_head.weight` is `transformer.wte.weight`): one tensor, whose
gradient is the sum of its uses. Exporters can write it twice: the dynamo exporter's
optimizer (onnxscript, its default) keeps the table for the embedding's Gather and writes a
folded transposed copy for the LM head's MatMul; the TorchScript exporter's constant folding
does the same. Trained as they are, the two copies drift apart. Cases handled:

1. an initializer that is bit-for-bit the transpose of another (2-D) becomes a Transpose node
   of that one, under its own name, so its readers are unchanged;
2. an initializer that is bit-for-bit a copy of another (same shape) is replaced by it in its
   readers;
3. both must be float, hold at least MIN_ELEMENTS elements, not one repeated value (zero
   biases, unit scales and other fills are equal by chance), be read by nodes and be neither
   a graph output nor a BatchNormalization's running statistic (state, not a weight);
4. the tensor kept is the one an embedding's Gather reads (torch's orientation of a tied
   table), else the first in the file's order;
5. what was tied is recorded in the graph's metadata (META_TIED: a JSON list of [copy, kept,
   transposed]), which `irkit inspect` and `irkit train` print.

Files are compared by a fingerprint first (a row, or a column for a transpose), so a model
with many same-shaped weights costs one look-up per weight, and a full comparison only where
the fingerprints agree.
"""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
from irkit.passes.manager import GraphPass, PassResult

from irkit import ops
from irkit.ir import Graph, Value
from irkit.signature import META_TIED

MIN_ELEMENTS = 128  # smaller tensors are not the weights an exporter unties
PEEK = 32  # elements of the fingerprint


def _eligible(graph: Graph, v: Value) -> bool:
    a = v.const
    if a is None or a.dtype.kind != "f" or a.size < MIN_ELEMENTS or v in graph.outputs:
        return False
    if not v.uses:
        return False
    return not any(n.op_type == "BatchNormalization" and i in (3, 4) for n, i in v.uses)


def _bits(a: np.ndarray) -> np.ndarray:
    """`a`'s bits, so that equality is bit-for-bit (-0.0 is not 0.0, a NaN equals itself)."""
    return a.view(np.dtype(f"u{a.dtype.itemsize}"))


def _key(a: np.ndarray, transposed: bool) -> tuple:
    """The fingerprint of `a`, or of `a.T` (2-D) when `transposed`: dtype, shape, first row."""
    if transposed:
        return a.dtype.str, a.shape[::-1], _bits(a)[:PEEK, 0].tobytes()
    first = _bits(a)[0, :PEEK] if a.ndim == 2 else _bits(a).ravel()[:PEEK]
    return a.dtype.str, a.shape, first.tobytes()


def _same(a: np.ndarray, b: np.ndarray, transposed: bool) -> bool:
    x = _bits(a).T if transposed else _bits(a)
    return x.shape == b.shape and np.array_equal(x, _bits(b)) and not np.all(a == a.flat[0])


def _reads_as_table(v: Value) -> bool:
    return any(n.op_type == "Gather" and i == 0 for n, i in v.uses)


class TieCopiesPass(GraphPass):
    """Tie every untied copy of a weight back to it (the module docstring)."""

    def call(self, graph: Graph) -> PassResult:
        return PassResult(graph, bool(tie_copies(graph)))


def tie_copies(graph: Graph) -> list[tuple[str, str, bool]]:
    """Tie `graph`'s untied copies in place (cases 1 to 5); [(copy, kept, transposed)]."""
    ties = find_copies(graph)
    for copy, kept, transposed in ties:
        _tie(graph, graph.initializers[copy], graph.initializers[kept], transposed)
    if ties:
        try:
            before = json.loads(graph.metadata.get(META_TIED) or "[]")
        except (json.JSONDecodeError, RecursionError):
            before = []
        before = before if isinstance(before, list) else []
        graph.metadata[META_TIED] = json.dumps(before + [list(t) for t in ties])
    return ties


def find_copies(graph: Graph) -> list[tuple[str, str, bool]]:
    """[(copy, kept, transposed)]: the initializers to tie (cases 1 to 4)."""
    values = [v for v in graph.initializers.values() if _eligible(graph, v)]
    index: dict[tuple, list[Value]] = defaultdict(list)
    for v in values:
        index[_key(v.const, False)].append(v)
    found, kept_names, copies = [], set(), set()
    for v in values:
        for transposed in (False, True) if v.const.ndim == 2 else (False,):
            for other in index.get(_key(v.const, transposed), []):
                if other is v or v.name in copies or {other.name} & (copies | kept_names) \
                        or not _same(v.const, other.const, transposed):
                    continue
                swap = _reads_as_table(other) and not _reads_as_table(v) \
                    and v.name not in kept_names  # a tensor kept stays kept
                kept, copy = (other, v) if swap else (v, other)
                found.append((copy.name, kept.name, transposed))
                kept_names.add(kept.name)
                copies.add(copy.name)
    return found


def _tie(graph: Graph, copy: Value, kept: Value, transposed: bool) -> None:
    """`copy`'s readers read `kept` (or its Transpose, named as the copy was)."""
    name = copy.name
    if not transposed:
        graph.replace_all_uses_with(copy, kept)
        graph.remove_initializer(name)
        return
    node = ops.apply(graph, "Transpose", [kept], {"perm": [1, 0]},
                     name=graph.unique_name(f"tie/{name}"))
    graph.replace_all_uses_with(copy, node.outputs[0])
    graph.remove_initializer(name)
    graph.rename_value(node.outputs[0], name)
    graph.nodes = [node] + [n for n in graph.nodes if n is not node]
