"""Time one train step (forward + backward + SGD update), three ways, side by side.

    python benchmarks/bench_train_step.py [--device cpu|cuda] [--json] [--repeats 7]

For each MLP config (Iris-size 4-16-3 at batch 16, and 784-256-10 at batch 128), all with
ReLU, mean softmax cross-entropy on integer labels, plain SGD (lr 0.1, no momentum):

  irkit  irkit's generated train-step graph, run by `irkit.train.Trainer.train_step`: the
         graph from `build_step_graphs`, weights in two device buffer sets that ping-pong
         through two IOBindings made once; per step it binds the batch, runs, reads the loss
  torch  PyTorch eager: Sequential(Linear, ReLU, Linear), CrossEntropyLoss, optim.SGD,
         zero_grad(set_to_none=True), loss.item()
  hand   a hand-written fused ONNX train step (the graph below; like irkit's it also counts
         the correct predictions, `--hand-loss-only` drops that), on a session made by the
         same function with the same options as irkit's (intra-op threads included: by
         default those the Trainer picks), same ping-pong/IOBinding scheme

All three start from the same weights and see the same 8 batches (from host memory) in the
same order, so they do the same arithmetic; the first step's losses are printed as a check.
Each step returns its loss as a Python float, as a training loop that logs the loss must.
Per config: warm-up steps, then `--repeats` timed runs of `steps` steps, the three
frameworks interleaved run by run; the table shows the median time per step.
"""

# irkit.runtimes installs from runtimes/, so isort cannot tell it is first-party
from __future__ import annotations  # noqa: I001

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from irkit.errors import RuntimeUnavailableError
from irkit.nn import Sequential
from irkit.nn.layers import Dense
from irkit.runtimes.onnxruntime import make_session, ortvalue, resolve_device
from irkit.train.losses import get_loss
from irkit.train.model import ModuleModel
from irkit.train.optimizers import SGD
from irkit.train.trainer import Trainer

LR = 0.1
POOL = 8  # distinct batches, cycled
PARAMS = ("W1", "b1", "W2", "b2")


@dataclass(frozen=True)
class Config:
    name: str
    batch: int
    features: int
    hidden: int
    classes: int
    steps: int
    target_vs_torch: float  # the target for torch/irkit


CONFIGS = (Config("iris 4-16-3", 16, 4, 16, 3, 2000, 10.0),
           Config("784-256-10", 128, 784, 256, 10, 200, 1.3))
TARGET_VS_HAND = 1.10  # irkit within 10% of the hand-written step


# ---- data and shared initial weights ----------------------------------------------------------
def make_batches(cfg: Config, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    xs = [rng.standard_normal((cfg.batch, cfg.features)).astype(np.float32) for _ in range(POOL)]
    ys = [rng.integers(0, cfg.classes, cfg.batch).astype(np.int64) for _ in range(POOL)]
    return xs, ys


def irkit_model(cfg: Config) -> ModuleModel:
    return ModuleModel(Sequential([Dense(cfg.hidden, "relu"), Dense(cfg.classes)]),
                       (cfg.features,), seed=0)


def initial_weights(cfg: Config) -> dict[str, np.ndarray]:
    """irkit's initial weights (W as (in, out)), keyed W1, b1, W2, b2."""
    w = irkit_model(cfg).weights()
    return {"W1": w["dense_0.W"], "b1": w["dense_0.b"], "W2": w["dense_1.W"], "b2": w["dense_1.b"]}


# ---- (a) irkit ---------------------------------------------------------------------------------
class IrkitStep:
    """irkit's Trainer, one `train_step` per step."""

    name = "irkit"

    def __init__(self, cfg: Config, data, device: str, threads: int | None) -> None:
        self.trainer = Trainer(irkit_model(cfg), get_loss("sparse_categorical_crossentropy"),
                               SGD(lr=LR), device=device, seed=0, threads=threads)
        self.xs, self.ys = data

    def step(self, i: int) -> float:
        return self.trainer.train_step(self.xs[i % POOL], self.ys[i % POOL])

    def sync(self) -> None:
        """Nothing: the loss is read on the host after every run."""

    def weights(self) -> dict[str, np.ndarray]:
        w = self.trainer.current_weights()
        names = ("dense_0.W", "dense_0.b", "dense_1.W", "dense_1.b")
        return {p: w[n] for p, n in zip(PARAMS, names, strict=True)}


# ---- (b) PyTorch eager -------------------------------------------------------------------------
class TorchStep:
    """PyTorch eager, the usual loop."""

    name = "torch"

    def __init__(self, cfg: Config, data, device: str, threads: int,
                 weights: dict[str, np.ndarray]) -> None:
        import torch
        self.torch, self.device = torch, device
        if device == "cpu":
            torch.set_num_threads(threads)
        else:  # onnxruntime's CUDA Gemm uses TF32 by default: compare like with like
            torch.backends.cuda.matmul.allow_tf32 = True
        first, second = torch.nn.Linear(cfg.features, cfg.hidden), torch.nn.Linear(
            cfg.hidden, cfg.classes)
        with torch.no_grad():
            for layer, w, b in ((first, "W1", "b1"), (second, "W2", "b2")):
                layer.weight.copy_(torch.from_numpy(weights[w].T.copy()))
                layer.bias.copy_(torch.from_numpy(weights[b]))
        self.model = torch.nn.Sequential(first, torch.nn.ReLU(), second).to(device)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=LR)
        self.loss_fn = torch.nn.CrossEntropyLoss()
        self.xs = [torch.from_numpy(x) for x in data[0]]  # host memory, like the others
        self.ys = [torch.from_numpy(y) for y in data[1]]

    def step(self, i: int) -> float:
        x, y = self.xs[i % POOL].to(self.device), self.ys[i % POOL].to(self.device)
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss_fn(self.model(x), y)
        loss.backward()
        self.opt.step()
        return loss.item()

    def sync(self) -> None:
        if self.device == "cuda":
            self.torch.cuda.synchronize()

    def weights(self) -> dict[str, np.ndarray]:
        first, second = self.model[0], self.model[2]
        arrays = (first.weight.T, first.bias, second.weight.T, second.bias)
        return {k: a.detach().cpu().numpy() for k, a in zip(PARAMS, arrays, strict=True)}


# ---- (c) hand-written ONNX ---------------------------------------------------------------------
def _node(op: str, inputs: list[str], outputs: list[str], **attrs) -> onnx.NodeProto:
    return helper.make_node(op, inputs, outputs, **attrs)


def hand_written_step(cfg: Config, accuracy: bool = True) -> onnx.ModelProto:
    """fwd + bwd + SGD for x -> Gemm -> Relu -> Gemm -> mean softmax CE, written by hand.

    With `accuracy`, it also counts the correct predictions, as irkit's step does (its
    Trainer reports the training accuracy); without, it is the anchor's step exactly.
    """
    b, d, h, c = cfg.batch, cfg.features, cfg.hidden, cfg.classes
    nodes = [
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
    ]
    shapes = {"W1": [d, h], "b1": [h], "W2": [h, c], "b2": [c]}
    for p in PARAMS:  # p' = p - lr dp
        nodes += [_node("Mul", [f"d{p}", "lr"], [f"step_{p}"]),
                  _node("Sub", [p, f"step_{p}"], [f"{p}_new"])]
    f32 = TensorProto.FLOAT
    outputs = [helper.make_tensor_value_info("loss", f32, [])]
    if accuracy:
        nodes += _correct_count_nodes()
        outputs.append(helper.make_tensor_value_info("correct", f32, []))
    inputs = [helper.make_tensor_value_info("x", f32, [b, d]),
              helper.make_tensor_value_info("y", TensorProto.INT64, [b])]
    inputs += [helper.make_tensor_value_info(p, f32, s) for p, s in shapes.items()]
    outputs += [helper.make_tensor_value_info(f"{p}_new", f32, s) for p, s in shapes.items()]
    graph = helper.make_graph(nodes, "hand_train_step", inputs, outputs, _constants(cfg))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def _constants(cfg: Config) -> list[onnx.TensorProto]:
    f32, i64 = TensorProto.FLOAT, TensorProto.INT64
    return [helper.make_tensor("depth", i64, [], [cfg.classes]),
            helper.make_tensor("off_on", f32, [2], [0, 1]),
            helper.make_tensor("batch", f32, [], [cfg.batch]),
            helper.make_tensor("axis0", i64, [1], [0]),
            helper.make_tensor("lr", f32, [], [LR])]


def _correct_count_nodes() -> list[onnx.NodeProto]:
    """correct = number of samples whose largest logit is at their label."""
    return [_node("ArgMax", ["logits"], ["predicted"], axis=1, keepdims=0),
            _node("Equal", ["predicted", "y"], ["hit"]),
            _node("Cast", ["hit"], ["hit_f"], to=TensorProto.FLOAT),
            _node("ReduceSum", ["hit_f"], ["correct"], keepdims=0)]


class HandStep:
    """The hand-written step, run the way irkit's Trainer runs its graph."""

    name = "hand"

    def __init__(self, cfg: Config, data, device: str, threads: int | None,
                 weights: dict[str, np.ndarray], accuracy: bool = True) -> None:
        model = hand_written_step(cfg, accuracy)
        self.session = make_session(model.SerializeToString(), device, threads)
        # own copies: a CPU OrtValue shares its numpy array's memory
        self.sets = [{p: ortvalue(weights[p].copy(), device) for p in PARAMS} for _ in range(2)]
        self.loss = np.zeros((), np.float32)  # bound by address, as irkit binds its outputs
        self.correct = np.zeros((), np.float32)
        self.bindings = [self._binding(0, 1), self._binding(1, 0)]
        self.current = 0
        self.xs, self.ys = data

    def _binding(self, src: int, dst: int) -> ort.IOBinding:
        io = self.session.io_binding()
        for p in PARAMS:
            io.bind_ortvalue_input(p, self.sets[src][p])
            io.bind_ortvalue_output(f"{p}_new", self.sets[dst][p])
        io.bind_output("loss", "cpu", 0, np.float32, [], self.loss.ctypes.data)
        if len(self.session.get_outputs()) > 1 + len(PARAMS):
            io.bind_output("correct", "cpu", 0, np.float32, [], self.correct.ctypes.data)
        return io

    def step(self, i: int) -> float:
        io = self.bindings[self.current]
        io.bind_cpu_input("x", self.xs[i % POOL])
        io.bind_cpu_input("y", self.ys[i % POOL])
        self.session.run_with_iobinding(io)
        self.current = 1 - self.current
        return float(self.loss)

    def sync(self) -> None:
        """Nothing: the loss is read on the host after every run."""

    def weights(self) -> dict[str, np.ndarray]:
        return {p: v.numpy().copy() for p, v in self.sets[self.current].items()}


# ---- timing -------------------------------------------------------------------------------------
def time_run(runner, start: int, steps: int) -> float:
    """Seconds per step over `steps` steps from batch index `start`."""
    gc.collect()
    runner.sync()
    t0 = time.perf_counter()
    for i in range(start, start + steps):
        runner.step(i)
    runner.sync()
    return (time.perf_counter() - t0) / steps


def max_abs_diff(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    return max(float(np.max(np.abs(a[k] - b[k]))) for k in PARAMS)


def bench_config(cfg: Config, args: argparse.Namespace, device: str) -> dict:
    """Time the three steps on one config; the frameworks take turns within each repeat."""
    data, weights = make_batches(cfg), initial_weights(cfg)
    irkit = IrkitStep(cfg, data, device, args.ort_threads)
    first_loss = {"irkit": irkit.step(0)}  # builds the sessions
    threads = irkit.trainer.session_threads  # as given, or what irkit picked: hand gets it too
    runners = [irkit, TorchStep(cfg, data, device, args.torch_threads, weights),
               HandStep(cfg, data, device, threads, weights, not args.hand_loss_only)]
    first_loss.update({r.name: r.step(0) for r in runners[1:]})  # same weights and batch
    hand = runners[2].weights()
    diff = {r.name: max_abs_diff(r.weights(), hand) for r in runners[:2]}
    steps = max(int(cfg.steps * args.scale), 1)
    warm = max(steps // 5, 20)
    for r in runners:
        for i in range(1, warm + 1):
            r.step(i)
    times: dict[str, list[float]] = {r.name: [] for r in runners}
    start = warm + 1
    for rep in range(args.repeats):
        order = runners[rep % 3:] + runners[:rep % 3]
        for r in order:
            times[r.name].append(time_run(r, start, steps))
        start += steps
    return summarize(cfg, steps, warm, times, first_loss, diff) | {"ort_threads": threads}


def summarize(cfg: Config, steps: int, warm: int, times: dict[str, list[float]],
              first_loss: dict[str, float], diff: dict[str, float]) -> dict:
    median = {k: statistics.median(v) for k, v in times.items()}
    vs_torch = median["torch"] / median["irkit"]
    vs_hand = median["irkit"] / median["hand"]
    return {
        "config": cfg.name, "batch": cfg.batch,
        "layers": [cfg.features, cfg.hidden, cfg.classes],
        "steps": steps, "warmup_steps": warm, "repeats": len(times["irkit"]),
        "seconds_per_step": {"median": median,
                             "min": {k: min(v) for k, v in times.items()},
                             "max": {k: max(v) for k, v in times.items()},
                             "all": times},
        "torch_over_irkit": vs_torch, "irkit_over_hand": vs_hand,
        "targets": {"torch_over_irkit": cfg.target_vs_torch,
                    "irkit_over_hand": TARGET_VS_HAND,
                    "met_vs_torch": vs_torch >= cfg.target_vs_torch,
                    "met_vs_hand": vs_hand <= TARGET_VS_HAND},
        "check": {"first_step_loss": first_loss,
                  "max_abs_weight_diff_after_first_step_vs_hand": diff},
    }


# ---- reporting ----------------------------------------------------------------------------------
def environment(device: str, args: argparse.Namespace) -> dict:
    import torch
    return {"device": device, "onnxruntime": ort.__version__, "torch": torch.__version__,
            "numpy": np.__version__, "python": platform.python_version(),
            "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "ort_intra_op_threads": args.ort_threads or "auto",
            "ort_graph_optimization": "ORT_ENABLE_ALL",
            "torch_threads": torch.get_num_threads() if device == "cpu" else None,
            "lr": LR, "batches_cycled": POOL, "hand_counts_correct": not args.hand_loss_only}


def print_table(env: dict, results: list[dict]) -> None:
    dev = env["device"]
    print(f"one train step (fwd+bwd+SGD) on {dev}: onnxruntime {env['onnxruntime']}, "
          f"ORT_ENABLE_ALL; torch {env['torch']}"
          + (f", {env['torch_threads']} threads" if dev == "cpu" else ""))
    print("ort thr: onnxruntime intra-op threads, the same for irkit and hand (default: "
          "onnxruntime's, one per physical core)")
    counts = "loss and correct count" if env["hand_counts_correct"] else "loss only"
    print(f"irkit's step returns loss and correct count; hand's returns {counts}")
    print("median time per step in microseconds; [min-max] over the repeats\n")
    head = (f"{'config':<13}{'batch':>6}{'ort thr':>8}{'steps x reps':>14}{'irkit':>13}"
            f"{'torch':>13}{'hand':>13}{'torch/irkit':>13}{'irkit/hand':>12}")
    print(head)
    print("-" * len(head))
    for r in results:
        med, lo, hi = (r["seconds_per_step"][k] for k in ("median", "min", "max"))
        cells = "".join(f"{med[k] * 1e6:>13.1f}" for k in ("irkit", "torch", "hand"))
        threads = r["ort_threads"] or "default"
        print(f"{r['config']:<13}{r['batch']:>6}{threads:>8}{r['steps']:>8} x {r['repeats']:<3}"
              f"{cells}"
              f"{r['torch_over_irkit']:>12.2f}x{r['irkit_over_hand']:>11.3f}x")
        spread = "".join(f"{f'[{lo[k] * 1e6:.0f}-{hi[k] * 1e6:.0f}]':>13}"
                         for k in ("irkit", "torch", "hand"))
        print(f"{'':<41}{spread}")
    print("\ntargets:")
    for r in results:
        t = r["targets"]
        print(f"  {r['config']:<13} torch/irkit {r['torch_over_irkit']:6.2f}x >= "
              f"{t['torch_over_irkit']:g}x: {'met' if t['met_vs_torch'] else 'NOT met'};  "
              f"irkit/hand {r['irkit_over_hand']:.3f}x <= {t['irkit_over_hand']:g}x: "
              f"{'met' if t['met_vs_hand'] else 'NOT met'}")
    print("\ncheck (same weights, same first batch):")
    for r in results:
        c = r["check"]
        losses = ", ".join(f"{k} {v:.6f}" for k, v in c["first_step_loss"].items())
        diffs = ", ".join(f"{k} {v:.1e}"
                          for k, v in c["max_abs_weight_diff_after_first_step_vs_hand"].items())
        print(f"  {r['config']:<13} first loss: {losses}; max |w - w_hand| after it: {diffs}")


# ---- command line -------------------------------------------------------------------------------
def pick_device(requested: str) -> str:
    """'cuda' if both onnxruntime and PyTorch can use it; otherwise 'cpu', with a message."""
    if requested == "cpu":
        return "cpu"
    try:
        resolve_device("cuda")
    except RuntimeUnavailableError as e:
        reason = str(e).split(";")[0]  # drop the CLI's advice on --device
        print(f"bench_train_step: {reason}; running on CPU instead", file=sys.stderr)
        return "cpu"
    import torch
    if not torch.cuda.is_available():
        print(f"bench_train_step: PyTorch {torch.__version__} cannot use CUDA here (a CPU "
              "build?); running both on CPU instead", file=sys.stderr)
        return "cpu"
    return "cuda"


def _threads(text: str) -> int | None:
    if text == "auto":
        return None
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a thread count >= 1 or 'auto'")
    return int(text)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="cuda falls back to cpu, with a message, where it is not usable")
    p.add_argument("--json", action="store_true", help="print the results as JSON only")
    p.add_argument("--repeats", type=int, default=7, help="timed runs per framework (median)")
    p.add_argument("--ort-threads", type=_threads, default=None, metavar="N|auto",
                   help="onnxruntime intra-op threads, the same for irkit and hand; auto "
                        "(default): what irkit's Trainer picks (1 for a tiny step, else "
                        "onnxruntime's default, one per physical core)")
    p.add_argument("--torch-threads", type=int, default=2,
                   help="torch.set_num_threads on CPU (default 2)")
    p.add_argument("--hand-loss-only", action="store_true",
                   help="hand-written step without the correct count (the anchor's graph)")
    p.add_argument("--scale", type=float, default=1.0,
                   help="multiply the steps per run (2000 for iris, 200 for 784-256-10)")
    p.add_argument("--config", choices=[c.name.split()[0] for c in CONFIGS], action="append",
                   help="run only this config (repeatable); default: all")
    args = p.parse_args(argv)
    if min(args.repeats, args.torch_threads) < 1 or args.scale <= 0:
        p.error("--repeats and the thread counts must be >= 1, --scale > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = pick_device(args.device)
    configs = [c for c in CONFIGS if not args.config or c.name.split()[0] in args.config]
    results = [bench_config(c, args, device) for c in configs]
    env = environment(device, args)
    if args.json:
        print(json.dumps({"environment": env, "results": results}, indent=2))
    else:
        print_table(env, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
