"""kill -9 at random moments of `irkit train digits_cnn --save-training` leaves the model and
the training file loadable and matching (the same pair id), or the previous pair intact."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time

import onnx
from conftest import irkit_command

from irkit.signature import META_PAIR

KILLS = 20


def _irkit() -> list[str]:
    return irkit_command()


def _pair(path) -> str:
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    return {p.key: p.value for p in model.metadata_props}[META_PAIR]


def test_kill_at_random_moments_leaves_a_matching_pair(tmp_path):
    cmd = [*_irkit(), "train", "digits_cnn", "-o", "m.onnx", "--save-training", "t.onnx",
           "--epochs", "1", "--json"]
    start = time.perf_counter()
    subprocess.run(cmd, cwd=tmp_path, check=True, capture_output=True)
    duration = time.perf_counter() - start
    pairs = {_pair(tmp_path / "m.onnx")}
    assert _pair(tmp_path / "t.onnx") in pairs
    rng = random.Random(0)
    killed = attempts = 0
    while killed < KILLS and attempts < 3 * KILLS:
        attempts += 1
        proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        began = time.perf_counter()
        time.sleep(rng.uniform(0.2, 1.0) * duration)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            killed += 1
        else:  # finished first: the machine is faster now, aim earlier next time
            duration = time.perf_counter() - began
        proc.wait()
        model_pair, training_pair = _pair(tmp_path / "m.onnx"), _pair(tmp_path / "t.onnx")
        assert model_pair == training_pair, "the model and the training file do not match"
        pairs.add(model_pair)
    assert killed == KILLS, f"only {killed} of {attempts} runs were interrupted"
