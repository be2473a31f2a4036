"""Feature selection with the selection QUBO, as a scikit-learn selector.

For d features and a fixed number k of them it minimises (exactly k of x_i = 1)::

    f(x) = -sum_i r_i x_i + redundancy_weight * sum_{i<j} R_ij x_i x_j

with relevance ``r`` on the diagonal (scaled so that max r = 1) and redundancy ``R_ij`` off it, so
with the default weight 1 a perfectly redundant pair costs as much as the most relevant feature
earns: a copy of a chosen feature is never worth taking. (Batch selection divides its redundancy
by ``k - 1`` instead, because there near-duplicates are common and only their mean matters.)
Relevance is ``"mutual_info"`` (default; scikit-learn's k-nearest-neighbour estimator,
``mutual_info_classif`` or ``mutual_info_regression`` by ``task``) or ``"abs_corr"`` (``|Pearson
correlation|`` with the target; for a classification target, the correlation ratio ``eta`` of the
feature across classes, which is what a correlation means for an unordered label). Redundancy is
the absolute Pearson correlation between features. The QUBO is solved like a batch selection
(:mod:`kpp_sdk.selection.qubo`): on any Device or Kaiwu-style optimizer, repaired to exactly k.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import MissingDependencyError
from .errors import SelectionError, check_batch_size, check_embeddings
from .qubo import DEFAULT_PENALTY_SCALE, SelectionResult, build_selection_qubo, solve_selection

try:
    from sklearn.base import BaseEstimator
    from sklearn.feature_selection import SelectorMixin
    from sklearn.utils.validation import check_is_fitted
except ImportError:  # pragma: no cover - exercised only without scikit-learn
    raise MissingDependencyError("scikit-learn", extra="selection",
                                 feature="QUBOFeatureSelector") from None

__all__ = ["QUBOFeatureSelector", "feature_redundancy", "feature_relevance"]

RELEVANCES = ("mutual_info", "abs_corr")
TASKS = ("auto", "classification", "regression")


def _is_classification(y: np.ndarray, task: str) -> bool:
    if task != "auto":
        return task == "classification"
    if y.dtype.kind in "biuOSU":
        return True
    return bool(np.all(y == np.round(y)) and np.unique(y).size <= max(20, int(0.05 * y.size)))


def _abs_corr_columns(X: np.ndarray, t: np.ndarray) -> np.ndarray:
    xc = X - X.mean(axis=0)
    tc = t - t.mean()
    denom = np.sqrt((xc * xc).sum(axis=0) * (tc * tc).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        c = np.abs(xc.T @ tc) / denom
    return np.where(denom > 0, c, 0.0)


def _correlation_ratio(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """eta per column: sqrt(between-class sum of squares / total sum of squares), in [0, 1]."""
    mean = X.mean(axis=0)
    total = ((X - mean) ** 2).sum(axis=0)
    between = np.zeros(X.shape[1])
    for c in np.unique(y):
        rows = X[y == c]
        between += rows.shape[0] * (rows.mean(axis=0) - mean) ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        eta = np.sqrt(between / total)
    return np.where(total > 0, eta, 0.0)


def feature_relevance(X: Any, y: Any, kind: str = "mutual_info", *, task: str = "auto",
                      random_state: Any = None) -> np.ndarray:
    """Relevance of each column of ``X`` to ``y`` (>= 0, unscaled); see the module docstring."""
    if kind not in RELEVANCES:
        raise SelectionError(f"relevance must be one of {RELEVANCES}, got {kind!r}")
    if task not in TASKS:
        raise SelectionError(f"task must be one of {TASKS}, got {task!r}")
    X = check_embeddings(X, name="X")
    y = np.asarray(y)
    if y.ndim != 1 or y.shape[0] != X.shape[0]:
        raise SelectionError(f"y must be a vector of {X.shape[0]} targets, got shape {y.shape}")
    classification = _is_classification(y, task)
    if kind == "abs_corr":
        if classification:
            return _correlation_ratio(X, y)
        return _abs_corr_columns(X, y.astype(np.float64))
    from sklearn.feature_selection import mutual_info_classif, mutual_info_regression

    mi = mutual_info_classif if classification else mutual_info_regression
    return np.maximum(mi(X, y, random_state=random_state), 0.0)


def feature_redundancy(X: Any) -> np.ndarray:
    """``|corr(X_i, X_j)|`` with a zero diagonal; constant columns are uncorrelated with all."""
    X = check_embeddings(X, name="X")
    xc = X - X.mean(axis=0)
    norms = np.sqrt((xc * xc).sum(axis=0))
    safe = np.where(norms > 0, norms, 1.0)
    z = xc / safe
    R = np.abs(z.T @ z)
    R[:, norms == 0] = 0.0
    R[norms == 0, :] = 0.0
    np.fill_diagonal(R, 0.0)
    return np.clip(R, 0.0, 1.0)


class QUBOFeatureSelector(SelectorMixin, BaseEstimator):
    """Select ``n_features_to_select`` relevant, non-redundant features by solving a QUBO.

    Parameters
    ----------
    n_features_to_select : int
        The fixed number k of features kept (must be <= the number of features at ``fit``).
    relevance : {"mutual_info", "abs_corr"}
        The diagonal (module docstring); default ``"mutual_info"``.
    redundancy_weight : float
        Weight of the pairwise ``|corr|`` among the chosen features against relevance
        (default 1.0; 0 reduces to the k most relevant features).
    task : {"auto", "classification", "regression"}
        How ``y`` is read; ``"auto"`` treats integer, boolean and string targets, and float
        targets with few distinct integer values, as classes.
    solver : Device, str or Kaiwu-style optimizer
        Default ``"sa.cpu"``.
    num_reads : int
        Reads per solve (default 16).
    polish : bool
        Improve the repaired reads by exchanges (default True; see :mod:`kpp_sdk.selection.qubo`).
    options : dict, optional
        Options for ``Device.sample``.
    random_state : int, optional
        Seeds the mutual-information estimate and the solver.

    Attributes (after ``fit``)
    --------------------------
    support_ : (d,) bool mask of kept features.
    relevance_ : (d,) relevance before scaling.
    redundancy_ : (d, d) ``|corr|`` matrix.
    objective_ : f of the chosen set.
    result_ : the :class:`~kpp_sdk.selection.qubo.SelectionResult`.
    n_features_in_ : d.
    """

    def __init__(self, n_features_to_select: int = 10, *, relevance: str = "mutual_info",
                 redundancy_weight: float = 1.0, task: str = "auto", solver: Any = "sa.cpu",
                 num_reads: int = 16, polish: bool = True, options: dict | None = None,
                 random_state: Any = None):
        self.n_features_to_select = n_features_to_select
        self.relevance = relevance
        self.redundancy_weight = redundancy_weight
        self.task = task
        self.solver = solver
        self.num_reads = num_reads
        self.polish = polish
        self.options = options
        self.random_state = random_state

    def build_qubo(self, X: Any, y: Any):
        """The selection QUBO for ``(X, y)``; sets ``relevance_`` and ``redundancy_``."""
        X = check_embeddings(X, name="X")
        k = check_batch_size(self.n_features_to_select, X.shape[1], what="features")
        if not (np.isfinite(self.redundancy_weight) and self.redundancy_weight >= 0):
            raise SelectionError(f"redundancy_weight must be >= 0, got {self.redundancy_weight!r}")
        self.relevance_ = feature_relevance(X, y, self.relevance, task=self.task,
                                            random_state=self.random_state)
        self.redundancy_ = feature_redundancy(X)
        top = self.relevance_.max()
        h = -(self.relevance_ / top if top > 0 else self.relevance_)
        J = self.redundancy_weight * self.redundancy_
        return build_selection_qubo(h, J, k, penalty_scale=DEFAULT_PENALTY_SCALE)

    def fit(self, X: Any, y: Any) -> QUBOFeatureSelector:
        qubo = self.build_qubo(X, y)
        opts = dict(self.options or {})
        if isinstance(self.solver, str) and self.solver == "sa.cpu":
            opts.setdefault("num_threads", 1)
        result: SelectionResult = solve_selection(qubo, self.solver, num_reads=self.num_reads,
                                                  seed=self.random_state, options=opts,
                                                  polish=self.polish)
        self.result_ = result
        self.objective_ = result.objective
        self.support_ = result.x.astype(bool)
        self.n_features_in_ = qubo.n
        return self

    def _get_support_mask(self) -> np.ndarray:
        check_is_fitted(self, "support_")
        return self.support_
