"""Graph passes (installed as irkit.passes): autodiff, clean-up and the pass manager."""

from __future__ import annotations

from irkit.passes.autodiff import AutodiffPass, gradients
from irkit.passes.checkpoint_activations import CheckpointActivationsPass, apply_checkpointing
from irkit.passes.eliminate_common_subexpressions import EliminateCommonSubexpressionsPass
from irkit.passes.eliminate_dead_nodes import EliminateDeadNodesPass
from irkit.passes.fold_affine import FoldAffinePass
from irkit.passes.fold_batch_norm import FoldBatchNormPass
from irkit.passes.fold_constants import FoldConstantsPass
from irkit.passes.fuse_matmul_add import FuseMatMulAddPass
from irkit.passes.manager import GraphPass, NodeRewritePass, PassError, PassManager, PassResult
from irkit.passes.remove_no_ops import RemoveNoOpsPass
from irkit.passes.simplify_shapes import SimplifyShapesPass

__all__ = ["AutodiffPass", "CheckpointActivationsPass", "EliminateCommonSubexpressionsPass",
           "EliminateDeadNodesPass", "FoldAffinePass", "FoldBatchNormPass", "FoldConstantsPass",
           "FuseMatMulAddPass", "GraphPass", "NodeRewritePass", "PassError", "PassManager",
           "PassResult",
           "RemoveNoOpsPass", "SimplifyShapesPass", "apply_checkpointing", "gradients",
           "inference_passes", "optimize_for_inference", "simplify"]


def simplify(graph, variables=()) -> None:
    """The standard clean-up: fold constants, merge duplicates, drop dead code, to a fixpoint.
    `variables` names initializers that are parameters (never folded or merged)."""
    PassManager([FoldConstantsPass(variables), EliminateCommonSubexpressionsPass(variables),
                 EliminateDeadNodesPass()])(graph)


def inference_passes() -> list[GraphPass]:
    """The passes of `irkit optimize`, in the order they run (repeated to a fixpoint)."""
    return [SimplifyShapesPass(), FoldConstantsPass(), RemoveNoOpsPass(), FoldBatchNormPass(),
            FuseMatMulAddPass(), FoldAffinePass(), EliminateCommonSubexpressionsPass(),
            EliminateDeadNodesPass()]


def optimize_for_inference(graph) -> PassResult:
    """Run `inference_passes` on an inference graph (every initializer is a constant)."""
    return PassManager(inference_passes())(graph)
