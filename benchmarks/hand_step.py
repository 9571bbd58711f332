"""A hand-written fused ONNX train step (fwd + bwd + SGD or Adam, loss and correct count) for
the MLP of bench_train_step.py, run the way irkit runs its own: state in two OrtValue sets
that ping-pong through two IOBindings made once, the loss and correct count bound to host
scalars, the batch bound from host memory.

    x -> Gemm -> Relu -> Gemm -> mean softmax cross-entropy

The Adam update is written per parameter the way PyTorch states it (the same arithmetic as
torch.optim.Adam and irkit's Adam), with the step count as float state.
"""

from __future__ import annotations  # noqa: I001  (irkit.runtimes installs from runtimes/)

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper
from step_peers import BETA1, BETA2, EPS, PARAMS, POOL, Config

from irkit.runtimes.onnxruntime import make_session, ortvalue

F32 = TensorProto.FLOAT


def _node(op: str, inputs: list[str], outputs: list[str], **attrs) -> onnx.NodeProto:
    return helper.make_node(op, inputs, outputs, **attrs)


def _forward_backward() -> list[onnx.NodeProto]:
    return [
        _node("Gemm", ["x", "W1", "b1"], ["z1"]), _node("Relu", ["z1"], ["h1"]),
        _node("Gemm", ["h1", "W2", "b2"], ["logits"]),
        _node("SoftmaxCrossEntropyLoss", ["logits", "y"], ["loss", "logp"], reduction="mean"),
        # d loss / d logits = (softmax - onehot(y)) / B
        _node("Exp", ["logp"], ["p"]),
        _node("OneHot", ["y", "depth", "off_on"], ["onehot"], axis=-1),
        _node("Sub", ["p", "onehot"], ["d0"]), _node("Div", ["d0", "batch"], ["dlogits"]),
        _node("Gemm", ["h1", "dlogits"], ["dW2"], transA=1),
        _node("ReduceSum", ["dlogits", "axis0"], ["db2"], keepdims=0),
        _node("Gemm", ["dlogits", "W2"], ["dh1"], transB=1),
        _node("Sign", ["h1"], ["mask"]), _node("Mul", ["dh1", "mask"], ["dz1"]),
        _node("Gemm", ["x", "dz1"], ["dW1"], transA=1),
        _node("ReduceSum", ["dz1", "axis0"], ["db1"], keepdims=0),
        # correct = number of samples whose largest logit is at their label
        _node("ArgMax", ["logits"], ["predicted"], axis=1, keepdims=0),
        _node("Equal", ["predicted", "y"], ["hit"]),
        _node("Cast", ["hit"], ["hit_f"], to=F32),
        _node("ReduceSum", ["hit_f"], ["correct"], keepdims=0)]


def _sgd(p: str) -> list[onnx.NodeProto]:
    """p' = p - lr dp"""
    return [_node("Mul", [f"d{p}", "lr"], [f"step_{p}"]),
            _node("Sub", [p, f"step_{p}"], [f"next_{p}"])]


def _adam_shared() -> list[onnx.NodeProto]:
    """t' = t + 1; step_size = lr / (1 - beta1^t'); sqrt_c2 = sqrt(1 - beta2^t')"""
    return [_node("Add", ["t", "one"], ["next_t"]),
            _node("Pow", ["beta1", "next_t"], ["b1t"]), _node("Sub", ["one", "b1t"], ["c1"]),
            _node("Div", ["lr", "c1"], ["step_size"]),
            _node("Pow", ["beta2", "next_t"], ["b2t"]), _node("Sub", ["one", "b2t"], ["c2"]),
            _node("Sqrt", ["c2"], ["sqrt_c2"])]


def _adam(p: str) -> list[onnx.NodeProto]:
    """m' = b1 m + (1-b1) g; v' = b2 v + (1-b2) g^2; p' = p - step_size m' / (sqrt(v')/sqrt_c2
    + eps)"""
    g = f"d{p}"
    return [_node("Mul", [f"m_{p}", "beta1"], [f"m1_{p}"]),
            _node("Mul", [g, "one_minus_beta1"], [f"m2_{p}"]),
            _node("Add", [f"m1_{p}", f"m2_{p}"], [f"next_m_{p}"]),
            _node("Mul", [f"v_{p}", "beta2"], [f"v1_{p}"]),
            _node("Mul", [g, g], [f"gg_{p}"]),
            _node("Mul", [f"gg_{p}", "one_minus_beta2"], [f"v2_{p}"]),
            _node("Add", [f"v1_{p}", f"v2_{p}"], [f"next_v_{p}"]),
            _node("Sqrt", [f"next_v_{p}"], [f"sv_{p}"]),
            _node("Div", [f"sv_{p}", "sqrt_c2"], [f"den1_{p}"]),
            _node("Add", [f"den1_{p}", "eps"], [f"den_{p}"]),
            _node("Div", [f"next_m_{p}", f"den_{p}"], [f"ratio_{p}"]),
            _node("Mul", [f"ratio_{p}", "step_size"], [f"step_{p}"]),
            _node("Sub", [p, f"step_{p}"], [f"next_{p}"])]


def state_shapes(cfg: Config) -> dict[str, list[int]]:
    """The state the step reads and writes (as `next_<name>`), with shapes."""
    d, h, c = cfg.features, cfg.hidden, cfg.classes
    shapes = {"W1": [d, h], "b1": [h], "W2": [h, c], "b2": [c]}
    if cfg.optimizer == "adam":
        shapes.update({f"{s}_{p}": shapes[p] for s in ("m", "v") for p in PARAMS})
        shapes["t"] = []
    return shapes


def _constants(cfg: Config) -> list[onnx.TensorProto]:
    i64 = TensorProto.INT64
    scalars = {"batch": cfg.batch, "lr": cfg.lr, "one": 1.0, "beta1": BETA1, "beta2": BETA2,
               "one_minus_beta1": 1 - BETA1, "one_minus_beta2": 1 - BETA2, "eps": EPS}
    return [helper.make_tensor("depth", i64, [], [cfg.classes]),
            helper.make_tensor("off_on", F32, [2], [0, 1]),
            helper.make_tensor("axis0", i64, [1], [0])] + [
        helper.make_tensor(k, F32, [], [v]) for k, v in scalars.items()]


def hand_written_step(cfg: Config) -> onnx.ModelProto:
    """The step as a checked ModelProto: (x, y, state) -> (loss, correct, next_<state>)."""
    nodes = _forward_backward()
    if cfg.optimizer == "adam":
        nodes += _adam_shared() + [n for p in PARAMS for n in _adam(p)]
    else:
        nodes += [n for p in PARAMS for n in _sgd(p)]
    shapes = state_shapes(cfg)
    inputs = [helper.make_tensor_value_info("x", F32, [cfg.batch, cfg.features]),
              helper.make_tensor_value_info("y", TensorProto.INT64, [cfg.batch])]
    inputs += [helper.make_tensor_value_info(k, F32, s) for k, s in shapes.items()]
    outputs = [helper.make_tensor_value_info(k, F32, []) for k in ("loss", "correct")]
    outputs += [helper.make_tensor_value_info(f"next_{k}", F32, s) for k, s in shapes.items()]
    graph = helper.make_graph(nodes, "hand_train_step", inputs, outputs, _constants(cfg))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


class HandPeer:
    """The hand-written step on a session made by irkit's `make_session` (same options)."""

    name, steps_per_call = "hand", 1

    def __init__(self, cfg: Config, data, weights: dict[str, np.ndarray],
                 threads: int | None) -> None:
        self.session = make_session(hand_written_step(cfg).SerializeToString(), "cpu", threads)
        start = {k: np.zeros(s, np.float32) for k, s in state_shapes(cfg).items()}
        start.update({p: weights[p] for p in PARAMS})
        # own copies: a CPU OrtValue shares its numpy array's memory
        self.sets = [{k: ortvalue(np.array(v, copy=True)) for k, v in start.items()}
                     for _ in range(2)]
        self.loss, self.correct = np.zeros((), np.float32), np.zeros((), np.float32)
        self.bindings = [self._binding(0, 1), self._binding(1, 0)]
        self.current = 0
        self.xs, self.ys = list(data[0]), list(data[1])

    def _binding(self, src: int, dst: int) -> ort.IOBinding:
        io = self.session.io_binding()
        for k in self.sets[src]:
            io.bind_ortvalue_input(k, self.sets[src][k])
            io.bind_ortvalue_output(f"next_{k}", self.sets[dst][k])
        io.bind_output("loss", "cpu", 0, np.float32, [], self.loss.ctypes.data)
        io.bind_output("correct", "cpu", 0, np.float32, [], self.correct.ctypes.data)
        return io

    def call(self, i: int) -> tuple[float, float]:
        io = self.bindings[self.current]
        io.bind_cpu_input("x", self.xs[i % POOL])
        io.bind_cpu_input("y", self.ys[i % POOL])
        self.session.run_with_iobinding(io)
        self.current = 1 - self.current
        return float(self.loss), float(self.correct)

    def first(self) -> float:
        return self.call(0)[0]
