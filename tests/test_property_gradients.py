"""Property-based gradient checks: random composite graphs, irkit against torch autograd.

Hypothesis draws a program: 1-2 float inputs, then 2-6 steps, each an op of the curated list
applied to an earlier value (the latest, or any: a DAG), with random shapes, broadcasting
partners, axes, keepdims, perms and reshape targets. It runs as an irkit graph and as torch
tensors, with the loss `sum_v sum(v * W_v)` over the values nothing else reads. irkit's loss
and gradients for every input equal torch's on the numpy reference runtime and on onnxruntime
(float32 where an op lacks an ORT float64 kernel, as the op table records); Hessian-vector
products equal torch's double backward. Unary and binary ops (irkit call and torch expression)
come from the op table (`gradient_cases.CASES`); inputs that must stay in an op's domain get a
smooth guard (`Exp(Tanh(x))` before Log, Sqrt, divisors...), the same on both sides.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from conftest import reference_outputs
from gradient_cases import CASES, F32, K, X
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_ops_gradients import _as_outputs, _numpy

from irkit import ops, passes
from irkit.ir import Graph, Value

torch = pytest.importorskip("torch")

SETTINGS = dict(deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
MAX_RANK, MAX_SIZE = 4, 96


# ---- the curated ops --------------------------------------------------------------------------
@dataclass(frozen=True)
class Recipe:
    """One op of the random programs: its irkit call, its torch expression (both take the same
    positional values and keyword attributes) and a guard name per input (or None)."""

    ir: Callable[..., Value]
    pt: Callable[..., Any]
    guards: tuple[str | None, ...] = ()


# smooth maps into an op's domain, (irkit, torch); the same expression on both sides
GUARDS: dict[str, tuple[Callable, Callable]] = {
    # keeps Exp, Sinh, Cosh and exponents from overflowing: (-1, 1)
    "bounded": (ops.Tanh, torch.tanh),
    # Log, Sqrt, Reciprocal, divisors, Pow bases, products, norms: (0.37, 2.72), never 0
    "positive": (lambda x: ops.Exp(ops.Tanh(x)), lambda x: torch.exp(torch.tanh(x))),
    # Tan, Asin, Acos, Atanh: (-0.75, 0.75)
    "unit": (lambda x: ops.Mul(ops.Tanh(x), 0.75), lambda x: torch.tanh(x) * 0.75),
    # Acosh: (1.37, 3.72)
    "above_one": (lambda x: ops.Add(ops.Exp(ops.Tanh(x)), 1.0),
                  lambda x: torch.exp(torch.tanh(x)) + 1.0),
}


ROWS = {c.id: c for c in reversed(CASES)}  # the first row of each id


def from_table(row_id: str, *guards: str | None) -> Recipe:
    """A table row as a recipe: its X inputs come from the program, its K constants stay."""
    c = ROWS[row_id]
    n_x = sum(isinstance(a, X) for a in c.args)
    assert all(isinstance(a, X) for a in c.args[:n_x]), f"{row_id}: X inputs must come first"
    assert all(isinstance(a, K) for a in c.args[n_x:]), f"{row_id}: only constants after X"
    consts = [a.value for a in c.args[n_x:]]
    op = getattr(ops, c.op)
    return Recipe(lambda *xs: op(*xs, *consts, **c.attrs), c.torch, guards)


UNARY = {name: from_table(name, guard) for name, guard in {
    "Neg": None, "Exp": "bounded", "Log": "positive", "Sqrt": "positive",
    "Reciprocal": "positive", "Abs": None, "Relu": None, "LeakyRelu-alpha": None,
    "Sigmoid": None, "Tanh": None, "Softplus": None, "Softsign": None, "Sin": None, "Cos": None,
    "Erf": None, "Elu-alpha": None, "Tan": "unit", "Asin": "unit", "Acos": "unit", "Atan": None,
    "Sinh": "bounded", "Cosh": "bounded", "Asinh": None, "Acosh": "above_one", "Atanh": "unit",
    "Selu": None, "Celu-alpha": None, "HardSigmoid": None, "HardSwish": None,
    "ThresholdedRelu": None, "Clip": None, "Identity": None, "Dropout-inference": None,
}.items()}
# ties (Max of equal values, exact zeros after Relu) share the gradient evenly on both sides
BINARY = {
    "Add": from_table("Add"), "Sub": from_table("Sub-bcast"), "Mul": from_table("Mul"),
    "Div": from_table("Div", None, "positive"), "Pow": from_table("Pow", "positive", "bounded"),
    "Max": from_table("Max"), "Min": Recipe(ops.Min, torch.minimum),
}


def _torch_prod(x, dims):
    for d in sorted(dims, reverse=True):
        x = x.prod(d, keepdim=True)
    return x


def _reduction(name: str, kept: Callable, guard: str | None = None) -> Recipe:
    """An ONNX reduction over `axes` (None: all) with `keepdims`, and torch's from its
    keepdim=True form `kept(x, dims)`."""
    op = getattr(ops, name)

    def ir(x, axes, keepdims):
        if name == "ReduceSum":  # axes an input since opset 13
            return op(x, None if axes is None else np.array(axes, np.int64), keepdims=keepdims)
        return op(x, axes=None if axes is None else list(axes), keepdims=keepdims)

    def pt(x, axes, keepdims):
        dims = tuple(range(x.dim())) if axes is None else tuple(a % x.dim() for a in axes)
        y = kept(x, dims)
        return y if keepdims else y.squeeze(dims)
    return Recipe(ir, pt, (guard,))


REDUCE = {name: _reduction(name, *rest) for name, *rest in [
    ("ReduceSum", lambda x, d: x.sum(d, keepdim=True)),
    ("ReduceMean", lambda x, d: x.mean(d, keepdim=True)),
    ("ReduceMax", lambda x, d: x.amax(d, keepdim=True)),
    ("ReduceMin", lambda x, d: x.amin(d, keepdim=True)),
    ("ReduceProd", _torch_prod, "positive"),
    ("ReduceSumSquare", lambda x, d: (x * x).sum(d, keepdim=True)),
    ("ReduceL1", lambda x, d: x.abs().sum(d, keepdim=True)),
    ("ReduceL2", lambda x, d: (x * x).sum(d, keepdim=True).sqrt(), "positive"),
    ("ReduceLogSum", lambda x, d: x.sum(d, keepdim=True).log(), "positive"),
    ("ReduceLogSumExp", lambda x, d: x.logsumexp(d, keepdim=True)),
]}


def _torch_gemm(a, b, c=None, *, transA, transB, alpha, beta):
    y = alpha * ((a.T if transA else a) @ (b.T if transB else b))
    return y if c is None else y + beta * c


OTHER = {
    "Softmax": Recipe(lambda x, axis: ops.Softmax(x, axis=axis),
                      lambda x, axis: torch.softmax(x, axis)),
    "LogSoftmax": Recipe(lambda x, axis: ops.LogSoftmax(x, axis=axis),
                         lambda x, axis: torch.log_softmax(x, axis)),
    "Transpose": Recipe(
        lambda x, perm: ops.Transpose(x, perm=None if perm is None else list(perm)),
        lambda x, perm: x.permute(*(reversed(range(x.dim())) if perm is None else perm))),
    "Reshape": Recipe(lambda x, shape: ops.Reshape(x, np.array(shape, np.int64)),
                      lambda x, shape: x.reshape(shape)),
    "Flatten": Recipe(lambda x, axis: ops.Flatten(x, axis=axis),
                      lambda x, axis: x.reshape(int(np.prod(x.shape[:axis])), -1)),
    "MatMul": Recipe(ops.MatMul, torch.matmul),
    "Gemm": Recipe(ops.Gemm, _torch_gemm),
    "Concat": Recipe(lambda *xs, axis: ops.Concat(*xs, axis=axis),
                     lambda *xs, axis: torch.cat(xs, axis)),
}
RECIPES: dict[str, Recipe] = {**UNARY, **BINARY, **REDUCE, **OTHER}
# ops of the table that onnxruntime's CPU provider runs only in float32
ORT_FLOAT32_ONLY = {c.op for c in CASES if c.ort_dtype == F32}


def apply(recipe: Recipe, side: int, args: list, attrs: dict) -> Any:
    """The recipe on irkit Values (side 0) or torch tensors (side 1), inputs guarded."""
    guards = recipe.guards + (None,) * (len(args) - len(recipe.guards))
    args = [a if g is None else GUARDS[g][side](a) for a, g in zip(args, guards)]
    return (recipe.ir, recipe.pt)[side](*args, **attrs)


# ---- programs ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Leaf:
    """A float graph input (differentiated)."""

    shape: tuple[int, ...]


@dataclass(frozen=True)
class Step:
    """`op` applied to earlier entries `args`, with attributes `attrs` (name, value) pairs."""

    op: str
    args: tuple[int, ...]
    attrs: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class Program:
    entries: tuple[Leaf | Step, ...]
    seed: int

    def sinks(self) -> list[int]:
        """Entries nothing else reads: the loss sums over them."""
        used = {a for e in self.entries if isinstance(e, Step) for a in e.args}
        return [i for i in range(len(self.entries)) if i not in used]


class _Drawing:
    """A program under construction; each step runs on torch dummies (`probes`) to learn its
    shape (and to fail at once if the drawn operands do not fit)."""

    def __init__(self, draw) -> None:
        self.draw, self.entries, self.shapes, self.probes = draw, [], [], []

    def leaf(self, shape: tuple[int, ...]) -> int:
        self.entries.append(Leaf(tuple(shape)))
        self.shapes.append(tuple(shape))
        self.probes.append(torch.full(shape, 0.5, dtype=torch.float64))
        return len(self.entries) - 1

    def step(self, op: str, args: tuple[int, ...], **attrs: Any) -> None:
        out = apply(RECIPES[op], 1, [self.probes[a] for a in args], attrs)
        self.entries.append(Step(op, args, tuple(attrs.items())))
        self.shapes.append(tuple(out.shape))
        self.probes.append(out)


dims = st.integers(1, 4)
shapes = st.lists(dims, min_size=1, max_size=3).map(tuple)


def pick(p: _Drawing, options):
    """One of `options`, about uniformly: hypothesis favours small and boundary integers (and
    sampled_from the first options), so the drawn integer is scrambled (Knuth's multiplicative
    hash) first; shrinking still moves towards options[0]."""
    options = list(options)
    return options[(p.draw(st.integers(0, 2**32 - 1)) * 2654435761 % 2**32 >> 8) % len(options)]


def _size(shape) -> int:
    return int(np.prod(shape, dtype=np.int64))


def _broadcasts(a, b) -> bool:
    try:
        out = np.broadcast_shapes(a, b)
    except ValueError:
        return False
    return len(out) <= MAX_RANK and _size(out) <= MAX_SIZE


def draw_binary(p: _Drawing, op: str, x: int) -> None:
    shape = p.shapes[x]
    partners = [i for i, s in enumerate(p.shapes) if _broadcasts(shape, s)]
    if p.draw(st.booleans()):  # an existing value: a DAG (x itself included)
        other = pick(p, partners)
    else:  # a new input that broadcasts against x: dims set to 1, leading dims dropped/added
        dims_ = [1 if p.draw(st.booleans()) else d for d in shape]
        dims_ = dims_[p.draw(st.integers(0, len(dims_))):]
        if len(shape) < MAX_RANK and _size(shape) * 2 <= MAX_SIZE and p.draw(st.booleans()):
            dims_ = [2] + [*([1] * (len(shape) - len(dims_))), *dims_]
        other = p.leaf(tuple(dims_))
    p.step(op, (other, x) if p.draw(st.booleans()) else (x, other))


def draw_reduce(p: _Drawing, op: str, x: int) -> None:
    rank = len(p.shapes[x])
    axes = p.draw(st.none() | st.lists(st.integers(0, rank - 1), min_size=1, max_size=rank,
                                       unique=True))
    if axes is not None:  # sometimes spelled negative
        axes = tuple(a - rank if p.draw(st.booleans()) else a for a in axes)
    p.step(op, (x,), axes=axes, keepdims=p.draw(st.sampled_from([0, 1])))


def draw_softmax(p: _Drawing, op: str, x: int) -> None:
    rank = len(p.shapes[x])
    p.step(op, (x,), axis=p.draw(st.integers(-rank, rank - 1)))


def draw_transpose(p: _Drawing, op: str, x: int) -> None:
    rank = len(p.shapes[x])
    p.step(op, (x,), perm=p.draw(st.none() | st.permutations(range(rank)).map(tuple)))


def _factorizations(n: int, rank: int) -> list[tuple[int, ...]]:
    if rank == 1:
        return [(n,)]
    return [(d, *rest) for d in range(1, n + 1) if n % d == 0
            for rest in _factorizations(n // d, rank - 1)]


def draw_reshape(p: _Drawing, op: str, x: int) -> None:
    n = _size(p.shapes[x])
    target = list(pick(p, [s for r in range(1, MAX_RANK) for s in _factorizations(n, r)]))
    if p.draw(st.booleans()):  # let Reshape infer one dim
        target[p.draw(st.integers(0, len(target) - 1))] = -1
    p.step(op, (x,), shape=tuple(target))


def draw_flatten(p: _Drawing, op: str, x: int) -> None:
    rank = len(p.shapes[x])
    axis = p.draw(st.integers(0, rank))
    p.step(op, (x,), axis=axis - rank if axis and p.draw(st.booleans()) else axis)


def draw_matmul(p: _Drawing, op: str, x: int) -> None:
    shape = p.shapes[x]
    m = p.draw(dims)
    if len(shape) >= 2 and p.draw(st.booleans()):  # W @ x, W (m, k) or (k,)
        k = shape[-2]
        p.step(op, (p.leaf(p.draw(st.sampled_from([(m, k), (k,)]))), x))
        return
    k = shape[-1]
    options = [(k,), (k, m)]
    if 2 <= len(shape) < MAX_RANK and _size(shape) * 2 <= MAX_SIZE:  # batched, broadcast
        options.append((2 if len(shape) == 2 else shape[-3], k, m))
    p.step(op, (x, p.leaf(pick(p, options))))


def draw_gemm(p: _Drawing, op: str, x: int) -> None:
    trans_a, trans_b = p.draw(st.sampled_from([0, 1])), p.draw(st.sampled_from([0, 1]))
    rows, inner = p.shapes[x][::-1] if trans_a else p.shapes[x]
    m = p.draw(dims)
    b = p.leaf((m, inner) if trans_b else (inner, m))
    c_shape = pick(p, [None, (), (m,), (1, m), (rows, 1), (rows, m)])
    args = (x, b) if c_shape is None else (x, b, p.leaf(c_shape))
    p.step(op, args, transA=trans_a, transB=trans_b, alpha=pick(p, [1.0, 0.5, -2.0]),
           beta=pick(p, [1.0, 0.25, 3.0]))


def draw_concat(p: _Drawing, op: str, x: int) -> None:
    shape = p.shapes[x]
    axis = p.draw(st.integers(-len(shape), len(shape) - 1))
    other = list(shape)
    other[axis] = p.draw(st.integers(1, 2))
    y = p.leaf(tuple(other))
    p.step(op, (y, x) if p.draw(st.booleans()) else (x, y), axis=axis)


# op -> (how its step is drawn, the least rank of its operand)
KINDS: dict[str, tuple[Callable, int]] = {
    **{op: (lambda p, op, x: p.step(op, (x,)), 0) for op in UNARY},
    **{op: (draw_binary, 0) for op in BINARY},
    **{op: (draw_reduce, 1) for op in REDUCE}, "Softmax": (draw_softmax, 1),
    "LogSoftmax": (draw_softmax, 1), "Transpose": (draw_transpose, 2),
    "Reshape": (draw_reshape, 0), "Flatten": (draw_flatten, 1), "MatMul": (draw_matmul, 1),
    "Gemm": (draw_gemm, 2), "Concat": (draw_concat, 1),
}


def _applies(op: str, shape: tuple[int, ...]) -> bool:
    if op == "Gemm":
        return len(shape) == 2
    if op == "Concat" and _size(shape) * 2 > MAX_SIZE:  # keep sizes small
        return False
    return len(shape) >= KINDS[op][1]


@st.composite
def programs(draw, max_steps: int = 6) -> Program:
    """1-2 inputs, then 2-`max_steps` steps: an op (about uniform over RECIPES), applied to the
    latest value it applies to, or (half the time) to any earlier one."""
    p = _Drawing(draw)
    p.leaf(draw(shapes))
    if draw(st.booleans()):
        p.leaf(draw(shapes))
    for _ in range(pick(p, range(2, max_steps + 1))):
        op = pick(p, [op for op in KINDS if any(_applies(op, s) for s in p.shapes)])
        fits = [i for i, s in enumerate(p.shapes) if _applies(op, s)]
        x = fits[-1] if p.draw(st.booleans()) else pick(p, fits)
        KINDS[op][0](p, op, x)
    return Program(tuple(p.entries), draw(st.integers(0, 2**16)))


# ---- running a program ------------------------------------------------------------------------
def _data(program: Program) -> tuple[dict[str, np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """Feeds, the loss weights W_v (per sink) and the Hessian-vector directions (per input)."""
    rng = np.random.default_rng(program.seed)
    leaves = [(i, e.shape) for i, e in enumerate(program.entries) if isinstance(e, Leaf)]
    feeds = {f"x{i}": rng.standard_normal(s) for i, s in leaves}
    shapes_ = _torch_values(program, feeds)[1]
    weights = [_float32_exact(rng.standard_normal(shapes_[i])) for i in program.sinks()]
    us = [_float32_exact(rng.standard_normal(s)) for _, s in leaves]
    return feeds, weights, us


def _float32_exact(a: np.ndarray) -> np.ndarray:
    """onnxruntime's MatMulScaleFusion folds `MatMul(a, b) * c` (c a scalar constant) into
    FusedMatMul with a float32 alpha=c: constants must be float32-exact for float64 results."""
    return a.astype(np.float32).astype(np.float64)


def _torch_values(program: Program, feeds: dict[str, np.ndarray]):
    """Every entry's torch tensor (leaves require grad), and their shapes."""
    values, leaves = [], []
    for i, e in enumerate(program.entries):
        if isinstance(e, Leaf):
            t = torch.tensor(feeds[f"x{i}"], requires_grad=True)
            leaves.append(t)
        else:
            t = apply(RECIPES[e.op], 1, [values[a] for a in e.args], dict(e.attrs))
        values.append(t)
    return values, [tuple(v.shape) for v in values], leaves


def _weighted_sum(terms, scale, side: int):
    """sum_i sum(terms_i * scale_i) in irkit (side 0) or torch (side 1)."""
    pairs = list(zip(terms, scale, strict=True))
    if side == 0:
        return functools.reduce(ops.Add, [ops.ReduceSum(ops.Mul(
            v, v.graph.constant(w.astype(v.dtype))), keepdims=0) for v, w in pairs])
    return sum((v * torch.tensor(w)).sum() for v, w in pairs)


def build(program: Program, dtype=np.float64,
          second_order: bool = False) -> tuple[Graph, dict[str, np.ndarray]]:
    """The irkit graph, outputs [loss, *d loss/d inputs] (+ [s, *d s/d inputs]), and feeds."""
    feeds, weights, us = _data(program)
    graph = Graph("random_program")
    values: list[Value] = []
    for i, e in enumerate(program.entries):
        if isinstance(e, Leaf):
            values.append(graph.add_input(f"x{i}", dtype, e.shape))
        else:
            values.append(apply(RECIPES[e.op], 0, [values[a] for a in e.args], dict(e.attrs)))
    inputs = list(graph.inputs)
    loss = _weighted_sum([values[i] for i in program.sinks()], weights, 0)
    grads = passes.gradients(graph, loss, inputs)
    outs = [loss, *grads]
    if second_order:
        s = _weighted_sum(grads, us, 0)
        outs += [s, *passes.gradients(graph, s, inputs)]
    graph.outputs = _as_outputs(graph, outs)
    graph.verify()
    return graph, {k: v.astype(dtype) for k, v in feeds.items()}


def torch_results(program: Program, second_order: bool = False) -> list[np.ndarray]:
    """[loss, *grads] (+ [s, *Hu]) from torch autograd, in float64."""
    feeds, weights, us = _data(program)
    values, _, leaves = _torch_values(program, feeds)
    loss = _weighted_sum([values[i] for i in program.sinks()], weights, 1)
    grads = torch.autograd.grad(loss, leaves, create_graph=second_order, allow_unused=True)
    grads = [torch.zeros_like(t) if g is None else g for t, g in zip(leaves, grads)]
    out = [loss, *grads]
    if second_order:
        s = _weighted_sum(grads, us, 1)
        hs = [None] * len(leaves)
        if s.requires_grad:  # else every gradient is constant: the Hessian is zero
            hs = torch.autograd.grad(s, leaves, allow_unused=True)
        out += [s, *(torch.zeros_like(t) if h is None else h for t, h in zip(leaves, hs))]
    return [_numpy(t) for t in out]


def assert_close(got: list[np.ndarray], want: list[np.ndarray], rtol: float, atol: float,
                 what: str, program: Program) -> None:
    """Each output within rtol, and atol scaled by the largest magnitude of that output."""
    assert len(got) == len(want)
    for i, (mine, theirs) in enumerate(zip(got, want)):
        assert mine.shape == theirs.shape, f"{what}: output {i} shape {mine.shape} != " \
            f"{theirs.shape}\n{program}"
        scale = max(1.0, float(np.max(np.abs(theirs), initial=0.0)))
        np.testing.assert_allclose(mine, theirs, rtol=rtol, atol=atol * scale,
                                   err_msg=f"{what}: output {i} (0 loss, then gradients)\n"
                                           f"{program}")


def _ort_dtype(graph: Graph):
    """float32 when some node has no float64 kernel in onnxruntime's CPU provider."""
    return F32 if any(n.op_type in ORT_FLOAT32_ONLY for n in graph.nodes) else np.float64


# ---- the properties ---------------------------------------------------------------------------
@settings(max_examples=40, **SETTINGS)
@given(programs())
def test_random_graph_gradients_match_torch(program: Program) -> None:
    from irkit.runtimes.onnxruntime import OrtGraph

    want = torch_results(program)
    graph, feeds = build(program)
    got = reference_outputs(graph, feeds)
    assert_close(got, want, 1e-8, 1e-10, "reference runtime vs torch", program)
    dtype = _ort_dtype(graph)
    if dtype != np.float64:
        graph, feeds = build(program, dtype)
    got = OrtGraph(graph)(feeds)
    tol = (1e-8, 1e-10) if dtype == np.float64 else (2e-3, 2e-4)
    assert_close([g.astype(np.float64) for g in got], want, *tol,
                 f"onnxruntime ({np.dtype(dtype).name}) vs torch", program)


@settings(max_examples=20, **SETTINGS)
@given(programs(max_steps=4))
def test_random_graph_hessian_vector_products_match_torch(program: Program) -> None:
    want = torch_results(program, second_order=True)
    got = reference_outputs(*build(program, second_order=True))
    assert_close(got, want, 1e-7, 1e-9, "second order: reference runtime vs torch", program)


# ---- the generator itself ---------------------------------------------------------------------
def test_every_curated_op_is_drawn() -> None:
    """The strategy reaches every op of the curated list (with many more examples than the
    properties run, so a typo in a kind's applicability shows here, not as missing coverage)."""
    seen: set[str] = set()

    @settings(max_examples=1500, **SETTINGS)
    @given(programs())
    def collect(program: Program) -> None:
        seen.update(e.op for e in program.entries if isinstance(e, Step))

    collect()
    assert not set(RECIPES) - seen, f"never drawn: {sorted(set(RECIPES) - seen)}"

