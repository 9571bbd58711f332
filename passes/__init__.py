"""Graph passes (installed as irkit.passes): autodiff, clean-up and the pass manager."""

from __future__ import annotations

from irkit.passes.autodiff import AutodiffPass, gradients
from irkit.passes.eliminate_dead_nodes import EliminateDeadNodesPass
from irkit.passes.manager import GraphPass, PassManager, PassResult

__all__ = ["AutodiffPass", "EliminateDeadNodesPass", "GraphPass", "PassManager", "PassResult",
           "gradients"]
