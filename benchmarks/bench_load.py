"""Load time of torch BERT exports (legacy and dynamo exporter, tests/torch_models.py) and the
whole-graph onnx shape inferences one load runs.

    python -m benchmarks.bench_load [--rounds 10] [--dir DIR]

Writes the two exports to DIR (a temporary folder by default) and prints, for each, the
number of whole-graph `onnx.shape_inference.infer_shapes` calls of one `irkit.onnx_io.load`
(one-node models, as the folding cap's size checks infer them, counted apart) and the median
and fastest of `--rounds` loads.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time


def _count(path: str) -> tuple[int, int]:
    """(whole-graph inferences, one-node inferences) of one load of `path`."""
    import onnx.shape_inference as si

    from irkit.onnx_io import load
    real, counts = si.infer_shapes, [0, 0]

    def counting(model, *args, **kwargs):
        counts[len(model.graph.node) == 1] += 1
        return real(model, *args, **kwargs)
    si.infer_shapes = counting
    try:
        load(path)
    finally:
        si.infer_shapes = real
    return counts[0], counts[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--dir")
    args = parser.parse_args()
    from irkit.onnx_io import load
    from tests.torch_models import export, make
    folder = args.dir or tempfile.mkdtemp()
    net, inputs = make("bert", loss=False)
    for dynamo in (False, True):
        path = os.path.join(folder, f"bert_{'dynamo' if dynamo else 'legacy'}.onnx")
        if not os.path.exists(path):
            export(net, inputs, path, dynamo=dynamo, output="logits")
        load(path)  # warm: imports, onnx's schemas
        whole, one_node = _count(path)
        times = []
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            load(path)
            times.append(time.perf_counter() - t0)
        print(f"{os.path.basename(path)}: {whole} whole-graph inferences (+{one_node} one-node)"
              f", load median {statistics.median(times) * 1e3:.1f} ms, fastest "
              f"{min(times) * 1e3:.1f} ms ({args.rounds} loads)")


if __name__ == "__main__":
    main()
