"""Step runners: one onnxruntime step equals a numpy SGD step without touching the model's
arrays; the onnxruntime runner and the numpy reference runner train to the same weights."""

from __future__ import annotations

import numpy as np
import pytest
from irkit.runtimes import make_step_runner

from irkit.nn import BatchNorm, Conv2D, Dense, MaxPool2D, Reshape, Sequential
from irkit.train import SGD, Adam, ModuleSource, build_step_graphs, get_loss


def _numpy_step(w: dict, x: np.ndarray, y: np.ndarray, lr: float) -> dict:
    w1, b1, w2, b2 = (w[k].astype(np.float64) for k in
                      ("dense_0.W", "dense_0.b", "dense_1.W", "dense_1.b"))
    z = x @ w1 + b1
    h = np.maximum(z, 0)
    s = h @ w2 + b2
    p = np.exp(s - s.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    d = (p - np.eye(s.shape[1])[y]) / len(x)
    dh = d @ w2.T * (z > 0)
    grads = {"dense_0.W": x.T @ dh, "dense_0.b": dh.sum(0), "dense_1.W": h.T @ d,
             "dense_1.b": d.sum(0)}
    return {k: w[k] - lr * grads[k] for k in grads}


def _runner(name: str, source, optimizer, lr: float, **options):
    steps = build_step_graphs(source, get_loss("cross_entropy"), optimizer)
    state = steps.initial_state(source.weights(), lr)
    return steps, make_step_runner(name, steps, state, **options)


def test_ort_step_matches_numpy_and_leaves_model_arrays_alone():
    source = ModuleSource(Sequential([Dense(16, "relu"), Dense(3)]), (4,), seed=2)
    before = {k: v.copy() for k, v in source.weights().items()}
    arrays = dict(source.weights())  # the very arrays the model holds
    steps, runner = _runner("onnxruntime", source, SGD(), 0.5)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 4)).astype(np.float32)
    y = rng.integers(0, 3, 16)
    expected = _numpy_step(before, x.astype(np.float64), y, 0.5)
    runner.step(x, y)
    for name, arr in arrays.items():
        np.testing.assert_array_equal(arr, before[name], err_msg=f"{name} changed in place")
    got = runner.read_state(steps.params)
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-5, atol=1e-6)
    expected2 = _numpy_step(got, x.astype(np.float64), y, 0.5)
    runner.step(x, y)  # the second step reads the other buffer set
    for name, value in runner.read_state(steps.params).items():
        np.testing.assert_allclose(value, expected2[name], rtol=1e-5, atol=1e-6)
    assert int(runner.read_state(["opt/step"])["opt/step"]) == 2


def _mlp():
    return Sequential([Dense(16, "relu"), Dense(8, "tanh"), Dense(3)])


def _cnn():
    # no bias before BatchNorm: its true gradient is 0, and Adam would turn rounding noise
    # in it into full-size steps that differ between any two executors
    return Sequential([Reshape([1, 6, 6]), Conv2D(4, 3, padding="same", use_bias=False),
                       BatchNorm(),
                       MaxPool2D(2), Conv2D(4, 3, padding="valid", activation="relu"), Reshape([4]),
                       Dense(3)])


@pytest.mark.parametrize("build, features, optimizer", [
    (_mlp, 4, lambda: Adam()), (_cnn, 36, lambda: Adam()), (_cnn, 36, lambda: SGD(momentum=0.9))],
    ids=["mlp-adam", "cnn-batchnorm-adam", "cnn-batchnorm-sgd"])
def test_20_steps_same_weights_on_onnxruntime_and_reference(build, features, optimizer):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(40, features)).astype(np.float32)
    y = rng.integers(0, 3, 40)
    runs = {}
    for name in ("onnxruntime", "reference"):
        steps, runner = _runner(name, ModuleSource(build(), (features,), seed=1), optimizer(),
                                0.01)
        staged = runner.stage(x, y)
        order = np.arange(40)
        for _ in range(4):  # 4 epochs of 5 batches of 8: 20 steps
            runner.train(staged, order, 8)
        runs[name] = runner.read_state()
    assert runs["onnxruntime"].keys() == runs["reference"].keys()
    assert int(runs["reference"]["opt/step"]) == 20
    for name, want in runs["reference"].items():
        np.testing.assert_allclose(runs["onnxruntime"][name], want, rtol=2e-4, atol=2e-5,
                                   err_msg=name)


@pytest.mark.parametrize("features, batch, n", [
    (4, 2, 2 * 2 * 64 + 3),  # over SLOTS batches: two full gathers, then 1 batch and 1 row
    (300, 256, 700),         # 3 slots of 300 KB in one gather, the last partial
    (300, 4096, 9000)],      # batches over SLOT_BYTES: a gather each
    ids=["many-small", "medium", "large"])
def test_train_passes_equal_batch_by_batch_steps(features, batch, n):
    """runner.train gathers the rows of many batches at once into bound slots: the losses,
    the batch hook's calls and the weights equal those of explicit steps on the ordered
    slices, bit for bit."""
    from irkit.runtimes.onnxruntime import SLOT_BYTES, SLOTS
    if batch == 2:
        assert n // batch > 2 * SLOTS
    assert (batch * features * 4 > SLOT_BYTES) == (batch == 4096)
    rng = np.random.default_rng(5)
    x = rng.normal(size=(n, features)).astype(np.float32)
    y = rng.integers(0, 3, n)
    order = rng.permutation(n)
    results, hooked = [], []
    for by_pass in (True, False):
        source = ModuleSource(Sequential([Dense(8, "relu"), Dense(3)]), (features,), seed=1)
        steps, runner = _runner("onnxruntime", source, Adam(), 0.01)
        if by_pass:
            totals = runner.train(runner.stage(x, y), order, batch,
                                  lambda i, loss: hooked.append((i, loss)))
        else:
            xo, yo = x[order], y[order]
            losses = [runner.step(xo[i:i + batch], yo[i:i + batch])[0]
                      for i in range(0, n, batch)]
        results.append(runner.read_state())
    assert hooked == list(enumerate(losses))
    sizes = [len(order[i:i + batch]) for i in range(0, n, batch)]
    assert totals.count == n
    assert totals.loss == sum(loss * size for loss, size in zip(losses, sizes))
    for name, value in results[0].items():
        np.testing.assert_array_equal(value, results[1][name], err_msg=name)


class _ScriptedRunner:
    """A StepRunner whose epochs report the given training losses (no validation), and whose
    starting weights have the loss `start`."""

    def __init__(self, losses, start=1.0):
        self.losses, self.state = iter(losses), {"w": np.zeros(2, np.float32)}
        self.start = start

    def train(self, staged, order, batch_size, on_batch=None):
        from irkit.runtimes.base import Totals
        self.state["w"] = self.state["w"] + 1
        return Totals(next(self.losses) * len(order), 0.0, len(order))

    def evaluate(self, staged, batch_size):
        from irkit.runtimes.base import Totals
        return Totals(self.start * len(staged[0]), 0.0, len(staged[0]))

    def read_state(self, names=None):
        return {n: v.copy() for n, v in self.state.items()}

    def load_state(self, values):
        self.state.update(values)


@pytest.mark.parametrize("start, losses, diverged", [
    (2e-8, [2e-8, 1e-3, 0.1], False),    # a fit that continues a trained model starts near 0
    (1.5, [1.5, 0.2, 3e3], False),
    (1.5, [1.5, 0.2, 2e4], True),        # 10^4 times the starting weights' loss
    (0.01, [0.01, 0.2, 2e4], True),      # 10^4 times 1, when the start was below 1
    (1.5, [1.5, float("nan"), 1.0], True),
    (1.1, [3e12, 1e12, 5e11], True)])    # the first epoch already exploded (Adam at lr 1e6)
def test_divergence_is_growth_over_the_start_or_a_non_finite_loss(start, losses, diverged):
    from irkit.errors import DataError
    from irkit.train.trainer import Trainer
    trainer = Trainer(_ScriptedRunner(losses, start), False, ["w"])
    x = (np.zeros((4, 1), np.float32), np.zeros(4, np.int64))
    if not diverged:
        assert trainer.fit(x, None, len(losses), 2).history["loss"] == pytest.approx(losses)
        return
    with pytest.raises(DataError, match="training diverged") as err:
        trainer.fit(x, None, len(losses), 2)
    if losses[0] < 1e4:
        assert "keeps the best weights" in str(err.value)
        assert trainer.runner.state["w"][0] < len(losses)  # the best epoch's, restored
    else:
        assert "epoch 1: " in str(err.value) and "nothing was kept" in str(err.value)


def test_passes_of_other_sizes_share_the_buffers_and_still_equal_explicit_steps():
    """Passes with other batch sizes and row counts, one growing the batch buffers (which
    drops the bindings that read the old ones): the same weights as explicit steps."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(300, 6)).astype(np.float32)
    y = rng.integers(0, 3, 300)
    passes = [(rng.permutation(50), 4), (rng.permutation(300), 64), (rng.permutation(37), 4),
              (rng.permutation(300)[:120], 16)]
    results = []
    for by_pass in (True, False):
        source = ModuleSource(Sequential([Dense(8, "relu"), Dense(3)]), (6,), seed=1)
        steps, runner = _runner("onnxruntime", source, Adam(), 0.01)
        staged = runner.stage(x, y)
        for order, batch in passes:
            if by_pass:
                runner.train(staged, order, batch)
            else:
                for i in range(0, len(order), batch):
                    runner.step(x[order[i:i + batch]], y[order[i:i + batch]])
        results.append(runner.read_state())
    for name, value in results[0].items():
        np.testing.assert_array_equal(value, results[1][name], err_msg=name)
