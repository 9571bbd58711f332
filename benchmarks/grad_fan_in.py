"""Time `irkit grad` on one Sum of N inputs (issue 9: grad must be linear in fan-in).

    python benchmarks/grad_fan_in.py [N ...]      # default 5000 10000 20000
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def fan_in_model(n: int) -> onnx.ModelProto:
    """y = Sum(x * w_0, ..., x * w_{n-1}): `w` (one initializer) used n times, Sum of n."""
    nodes = [helper.make_node("Mul", ["x", "w"], [f"m{i}"]) for i in range(n)]
    nodes.append(helper.make_node("Sum", [f"m{i}" for i in range(n)], ["s"]))
    nodes.append(helper.make_node("ReduceSum", ["s"], ["y"], keepdims=0))
    graph = helper.make_graph(
        nodes, "fan_in", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])],
        [numpy_helper.from_array(np.ones(3, np.float32), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def main(sizes: list[int]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            path = os.path.join(tmp, f"fan{n}.onnx")
            onnx.save(fan_in_model(n), path)
            start = time.perf_counter()
            subprocess.run(["irkit", "grad", path, "--of", "y", "--wrt", "x,w", "-o",
                            os.path.join(tmp, "g.onnx")], check=True, capture_output=True)
            print(f"fan-in {n}: irkit grad {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [5000, 10000, 20000])
