"""Per-sample uncertainty scores (higher: the model knows less), for the ``h`` of the selection QUBO.

Each function takes a NumPy array or a torch tensor (detached and moved to the CPU here) and
returns a float64 NumPy vector with one score per sample.

* :func:`entropy`: ``-sum_c p_c log p_c`` in nats, in ``[0, log C]``.
* :func:`margin`: ``1 - (p_top1 - p_top2)``, in ``[0, 1]``.
* :func:`least_confidence`: ``1 - max_c p_c``, in ``[0, 1 - 1/C]``.
* :func:`variance`: regression; the variance over stochastic predictions (MC dropout, an ensemble),
  summed over output dimensions.

Classification scores take logits (``(n, C)``, default) or probabilities with ``probs=True``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import NonFiniteEmbeddingError, SelectionError

__all__ = ["UNCERTAINTIES", "entropy", "least_confidence", "margin", "variance"]


def _array(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    a = np.asarray(x, dtype=np.float64)
    if not np.isfinite(a).all():
        raise NonFiniteEmbeddingError(f"{name} hold NaN or infinity; check the model's outputs")
    return a


def _probabilities(x: Any, probs: bool) -> np.ndarray:
    a = _array(x, "probabilities" if probs else "logits")
    if a.ndim != 2 or a.shape[1] < 2:
        raise SelectionError(f"expected (num_samples, num_classes >= 2) scores, got shape {a.shape}")
    if probs:
        if (a < 0).any() or not np.allclose(a.sum(axis=1), 1.0, atol=1e-4):
            raise SelectionError("probabilities must be >= 0 and sum to 1 per row (pass logits "
                                 "with probs=False)")
        return a
    z = a - a.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def entropy(scores: Any, *, probs: bool = False) -> np.ndarray:
    """Predictive entropy in nats (module docstring)."""
    p = _probabilities(scores, probs)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(p), 0.0)
    return -terms.sum(axis=1)


def margin(scores: Any, *, probs: bool = False) -> np.ndarray:
    """One minus the gap between the two most probable classes."""
    p = _probabilities(scores, probs)
    top2 = -np.partition(-p, 1, axis=1)[:, :2]
    return 1.0 - (top2[:, 0] - top2[:, 1])


def least_confidence(scores: Any, *, probs: bool = False) -> np.ndarray:
    """One minus the probability of the predicted class."""
    return 1.0 - _probabilities(scores, probs).max(axis=1)


def variance(predictions: Any) -> np.ndarray:
    """Variance over ``num_draws`` predictions: input ``(num_draws, n)`` or ``(num_draws, n, d)``."""
    a = _array(predictions, "predictions")
    if a.ndim not in (2, 3) or a.shape[0] < 2:
        raise SelectionError(
            f"expected predictions of shape (num_draws >= 2, n) or (num_draws, n, d), got {a.shape}"
        )
    v = a.var(axis=0)
    return v if v.ndim == 1 else v.sum(axis=1)


UNCERTAINTIES = {"entropy": entropy, "margin": margin, "least_confidence": least_confidence}
