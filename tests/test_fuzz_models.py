"""Seeded fuzzing of model files (issue 9): mutated real models and hand-crafted hostile ones
through the `irkit` commands, in process (inspect, export, grad; a few train on iris) and, for
a sample, as subprocesses of the real CLI under time and memory limits.

What must hold: no traceback, no "unexpected" error, no hang, every failure one line
`irkit: error: ...`, and every file written passes onnx.checker's full check.
Set IRKIT_FUZZ_REPORT=1 to print the figures (runs, outcomes by kind, time).
"""

from __future__ import annotations

import collections
import os
import re
import resource
import signal
import subprocess
import time

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from conftest import irkit_command
from onnx import TensorProto, helper, numpy_helper

from irkit.cli import main

SEED = int(os.environ.get("IRKIT_FUZZ_SEED", "20261130"))  # fixed in CI; vary to explore
MUTANTS = 2000           # mutated models through inspect/export/grad, in process
TRAINED = 12             # of which mutated iris models that load are also trained
SUBPROCESSES = 20        # sample run through the real CLI
CASE_SECONDS = 10        # a case slower than this is a hang
DIM_VALUES = [-(2**40), -1, 0, 1, 2, 3, 7, 64, 1 << 20, 2**40]
INT_VALUES = [-(2**62), -(2**31), -7, -1, 0, 1, 2, 3, 5, 2**31, 2**62]
OPSETS = [-1, 0, 1, 6, 7, 11, 12, 13, 16, 17, 18, 20, 21, 23, 99, 10**9]
IR_VERSIONS = [0, 1, 3, 7, 8, 9, 10, 11, 13, 99, 2**40]
ELEM_TYPES = [0, 1, 2, 3, 6, 7, 9, 10, 11, 13, 16, 17, 21, 23, 40, 99]
OP_TYPES = ["Relu", "Add", "Conv", "Reshape", "MaxPool", "Softmax", "Gemm", "MatMul",
            "Transpose", "Concat", "Slice", "Expand", "Tile", "ConstantOfShape", "Pad",
            "Gather", "Split", "Squeeze", "ReduceSum", "NoSuchOp", ""]
NASTY_NAMES = ["", "a,b", "x\r\x1b]0;t\x07", "\x9b31m", "../../etc/passwd", "n" * 3000]


class Hang(Exception):
    pass


# ---- base models -----------------------------------------------------------------------------
def _irkit_exports(folder) -> dict[str, bytes]:
    out = {}
    for recipe in ("iris_mlp", "digits_cnn"):
        path = folder / f"{recipe}.onnx"
        result = CliRunner().invoke(main, ["export", recipe, "-o", str(path)])
        assert result.exit_code == 0, result.output
        out[recipe] = path.read_bytes()
    return out


def _torch_exports(folder) -> dict[str, bytes]:
    torch = pytest.importorskip("torch")
    import warnings

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.conv = torch.nn.Conv2d(1, 2, 3, padding=1)
            self.fc = torch.nn.Linear(2 * 3 * 3, 3)

        def forward(self, x):
            h = torch.nn.functional.pad(x, (0, 1, 0, 1))
            h = torch.nn.functional.max_pool2d(torch.relu(self.conv(h)), 2)[:, :, :3, :3]
            return torch.softmax(self.fc(h.reshape(h.shape[0], -1)), dim=1)
    out = {}
    for fold in (True, False):
        path = folder / f"torch_fold{fold}.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(Net(), (torch.zeros(2, 1, 6, 6),), str(path), dynamo=False,
                              do_constant_folding=fold, opset_version=17,
                              input_names=["x"], output_names=["y"])
        out[path.stem] = path.read_bytes()
    return out


def _hand_crafted() -> dict[str, bytes]:
    """Bombs and traps that random mutation rarely finds."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    big = numpy_helper.from_array(np.array([4 * 10**8], np.int64), "big")
    cases = {
        "fold_bomb_expand": [helper.make_node("ConstantOfShape", ["big"], ["z"]),
                             helper.make_node("Shape", ["z"], ["s"]),
                             helper.make_node("Reshape", ["x", "s"], ["y"])],
        "range_bomb": [helper.make_node("Range", ["zero", "big1", "one"], ["r"]),
                       helper.make_node("Shape", ["r"], ["s"]),
                       helper.make_node("Expand", ["x", "s"], ["y"])],
        "tile_bomb": [helper.make_node("Tile", ["x", "reps"], ["y"])],
        "deep_chain": [helper.make_node("Relu", ["x" if i == 0 else f"h{i}"],
                                        [f"h{i + 1}" if i < 2999 else "y"]) for i in range(3000)],
    }
    inits = [big, numpy_helper.from_array(np.array(0, np.int64), "zero"),
             numpy_helper.from_array(np.array(10**12, np.int64), "big1"),
             numpy_helper.from_array(np.array(1, np.int64), "one"),
             numpy_helper.from_array(np.array([10**6, 10**6], np.int64), "reps")]
    out = {}
    for name, nodes in cases.items():
        used = {i for n in nodes for i in n.input}
        graph = helper.make_graph(nodes, name, [x], [y], [t for t in inits if t.name in used])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        out[name] = model.SerializeToString()
    return out


# ---- mutations -------------------------------------------------------------------------------
def _pick(rng, seq):
    return seq[int(rng.integers(len(seq)))]


def _tensor(m, rng):
    t = _pick(rng, list(m.graph.initializer) or [None])
    if t is None:
        return
    kind = _pick(rng, ["dims", "dtype", "raw_data"])
    if kind == "dims" and t.dims and rng.random() < 0.7:
        t.dims[int(rng.integers(len(t.dims)))] = _pick(rng, DIM_VALUES)
    elif kind == "dims":
        t.dims.append(_pick(rng, DIM_VALUES))
    elif kind == "dtype":
        t.data_type = _pick(rng, ELEM_TYPES)
    else:
        cut = int(rng.integers(0, len(t.raw_data) + 9))
        t.raw_data = (t.raw_data + b"\x7f" * 8)[:cut]


def _attribute(m, rng):
    n = _pick(rng, list(m.graph.node) or [None])
    if n is None:
        return
    attrs = list(n.attribute)
    kind = _pick(rng, ["add", "drop", "change"]) if attrs else "add"
    if kind == "add":
        name = _pick(rng, ["axis", "strides", "pads", "kernel_shape", "group", "perm",
                           "keepdims", "dilations", "axes", "to", "transB"])
        values = [_pick(rng, INT_VALUES) for _ in range(int(rng.integers(0, 5)))]
        n.attribute.append(helper.make_attribute(
            name, values if values and name.endswith("s") else _pick(rng, INT_VALUES)))
    elif kind == "drop":
        del n.attribute[int(rng.integers(len(attrs)))]
    else:
        a = _pick(rng, attrs)
        if a.ints:
            a.ints[int(rng.integers(len(a.ints)))] = _pick(rng, INT_VALUES)
        else:
            a.i = _pick(rng, INT_VALUES)


def _wiring(m, rng):
    """Rename a node input, change an op type, drop/duplicate/swap nodes or outputs."""
    g, nodes = m.graph, list(m.graph.node)
    kind = _pick(rng, ["input", "op_type", "drop", "dup", "swap", "drop_out", "dup_out"])
    if kind in ("drop_out", "dup_out") or not nodes:
        if g.output:
            g.output.append(g.output[0]) if kind == "dup_out" else g.output.pop()
        return
    i, j = int(rng.integers(len(nodes))), int(rng.integers(len(nodes)))
    if kind == "input" and nodes[i].input:
        names = [v.name for v in g.input] + [o for k in nodes for o in k.output] + ["", "zz"]
        nodes[i].input[int(rng.integers(len(nodes[i].input)))] = _pick(rng, names)
    elif kind == "op_type":
        nodes[i].op_type = _pick(rng, OP_TYPES)
    elif kind == "drop":
        del g.node[i]
    elif kind == "dup":
        g.node.append(nodes[i])
    elif kind == "swap":
        a, b = onnx.NodeProto(), onnx.NodeProto()
        a.CopyFrom(nodes[i])
        b.CopyFrom(nodes[j])
        g.node[i].CopyFrom(b)
        g.node[j].CopyFrom(a)


def _header(m, rng):
    """The opset, the IR version, or a declared input/output type or dim."""
    kind = _pick(rng, ["opset", "ir_version", "vi_type", "vi_dims"])
    if kind == "opset":
        m.opset_import[0].version = _pick(rng, OPSETS)
    elif kind == "ir_version":
        m.ir_version = _pick(rng, IR_VERSIONS)
    else:
        t = _pick(rng, [*m.graph.input, *m.graph.output]).type.tensor_type
        if kind == "vi_type":
            t.elem_type = _pick(rng, ELEM_TYPES)
        elif t.shape.dim:
            t.shape.dim[int(rng.integers(len(t.shape.dim)))].dim_value = _pick(rng, DIM_VALUES)


def _name(m, rng):
    g = m.graph
    _pick(rng, [*g.output, *g.input, *g.initializer, *g.node]).name = _pick(rng, NASTY_NAMES)


def _bomb(m, rng):
    """A computed input made of a ConstantOfShape of a (maybe huge) size, given to a node."""
    g = m.graph
    if not g.node:
        return
    n = _pick(rng, list(g.node))
    g.initializer.append(numpy_helper.from_array(np.array([_pick(rng, DIM_VALUES)], np.int64),
                                                 "fz_n"))
    g.node.insert(0, helper.make_node("ConstantOfShape", ["fz_n"], ["fz_z"],
                                      value=numpy_helper.from_array(np.array([1], np.int64))))
    g.node.insert(1, helper.make_node("ReduceSum", ["fz_z"], ["fz_s"], keepdims=1))
    n.input.append("fz_s")


MUTATORS = {"tensor": _tensor, "attribute": _attribute, "wiring": _wiring, "header": _header,
            "name": _name, "bomb": _bomb}


def _mutate_proto(m: onnx.ModelProto, rng) -> str:
    kind = _pick(rng, sorted(MUTATORS))
    MUTATORS[kind](m, rng)
    return kind


def mutants(bases: dict[str, bytes], count: int, rng):
    """(label, base name, bytes) for `count` mutants: bit flips and truncations of the bytes,
    or 1-3 structural mutations of the parsed proto."""
    names = sorted(bases)
    for _ in range(count):
        base = _pick(rng, names)
        data = bases[base]
        if rng.random() < 0.2:
            raw = bytearray(data)
            if rng.random() < 0.8:
                for _ in range(int(rng.integers(1, 9))):
                    raw[int(rng.integers(len(raw)))] ^= 1 << int(rng.integers(8))
                yield "bitflip", base, bytes(raw)
            else:
                yield "truncate", base, bytes(raw[:int(rng.integers(len(raw)))])
            continue
        m = onnx.ModelProto.FromString(data)
        kinds = [_mutate_proto(m, rng) for _ in range(int(rng.integers(1, 4)))]
        yield "+".join(kinds), base, m.SerializeToString()


# ---- running ---------------------------------------------------------------------------------
def _alarm(signum, frame):
    raise Hang()


def _grad_names(data: bytes) -> tuple[str, str]:
    try:
        m = onnx.ModelProto.FromString(data)
    except Exception:
        return "y", "x"
    of = m.graph.output[0].name if m.graph.output else "y"
    floats = [t.name for t in m.graph.initializer if t.data_type == TensorProto.FLOAT]
    wrt = floats[0] if floats else (m.graph.input[0].name if m.graph.input else "x")
    return of, wrt


def _classify(line: str, folder: str) -> str:
    text = re.sub(r"^\S+\.onnx: ", "", line.removeprefix("irkit: error: ").replace(folder, ""))
    table = [("not a valid ONNX", "onnx node check / shape inference"),
             ("fails onnx's checker", "export: onnx checker"),
             ("not a readable ONNX", "unparseable file"), ("not UTF-8", "text not UTF-8"),
             ("graph outputs", "undefined graph output"), ("unsupported ops", "unsupported op"),
             ("folding", "import folding over its cap"), ("elements", "element cap"),
             ("raw_data", "tensor bytes vs dims"), ("values, but dims", "tensor bytes vs dims"),
             ("element type", "element type"), ("opset", "opset"), ("IR version", "IR version"),
             ("must be >", "attribute range"), ("twice", "duplicate name"),
             ("no outputs", "empty graph"), ("negative dimension", "negative dim"),
             ("which no node", "dangling input"), ("cycle", "cycle"), ("no graph output", "--of"),
             ("no input or initializer", "--wrt"), ("gradient", "no gradient"),
             ("out of range", "axis range"), ("shape", "shape"), ("Shape", "shape")]
    for words, kind in table:
        if words in text:
            return kind
    return "other: " + " ".join(re.sub(r"'[^']*'", "'…'", text).split()[:4])


def run_case(args: list[str], folder: str, outcomes: collections.Counter,
             problems: list[str], label: str) -> bool:
    """Run one CLI command in process; record its outcome; True if it succeeded."""
    signal.alarm(CASE_SECONDS)
    try:
        result = CliRunner().invoke(main, args)
    except Hang:
        problems.append(f"{label}: {args[0]} hung")
        outcomes["HANG"] += 1
        return False
    finally:
        signal.alarm(0)
    if isinstance(result.exception, Hang):
        problems.append(f"{label}: {args[0]} hung")
        outcomes["HANG"] += 1
        return False
    lines = result.stderr.splitlines()
    if result.exit_code == 0:
        outcomes[f"{args[0]}: ok"] += 1
        return True
    bad = (not isinstance(result.exception, SystemExit) or len(lines) != 1
           or not lines[0].startswith("irkit: error: ") or "unexpected" in lines[0]
           or "Traceback" in result.output)
    if bad:
        problems.append(f"{label}: {args[0]}: {result.exception!r} {lines[:3]}")
        outcomes["BAD ERROR"] += 1
    else:
        outcomes[f"{args[0]}: {_classify(lines[0], folder)}"] += 1
    return False


def check_written(path: str, problems: list[str], label: str) -> None:
    if os.path.exists(path):
        try:
            onnx.checker.check_model(onnx.load(path), full_check=True)
        except Exception as e:
            problems.append(f"{label}: wrote an invalid model: {str(e).splitlines()[0]}")
        os.unlink(path)


# ---- the tests -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz_bases")
    found = _irkit_exports(folder)
    found.update(_torch_exports(folder))
    return found


@pytest.fixture(scope="module")
def fuzz_cases(bases):
    rng = np.random.default_rng(SEED)
    cases = list(mutants(bases, MUTANTS, rng))
    cases += [("hand-crafted", name, data) for name, data in sorted(_hand_crafted().items())]
    return cases


def test_fuzz_in_process(fuzz_cases, tmp_path):
    folder = str(tmp_path)
    outcomes: collections.Counter = collections.Counter()
    problems: list[str] = []
    previous = signal.signal(signal.SIGALRM, _alarm)
    start, trained = time.perf_counter(), 0
    try:
        for i, (kind, base, data) in enumerate(fuzz_cases):
            label = f"case {i} ({base}, {kind})"
            model, out = os.path.join(folder, "m.onnx"), os.path.join(folder, "out.onnx")
            with open(model, "wb") as f:
                f.write(data)
            seen = len(problems)
            loaded = run_case(["inspect", model], folder, outcomes, problems, label)
            run_case(["export", model, "-o", out], folder, outcomes, problems, label)
            check_written(out, problems, label)
            if not loaded:
                _keep_failing(problems[seen:], data, i)
                continue
            of, wrt = _grad_names(data)
            run_case(["grad", model, "--of", of, "--wrt", wrt, "-o", out], folder, outcomes,
                     problems, label)
            check_written(out, problems, label)
            if base == "iris_mlp" and trained < TRAINED and kind != "hand-crafted":
                trained += 1
                run_case(["train", model, "--data", "iris", "--epochs", "1", "-o", out],
                         folder, outcomes, problems, label)
                check_written(out, problems, label)
            _keep_failing(problems[seen:], data, i)
    finally:
        signal.signal(signal.SIGALRM, previous)
    _report("in process", len(fuzz_cases), outcomes, time.perf_counter() - start)
    assert trained > 0  # some mutated iris models still load, and train
    assert not problems, "\n".join(problems[:20])


def _keep_failing(new_problems: list[str], data: bytes, index: int) -> None:
    """With IRKIT_FUZZ_DUMP=DIR, the model of a case with problems is kept there."""
    dump = os.environ.get("IRKIT_FUZZ_DUMP")
    if dump and new_problems:
        with open(os.path.join(dump, f"case{index}.onnx"), "wb") as f:
            f.write(data)


def _limits():
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))


def test_fuzz_subprocess_sample(fuzz_cases, tmp_path):
    """A sample through the real console script, each under 20 s and 1 GiB of address space."""
    command = irkit_command()
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    rng = np.random.default_rng(SEED + 1)
    hand = [c for c in fuzz_cases if c[0] == "hand-crafted"]
    sample = hand + [fuzz_cases[int(i)] for i in
                     rng.choice(len(fuzz_cases) - len(hand), SUBPROCESSES - len(hand), False)]
    outcomes: collections.Counter = collections.Counter()
    problems: list[str] = []
    start = time.perf_counter()
    for i, (kind, base, data) in enumerate(sample):
        model, out = tmp_path / f"s{i}.onnx", tmp_path / f"s{i}_out.onnx"
        model.write_bytes(data)
        of, wrt = _grad_names(data)
        try:
            done = subprocess.run([*command, "grad", str(model), "--of", of, "--wrt", wrt,
                                   "-o", str(out)], capture_output=True, text=True, timeout=20,
                                  preexec_fn=_limits, env=env, cwd=tmp_path)
        except subprocess.TimeoutExpired:
            problems.append(f"sample {i} ({base}, {kind}): hung")
            continue
        lines = done.stderr.splitlines()
        if done.returncode == 0:
            outcomes["grad: ok"] += 1
            check_written(str(out), problems, f"sample {i}")
        elif done.returncode == 1 and len(lines) == 1 and lines[0].startswith("irkit: error: ") \
                and "unexpected" not in lines[0]:
            outcomes[f"grad: {_classify(lines[0], str(tmp_path))}"] += 1
        else:
            problems.append(f"sample {i} ({base}, {kind}): exit {done.returncode}, {lines[-3:]}")
    _report("subprocess", len(sample), outcomes, time.perf_counter() - start)
    assert not problems, "\n".join(problems)


def _report(what: str, cases: int, outcomes: collections.Counter, seconds: float) -> None:
    if os.environ.get("IRKIT_FUZZ_REPORT"):
        print(f"\nfuzz {what}: {cases} models, {sum(outcomes.values())} runs, {seconds:.1f} s")
        for kind, count in sorted(outcomes.items(), key=lambda kv: -kv[1]):
            print(f"  {count:6d}  {kind}")
