"""Class probabilities from a model's scores: what `irkit predict` writes and what
`Model.predict(x, probabilities=True)` returns, computed in this one place."""

from __future__ import annotations

import numpy as np

from irkit.ir import Graph


def log_probabilities(scores: np.ndarray, kind: str | None = None) -> tuple[np.ndarray, str]:
    """Log class probabilities of scores (N, C) or (N, 1) for two classes, and what the
    scores were: `kind` ('probabilities' or 'logits'), or judged from the values."""
    s = np.asarray(scores, np.float64).reshape(len(scores), -1)
    if s.shape[1] == 1:  # one score per row: P(class 1), or its logit
        kind = kind or ("probabilities" if ((s >= 0) & (s <= 1)).all() else "logits")
        z = np.log(np.clip(s, 1e-300, 1)) - np.log(np.clip(1 - s, 1e-300, 1)) \
            if kind == "probabilities" else s
        s = np.concatenate([np.zeros_like(z), z], axis=1)  # softmax([0, z]) = [1-p, p]
        return s - _logsumexp(s), kind
    if kind is None and (s >= 0).all() and np.allclose(s.sum(axis=1), 1.0, atol=1e-3):
        kind = "probabilities"
    if kind == "probabilities":
        return np.log(np.clip(s, 1e-300, None)), "probabilities"
    return s - _logsumexp(s), "logits"


def _logsumexp(s: np.ndarray) -> np.ndarray:
    m = s.max(axis=1, keepdims=True)
    return m + np.log(np.exp(s - m).sum(axis=1, keepdims=True))


def scores_kind(graph: Graph) -> str:
    """'probabilities' when the graph's first output comes out of a Softmax or Sigmoid,
    else 'logits' (irkit's classification losses take logits)."""
    producer = graph.outputs[0].producer
    return "probabilities" if producer is not None and producer.op_type in (
        "Softmax", "Sigmoid") else "logits"


def probabilities(scores: np.ndarray, kind: str | None = None) -> np.ndarray:
    """Class probabilities (N, C) of scores (N, C), or (N, 1) for two classes."""
    return np.exp(log_probabilities(scores, kind)[0])
