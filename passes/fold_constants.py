"""FoldConstantsPass: evaluate nodes whose inputs are all constants, at build time."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from irkit.passes.manager import GraphPass, PassResult

from irkit.ir import Graph
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
            if sum(a.size for a in arrays) > MAX_FOLDED_ELEMENTS:
                continue
            for out, arr in zip(node.outputs, arrays):
                const = graph.constant(arr)
                graph.replace_all_uses_with(out, const)
            if all(not o.uses and o not in graph.outputs for o in node.outputs):
                graph.remove_node(node)
            folded = True
        return PassResult(graph, folded)
