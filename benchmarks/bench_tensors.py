"""Eager tensors side by side: irkit.numpy (eager, each op through its numpy reference; and the
same chain traced once by irkit.function onto onnxruntime) against numpy, PyTorch eager and
jax.numpy (eager dispatch, no jit), on an elementwise chain and a 1024 x 1024 matmul.

    python benchmarks/bench_tensors.py [--threads N] [--repeats R] [--markdown]

The chain is y = tanh(x * 2 + 1) * sigmoid(x) - x / 3 (6 ops) on float32 vectors of 1,000 and
1,000,000 elements; the matmul is float32. Times are per call, median [min-max] of R runs
(each run averages enough calls to take ~50 ms), the peers taking turns.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_common import (  # noqa: E402
    cell,
    interleave,
    machine,
    machine_line,
    optional,
    set_threads,
    stats,
    table,
    torch_threads,
)


def _per_call(fn) -> float:
    """Seconds per call of fn, over enough calls to take ~50 ms (at least 3)."""
    fn()
    t0, n = time.perf_counter(), 0
    while n < 3 or time.perf_counter() - t0 < 0.05:
        fn()
        n += 1
    return (time.perf_counter() - t0) / n


def _peers(x_np, w_np):
    """name -> (chain(), matmul()) for every installed peer."""
    import numpy as np

    import irkit
    import irkit.numpy as inp

    def chain(m, x, sig):
        return m.tanh(x * 2 + 1) * sig(x) - x / 3

    peers = {}
    xt, wt = inp.tensor(x_np), inp.tensor(w_np)
    peers["irkit eager"] = (lambda: chain(inp, xt, inp.sigmoid), lambda: wt @ wt)
    traced = irkit.function(lambda x: chain(inp, x, inp.sigmoid))
    traced_mm = irkit.function(lambda w: w @ w)
    peers["irkit traced (ort)"] = (lambda: traced(x_np), lambda: traced_mm(w_np))
    peers["numpy"] = (lambda: chain(np, x_np, lambda v: 1 / (1 + np.exp(-v))),
                      lambda: w_np @ w_np)
    torch = optional("torch")
    if torch is not None:
        xp, wp = torch.from_numpy(x_np), torch.from_numpy(w_np)
        peers["torch eager"] = (lambda: chain(torch, xp, torch.sigmoid), lambda: wp @ wp)
    jax = optional("jax")
    if jax is not None:
        import jax.numpy as jnp
        xj, wj = jnp.asarray(x_np), jnp.asarray(w_np)
        peers["jax.numpy"] = (lambda: chain(jnp, xj, jax.nn.sigmoid).block_until_ready(),
                              lambda: (wj @ wj).block_until_ready())
    return peers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    set_threads(args.threads)
    torch_threads(args.threads)
    import numpy as np
    rng = np.random.default_rng(0)
    w = rng.standard_normal((1024, 1024)).astype(np.float32)
    rows: dict[str, list[str]] = {}
    for n in (1_000, 1_000_000):
        x = rng.standard_normal(n).astype(np.float32)
        peers = _peers(x, w)
        times = interleave({k: (lambda f=c: _per_call(f)) for k, (c, _) in peers.items()},
                           args.repeats)
        for name, t in times.items():
            rows.setdefault(name, [name]).append(cell(stats(t), "us"))
    peers = _peers(rng.standard_normal(10).astype(np.float32), w)
    times = interleave({k: (lambda f=m: _per_call(f)) for k, (_, m) in peers.items()},
                       max(3, args.repeats // 2))
    for name, t in times.items():
        rows[name].append(cell(stats(t), "ms"))
    missing = [p for p in ("torch", "jax") if optional(p) is None]
    print(machine_line(machine()))
    print(table(["peer", "chain n=1e3 (µs)", "chain n=1e6 (µs)", "matmul 1024 (ms)"],
                list(rows.values()), args.markdown))
    if missing:
        print(f"not installed, skipped: {', '.join(missing)}")


if __name__ == "__main__":
    main()
