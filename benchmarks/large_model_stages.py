"""Peak resident memory of each stage of `irkit train` in one process, against the weights.

    python benchmarks/large_model_stages.py                      # a 0.3 GB model, width 2048
    python benchmarks/large_model_stages.py --gb 0.1 --width 1024 --one-file

Writes bench_large_model.py's MLP (external data) to a temporary folder and runs `irkit train`
(1 SGD step on 4 samples, `-o` and `--save-training`) in this process with the stages of its
path wrapped: before each stage VmHWM is reset (/proc/self/clear_refs), after it the stage's
peak and the resident memory are read. A nested stage resets its parent's peak, so a parent's
figure is the peak after its last child. `IRKIT_EXTERNAL_DATA_BYTES=0` (the path of models
above 1 GiB) unless --one-file.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_large_model import ROOT, TRAIN, write_data, write_model  # noqa: E402

ROWS: list[tuple[int, str, float, float, float]] = []
_depth = [0]


def memory() -> tuple[float, float]:
    """(VmRSS, VmHWM) of this process in MiB."""
    got = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                got[key] = int(value.split()[0]) / 1024
    return got["VmRSS"], got["VmHWM"]


def reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def traced(owner, name: str, label: str) -> None:
    """Wrap owner.name so each call records (depth, label, rss before, peak, rss after)."""
    original = getattr(owner, name)

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        before, _ = memory()
        reset_peak()
        _depth[0] += 1
        try:
            return original(*args, **kwargs)
        finally:
            _depth[0] -= 1
            after, peak = memory()
            ROWS.append((_depth[0], label, before, peak, after))
            reset_peak()
    setattr(owner, name, wrapper)


def trace_train_path() -> None:
    import irkit.cli.jobs as jobs
    import irkit.onnx_io as onnx_io
    import irkit.safe_io as safe_io
    import irkit.train.model as model
    import irkit.train.trainer as trainer
    for owner, name, label in (
            (jobs, "prepare", "load_model + data"), (model, "build_step_graphs", "step graphs"),
            (model, "make_step_runner", "step runner made"), (trainer.Trainer, "fit", "1 step"),
            (jobs, "_final_figures", "evaluate"), (model.Model, "to_graph", "to_graph"),
            (onnx_io, "file_parts", "-o parts"),
            (model.Model, "training_files", "--save-training parts"),
            (safe_io, "write_all_atomic", "write files")):
        traced(owner, name, label)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gb", type=float, default=0.3)
    p.add_argument("--width", type=int, default=2048)
    p.add_argument("--one-file", action="store_true", help="the path of models below 1 GiB")
    args = p.parse_args()
    if not args.one_file:
        os.environ["IRKIT_EXTERNAL_DATA_BYTES"] = "0"
    folder = tempfile.mkdtemp(prefix="irkit-stages-")
    try:
        _, nbytes = write_model(folder, args.gb, args.width)
        write_data(folder, args.width)
        os.chdir(folder)
        trace_train_path()
        from irkit.cli import main as irkit
        base, _ = memory()
        try:
            irkit(prog_name="irkit", args=[*TRAIN, "--save-training", "out.train.onnx"])
        except SystemExit as e:
            if e.code:
                raise
    finally:
        os.chdir(ROOT)
        shutil.rmtree(folder, ignore_errors=True)
    weights = nbytes / 2 ** 20
    print(f"\nweights {weights:.0f} MiB; process before irkit train {base:.0f} MiB\n")
    print("| stage | RSS before | peak | RSS after | peak / weights |\n|---|---:|---:|---:|---:|")
    for depth, label, before, peak, after in ROWS:
        print(f"| {'  ' * depth}{label} | {before:.0f} | {peak:.0f} | {after:.0f} | "
              f"{peak / weights:.2f} |")


if __name__ == "__main__":
    main()
