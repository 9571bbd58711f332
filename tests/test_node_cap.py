"""Issue 23: big but legal graphs. Graph edits are constant time (graph-output membership,
node removal, "is this node still in the graph"), so passes stay linear in nodes; what stays
superlinear (onnxruntime's session setup) is behind the node cap IRKIT_MAX_NODES, refused in
one line before anything is converted."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx

from irkit.ir import Graph, ValueList
from irkit.ops import get_op
from tests.measured import one_line_error, run_irkit

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_node_count import chain  # noqa: E402


def test_value_list_membership_follows_every_edit():
    g = Graph("g")
    a, b, c = (g.add_input(n, np.float32, (1,)) for n in "abc")
    vl = ValueList([a, a])
    vl.remove(a)
    assert a in vl and b not in vl
    vl.append(b)
    vl[0] = c
    assert a not in vl and c in vl and b in vl
    vl.extend([a])
    del vl[1:]
    assert list(vl) == [c] and b not in vl and a not in vl
    vl += [b]
    assert vl.pop() is b and b not in vl
    g.outputs = [a, b]
    assert isinstance(g.outputs, ValueList) and b in g.outputs and c not in g.outputs


def test_removed_nodes_leave_the_graph_and_its_list():
    g = Graph("g")
    x = g.add_input("x", np.float32, (2,))
    relu = get_op("Relu")
    h = [x]
    for _ in range(4):
        h.append(relu(h[-1]))
    g.outputs = [h[2]]
    n3, n4 = h[4].producer, h[3].producer
    g.remove_node(n3)
    assert not g.holds(n3) and g.holds(n4)
    g.remove_node(n4)
    assert [n.op_type for n in g.nodes] == ["Relu", "Relu"]
    assert all(g.holds(n) for n in g.nodes)


def test_a_chain_over_the_node_cap_is_one_line(tmp_path):
    onnx.save(chain("relu", 300), str(tmp_path / "m.onnx"))
    for args in (["inspect", "m.onnx"], ["train", "m.onnx", "--data", "iris", "-o", "t.onnx"],
                 ["export", "m.onnx", "-o", "e.onnx"]):
        run = run_irkit(args, tmp_path, env={"IRKIT_MAX_NODES": "200"})
        assert one_line_error(run), run.stderr
        assert "301 nodes" in run.stderr and "IRKIT_MAX_NODES" in run.stderr
    assert not list(tmp_path.glob("[te].onnx"))
    run = run_irkit(["inspect", "m.onnx"], tmp_path, env={"IRKIT_MAX_NODES": "400"})
    assert run.rc == 0, run.stderr


def test_a_recipe_over_the_node_cap_is_one_line(tmp_path):
    layers = ", ".join('{ type = "dense", units = 2 }' for _ in range(30))
    (tmp_path / "deep.toml").write_text(f'[model]\nlayers = [{layers}]\n[data]\n'
                                        'dataset = "iris"\n')
    run = run_irkit(["train", "deep.toml", "-o", "t.onnx"], tmp_path,
                    env={"IRKIT_MAX_NODES": "20"})
    assert one_line_error(run), run.stderr
    assert "30 layers" in run.stderr
