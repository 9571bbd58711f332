"""The lesson's tensor warm-ups with irkit's numpy-like namespace: compute with tensors at once,
then differentiate any expression of them.

`irkit.numpy` functions compute immediately on data (through each op's numpy reference) and,
inside `irkit.grad`/`irkit.function`, the same calls build a graph that runs on onnxruntime.
Run: `python examples/tensors.py`.
"""

from __future__ import annotations

import numpy as np

import irkit
import irkit.numpy as inp


def warm_ups() -> None:
    """Tensors: arithmetic, matmul, broadcasting, indexing, reductions, activations."""
    x = inp.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    print("x * 2 + 1:", (x * 2 + 1).tolist())
    print("x @ x.T:", (x @ x.T).tolist())
    print("row 1:", x[1].tolist(), "column 2:", x[:, 2].tolist())
    print("sum:", x.sum().item(), "max per row:", x.max(axis=1).tolist(),
          "argmax:", x.argmax().item())
    print("softmax of row 0:", [round(float(p), 4) for p in inp.softmax(x[0])])
    print("x with x[0, 0] = 10:", x.at[0, 0].set(10.0).tolist())


def gradient_descent() -> np.ndarray:
    """Minimize sum((x - [3, -2])^2) from 0: lr 0.1, 15 steps."""
    df = irkit.grad(lambda x: inp.sum((x - np.array([3.0, -2.0])) ** 2))
    x = inp.zeros(2, dtype=np.float64)
    for _ in range(15):
        x = x - 0.1 * df(x)
    return x.numpy()


def linear_regression() -> tuple[float, float]:
    """Minibatch SGD on y = 2x + 0.9 + noise (seed 13, one shuffle, w = 100, b = 0)."""
    np.random.seed(13)
    xs = np.linspace(0, 3, 120)
    ys = 2 * xs + 0.9 + 0.5 * np.random.randn(120)
    order = np.random.permutation(120)
    dloss = irkit.grad(lambda w, b, xb, yb: inp.mean((w * xb + b - yb) ** 2), wrt=(0, 1))
    w, b = 100.0, 0.0  # Python floats are weak: they compute in the data's float64
    for _ in range(10):
        for i in range(0, 120, 4):
            batch = order[i:i + 4]
            gw, gb = dloss(w, b, xs[batch], ys[batch])
            w, b = w - 0.1 * gw, b - 0.1 * gb
    return float(w), float(b)


def hessian_vector_product() -> np.ndarray:
    """H v for f(x) = sum(x^3) at x = [1, 2, 3], v = [1, 0, -1], by grad of grad: 6 x v."""
    df = irkit.grad(lambda x: inp.sum(x ** 3))
    hvp = irkit.grad(lambda x, v: inp.sum(df(x) * v))
    return hvp(np.array([1.0, 2.0, 3.0]), np.array([1.0, 0.0, -1.0]))


def main() -> None:
    warm_ups()
    x = gradient_descent()
    print(f"gradient descent: [{x[0]:.3f}, {x[1]:.3f}]")
    w, b = linear_regression()
    print(f"linear regression: w {w:.2f} b {b:.2f}")
    print("Hessian-vector product:", hessian_vector_product().tolist())


if __name__ == "__main__":
    main()
