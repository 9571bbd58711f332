"""The lesson's 5-point example with irkit's low-level API: more parameters, less learning.

Five measurements lie near a straight line. Two models are fitted to them by gradient
descent, with gradients from `irkit.grad` (traced into an ONNX graph, run on onnxruntime):

    line        y = p0 + p1 u                       2 parameters
    polynomial  y = p0 + p1 u + p2 u^2 + ... + p6 u^6  7 parameters

With 7 parameters and 5 points the polynomial can pass through every point: its training
error goes to ~0. Six new measurements from the same line (half-way between the old ones and
half a step beyond them) show what it learnt: its validation error is far higher than the
line's, which could not fit the noise and so did not. Run: `python examples/lesson_5_points.py`.
"""

from __future__ import annotations

import numpy as np

import irkit

rng = np.random.default_rng(2)  # a fixed draw: other draws give other numbers, same story
x_train = np.arange(5.0)                               # 0, 1, 2, 3, 4
x_val = np.arange(-0.5, 5.0, 1.0)                      # -0.5, 0.5, ..., 4.5
y_train = 0.5 * x_train + 1 + rng.normal(0, 0.25, 5)   # a line plus measurement noise
y_val = 0.5 * x_val + 1 + rng.normal(0, 0.25, 6)


def scaled(x: np.ndarray) -> np.ndarray:
    """x on [-1, 1] over the training range: powers of it stay near 1, so plain gradient
    descent converges."""
    return (x - 2.0) / 2.0


def predict(p, u):
    """sum_k p[k] * u**k for k < len(p): a graph built from irkit Values."""
    powers = u.reshape(-1, 1) ** np.arange(p.shape[0], dtype=np.float64)  # (n, k)
    return powers @ p


def mse(p, u, y):
    """Mean squared error of the model with parameters p on the points (u, y)."""
    r = predict(p, u) - y
    return (r * r).mean()


error = irkit.function(mse)
gradient = irkit.grad(mse)  # d mse / d p, itself a graph


def fit(n_params: int, steps: int = 20_000, lr: float = 0.25) -> np.ndarray:
    """Gradient descent from p = 0."""
    p = np.zeros(n_params)
    for _ in range(steps):
        p = p - lr * gradient(p, scaled(x_train), y_train)
    return p


def main() -> None:
    print(f"{'model':<12}{'parameters':>11}{'training MSE':>15}{'validation MSE':>17}")
    results = {}
    for name, n in (("line", 2), ("polynomial", 7)):
        p = fit(n)
        train = float(error(p, scaled(x_train), y_train))
        val = float(error(p, scaled(x_val), y_val))
        results[name] = (train, val)
        print(f"{name:<12}{n:>11}{train:>15.3g}{val:>17.3g}")
    ratio = results["polynomial"][1] / results["line"][1]
    print(f"The 7-parameter model fits the 5 training points but is {ratio:.0f} times worse "
          "than the line on new points: it learnt the noise (overfitting).")

if __name__ == "__main__":
    main()
