"""Graph passes: each is checked by running the graph on onnxruntime before and after."""

from __future__ import annotations

import numpy as np
import pytest
from irkit.passes import (
    EliminateCommonSubexpressionsPass,
    EliminateDeadNodesPass,
    FoldConstantsPass,
    GraphPass,
    PassManager,
    PassResult,
    simplify,
)
from irkit.runtimes.onnxruntime import OrtGraph

from irkit import ops
from irkit.errors import IRError
from irkit.ir import Graph, set_verification, verification_enabled


def _graph() -> tuple[Graph, dict]:
    g = Graph("p")
    x = g.add_input("x", np.float32, ("N", 3))
    w = g.add_initializer("w", np.arange(6, dtype=np.float32).reshape(3, 2) / 10)
    c = ops.Mul(g.constant(np.float32(2.0)), g.constant(np.float32(3.0)))   # foldable
    scaled = ops.Mul(x, c)
    a = ops.Exp(scaled)
    b = ops.Exp(scaled)                                                   # duplicate of a
    y = ops.MatMul(ops.Add(a, b), w)
    ops.Tanh(x)                                                           # dead
    g.outputs = [y]
    feeds = {"x": np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32) / 4}
    return g, feeds


def _run(g: Graph, feeds: dict) -> list[np.ndarray]:
    return OrtGraph(g)(feeds)


@pytest.mark.parametrize("make_pass", [
    lambda: FoldConstantsPass(variables={"w"}), lambda: EliminateCommonSubexpressionsPass(),
    lambda: EliminateDeadNodesPass()])
def test_each_pass_keeps_outputs(make_pass):
    g, feeds = _graph()
    before = _run(g, feeds)
    result = make_pass()(g)
    assert result.modified
    g.verify()
    np.testing.assert_allclose(_run(g, feeds)[0], before[0], rtol=1e-6)
    assert not make_pass()(g).modified  # a second run has nothing left to do


def test_fold_constants_computes_and_keeps_variables():
    g, feeds = _graph()
    FoldConstantsPass(variables={"w"})(g)
    assert "Mul" in [n.op_type for n in g.nodes]  # x * 6 stays (x is an input)
    assert all(not (n.op_type == "Mul" and all(v.is_initializer for v in n.inputs))
               for n in g.nodes)
    assert "w" in g.initializers


def test_fold_constants_never_folds_random_ops():
    g = Graph("r")
    x = g.add_input("x", np.float32, (4,))
    d, _ = ops.Dropout(g.constant(np.ones(4, np.float32)), g.constant(np.float32(0.5)),
                       g.constant(np.array(True)), _num_outputs=2)
    g.outputs = [ops.Add(x, d)]
    assert not FoldConstantsPass()(g).modified


def test_cse_merges_duplicates_only():
    g, feeds = _graph()
    EliminateCommonSubexpressionsPass()(g)
    EliminateDeadNodesPass()(g)
    assert [n.op_type for n in g.nodes].count("Exp") == 1


def test_simplify_reaches_fixpoint_and_is_lean():
    g, feeds = _graph()
    before = _run(g, feeds)
    simplify(g, variables={"w"})
    np.testing.assert_allclose(_run(g, feeds)[0], before[0], rtol=1e-6)
    assert sorted(n.op_type for n in g.nodes) == ["Add", "Exp", "MatMul", "Mul"]
    assert not PassManager([FoldConstantsPass({"w"}), EliminateCommonSubexpressionsPass(),
                            EliminateDeadNodesPass()])(g).modified


def test_train_step_graph_has_no_duplicates_or_dead_nodes():
    from irkit.nn import Dense, Sequential
    from irkit.train import SGD, ModuleSource, build_step_graphs, get_loss
    graphs = build_step_graphs(ModuleSource(Sequential([Dense(16, "relu"), Dense(3)]), (4,)),
                               get_loss("cross_entropy"), SGD())
    g = graphs.train
    assert not EliminateDeadNodesPass()(g).modified
    assert not EliminateCommonSubexpressionsPass()(g).modified
    ops_used = [n.op_type for n in g.nodes]
    assert "Transpose" not in ops_used  # Gemm gradients use transA/transB
    assert ops_used.count("Gemm") == 2 + 3  # 2 forward, dW2, dX2, dW1 (no dX for the input)


class _BreakUses(GraphPass):
    """A faulty pass: forgets a use, which only the verifier notices."""

    def call(self, graph: Graph) -> PassResult:
        node = graph.nodes[-1]
        node.inputs[0].uses.clear()
        return PassResult(graph, True)


def test_passes_verify_only_under_debug_verification():
    """The default requires/ensures verify the graph when IRKIT_VERIFY is on (as in the test
    suite), and cost nothing otherwise."""
    assert verification_enabled()  # tests/conftest.py turns it on
    with pytest.raises(IRError, match="is not recorded"):
        _BreakUses()(_graph()[0])
    old = set_verification(False)
    try:
        g = _graph()[0]
        assert _BreakUses()(g).modified  # not noticed: nothing verified
    finally:
        set_verification(old)
    with pytest.raises(IRError, match="is not recorded"):
        g.verify()
