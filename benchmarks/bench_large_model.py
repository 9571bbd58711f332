"""Peak memory of irkit on a model whose weights are ONNX external data, against the weights.

    python benchmarks/bench_large_model.py              # a 2.2 GB model (above protobuf's 2 GB)
    python benchmarks/bench_large_model.py --gb 0.5 --width 2048 --markdown

The model (random weights, seeded): x (N, WIDTH) -> [MatMul WIDTH x WIDTH, Add bias, Relu]
x L -> MatMul WIDTH x 10, L chosen so the weights total --gb; every tensor is external data in
one file beside the model. Each command runs in a fresh process (tests/measured.py's
`run_irkit`, VmHWM of the child itself): `irkit inspect`, `irkit grad --of logits --wrt
<every weight>` (writes the gradient model), one SGD step of `irkit train` on 4 samples with
`-o` ("train"), the same with `--save-training` too ("train+save"), a resume of that
training file for one more step ("resume"; its tensors are external beyond 1 GiB, or with
IRKIT_EXTERNAL_DATA_BYTES=0, and are then read straight into arrays), and `irkit predict` of
the trained model (its `-o` file, weights external beyond 1 GiB). Figures: the
process's peak resident memory, that peak over the weights' bytes, and the peak of
`irkit --version` for reference.
Written under --dir (default: a temporary folder), deleted afterwards.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from tests.measured import run_irkit  # noqa: E402

CLASSES = 10


def write_model(folder: str, gb: float, width: int, seed: int = 0) -> tuple[str, int]:
    """model.onnx + model.data in `folder`: (path, weight bytes). Weights are written one
    tensor at a time, so building never holds more than one."""
    from onnx import TensorProto, helper
    layers = max(1, round((gb * 1e9 - width * CLASSES * 4) / (width * (width + 1) * 4)))
    rng = np.random.default_rng(seed)
    inits, nodes, offset = [], [], 0
    data = os.path.join(folder, "model.data")
    with open(data, "wb") as f:
        def add(name: str, array: np.ndarray) -> None:
            nonlocal offset
            tensor = TensorProto(name=name, data_type=TensorProto.FLOAT,
                                 dims=array.shape, data_location=TensorProto.EXTERNAL)
            for k, v in (("location", "model.data"), ("offset", str(offset)),
                         ("length", str(array.nbytes))):
                tensor.external_data.add(key=k, value=v)
            f.write(array.astype(np.float32).tobytes())
            offset += array.nbytes
            inits.append(tensor)
        h = "x"
        for i in range(layers):
            add(f"w{i}", (rng.standard_normal((width, width), np.float32)
                          / np.float32(np.sqrt(width))))
            add(f"b{i}", np.zeros(width, np.float32) + np.float32(0.01 * (i + 1)))
            nodes += [helper.make_node("MatMul", [h, f"w{i}"], [f"m{i}"], name=f"mm{i}"),
                      helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"], name=f"add{i}"),
                      helper.make_node("Relu", [f"a{i}"], [f"h{i}"], name=f"relu{i}")]
            h = f"h{i}"
        add("head", rng.standard_normal((width, CLASSES), np.float32) / np.float32(width))
        nodes.append(helper.make_node("MatMul", [h, "head"], ["logits"], name="head_mm"))
    graph = helper.make_graph(
        nodes, "large", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", CLASSES])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    path = os.path.join(folder, "model.onnx")
    with open(path, "wb") as f:
        f.write(model.SerializeToString())
    return path, offset


def write_data(folder: str, width: int, rows: int = 4) -> str:
    rng = np.random.default_rng(1)
    path = os.path.join(folder, "data.npz")
    np.savez(path, x=rng.standard_normal((rows, width)).astype(np.float32),
             y=rng.integers(0, CLASSES, rows))
    return path


def commands(weights: list[str]) -> dict[str, list[str]]:
    return {
        "inspect": ["inspect", "model.onnx"],
        "grad": ["grad", "model.onnx", "--of", "logits", "--wrt", ",".join(weights),
                 "-o", "grad.onnx"],
        "train": TRAIN,
        "train+save": [*TRAIN, "--save-training", "out.train.onnx"],
        "resume": ["train", "out.train.onnx", "--data", "data.npz", "--epochs", "1",
                   "--batch-size", "4", "-o", "resumed.onnx"],
        "predict": ["predict", "out.onnx", "--data", "data.npz", "-o", "pred.csv"],
    }


TRAIN = ["train", "model.onnx", "--data", "data.npz", "--epochs", "1", "--batch-size", "4",
         "--optimizer", "sgd", "--lr", "0.01", "-o", "out.onnx"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gb", type=float, default=2.2, help="weights in GB (1e9 bytes)")
    p.add_argument("--width", type=int, default=4096)
    p.add_argument("--dir", help="where to write the model (default: a temporary folder)")
    p.add_argument("--only", help="comma-separated commands to run (default: all)")
    p.add_argument("--timeout", type=float, default=1800)
    p.add_argument("--markdown", action="store_true")
    args = p.parse_args()
    folder = tempfile.mkdtemp(prefix="irkit-large-", dir=args.dir)
    env = {"OMP_NUM_THREADS": "2"}
    try:
        path, nbytes = write_model(folder, args.gb, args.width)
        write_data(folder, args.width)
        import onnx
        names = [t.name for t in onnx.load(path, load_external_data=False).graph.initializer]
        base = run_irkit(["--version"], folder, args.timeout, env)
        rows = [("(python + irkit imports)", base.peak_mb, "", "")]
        only = set(args.only.split(",")) if args.only else None
        for label, argv in commands(names).items():
            if only and label not in only:
                continue
            r = run_irkit(argv, folder, args.timeout, env)
            status = "ok" if r.rc == 0 else f"rc {r.rc}: {(r.lines or ['?'])[-1][:90]}"
            rows.append((label, r.peak_mb, f"{r.peak_mb * 2 ** 20 / nbytes:.2f}", status))
            print(f"{label}: {r.seconds:.0f} s, {status}", file=sys.stderr)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    head = f"weights {nbytes / 1e9:.2f} GB ({nbytes / 2 ** 20:.0f} MiB), width {args.width}"
    if args.markdown:
        print(f"{head}\n\n| command | peak MiB | peak / weights | result |\n|---|---:|---:|---|")
        for label, mb, ratio, status in rows:
            print(f"| {label} | {mb:.0f} | {ratio} | {status} |")
    else:
        print(head)
        for label, mb, ratio, status in rows:
            print(f"  {label:26s} {mb:8.0f} MiB  {ratio:>5s}  {status}")


if __name__ == "__main__":
    main()
