"""Graph passes (installed as irkit.passes): autodiff, clean-up and the pass manager."""

from __future__ import annotations

from irkit.passes.autodiff import AutodiffPass, gradients
from irkit.passes.eliminate_common_subexpressions import EliminateCommonSubexpressionsPass
from irkit.passes.eliminate_dead_nodes import EliminateDeadNodesPass
from irkit.passes.fold_constants import FoldConstantsPass
from irkit.passes.manager import GraphPass, PassManager, PassResult

__all__ = ["AutodiffPass", "EliminateCommonSubexpressionsPass", "EliminateDeadNodesPass",
           "FoldConstantsPass", "GraphPass", "PassManager", "PassResult", "gradients",
           "simplify"]


def simplify(graph, variables=()) -> None:
    """The standard clean-up: fold constants, merge duplicates, drop dead code, to a fixpoint.
    `variables` names initializers that are parameters (never folded or merged)."""
    PassManager([FoldConstantsPass(variables), EliminateCommonSubexpressionsPass(variables),
                 EliminateDeadNodesPass()])(graph)
