"""Issue 23: big but legal graphs. Graph edits are constant time (graph-output membership,
node removal, "is this node still in the graph"), so passes stay linear in nodes; what stays
superlinear (onnxruntime's session setup) is behind the node cap IRKIT_MAX_NODES, refused in
one line before anything is converted."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

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


# onnxruntime is left out: the CLI group quiets its logger up front, and its import is tens
# of milliseconds once numpy is in; onnx's is most of a second
REFUSED_UNLOADED = (
    "import sys\n"
    "from irkit.cli import main\n"
    "try:\n"
    "    main(sys.argv[1:], prog_name='irkit')\n"
    "except SystemExit as e:\n"
    "    print('rc', e.code, 'loaded', [m for m in ('onnx', 'torch') if m in sys.modules])\n")


@pytest.mark.parametrize("args", [["inspect", "m.onnx"], ["export", "m.onnx", "-o", "e.onnx"],
                                  ["grad", "m.onnx", "--of", "y", "--wrt", "W", "-o", "g.onnx"],
                                  ["optimize", "m.onnx", "-o", "o.onnx"],
                                  ["train", "m.onnx", "--data", "iris", "-o", "t.onnx"],
                                  ["predict", "m.onnx", "--data", "x.csv"],
                                  ["evaluate", "m.onnx", "--data", "x.csv"]])
def test_the_node_cap_refuses_before_onnx_is_imported(tmp_path, args):
    """The refusal came after `import onnx` (most of its 1.1 s): the count is read from the
    protobuf bytes first (onnx_io._read), for every command that reads a model."""
    onnx.save(chain("relu", 300), str(tmp_path / "m.onnx"))
    (tmp_path / "x.csv").write_text("a,b,c,d\n1,2,3,4\n")
    p = subprocess.run([sys.executable, "-c", REFUSED_UNLOADED, *args], cwd=tmp_path,
                       capture_output=True, text=True, timeout=60,
                       env={**os.environ, "IRKIT_MAX_NODES": "200"})
    assert "301 nodes" in p.stderr and "IRKIT_MAX_NODES" in p.stderr, p.stderr
    assert "rc 1 loaded []" in p.stdout, p.stdout


def test_the_node_count_from_the_bytes_is_onnx_s():
    from irkit.onnx_io._read import node_count
    for kind, n in (("relu", 0), ("relu", 17), ("add", 300)):
        model = chain(kind, n)
        model.graph.node[0].name = "n" * 200 if n else ""  # a long field (2-byte length)
        assert node_count(model.SerializeToString()) == len(model.graph.node)
    assert node_count(b"\x3a\xff") is None  # a truncated graph field: onnx's parser says so


def test_the_count_of_damaged_bytes_is_none_or_onnx_s():
    """Mutated bytes: where onnx parses them, the count from the bytes is its count (or none,
    and onnx's parser speaks); a wrong count would refuse or admit the wrong graph."""
    from irkit.onnx_io._read import node_count
    data = bytearray(chain("add", 20).SerializeToString())
    rng = np.random.default_rng(23)
    for _ in range(300):
        mutated = bytearray(data)
        for pos in rng.integers(0, len(data), rng.integers(1, 4)):
            mutated[pos] = rng.integers(0, 256)
        try:
            parsed = onnx.ModelProto.FromString(bytes(mutated))
        except Exception:  # protobuf's DecodeError: not a model, whatever the count says
            continue
        count = node_count(bytes(mutated))
        assert count in (None, len(parsed.graph.node))
