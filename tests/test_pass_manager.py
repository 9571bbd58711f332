"""The pass manager's contracts (passes/manager.py): in place vs functional, what `call`
returns, and errors that name the failing pass and the passes before it."""

from __future__ import annotations

import numpy as np
import pytest
from irkit.passes import (
    EliminateDeadNodesPass,
    FoldConstantsPass,
    GraphPass,
    PassManager,
    PassResult,
)
from irkit.passes.manager import PassError

from irkit import ops
from irkit.errors import ShapeError
from irkit.ir import Graph


def _graph() -> Graph:
    g = Graph("g")
    x = g.add_input("x", np.float32, ("N", 3))
    g.outputs = [ops.Relu(ops.Add(x, 1.0))]
    return g


class ReturnsACopy(GraphPass):
    """Claims to work in place, returns a new graph."""

    def call(self, graph):
        return PassResult(graph.copy(), False)


class EditsItsInput(GraphPass):
    """Claims to be functional, changes the graph it was given."""

    in_place = False

    def call(self, graph):
        copy = graph.copy()
        graph.outputs = [ops.Neg(graph.outputs[0])]
        return PassResult(copy, True)


class ReturnsItsInput(GraphPass):
    in_place = False

    def call(self, graph):
        return PassResult(graph, False)


class Functional(GraphPass):
    """A well-behaved functional pass: a new graph with one more node."""

    in_place = False

    def call(self, graph):
        copy = graph.copy()
        copy.outputs = [ops.Neg(copy.outputs[0])]
        return PassResult(copy, False)


class ReturnsNothing(GraphPass):
    def call(self, graph):
        return None


class Fails(GraphPass):
    def __init__(self, error: Exception) -> None:
        self.error = error

    def call(self, graph):
        raise self.error


@pytest.mark.parametrize("bad, words", [
    (ReturnsACopy(), "ReturnsACopy is in place (in_place = True) but returned a new graph"),
    (EditsItsInput(), "EditsItsInput is functional (in_place = False) but changed its input"),
    (ReturnsItsInput(), "ReturnsItsInput is functional (in_place = False) but returned its"),
    (ReturnsNothing(), "ReturnsNothing: call() must return PassResult"),
])
def test_a_broken_contract_is_a_pass_error(bad: GraphPass, words: str) -> None:
    with pytest.raises(PassError, match=words.replace("(", r"\(").replace(")", r"\)")):
        bad(_graph())


def test_a_functional_pass_leaves_its_input_alone() -> None:
    g = _graph()
    nodes = list(g.nodes)
    result = Functional()(g)
    assert result.graph is not g and g.nodes == nodes
    assert len(result.graph.nodes) == len(nodes) + 1


def test_a_failure_names_the_pass_and_those_before_it() -> None:
    manager = PassManager([FoldConstantsPass(), EliminateDeadNodesPass(),
                           Fails(ShapeError("dims do not fit"))])
    with pytest.raises(ShapeError) as caught:  # the same class: callers' handlers still match
        manager(_graph())
    message = str(caught.value)
    assert message == ("pass Fails failed (round 1; passes run before it: FoldConstantsPass, "
                       "EliminateDeadNodesPass): dims do not fit")


def test_a_bug_in_a_pass_is_a_pass_error_naming_it() -> None:
    with pytest.raises(PassError, match=r"pass Fails failed \(round 1; passes run before it: "
                       r"none\): KeyError: 'x'"):
        PassManager([Fails(KeyError("x"))])(_graph())
