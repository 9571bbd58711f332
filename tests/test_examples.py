"""The scripts in examples/ run offline, in seconds, and print what they claim."""

from __future__ import annotations

import os
import subprocess
import sys

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


def run_example(name: str) -> str:
    result = subprocess.run([sys.executable, os.path.join(EXAMPLES, name)], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr  # no warnings either
    return result.stdout


def test_lesson_5_points_shows_overfitting():
    out = run_example("lesson_5_points.py").splitlines()
    assert out[0].split() == ["model", "parameters", "training", "MSE", "validation", "MSE"]
    rows = {line.split()[0]: [float(v) for v in line.split()[1:]] for line in out[1:3]}
    (n_line, train_line, val_line), (n_poly, train_poly, val_poly) = rows["line"], \
        rows["polynomial"]
    assert (n_line, n_poly) == (2, 7)
    assert train_poly < 1e-8            # 7 parameters through 5 points: ~0 training error
    assert train_line > 1e-3            # a line cannot pass through noisy points
    assert val_poly > 1e6 * train_poly  # ... but the polynomial's validation error is large
    assert val_poly > 10 * val_line     # and far higher than the line's
    assert "times worse than the line" in out[3]


def _check_finetune(out: list[str]) -> None:
    assert out[0].startswith("imported ")
    assert "val_accuracy" in out[1]
    assert out[2].startswith("onnxruntime on ")
    test_accuracy = float(out[2].split("test accuracy ")[1].split(",")[0])
    agree = float(out[2].rsplit("within ", 1)[1])
    assert test_accuracy >= 0.9       # the fine-tuned inference file, run by onnxruntime alone
    assert agree < 1e-4               # inference mode: a batch and single rows agree


def test_finetune_vision_example():
    import pytest
    pytest.importorskip("torch")
    pytest.importorskip("onnxscript")
    _check_finetune(run_example("finetune_vision.py").splitlines())


def test_finetune_text_example():
    import pytest
    pytest.importorskip("torch")
    pytest.importorskip("onnxscript")
    pytest.importorskip("transformers")
    out = run_example("finetune_text.py").splitlines()
    assert "input_ids int64(12,), attention_mask int64(12,)" in out[0]
    _check_finetune(out)


def test_tensors_gives_the_lessons_numbers():
    out = run_example("tensors.py")
    assert "x @ x.T: [[14.0, 32.0], [32.0, 77.0]]" in out
    assert "softmax of row 0: [0.09, 0.2447, 0.6652]" in out
    assert "gradient descent: [2.894, -1.930]" in out
    assert "linear regression: w 1.86 b 1.07" in out
    assert "Hessian-vector product: [6.0, 0.0, -18.0]" in out
