"""`irkit optimize` against onnxsim: node counts and onnxruntime latency, same models.

    python benchmarks/bench_optimize.py [--batch 8] [--runs 200] [--json]

Models: irkit's recipes as `irkit build` writes them (iris_mlp, digits_mlp, digits_cnn), and
CNNs with BatchNorm exported by `torch.onnx.export`: a small CNN (legacy exporter with and
without its constant folding, and the dynamo exporter) and a small ResNet (legacy, no
folding). Each model runs as written, after `irkit.graph_optimize.optimize_proto` and after
`onnxsim.simplify` (if installed), on a CPU session made as irkit makes its sessions
(ORT_ENABLE_ALL, 1 intra-op thread here; `--ort-level basic|none` lowers onnxruntime's own
graph optimization, to see what a runtime that optimizes less gets); latency is the median
of `--runs` runs of one batch after 10 warm-up runs. Every optimized model's outputs are
checked against the original's (rtol 1e-4, atol 1e-5) before it is timed.
"""

# irkit.runtimes installs from runtimes/, so isort cannot tell it is first-party
from __future__ import annotations  # noqa: I001

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings

import onnx

from irkit.graph_optimize import compare, optimize_proto, random_feeds
from irkit.runtimes.onnxruntime import make_session


LEVELS = {"all": "ORT_ENABLE_ALL", "basic": "ORT_ENABLE_BASIC", "none": "ORT_DISABLE_ALL"}


def latency(model: onnx.ModelProto, feeds: dict, runs: int, level: str) -> tuple[float, list]:
    import onnxruntime as ort
    session = make_session(model.SerializeToString(), "cpu", 1)
    if level != "all":  # the same options as irkit's sessions but the optimization level
        so = ort.SessionOptions()
        so.log_severity_level, so.intra_op_num_threads = 3, 1
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, LEVELS[level])
        session = ort.InferenceSession(model.SerializeToString(), so,
                                       providers=["CPUExecutionProvider"])
    for _ in range(10):
        out = session.run(None, feeds)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        session.run(None, feeds)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def irkit_models(folder: str) -> dict[str, onnx.ModelProto]:
    from click.testing import CliRunner

    from irkit.cli import main
    models = {}
    for name in ("iris_mlp", "digits_mlp", "digits_cnn"):
        path = os.path.join(folder, f"{name}.onnx")
        result = CliRunner().invoke(main, ["build", name, "-o", path])
        if result.exit_code:
            raise SystemExit(result.output)
        models[name] = onnx.load(path)
    return models


def torch_cnn(resnet: bool):
    """A small CNN (or ResNet) with BatchNorm, eval mode, statistics far from the identity."""
    import torch
    t = torch.nn

    def block(cin, cout):
        return t.Sequential(t.Conv2d(cin, cout, 3, padding=1, bias=False), t.BatchNorm2d(cout),
                            t.ReLU())

    class Residual(t.Module):
        def __init__(self, c):
            super().__init__()
            self.body = t.Sequential(block(c, c), t.Conv2d(c, c, 3, padding=1), t.BatchNorm2d(c))

        def forward(self, x):
            return torch.relu(x + self.body(x))

    class Cnn(t.Module):
        def __init__(self):
            super().__init__()
            layers = [block(3, 16), Residual(16), t.MaxPool2d(2), block(16, 32), Residual(32)] \
                if resnet else [block(3, 8), t.MaxPool2d(2), block(8, 16), t.MaxPool2d(2)]
            self.features = t.Sequential(*layers)
            width = 32 * 16 * 16 if resnet else 16 * 8 * 8
            self.head = t.Sequential(t.Linear(width, 64), t.BatchNorm1d(64), t.ReLU(),
                                     t.Dropout(0.1), t.Linear(64, 10))

        def forward(self, x):
            x = self.features(x)
            return self.head(x.reshape(x.shape[0], -1))

    net = Cnn().eval()
    for m in net.modules():
        if isinstance(m, (t.BatchNorm1d, t.BatchNorm2d)):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    return net


def torch_models(folder: str) -> dict[str, onnx.ModelProto]:
    import torch
    torch.manual_seed(0)
    out = {}
    for name, resnet, dynamo, fold in (("torch cnn legacy", False, False, False),
                                       ("torch cnn legacy folded", False, False, True),
                                       ("torch cnn dynamo", False, True, True),
                                       ("torch resnet legacy", True, False, False)):
        net, path, x = torch_cnn(resnet), os.path.join(folder, "m.onnx"), torch.randn(2, 3, 32, 32)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if dynamo:
                torch.onnx.export(net, (x,), path, dynamo=True, verbose=False)
            else:
                torch.onnx.export(net, (x,), path, dynamo=False, do_constant_folding=fold,
                                  input_names=["x"], output_names=["y"],
                                  dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
        out[name] = onnx.load(path)
    return out


def bench(name: str, model: onnx.ModelProto, batch: int, runs: int, level: str) -> dict:
    feeds = random_feeds(model, batch)
    names = [o.name for o in model.graph.output]
    versions = {"original": model, "irkit": optimize_proto(model)}
    try:
        import onnxsim
        simplified, ok = onnxsim.simplify(model)
        if ok:
            versions["onnxsim"] = simplified
    except ImportError:
        pass
    row = {"model": name}
    base = None
    for key, m in versions.items():
        seconds, outputs = latency(m, feeds, runs, level)
        if base is None:
            base = outputs
        else:
            compare(base, outputs, names)
        row[key] = {"nodes": len(m.graph.node), "latency_us": seconds * 1e6}
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--runs", type=int, default=200)
    p.add_argument("--ort-level", choices=sorted(LEVELS), default="all",
                   help="onnxruntime graph optimization level (default all, as irkit runs)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        models = {**irkit_models(folder), **torch_models(folder)}
    rows = [bench(name, m, args.batch, args.runs, args.ort_level)
            for name, m in models.items()]
    if args.json:
        print(json.dumps({"batch": args.batch, "runs": args.runs, "rows": rows}, indent=2))
        return 0
    print(f"nodes and onnxruntime latency (CPU, {LEVELS[args.ort_level]}, 1 thread, batch "
          f"{args.batch}, median of {args.runs} runs)")
    keys = [k for k in ("original", "irkit", "onnxsim") if k in rows[0]]
    print(f"{'model':26}" + "".join(f"{k + ' nodes':>16}" for k in keys)
          + "".join(f"{k + ' us':>14}" for k in keys))
    for r in rows:
        print(f"{r['model']:26}" + "".join(f"{r[k]['nodes']:>16}" for k in keys)
              + "".join(f"{r[k]['latency_us']:>14.1f}" for k in keys))
    return 0


if __name__ == "__main__":
    sys.exit(main())
