"""One fine-tuning train step of the models people fine-tune, irkit against PyTorch eager.

    python benchmarks/bench_finetune.py                      # 4 models x {1, all} threads
    python benchmarks/bench_finetune.py --model resnet18 --threads 1 --repeats 3 --steps 5
    python benchmarks/bench_finetune.py --markdown --json out.json

Models (random weights, seeded; issue 18, item 8): ResNet-18 and MobileNetV2 on 3x64x64 images,
batch 32, 10 classes (torchvision's architectures, written out here so torchvision is not
needed); a BERT encoder with a 2-class head on input_ids + attention_mask and a GPT-2 LM (per
token cross-entropy over its logits), both 4 layers, hidden 256, 4 heads, seq 128, batch 16,
vocabulary 1000 (transformers, eager attention). Each step is forward, backward and an AdamW
update (lr 1e-4, weight decay 0.01) in train mode (BatchNorm on batch statistics).

irkit trains the model's `torch.onnx.export` (the transformers by the default dynamo
exporter; the CNNs by the legacy one in train mode, without constant folding, so BatchNorm
stays and runs on batch statistics as torch trains it: the dynamo exporter folds it), through
`Model.prepare` and an onnxruntime step runner given the same thread count as torch
(`torch.set_num_threads`). Every (model, framework, threads) runs in a fresh process: two
warm-up steps (irkit's runner alternates two state buffers), then `--steps` timed steps, `--repeats`
times, the processes taking turns (irkit, torch, torch, irkit, ...); the time is the median
per step, wall and the calling thread's CPU time (at one thread the step's own work, robust to
other load on the machine; at more threads it misses the pool's other threads). Peak memory
(Linux): the peak RSS (VmHWM, reset once the model is built) over all the steps minus the RSS
before the first ("train": activations, gradients, optimizer state), and the whole process's
peak ("process", imports and building included).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_common import machine, machine_line, table  # noqa: E402

MODELS = ("resnet18", "mobilenet_v2", "bert", "gpt2")
CNNS = ("resnet18", "mobilenet_v2")
FRAMEWORKS = ("irkit", "torch")
CNN_BATCH, TEXT_BATCH, SEQ, VOCAB, CLASSES = 32, 16, 128, 1000, 10


# ---- the models (torch) -----------------------------------------------------------------
def _resnet18(nn):
    """torchvision's resnet18 (BasicBlock x [2, 2, 2, 2]), CLASSES outputs."""
    class Block(nn.Module):
        def __init__(self, c_in, c_out, stride):
            super().__init__()
            self.a = nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False),
                                   nn.BatchNorm2d(c_out), nn.ReLU(),
                                   nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False),
                                   nn.BatchNorm2d(c_out))
            self.down = nn.Identity() if stride == 1 and c_in == c_out else nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

        def forward(self, x):
            return (self.a(x) + self.down(x)).relu()
    layers = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
              nn.MaxPool2d(3, 2, 1)]
    c = 64
    for width, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [Block(c, width, stride), Block(width, width, 1)]
        c = width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, CLASSES))


def _mobilenet_v2(nn):
    """torchvision's mobilenet_v2 (width 1.0, its inverted-residual table), CLASSES outputs."""
    def cbr(c_in, c_out, k, s, groups=1):
        return [nn.Conv2d(c_in, c_out, k, s, k // 2, groups=groups, bias=False),
                nn.BatchNorm2d(c_out), nn.ReLU6()]

    class Inverted(nn.Module):
        def __init__(self, c_in, c_out, stride, t):
            super().__init__()
            hidden = c_in * t
            body = (cbr(c_in, hidden, 1, 1) if t != 1 else []) + cbr(hidden, hidden, 3, stride,
                                                                     hidden)
            self.body = nn.Sequential(*body, nn.Conv2d(hidden, c_out, 1, bias=False),
                                      nn.BatchNorm2d(c_out))
            self.residual = stride == 1 and c_in == c_out

        def forward(self, x):
            return x + self.body(x) if self.residual else self.body(x)
    layers, c = cbr(3, 32, 3, 2), 32
    for t, width, n, s in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                           (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)):
        for i in range(n):
            layers.append(Inverted(c, width, s if i == 0 else 1, t))
            c = width
    return nn.Sequential(*layers, *cbr(c, 1280, 1, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(1280, CLASSES))


def _transformer(torch, kind: str):
    """BERT classifier (input_ids, attention_mask) -> logits (N, 2), or GPT-2 LM input_ids ->
    logits (N, T, VOCAB)."""
    import transformers as tf
    size = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    if kind == "bert":
        config = tf.BertConfig(vocab_size=VOCAB, hidden_size=256, num_hidden_layers=4,
                               num_attention_heads=4, intermediate_size=1024,
                               max_position_embeddings=SEQ, num_labels=2,
                               attn_implementation="eager", **size)

        class Bert(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.net = tf.BertForSequenceClassification(config)

            def forward(self, input_ids, attention_mask):
                positions = torch.arange(input_ids.shape[1]).unsqueeze(0).expand_as(input_ids)
                return self.net(input_ids=input_ids, attention_mask=attention_mask,
                                position_ids=positions,
                                token_type_ids=torch.zeros_like(input_ids)).logits
        return Bert()
    config = tf.GPT2Config(vocab_size=VOCAB, n_positions=SEQ, n_embd=256, n_layer=4, n_head=4,
                           resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                           activation_function="relu", attn_implementation="eager")

    class GPT2(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = tf.GPT2LMHeadModel(config)

        def forward(self, input_ids):
            return self.net(input_ids=input_ids, use_cache=False).logits
    return GPT2()


def build(name: str):
    """(torch module, {input name: batch}, labels) of the model, seeded."""
    import torch
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    if name in CNNS:
        net = (_resnet18 if name == "resnet18" else _mobilenet_v2)(torch.nn)
        x = {"images": rng.normal(size=(CNN_BATCH, 3, 64, 64)).astype(np.float32)}
        return net, x, rng.integers(0, CLASSES, CNN_BATCH)
    net = _transformer(torch, name)
    ids = rng.integers(1, VOCAB, (TEXT_BATCH, SEQ))
    if name == "bert":
        mask = (np.arange(SEQ)[None] < rng.integers(SEQ // 2, SEQ + 1, (TEXT_BATCH, 1)))
        return net, {"input_ids": ids, "attention_mask": mask.astype(np.int64)}, \
            rng.integers(0, 2, TEXT_BATCH)
    return net, {"input_ids": ids}, np.roll(ids, -1, axis=1)


def export(name: str, folder: str) -> None:
    """The model's ONNX file (dynamic batch; the CNNs by the legacy exporter in train mode,
    BatchNorm kept; the transformers by the dynamo exporter, their dropout 0) and its
    state_dict, so both frameworks start from the same weights."""
    import logging
    import warnings

    import torch
    net, x, _ = build(name)
    torch.save(net.state_dict(), os.path.join(folder, f"{name}.pt"))
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    example = tuple(torch.from_numpy(v[:2]) for v in x.values())
    path = os.path.join(folder, f"{name}.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if name in CNNS:  # the dynamo exporter folds BatchNorm even in train mode
            torch.onnx.export(net.train(), example, path, dynamo=False, input_names=list(x),
                              dynamic_axes={n: {0: "N"} for n in x}, do_constant_folding=False,
                              training=torch.onnx.TrainingMode.TRAINING)
        else:
            batch = torch.export.Dim("N", min=1)
            torch.onnx.export(net.eval(), example, path, dynamo=True, verbose=False,
                              input_names=list(x), dynamic_shapes=tuple({0: batch} for _ in x))


# ---- one process: one framework's steps ---------------------------------------------------
def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    return 0


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def torch_step(name: str, folder: str, threads: int, batch=None):
    """One AdamW step of the saved torch model on its benchmark batch, or on `batch` (x, y)."""
    import torch
    torch.set_num_threads(threads)
    net, x, y = build(name)
    if batch is not None:
        x, y = batch
    net.load_state_dict(torch.load(os.path.join(folder, f"{name}.pt")))
    net.train()
    inputs = [torch.from_numpy(v) for v in x.values()]
    labels = torch.from_numpy(y)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, weight_decay=0.01)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        out = net(*inputs)
        loss = loss_fn(out.reshape(-1, out.shape[-1]), labels.reshape(-1))
        loss.backward()
        opt.step()
        return float(loss)
    return step


def irkit_step(name: str, folder: str, threads: int):
    from irkit.runtimes import get_runtime

    import irkit
    _, x, y = build(name)
    model = irkit.load_model(os.path.join(folder, f"{name}.onnx"))
    model.compile("adamw", lr=1e-4, weight_decay=0.01, batch_size=len(y))
    graphs = model.prepare(x)
    state = graphs.initial_state(model.source.weights(), 1e-4)
    runner = get_runtime("onnxruntime").step_runner(graphs, state, model.settings,
                                                   threads=threads)
    arrays = tuple(x.values())  # in the model's input order
    parts = runner.stage(arrays if len(arrays) > 1 else arrays[0], y)
    return lambda: runner.step(*parts)[0]


def child(name: str, framework: str, folder: str, threads: int, steps: int) -> dict:
    """Two warm-up steps, then `steps` timed steps: seconds per step, first loss, the peak
    RSS the steps add to the built model, the process's peak RSS."""
    make = irkit_step if framework == "irkit" else torch_step
    step = make(name, folder, threads)
    _reset_peak()  # the model is built: the peak from here is what training adds
    before = _status("VmRSS:")
    first = step()
    step()  # both of irkit's ping-pong state buffers exist from here on
    t0, c0 = time.perf_counter(), time.thread_time()
    for _ in range(steps):
        step()
    seconds = (time.perf_counter() - t0) / steps
    return {"seconds": seconds, "cpu_seconds": (time.thread_time() - c0) / steps,
            "first_loss": first,
            "train_peak": _status("VmHWM:") - before, "process_peak": _status("VmHWM:")}


# ---- the parent: runs in turns, tables ------------------------------------------------------
def _run_child(name, framework, folder, threads, steps) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    out = subprocess.run([sys.executable, __file__, "--child", name, framework, folder,
                          str(threads), str(steps)], capture_output=True, text=True, env=env,
                         timeout=1800)
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(names, thread_counts, repeats, steps, folder) -> list[dict]:
    """Every (model, threads): both frameworks, `repeats` processes each, in turns."""
    rows = []
    for name in names:
        export(name, folder)
        for threads in thread_counts:
            runs: dict[str, list[dict]] = {f: [] for f in FRAMEWORKS}
            for rep in range(repeats):
                order = FRAMEWORKS if rep % 2 == 0 else FRAMEWORKS[::-1]
                for f in order:
                    runs[f].append(_run_child(name, f, folder, threads, steps))
            rows.append({"model": name, "threads": threads, "runs": runs})
            print(_line(rows[-1]), file=sys.stderr, flush=True)
    return rows


def _summary(runs: list[dict]) -> dict | None:
    good = [r for r in runs if "error" not in r]
    if not good:
        return None
    return {"ms": statistics.median(r["seconds"] for r in good) * 1e3,
            "cpu_ms": statistics.median(r["cpu_seconds"] for r in good) * 1e3,
            "step_mib": statistics.median(r["train_peak"] for r in good) / 2 ** 20,
            "process_mib": statistics.median(r["process_peak"] for r in good) / 2 ** 20,
            "first_loss": good[0]["first_loss"]}


def _line(row: dict) -> str:
    s = {f: _summary(row["runs"][f]) for f in FRAMEWORKS}
    cells = []
    for f in FRAMEWORKS:
        if s[f] is None:
            cells += [f"{f}: {row['runs'][f][0]['error']}"]
        else:
            cells += [f"{f} {s[f]['ms']:.1f} ms (CPU {s[f]['cpu_ms']:.1f}), train "
                      f"{s[f]['step_mib']:.0f} MiB, process {s[f]['process_mib']:.0f} MiB, "
                      f"loss {s[f]['first_loss']:.4f}"]
    return f"{row['model']} x{row['threads']}: " + "; ".join(cells)


def report(rows: list[dict], markdown: bool) -> str:
    head = ["model", "threads", "irkit ms", "torch ms", "irkit/torch", "CPU irkit/torch",
            "irkit peak MiB (train, process)", "torch peak MiB (train, process)",
            "first loss irkit / torch"]
    out = []
    for row in rows:
        s = {f: _summary(row["runs"][f]) for f in FRAMEWORKS}
        if None in s.values():
            out.append([row["model"], str(row["threads"]), _line(row), *[""] * 6])
            continue
        i, t = s["irkit"], s["torch"]
        out.append([row["model"], str(row["threads"]), f"{i['ms']:.1f}", f"{t['ms']:.1f}",
                    f"{i['ms'] / t['ms']:.2f}", f"{i['cpu_ms'] / t['cpu_ms']:.2f}",
                    f"{i['step_mib']:.0f}, {i['process_mib']:.0f}",
                    f"{t['step_mib']:.0f}, {t['process_mib']:.0f}",
                    f"{i['first_loss']:.4f} / {t['first_loss']:.4f}"])
    return table(head, out, markdown)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", choices=MODELS)
    parser.add_argument("--threads", type=int, action="append",
                        help="thread counts (default: 1 and all cores)")
    parser.add_argument("--repeats", type=int, default=3, help="processes per framework")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per process")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--json", metavar="FILE", help="also write every run's figures")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        name, framework, folder, threads, steps = args.child
        print(json.dumps(child(name, framework, folder, int(threads), int(steps))))
        return
    info = machine()
    with tempfile.TemporaryDirectory() as folder:
        rows = measure(args.model or MODELS, args.threads or sorted({1, os.cpu_count() or 1}),
                       args.repeats, args.steps, folder)
    print(machine_line(info))
    print(report(rows, args.markdown))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
