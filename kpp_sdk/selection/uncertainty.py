"""Per-sample uncertainty scores (higher: the model knows less), for the ``h`` of the selection QUBO.

Each function takes a NumPy array or a torch tensor (detached and moved to the CPU here) and
returns a float64 NumPy vector with one score per sample.

* :func:`entropy`: ``-sum_c p_c log p_c`` in nats, in ``[0, log C]``.
* :func:`margin`: ``1 - (p_top1 - p_top2)``, in ``[0, 1]``.
* :func:`least_confidence`: ``1 - max_c p_c``, in ``[0, 1 - 1/C]``.
* :func:`variance`: regression; the variance over stochastic predictions (MC dropout, an ensemble),
  summed over output dimensions.

Classification scores take logits (``(n, C)``, default) or probabilities with ``probs=True``.

:class:`ScoreTable` keeps one score per training sample, written by the training loop from the
outputs it computes anyway, so that batch selection needs no forward pass of its own.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from .errors import NonFiniteEmbeddingError, SelectionError

__all__ = ["UNCERTAINTIES", "ScoreTable", "entropy", "least_confidence", "margin", "variance"]


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


class ScoreTable:
    """The latest uncertainty score of every training sample, written by the training loop.

    Scoring a candidate pool with the current model costs a forward pass over 4x the batch, more
    than the training step itself on small networks. The training loop already computes the
    model's outputs on every batch it trains on; writing their scores here lets a selector read
    a score for every candidate for free (what online batch selection does): each score is as
    old as the last time its sample was trained on::

        table = ScoreTable(len(train_set))
        sampler = SelectionSampler(store, QUBOSelector("sa.cpu"), 64, scores=table)
        for (x, y), _, idx in DataLoader(EmbeddingDataset(train_set, store), batch_sampler=sampler):
            logits = model(x)
            ...                                   # loss, backward, step
            table.update(idx, entropy(logits))    # detached here; no extra forward pass

    Samples never scored read as ``initial`` when it is given, otherwise as the largest score
    written so far (1.0 before the first write): unseen samples count as the most uncertain,
    so they are picked, and scored, early. Reads and writes may come from different threads.

    Parameters
    ----------
    num_samples : int
        Size of the training set (scores are indexed by dataset index).
    initial : float, optional
        Score of samples not yet written (default: the running maximum, see above).
    """

    def __init__(self, num_samples: int, *, initial: float | None = None):
        if isinstance(num_samples, (bool, np.bool_)) or not isinstance(num_samples, (int, np.integer)) \
                or num_samples < 1:
            raise SelectionError(f"num_samples must be a positive integer, got {num_samples!r}")
        if initial is not None and not np.isfinite(initial):
            raise SelectionError(f"initial must be a finite number, got {initial!r}")
        self._scores = np.zeros(int(num_samples))
        self._seen = np.zeros(int(num_samples), dtype=bool)
        self.initial = None if initial is None else float(initial)
        self._max: float | None = None
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self._scores.shape[0]

    def __repr__(self) -> str:
        return f"ScoreTable({len(self)} samples, {self.num_scored} scored)"

    @property
    def num_scored(self) -> int:
        """How many samples have a score."""
        return int(self._seen.sum())

    def _indices(self, indices: Any) -> np.ndarray:
        if hasattr(indices, "detach"):
            indices = indices.detach().cpu().numpy()
        idx = np.asarray(indices)
        if idx.ndim != 1 or not (idx.size == 0 or np.issubdtype(idx.dtype, np.integer)):
            raise SelectionError(f"indices must be a 1-D array of integers, got shape {idx.shape} "
                                 f"and dtype {idx.dtype}")
        n = len(self)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            bad = int(idx[(idx < 0) | (idx >= n)][0])
            raise SelectionError(f"index {bad} is out of range for a table of {n} samples")
        return idx

    def update(self, indices: Any, scores: Any) -> None:
        """Write ``scores`` (one per index; a vector, or logits ``(m, C)`` turned into entropy)."""
        idx = self._indices(indices)
        a = _array(scores, "scores")
        if a.ndim == 2:
            a = entropy(a)
        if a.shape != idx.shape:
            raise SelectionError(f"got {a.size} scores for {idx.size} indices; give one score per "
                                 "index (or the (m, C) logits of the batch)")
        if a.size == 0:
            return
        top = float(a.max())
        with self._lock:
            self._scores[idx] = a
            self._seen[idx] = True
            self._max = top if self._max is None else max(self._max, top)

    def __getitem__(self, indices: Any) -> np.ndarray:
        """The scores of ``indices`` (float64 copy); unseen samples as described above."""
        idx = self._indices(indices)
        with self._lock:
            out = self._scores[idx]
            seen = self._seen[idx]
            fill = self.initial if self.initial is not None else (
                1.0 if self._max is None else self._max)
        if not seen.all():
            out[~seen] = fill
        return out
