"""What trains in a torch export by default: exactly torch's parameters (issue 18, item 3)."""

from __future__ import annotations

import numpy as np

from irkit import ops
from irkit.ir import Graph
from irkit.train.sources import choose_trainable


def test_a_one_unit_layers_bias_trains_and_elementwise_scalars_do_not():
    """MatMul then Add of a (1,) bias (dynamo's Linear(n, 1)) trains the bias; a (1,) or ()
    constant added to, multiplied with or raised against a computed value does not."""
    g = Graph("m")
    x = g.add_input("x", np.float32, ("N", 4))
    w = g.add_initializer("w", np.ones((4, 1), np.float32))
    b = g.add_initializer("b", np.zeros(1, np.float32))
    one = g.add_initializer("one", np.ones(1, np.float32))
    half = g.add_initializer("half", np.array(0.5, np.float32))
    three = g.add_initializer("three", np.array(3.0, np.float32))
    y = ops.Add(ops.MatMul(x, w), b)
    g.outputs.append(ops.Pow(ops.Mul(ops.Add(ops.Tanh(y), one), half), three))
    assert sorted(choose_trainable(g)) == ["b", "w"]


def test_a_token_concatenated_to_computed_values_trains():
    """ViT's class token: expanded to the batch and concatenated before the patches, it is a
    parameter; a float tensor concatenated only to constants is not."""
    g = Graph("m")
    x = g.add_input("x", np.float32, ("N", 3, 4))
    cls = g.add_initializer("cls", np.ones((1, 1, 4), np.float32))
    pad = g.add_initializer("pad", np.zeros((1, 1, 4), np.float32))
    rows = g.add_initializer("rows", np.zeros((1, 1, 4), np.float32))
    batch = ops.Slice(ops.Shape(x), np.array([0]), np.array([1]))
    shape = ops.Concat(batch, g.constant(np.array([1, 4])), axis=0)
    tokens = ops.Concat(ops.Expand(cls, shape), x, axis=1)
    fixed = ops.Concat(pad, rows, axis=1)
    g.outputs.append(ops.Add(tokens, ops.ReduceSum(fixed, np.array([1]), keepdims=1)))
    assert choose_trainable(g) == ["cls"]

# Which initializers of a torch export train (legacy and dynamo, the five models of
# tests/torch_models.py): tests/test_model_table.py, test_what_trains_is_exactly_torchs_parameters
