"""Errors of active selection, and the input checks that raise them before any work starts.

Every class here is a :class:`kpp_sdk.KppError` and a ``ValueError``; the embedding errors are
also the core's :class:`~kpp_sdk.NonFiniteError` / :class:`~kpp_sdk.SizeMismatchError`, so code
that already catches those keeps working.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import KppError, NonFiniteError, SizeMismatchError

__all__ = [
    "EmbeddingDimensionError",
    "InvalidBatchSizeError",
    "NonFiniteEmbeddingError",
    "SelectionError",
    "check_batch_size",
    "check_embeddings",
    "check_scores",
]


class SelectionError(KppError, ValueError):
    """Input to a selector, a store or a selection collate is unusable."""


class InvalidBatchSizeError(SelectionError):
    """The number of items to select is not an integer in ``1..pool size``."""


class NonFiniteEmbeddingError(SelectionError, NonFiniteError):
    """An embedding (or an uncertainty score) holds NaN or infinity."""


class EmbeddingDimensionError(SelectionError, SizeMismatchError):
    """Embeddings do not have the dimension the store (or the rest of the pool) has."""


def check_embeddings(x: Any, dim: int | None = None, *, name: str = "embeddings",
                     dtype: Any = np.float64) -> np.ndarray:
    """``x`` as a C-contiguous 2-D array of ``dtype``; a single vector becomes one row.

    Raises :class:`EmbeddingDimensionError` for a wrong shape or a dimension other than ``dim``,
    and :class:`NonFiniteEmbeddingError` naming the first row that holds NaN or infinity.
    """
    if hasattr(x, "detach"):  # a torch tensor, without importing torch
        x = x.detach().cpu().numpy()
    try:
        a = np.asarray(x, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise SelectionError(f"{name} must be a numeric array: {exc}") from None
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2:
        raise EmbeddingDimensionError(
            f"{name} must be a 2-D array (num_items, dim), got shape {np.shape(x)}"
        )
    if a.shape[1] == 0:
        raise EmbeddingDimensionError(f"{name} have dimension 0; each item needs a vector")
    if dim is not None and a.shape[1] != dim:
        raise EmbeddingDimensionError(
            f"{name} have dimension {a.shape[1]} but the store holds {dim}-dimensional vectors; "
            "embed with the same encoder that filled the store (or build a new store)"
        )
    bad = ~np.isfinite(a)
    if bad.any():
        r, c = (int(v) for v in np.argwhere(bad)[0])
        raise NonFiniteEmbeddingError(
            f"{name}[{r}, {c}] = {a[r, c]}: embeddings must be finite; drop or re-embed row {r} "
            "(NaN usually comes from a diverged encoder or a zero-norm vector divided by its norm)"
        )
    return np.ascontiguousarray(a)


def check_batch_size(k: Any, pool_size: int, *, what: str = "items") -> int:
    """``k`` as an int in ``1..pool_size``, or :class:`InvalidBatchSizeError`."""
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)):
        raise InvalidBatchSizeError(f"the number of {what} to select must be an integer, got {k!r}")
    if k < 1:
        raise InvalidBatchSizeError(f"the number of {what} to select must be >= 1, got {k}")
    if k > pool_size:
        raise InvalidBatchSizeError(
            f"cannot select {k} {what} from a pool of {pool_size}; use k <= {pool_size} or a larger "
            "candidate pool"
        )
    return int(k)


def check_scores(u: Any, n: int, *, name: str = "uncertainty") -> np.ndarray:
    """Per-item scores as a float64 vector of length ``n``, finite."""
    if hasattr(u, "detach"):
        u = u.detach().cpu().numpy()
    a = np.asarray(u, dtype=np.float64).reshape(-1) if np.ndim(u) else np.asarray([u], float)
    if a.shape != (n,):
        raise SizeMismatchError(f"{name} has {a.size} entries but the pool has {n} items")
    bad = ~np.isfinite(a)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise NonFiniteEmbeddingError(f"{name}[{i}] = {a[i]} is not finite")
    return a
