"""FoldConstantsPass: evaluate nodes whose inputs are all constants, at build time."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from irkit.passes.manager import GraphPass, PassResult

from irkit.ir import Graph
from irkit.ops.dtypes import element_bits, onnx_dtype, stored_bytes
from irkit.ops.registry import opdef_of

MAX_FOLDED_ELEMENTS = 1 << 16  # keep folded results small: a file should not balloon


class FoldConstantsPass(GraphPass):
    """Replace constant subexpressions by initializers. Cases handled:

    1. a deterministic node whose inputs are all initializers (not in `variables`) is computed
       with its op's numpy reference and its outputs become initializers;
    2. chains fold in one run (nodes are visited in topological order);
    3. nodes with random outputs (Dropout in training mode, RandomNormal, ...) and results
       over MAX_FOLDED_ELEMENTS elements or of unknown size (known from the inferred output
       shapes, before anything is computed) are left alone;
    4. a node that widens quantized constants (an input of 8 bits or fewer per element: int8,
       uint8, float8, int4, float4, ...; its results hold more bytes than its inputs), such as
       a dequantization Cast(int4 weight) or DequantizeLinear, is left alone: folding it would
       undo the model's compression;
    `variables` names initializers that are really parameters (e.g. weights of a model that
    will be trained or swapped), which are never folded.
    """

    NONDETERMINISTIC = {"Dropout", "RandomNormal", "RandomUniform", "RandomNormalLike",
                        "RandomUniformLike", "Multinomial", "Bernoulli"}

    def __init__(self, variables: Iterable[str] = ()) -> None:
        self.variables = set(variables)

    def call(self, graph: Graph) -> PassResult:
        folded = False
        for node in list(graph.nodes):
            if node.op_type in self.NONDETERMINISTIC or not node.inputs:
                continue
            ins = [v for v in node.inputs if v is not None]
            if not all(v.is_initializer and v.name not in self.variables for v in ins):
                continue
            results = opdef_of(node).compute_small(node, [v.const if v is not None else None
                                                          for v in node.inputs],
                                                   MAX_FOLDED_ELEMENTS)
            if results is None:  # outputs too large or of unknown size, or not computable
                continue
            arrays = [np.asarray(r, dtype=o.dtype) for r, o in zip(results, node.outputs)]
            if sum(a.size for a in arrays) > MAX_FOLDED_ELEMENTS or _decompresses(ins, arrays):
                continue
            for out, arr in zip(node.outputs, arrays):
                const = graph.constant(arr)
                graph.replace_all_uses_with(out, const)
            if all(not o.uses and o not in graph.outputs for o in node.outputs):
                graph.remove_node(node)
            folded = True
        return PassResult(graph, folded)


def _bytes(array: np.ndarray) -> int:
    return stored_bytes(onnx_dtype(array.dtype), int(np.size(array)))


def _decompresses(inputs: list, results: list[np.ndarray]) -> bool:
    """Whether folding would store quantized constants `inputs` as wider `results`: an input
    of 8 bits or fewer per element (bool aside), and more bytes out than in."""
    consts = [np.asarray(v.const) for v in inputs]
    quantized = any(a.dtype != np.bool_ and element_bits(onnx_dtype(a.dtype)) <= 8
                    for a in consts)
    return quantized and sum(map(_bytes, results)) > sum(map(_bytes, consts))
