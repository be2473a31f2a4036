"""Batch selectors with one API: QUBO selection on an Ising machine and three baselines.

Every selector has ``select(embeddings, k, *, uncertainty=None, reference=None, seed=None)``
returning the ``k`` chosen row indices of ``embeddings`` (int64; QUBO: ascending, baselines: in the
order they were picked). ``uncertainty`` holds one score per row (higher: more informative; see
:mod:`kpp_sdk.selection.uncertainty`); ``reference`` holds items already chosen (an array of
embeddings, or a :class:`~kpp_sdk.selection.VectorStore` of them, e.g. the labelled set), which new
picks should not duplicate. A selector ignores what it does not use.

Distances are Euclidean between embeddings, after scaling every row to unit length when
``similarity="cosine"``. Similarities lie in [0, 1]:

* ``"rbf"`` (default): ``exp(-d^2 / (2 sigma^2))``; ``sigma`` is ``bandwidth``, or when None the
  median distance between the pool's items (the median heuristic, so the scale of the embedding
  does not matter).
* ``"cosine"``: ``max(cos, 0)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable

import numba as nb
import numpy as np

from ..device import Device
from .errors import SelectionError, check_batch_size, check_embeddings, check_scores
from .qubo import (
    DEFAULT_PENALTY_SCALE,
    SelectionResult,
    _select_kth,
    build_selection_qubo,
    resolve_solver,
    solve_selection,
)
from .store import VectorStore

__all__ = [
    "SIMILARITIES",
    "KCenterGreedySelector",
    "QUBOSelector",
    "RandomSelector",
    "Selector",
    "TopUncertaintySelector",
    "nearest_reference_distance",
    "similarity_matrix",
]

SIMILARITIES = ("rbf", "cosine")


@runtime_checkable
class Selector(Protocol):
    """Anything that picks ``k`` rows of a candidate pool."""

    def select(self, embeddings: Any, k: int, *, uncertainty: Any = None, reference: Any = None,
               seed: Any = None) -> np.ndarray: ...


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    zero = norms[:, 0] == 0
    if zero.any():
        raise SelectionError(
            f"row {int(np.flatnonzero(zero)[0])} of the embeddings is the zero vector, which has "
            "no direction for similarity='cosine'; use similarity='rbf'"
        )
    return x / norms


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(1)[:, None] - 2.0 * (a @ b.T) + (b * b).sum(1)[None, :]
    return np.maximum(d, 0.0)


_TILE = 32


@nb.njit(cache=True, nogil=True)
def _rbf_exponents(G, sq, bandwidth):  # pragma: no cover - compiled
    """The RBF exponents ``-d2_ij / (2 sigma^2)`` as a full float32 matrix (``-inf`` on the
    diagonal, so its exp is 0) and sigma, from the Gram matrix ``G``.

    ``d2_ij = max(sq_i + sq_j - (G_ij + G_ji), 0)`` is symmetric by construction (a matrix
    product need not be bitwise symmetric; J must be): ``G + G.T`` is formed first, tile by tile,
    so every later pass reads rows, never columns. With ``bandwidth <= 0`` sigma is the
    median of the positive pair distances (each pair once: the full matrix lists every pair
    twice, which leaves the median unchanged; zeros, i.e. duplicates, carry no scale).
    """
    n = G.shape[0]
    Gs = np.empty_like(G)  # G + G.T, tile by tile (a column walk stays within L1)
    for a in range(0, n, _TILE):
        ha = min(a + _TILE, n)
        for b in range(0, n, _TILE):
            hb = min(b + _TILE, n)
            for i in range(a, ha):
                for j in range(b, hb):
                    Gs[i, j] = G[i, j] + G[j, i]
    G = Gs
    sigma = bandwidth
    if bandwidth <= 0.0:
        vals = np.empty(n * (n - 1) // 2)
        m, lo, hi = 0, np.inf, 0.0
        for i in range(n):
            for j in range(i + 1, n):
                v = max(sq[i] + sq[j] - G[i, j], 0.0)
                if v > 0.0:
                    vals[m] = v
                    m += 1
                    lo = min(lo, v)
                    hi = max(hi, v)
        sigma = np.sqrt(_median(vals, m, lo, hi)) if m > 0 else 1.0
    c = -0.5 / (sigma * sigma)
    out = np.empty((n, n), dtype=np.float32)
    for i in range(n):
        for j in range(n):
            out[i, j] = max(sq[i] + sq[j] - G[i, j], 0.0) * c
        out[i, i] = -np.inf
    return out, sigma


_MEDIAN_BINS = 1024


@nb.njit(cache=True, nogil=True)
def _median(vals, m, lo, hi):  # pragma: no cover - compiled
    """``np.median(vals[:m])`` (reorders ``vals``), given ``lo, hi = min, max of vals[:m]``: a
    histogram over the value range (order preserving, so rank r lies in a known bin; each
    value's bin is kept, not recomputed), then a quickselect within the bins holding the middle
    ranks (a quickselect over all m values costs 4x more at m = 32640)."""
    if hi == lo:
        return lo
    counts = np.zeros(_MEDIAN_BINS, dtype=np.int64)
    bins = np.empty(m, dtype=np.uint16)
    scale = _MEDIAN_BINS / (hi - lo)
    for t in range(m):
        b = min(int((vals[t] - lo) * scale), _MEDIAN_BINS - 1)
        bins[t] = b
        counts[b] += 1
    r1 = m // 2
    r0 = r1 - 1 if m % 2 == 0 else r1  # the two middle ranks (equal when m is odd)
    b0, b1, base, cum = -1, -1, 0, 0
    for b in range(_MEDIAN_BINS):
        if b0 < 0 and cum + counts[b] > r0:
            b0, base = b, cum
        if cum + counts[b] > r1:
            b1 = b
            break
        cum += counts[b]
    cnt = 0
    for t in range(m):  # the values of bins b0..b1, in place at the front
        b = bins[t]
        if b0 <= b <= b1:
            vals[cnt] = vals[t]
            cnt += 1
    _select_kth(vals, cnt, r1 - base)
    med = vals[r1 - base]
    if r0 < r1:
        lower = vals[0]
        for t in range(1, r1 - base):
            lower = max(lower, vals[t])
        med = 0.5 * (med + lower)
    return med


def similarity_matrix(embeddings: Any, kind: str = "rbf", bandwidth: float | None = None, *,
                      scale: float = 1.0) -> tuple[np.ndarray, float | None]:
    """Pairwise similarities in [0, 1] (zero diagonal) and the RBF bandwidth used (None for cosine).

    See the module docstring for the kernels. ``scale`` multiplies the result (in the same pass).
    """
    x = check_embeddings(embeddings)
    if kind == "cosine":
        u = _unit_rows(x)
        s = np.clip(u @ u.T, 0.0, 1.0)
        np.fill_diagonal(s, 0.0)
        if scale != 1.0:
            s *= scale
        return s, None
    if kind != "rbf":
        raise SelectionError(f"similarity must be one of {SIMILARITIES}, got {kind!r}")
    if bandwidth is not None:
        sigma = float(bandwidth)
        if not (np.isfinite(sigma) and sigma > 0):
            raise SelectionError(f"bandwidth must be a positive number, got {bandwidth!r}")
    e, sigma = _rbf_exponents(x @ x.T, (x * x).sum(1), -1.0 if bandwidth is None else float(bandwidth))
    # exp in float32: NumPy's SIMD float32 exp is 4x faster than float64's (which numba cannot
    # vectorise either); similarities in [0, 1] need no more than float32's 1e-7
    np.exp(e, out=e)
    return np.multiply(e, scale, dtype=np.float64), float(sigma)


def nearest_reference_distance(candidates: np.ndarray, reference: Any, *,
                               block: int = 2048) -> np.ndarray:
    """Euclidean distance from each candidate row to its nearest reference item.

    ``reference`` is an array of embeddings (exact, in blocks) or a :class:`VectorStore` (one
    1-nearest-neighbour query per candidate; a cosine store compares unit vectors, and its
    distance ``1 - cos`` is turned into the Euclidean distance ``sqrt(2 (1 - cos))``).
    """
    if isinstance(reference, VectorStore):
        if len(reference) == 0:
            return np.full(candidates.shape[0], np.inf)
        d, _ = reference.search(candidates, 1)
        d = d[:, 0].astype(np.float64)
        return np.sqrt(2.0 * d) if reference.metric == "cosine" else np.sqrt(d)
    ref = check_embeddings(reference, candidates.shape[1], name="reference")
    if ref.shape[0] == 0:
        return np.full(candidates.shape[0], np.inf)
    out = np.empty(candidates.shape[0])
    for lo in range(0, ref.shape[0], block):
        d = np.sqrt(_sq_dists(candidates, ref[lo:lo + block]).min(axis=1))
        out = d if lo == 0 else np.minimum(out, d)
    return out


def _check_reference_metric(reference: Any, cosine: bool) -> None:
    """A store's distances must be those of the selector: cosine with cosine, l2 otherwise."""
    if isinstance(reference, VectorStore) and (reference.metric == "cosine") != cosine:
        want = "cosine" if cosine else "l2"
        raise SelectionError(
            f"the reference store uses metric={reference.metric!r} but this selector compares "
            f"{'unit vectors' if cosine else 'raw embeddings'}; give it a store with metric={want!r}"
        )


def _selection_defaults(solver: Any) -> dict:
    """QUBOSelector.DEFAULT_SA_OPTIONS for an sa.cpu whose defaults the user left alone."""
    if not (isinstance(solver, Device) and solver.name == "sa.cpu"):
        return {}
    mine, factory = solver.options, type(solver).OPTIONS
    return {k: v for k, v in QUBOSelector.DEFAULT_SA_OPTIONS.items() if mine.get(k) == factory.get(k)}


def _has_reference(reference: Any) -> bool:
    if reference is None:
        return False
    if isinstance(reference, VectorStore):
        return len(reference) > 0
    return np.size(reference) > 0


class QUBOSelector:
    """Uncertain and mutually dissimilar items, chosen by solving a QUBO on an Ising machine.

    For a pool of n candidates and batch size k it minimises (see :mod:`kpp_sdk.selection.qubo`)::

        f(x) = sum_i h_i x_i + sum_{i<j} J_ij x_i x_j,   exactly k of x_i = 1,
        h_i  = -uncertainty_weight * u_i / max(u) + reference_weight * sim(i, nearest reference)
        J_ij = diversity_weight * sim(i, j) / (k - 1)

    so a chosen item earns its normalised uncertainty and pays its mean similarity to the other
    chosen items and its similarity to the closest already-chosen (reference) item. Dividing by
    ``k - 1`` makes the weights mean the same for every batch size. Without uncertainty scores
    ``u = 0`` (pure diversity).

    Parameters
    ----------
    solver : Device, str or Kaiwu-style optimizer
        Default ``"sa.cpu"``. For ``sa.cpu`` (by name or instance) the selector runs
        ``num_sweeps=20`` and ``num_threads=1`` (:attr:`DEFAULT_SA_OPTIONS`: polish does the fine
        work, and one thread avoids a thread-pool hop per call) unless ``options`` or the instance's
        own defaults say otherwise; any other Device runs with its defaults plus ``options``.
    uncertainty_weight, diversity_weight, reference_weight : float
        Defaults 1.0, 1.0, 1.0 (all >= 0).
    similarity : {"rbf", "cosine"}
        Kernel (module docstring); default ``"rbf"`` with the median-distance bandwidth.
    bandwidth : float, optional
        Fixed RBF bandwidth in embedding units.
    penalty : float, optional
        Weight of ``(sum x - k)^2``; default ``penalty_scale * penalty_bound`` (always exact).
    num_reads : int
        Reads per solve (default 1); every read is repaired (and polished) and the best kept.
        On 30 pools of 256 digits (k = 64) one read of 20 sweeps, polished, came within 5e-5
        (mean 3e-6) of the objective of the best of 16 reads of 500 sweeps; two reads of 50
        sweeps within 4e-6, at 1.5x the time.
    polish : bool
        Improve every repaired read by exchanges (:func:`~kpp_sdk.selection.qubo.swap_descent`)
        before choosing (default True; see :mod:`kpp_sdk.selection.qubo` for why).
    options : dict, optional
        Extra options for ``Device.sample`` (e.g. ``{"num_sweeps": 500}``).

    After each :meth:`select`, :attr:`last_result` holds the :class:`SelectionResult`.
    """

    #: options added for the default solver only, so that selecting 64 of 256 stays cheap
    DEFAULT_SA_OPTIONS: Mapping[str, Any] = MappingProxyType({"num_sweeps": 20, "num_threads": 1})

    def __init__(self, solver: Any = "sa.cpu", *, uncertainty_weight: float = 1.0,
                 diversity_weight: float = 1.0, reference_weight: float = 1.0,
                 similarity: str = "rbf", bandwidth: float | None = None,
                 penalty: float | None = None, penalty_scale: float = DEFAULT_PENALTY_SCALE,
                 num_reads: int = 1, polish: bool = True, options: dict | None = None):
        for name, w in (("uncertainty_weight", uncertainty_weight),
                        ("diversity_weight", diversity_weight),
                        ("reference_weight", reference_weight)):
            if not (np.isfinite(w) and w >= 0):
                raise SelectionError(f"{name} must be a finite number >= 0, got {w!r}")
        if similarity not in SIMILARITIES:
            raise SelectionError(f"similarity must be one of {SIMILARITIES}, got {similarity!r}")
        self.solver = resolve_solver(solver)
        self.uncertainty_weight = float(uncertainty_weight)
        self.diversity_weight = float(diversity_weight)
        self.reference_weight = float(reference_weight)
        self.similarity = similarity
        self.bandwidth = bandwidth
        self.penalty = penalty
        self.penalty_scale = penalty_scale
        self.num_reads = num_reads
        self.polish = bool(polish)
        opts = _selection_defaults(self.solver)
        opts.update(options or {})
        self.options = opts
        self.last_result: SelectionResult | None = None

    def __repr__(self) -> str:
        name = getattr(self.solver, "name", type(self.solver).__name__)
        return (f"QUBOSelector(solver={name!r}, uncertainty_weight={self.uncertainty_weight}, "
                f"diversity_weight={self.diversity_weight}, "
                f"reference_weight={self.reference_weight}, similarity={self.similarity!r})")

    def build(self, embeddings: Any, k: int, *, uncertainty: Any = None, reference: Any = None):
        """The :class:`~kpp_sdk.selection.qubo.SelectionQUBO` that :meth:`select` solves."""
        x = check_embeddings(embeddings)
        n = x.shape[0]
        k = check_batch_size(k, n)
        h = np.zeros(n)
        if uncertainty is not None:
            u = check_scores(uncertainty, n)
            top = np.abs(u).max()
            if top > 0:
                h -= self.uncertainty_weight * u / top
        if self.similarity == "cosine":
            x = _unit_rows(x)
        J, sigma = similarity_matrix(x, self.similarity, self.bandwidth,
                                     scale=self.diversity_weight / max(k - 1, 1))
        if self.reference_weight > 0 and _has_reference(reference):
            _check_reference_metric(reference, self.similarity == "cosine")
            d = nearest_reference_distance(x, reference)
            if self.similarity == "cosine":
                ref_sim = np.clip(1.0 - 0.5 * d * d, 0.0, 1.0)
            else:
                ref_sim = np.exp(-(d * d) / (2.0 * sigma * sigma))
            h += self.reference_weight * ref_sim
        # J is symmetric, finite, zero on the diagonal by construction: skip re-checking n^2 values
        return build_selection_qubo(h, J, k, penalty=self.penalty, penalty_scale=self.penalty_scale,
                                    _checked=True)

    def select(self, embeddings: Any, k: int, *, uncertainty: Any = None, reference: Any = None,
               seed: Any = None) -> np.ndarray:
        qubo = self.build(embeddings, k, uncertainty=uncertainty, reference=reference)
        self.last_result = solve_selection(qubo, self.solver, num_reads=self.num_reads, seed=seed,
                                           options=self.options, polish=self.polish)
        return self.last_result.indices


# --- selection in a worker process (SelectionSampler(worker="process")) ---------------------------


def _worker_loop(conn: Any, selector: Any, store: Any) -> None:  # pragma: no cover - in the child
    """Serve ``(ids, k, uncertainty, seed)`` requests in order until ``None`` or EOF (the
    embeddings come from the worker's copy of ``store``: a request stays a few KB, well inside a
    pipe's buffer, so sending it never waits for the worker); answer each with
    ``(True, picks)`` or ``(False, exception)``."""
    while True:
        try:
            req = conn.recv()
        except (EOFError, OSError):
            return
        if req is None:
            return
        ids, k, u, seed = req
        try:
            out = (True, np.asarray(selector.select(store.get(ids), k, uncertainty=u, seed=seed)))
        except Exception as exc:  # noqa: BLE001 - handed to the parent, which raises it
            out = (False, exc)
        try:
            conn.send(out)
        except Exception as exc:  # noqa: BLE001 - e.g. an exception that does not pickle
            conn.send((False, SelectionError(f"{type(exc).__name__}: {exc}")))


class RandomSelector:
    """k items uniformly at random without replacement (the baseline every method must beat)."""

    def select(self, embeddings: Any, k: int, *, uncertainty: Any = None, reference: Any = None,
               seed: Any = None) -> np.ndarray:
        n = check_embeddings(embeddings).shape[0]
        k = check_batch_size(k, n)
        return np.random.default_rng(seed).choice(n, size=k, replace=False).astype(np.int64)


class TopUncertaintySelector:
    """The k items with the highest uncertainty (ties broken by index); ignores diversity."""

    def select(self, embeddings: Any, k: int, *, uncertainty: Any = None, reference: Any = None,
               seed: Any = None) -> np.ndarray:
        n = check_embeddings(embeddings).shape[0]
        k = check_batch_size(k, n)
        if uncertainty is None:
            raise SelectionError("TopUncertaintySelector needs uncertainty scores (one per item)")
        u = check_scores(uncertainty, n)
        return np.argsort(-u, kind="stable")[:k].astype(np.int64)


class KCenterGreedySelector:
    """Greedy k-center (core-set) selection: repeatedly pick the item farthest from every center.

    Centers start as the ``reference`` items (the labelled set); without a reference the first
    pick is a uniformly random item (``seed``). Euclidean distance on the embeddings (unit rows
    with ``metric="cosine"``). Ignores uncertainty.
    """

    def __init__(self, metric: str = "euclidean"):
        if metric not in ("euclidean", "cosine"):
            raise SelectionError(f"metric must be 'euclidean' or 'cosine', got {metric!r}")
        self.metric = metric

    def select(self, embeddings: Any, k: int, *, uncertainty: Any = None, reference: Any = None,
               seed: Any = None) -> np.ndarray:
        x = check_embeddings(embeddings)
        n = x.shape[0]
        k = check_batch_size(k, n)
        if self.metric == "cosine":
            x = _unit_rows(x)
        picks: list[int] = []
        if _has_reference(reference):
            _check_reference_metric(reference, self.metric == "cosine")
            if self.metric == "cosine" and not isinstance(reference, VectorStore):
                reference = _unit_rows(check_embeddings(reference, x.shape[1], name="reference"))
            dmin = nearest_reference_distance(x, reference)
        else:
            first = int(np.random.default_rng(seed).integers(n))
            picks.append(first)
            dmin = np.sqrt(_sq_dists(x, x[first:first + 1])[:, 0])
        sq = (x * x).sum(1)
        while len(picks) < k:
            d = dmin.copy()
            d[picks] = -np.inf
            i = int(np.argmax(d))
            picks.append(i)
            di = np.sqrt(np.maximum(sq - 2.0 * (x @ x[i]) + sq[i], 0.0))
            dmin = np.minimum(dmin, di)
        return np.asarray(picks, dtype=np.int64)
