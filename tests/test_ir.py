"""The graph IR: building, use-def chains, editing, copying, ordering and the verifier."""

from __future__ import annotations

import numpy as np
import pytest
from irkit.runtimes.reference import ReferenceRuntime

from irkit import ops
from irkit.errors import IRError, ShapeError, UnsupportedOpError
from irkit.ir import Graph, Value


def _mlp_graph() -> Graph:
    """x (N, 3) -> MatMul w -> Add b -> Relu -> out; w, b initializers."""
    g = Graph("mlp")
    x = g.add_input("x", np.float32, ("N", 3))
    w = g.add_initializer("w", np.arange(6, dtype=np.float32).reshape(3, 2) - 2.5)
    b = g.add_initializer("b", np.array([0.5, -1.0], np.float32))
    h = ops.MatMul(x, w)
    y = ops.Add(h, b)
    out = ops.Relu(y)
    g.outputs = [out]
    return g


def _node(g: Graph, op_type: str):
    (node,) = [n for n in g.nodes if n.op_type == op_type]
    return node


def _run(g: Graph, x: np.ndarray) -> list[np.ndarray]:
    return ReferenceRuntime().compile(g)({"x": x})


X = np.array([[1.0, 2.0, 3.0], [-1.0, 0.5, 2.0]], np.float32)


# ---- building and use-def chains -----------------------------------------------------------
def test_building_records_producers_and_uses():
    g = _mlp_graph()
    g.verify()
    x, w, b = g.value("x"), g.value("w"), g.value("b")
    matmul, add, relu = (_node(g, t) for t in ("MatMul", "Add", "Relu"))
    assert [n.op_type for n in g.nodes] == ["MatMul", "Add", "Relu"]
    assert x.producer is None and w.producer is None and w.is_initializer
    assert not x.is_initializer
    assert matmul.outputs[0].producer is matmul
    assert x.uses == [(matmul, 0)] and w.uses == [(matmul, 1)] and b.uses == [(add, 1)]
    assert matmul.outputs[0].uses == [(add, 0)]
    assert add.outputs[0].uses == [(relu, 0)]
    assert relu.outputs[0].uses == [] and g.outputs == [relu.outputs[0]]


def test_inferred_shapes_keep_symbolic_dims():
    g = _mlp_graph()
    assert g.outputs[0].shape == ("N", 2)
    assert g.outputs[0].dtype == np.float32
    assert g.value("w").shape == (3, 2)


def test_value_used_twice_records_both_uses():
    g = Graph()
    x = g.add_input("x", np.float32, (2,))
    sq = ops.Mul(x, x)
    node = sq.producer
    assert x.uses == [(node, 0), (node, 1)]
    g.outputs = [sq]
    g.verify()


def test_duplicate_value_name_is_refused():
    g = Graph("dup")
    g.add_input("x", np.float32, (2,))
    with pytest.raises(IRError, match="'x' is used twice"):
        g.add_input("x", np.float32, (2,))
    with pytest.raises(IRError, match="'x' is used twice"):
        g.add_initializer("x", np.zeros(2, np.float32))


def test_unique_names_and_name_scope():
    g = Graph()
    x = g.add_input("x", np.float32, (2,))
    a, b = ops.Relu(x), ops.Relu(x)
    assert a.name == "Relu" and b.name != a.name and b.name.startswith("Relu")
    with g.name_scope("grad/"):
        c = ops.Neg(x)
        with g.name_scope("inner/"):
            d = ops.Neg(x)
    e = ops.Neg(x)
    assert c.producer.name == "grad/Neg" and d.producer.name == "grad/inner/Neg"
    assert e.producer.name == "Neg"
    assert g.unique_name("x") != "x"


def test_unknown_value_lookup_names_it():
    g = _mlp_graph()
    with pytest.raises(IRError, match="no value named 'nope'"):
        g.value("nope")
    assert g.has_value("x") and not g.has_value("nope")


def test_node_reading_another_graphs_value_is_refused():
    g1, g2 = Graph("one"), Graph("two")
    x1 = g1.add_input("x", np.float32, (2,))
    x2 = g2.add_input("x", np.float32, (2,))
    with pytest.raises(IRError, match="another graph"):
        g2.add_node("Add", [x2, x1], {}, [(np.float32, (2,))])
    with pytest.raises(IRError, match="another graph"):
        ops.Add(x2, x1)
    assert not g2.nodes


def test_the_ir_stores_any_op_with_the_types_it_is_given():
    """The IR knows no op: add_node takes the outputs' types; irkit.ops knows the ops."""
    g = Graph()
    x = g.add_input("x", np.float32, ("N", 3))
    node = g.add_node("NoSuchOp", [x, None], {"alpha": 0.5, "unset": None},
                      [(np.int64, ("N",)), (np.float16, None)], domain="example.com")
    assert [(o.dtype, o.shape) for o in node.outputs] == [(np.int64, ("N",)), (np.float16, None)]
    assert node.inputs == [x] and node.attributes == {"alpha": 0.5}
    g.outputs = list(node.outputs)
    g.verify()
    with pytest.raises(IRError, match="'NoSuchOp'.*'NoSuchOp'"):
        ops.verify(g)
    with pytest.raises(IRError, match="2 output names for 1 outputs"):
        g.add_node("Relu", [x], None, [(np.float32, ("N", 3))], output_names=["a", "b"])
    with pytest.raises(IRError, match="'x' is used twice"):
        g.add_node("Relu", [x], None, [(np.float32, ("N", 3))], output_names=["x"])
    assert len(g.nodes) == 1 and not g.has_value("a")


def test_ops_apply_infers_types_and_attr_gives_defaults():
    g = Graph()
    x = g.add_input("x", np.float32, ("N", 4, 6))
    node = ops.apply(g, "ReduceMax", [x], {"axes": [2]}, name="biggest")
    assert node.name == "biggest" and node.outputs[0].shape == ("N", 4, 1)
    assert ops.attr(node, "keepdims") == 1 and ops.attr(node, "axes") == [2]
    assert ops.opdef_of(node) is ops.ReduceMax
    with pytest.raises(ShapeError):  # a failed inference leaves the graph as it was
        ops.apply(g, "Add", [x, g.add_input("y", np.float32, (5,))], name="bad")
    assert [n.name for n in g.nodes] == ["biggest"] and not g.has_value("bad")
    with pytest.raises(UnsupportedOpError, match="NoSuchOp"):
        ops.apply(g, "NoSuchOp", [x])


def test_constants_are_shared_by_value():
    g = Graph()
    x = g.add_input("x", np.float32, (2,))
    c1 = g.constant(np.float32(2.0))
    c2 = g.constant(np.float32(2.0))
    c3 = g.constant(np.float32(3.0))
    assert c1 is c2 and c1 is not c3
    assert ops.Mul(x, 2.0).producer.inputs[1] is c1


# ---- editing --------------------------------------------------------------------------------
def test_replace_all_uses_with_moves_node_and_output_uses():
    g = _mlp_graph()
    add, relu = _node(g, "Add"), _node(g, "Relu")
    h = _node(g, "MatMul").outputs[0]
    old = add.outputs[0]
    new = ops.Sigmoid(h)
    g.replace_all_uses_with(old, new)
    assert relu.inputs[0] is new and old.uses == [] and (relu, 0) in new.uses
    g.replace_all_uses_with(relu.outputs[0], new)  # a graph output is a use too
    assert g.outputs == [new]
    g.remove_node(relu)
    g.remove_node(add)
    g.verify()
    w = g.value("w").const
    expected = 1 / (1 + np.exp(-(X @ w)))
    np.testing.assert_allclose(_run(g, X)[0], expected, rtol=1e-6)


def test_replace_all_uses_with_itself_keeps_uses():
    g = _mlp_graph()
    h = _node(g, "MatMul").outputs[0]
    uses = list(h.uses)
    g.replace_all_uses_with(h, h)
    assert h.uses == uses
    g.verify()


def test_set_input_keeps_use_lists_true():
    g = _mlp_graph()
    add = _node(g, "Add")
    b, x = g.value("b"), g.value("x")
    c = g.constant(np.ones(2, np.float32))
    g.set_input(add, 1, c)
    assert b.uses == [] and c.uses == [(add, 1)] and add.inputs[1] is c
    g.verify()
    assert x.uses == [(_node(g, "MatMul"), 0)]


def test_remove_node_refuses_used_nodes():
    g = _mlp_graph()
    matmul, relu = _node(g, "MatMul"), _node(g, "Relu")
    with pytest.raises(IRError, match=r"cannot remove node 'MatMul' \(MatMul\).*still used"):
        g.remove_node(matmul)
    with pytest.raises(IRError, match="still used"):  # its output is a graph output
        g.remove_node(relu)
    assert len(g.nodes) == 3
    g.verify()


def test_remove_node_unlinks_its_inputs_and_forgets_its_outputs():
    g = _mlp_graph()
    x = g.value("x")
    extra = ops.Exp(x)
    extra_node = extra.producer
    assert (extra_node, 0) in x.uses
    g.remove_node(extra_node)
    assert (extra_node, 0) not in x.uses and not g.has_value(extra.name)
    assert extra_node not in g.nodes
    g.verify()
    again = ops.Exp(x)  # the freed names can be used again
    assert again.name == extra.name and again.producer.name == extra_node.name


def test_remove_initializer_refuses_used_ones():
    g = _mlp_graph()
    with pytest.raises(IRError, match="cannot remove initializer 'w'"):
        g.remove_initializer("w")
    g.add_initializer("unused", np.zeros(1, np.float32))
    g.remove_initializer("unused")
    assert "unused" not in g.initializers and not g.has_value("unused")
    g.verify()


def test_promote_initializer_to_input_keeps_uses():
    g = _mlp_graph()
    w = g.value("w")
    uses = list(w.uses)
    promoted = g.promote_initializer_to_input("w")
    assert promoted is w and w in g.inputs and "w" not in g.initializers
    assert not w.is_initializer and w.uses == uses
    g.verify()


def test_rename_value_updates_the_registry():
    g = _mlp_graph()
    out, w = g.outputs[0], g.value("w")
    g.rename_value(out, "prediction")
    g.rename_value(w, "weight")
    assert g.value("prediction") is out and not g.has_value("Relu")
    assert g.initializers["weight"] is w and "w" not in g.initializers
    g.verify()
    with pytest.raises(IRError, match="cannot rename 'weight' to 'x': the name is taken"):
        g.rename_value(w, "x")
    g.rename_value(w, "weight")  # to its own name: no-op
    assert g.value("weight") is w


# ---- copy -----------------------------------------------------------------------------------
def test_copy_is_deep_and_equivalent():
    g = _mlp_graph()
    g.metadata["k"] = "v"
    c = g.copy()
    c.verify()
    assert c is not g and c.metadata == {"k": "v"}
    assert [n.name for n in c.nodes] == [n.name for n in g.nodes]
    assert [v.name for v in c.values()] == [v.name for v in g.values()]
    assert [(v.name, v.shape, v.dtype) for v in c.outputs] == \
        [(v.name, v.shape, v.dtype) for v in g.outputs]
    originals = {id(v) for v in g.values()} | {id(n) for n in g.nodes}
    assert not originals & ({id(v) for v in c.values()} | {id(n) for n in c.nodes})
    for v in c.values():
        assert v.graph is c
        for node, _ in v.uses:
            assert node.graph is c
    np.testing.assert_array_equal(_run(c, X)[0], _run(g, X)[0])


def test_editing_a_copy_leaves_the_original_alone():
    g = _mlp_graph()
    c = g.copy()
    relu = _node(c, "Relu")
    c.replace_all_uses_with(relu.outputs[0], relu.inputs[0])
    c.remove_node(relu)
    c.rename_value(c.value("w"), "w2")
    c.verify()
    g.verify()
    assert len(g.nodes) == 3 and len(c.nodes) == 2
    assert g.has_value("w") and not c.has_value("w")
    assert (_node(g, "Add"), 0) in _node(g, "MatMul").outputs[0].uses
    assert _node(g, "Add").outputs[0].uses == [(_node(g, "Relu"), 0)]


# ---- toposort -------------------------------------------------------------------------------
def test_toposort_restores_a_shuffled_order():
    g = _mlp_graph()
    expected = [n.name for n in g.nodes]
    g.nodes.reverse()
    with pytest.raises(IRError, match="before it is defined"):
        g.verify()
    g.toposort()
    assert [n.name for n in g.nodes] == expected
    g.verify()


def test_toposort_is_stable_for_independent_nodes():
    g = Graph()
    x = g.add_input("x", np.float32, (2,))
    outs = [ops.Exp(x), ops.Neg(x), ops.Relu(x)]
    g.outputs = outs
    before = [n.name for n in g.nodes]
    g.toposort()
    assert [n.name for n in g.nodes] == before


def test_toposort_with_a_cycle_raises():
    g = _mlp_graph()
    matmul, relu = _node(g, "MatMul"), _node(g, "Relu")
    g.set_input(matmul, 0, relu.outputs[0])  # MatMul now reads Relu, which reads MatMul
    with pytest.raises(IRError, match="cycle through node"):
        g.toposort()
    with pytest.raises(IRError):
        g.verify()


# ---- the verifier, one broken invariant at a time ---------------------------------------------
def test_verifier_catches_dangling_input():
    g = _mlp_graph()
    ghost = Value(g, "ghost", np.float32, ("N", 3))  # never registered, never produced
    matmul = _node(g, "MatMul")
    g.value("x").uses.remove((matmul, 0))
    matmul.inputs[0] = ghost
    ghost.uses.append((matmul, 0))
    with pytest.raises(IRError, match="reads 'ghost' before it is defined"):
        g.verify()


def test_verifier_catches_value_of_a_removed_node():
    g = _mlp_graph()
    g.nodes.remove(_node(g, "MatMul"))  # by hand, bypassing remove_node
    with pytest.raises(IRError, match="reads 'MatMul' before it is defined"):
        g.verify()


def test_verifier_catches_wrong_producer():
    g = _mlp_graph()
    _node(g, "Add").outputs[0].producer = _node(g, "MatMul")
    with pytest.raises(IRError, match="'Add' names the wrong producer"):
        g.verify()


def test_verifier_catches_input_with_a_producer():
    g = _mlp_graph()
    g.value("x").producer = _node(g, "MatMul")
    with pytest.raises(IRError, match="graph input 'x' must not have a producer"):
        g.verify()


def test_verifier_catches_unrecorded_use():
    g = _mlp_graph()
    g.value("b").uses.clear()
    with pytest.raises(IRError, match="use of 'b' by node 'Add' is not recorded"):
        g.verify()


def test_verifier_catches_recorded_use_that_is_not_there():
    g = _mlp_graph()
    g.value("x").uses.append((_node(g, "Relu"), 0))
    with pytest.raises(IRError, match="'x' records a use by 'Relu' that is not there"):
        g.verify()


def test_verifier_catches_duplicate_node_name():
    g = _mlp_graph()
    _node(g, "Relu").name = "Add"
    with pytest.raises(IRError, match="node name 'Add' is used twice"):
        g.verify()


def test_verifier_catches_duplicate_value_name():
    g = _mlp_graph()
    _node(g, "Add").outputs[0].name = "MatMul"  # two values now answer to 'MatMul'
    with pytest.raises(IRError, match="'MatMul' is not registered"):
        g.verify()


def test_verifier_catches_value_defined_twice():
    g = _mlp_graph()
    relu = _node(g, "Relu")
    relu.outputs.append(relu.outputs[0])
    with pytest.raises(IRError, match="value 'Relu' is defined twice"):
        g.verify()


def test_verifier_catches_undefined_output():
    g = _mlp_graph()
    g.outputs.append(Value(g, "nowhere", np.float32, (1,)))
    with pytest.raises(IRError, match="graph output 'nowhere' is not defined"):
        g.verify()


def test_verifier_catches_output_of_a_removed_node():
    g = _mlp_graph()
    relu = g.nodes.pop()  # by hand: the output stays registered but nothing produces it
    assert relu.op_type == "Relu"
    with pytest.raises(IRError, match="graph output 'Relu' is not defined"):
        g.verify()


def test_verifier_catches_unknown_op():
    g = _mlp_graph()
    _node(g, "Relu").op_type = "NoSuchOp"
    g.verify()  # the IR's invariants hold; the op is the ops layer's business
    with pytest.raises(IRError, match="'NoSuchOp'.*'Relu'"):
        ops.verify(g)


def test_verifier_catches_inconsistent_initializer():
    g = _mlp_graph()
    g.value("w").const = None
    with pytest.raises(IRError, match="initializer 'w' is inconsistent"):
        g.verify()
