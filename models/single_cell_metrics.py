"""Integration metrics for latent spaces: a small **scIB-style subset** implemented here (NumPy,
scikit-learn, SciPy; *not* scib-metrics), and a wrapper around scib-metrics' Benchmarker for when
that package is installed.

The subset (:func:`scib_style_scores`), every score in [0, 1], higher is better:

Bio conservation (cell types kept apart)
    * ``nmi``, ``ari``: KMeans with as many clusters as labels (10 restarts, ``seed``) against the
      labels: normalised mutual information and adjusted Rand index (scib-metrics' default
      clustering is this KMeans too; ARI can be slightly negative for random clusterings).
    * ``silhouette_label``: ``(silhouette of the labels + 1) / 2``, Euclidean.
    * ``clisi``: for each cell the inverse Simpson index of the labels among its ``k`` nearest
      neighbours (the cell included), median over cells, scaled as ``(L - median) / (L - 1)``
      for ``L`` labels (1 = neighbourhoods pure). A kNN simplification of LISI, which weights
      neighbours with a perplexity-calibrated Gaussian kernel.

Batch correction (batches mixed within a cell type)
    * ``silhouette_batch``: within each label, ``1 - |silhouette of the batches|`` per cell,
      averaged per label, then over labels (scIB's batch ASW).
    * ``ilisi``: the batch inverse Simpson index as above, median, scaled ``(median - 1) /
      (B - 1)`` for ``B`` batches (1 = every neighbourhood as mixed as the batches allow).
    * ``graph_connectivity``: within each label, the fraction of its cells in the largest
      connected component of the ``k``-NN graph restricted to that label; mean over labels.

Aggregates as scIB: ``bio`` and ``batch`` are the means of their metrics; ``total = 0.6 bio +
0.4 batch``. Numbers from this subset are not comparable with scib-metrics' or the paper's
(other metrics, other kNN), only with each other.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kpp_sdk.errors import MissingDependencyError

from .errors import InvalidDataError

__all__ = ["BATCH_METRICS", "BIO_METRICS", "scib_metrics_scores", "scib_style_scores"]

BIO_METRICS = ("nmi", "ari", "silhouette_label", "clisi")
BATCH_METRICS = ("silhouette_batch", "ilisi", "graph_connectivity")


def _codes(values: Any) -> tuple[np.ndarray, int]:
    _, codes = np.unique(np.asarray(values).astype(str), return_inverse=True)
    return codes.astype(np.int64), int(codes.max()) + 1


def _knn(X: np.ndarray, k: int) -> np.ndarray:
    """Indices ``(n, k)`` of each row's ``k`` nearest rows, itself first."""
    from sklearn.neighbors import NearestNeighbors

    k = min(k, X.shape[0])
    return NearestNeighbors(n_neighbors=k).fit(X).kneighbors(X, return_distance=False)


def _inverse_simpson(nbrs: np.ndarray, codes: np.ndarray, n_cat: int) -> np.ndarray:
    cats = codes[nbrs]                                       # (n, k)
    counts = np.zeros((nbrs.shape[0], n_cat))
    np.add.at(counts, (np.repeat(np.arange(nbrs.shape[0]), nbrs.shape[1]), cats.ravel()), 1.0)
    p = counts / nbrs.shape[1]
    return 1.0 / (p * p).sum(1)


def scib_style_scores(embedding: Any, labels: Any, batches: Any, *, n_neighbors: int = 30,
                      seed: int = 0) -> dict[str, float]:
    """The scIB-style subset (module docstring) of one embedding ``(cells, dims)``."""
    import scipy.sparse as sp
    from scipy.sparse.csgraph import connected_components
    from sklearn.cluster import KMeans
    from sklearn.metrics import (
        adjusted_rand_score,
        normalized_mutual_info_score,
        silhouette_samples,
        silhouette_score,
    )

    X = np.asarray(embedding, dtype=np.float64)
    if X.ndim != 2 or not np.isfinite(X).all():
        raise InvalidDataError("embedding must be a finite 2-D array (cells, dims)")
    lab, L = _codes(labels)
    bat, B = _codes(batches)
    if lab.size != X.shape[0] or bat.size != X.shape[0]:
        raise InvalidDataError(
            f"labels ({lab.size}) and batches ({bat.size}) need one entry per cell "
            f"({X.shape[0]})")
    if L < 2:
        raise InvalidDataError("bio-conservation metrics need at least 2 labels")
    out: dict[str, float] = {}
    km = KMeans(n_clusters=L, n_init=10, random_state=seed).fit_predict(X)
    out["nmi"] = float(normalized_mutual_info_score(lab, km))
    out["ari"] = float(adjusted_rand_score(lab, km))
    out["silhouette_label"] = float((silhouette_score(X, lab) + 1) / 2)
    nbrs = _knn(X, n_neighbors)
    out["clisi"] = float((L - np.median(_inverse_simpson(nbrs, lab, L))) / (L - 1))
    if B >= 2:
        per_label = []
        for c in range(L):
            rows = lab == c
            if len(np.unique(bat[rows])) < 2 or rows.sum() <= len(np.unique(bat[rows])):
                continue
            s = silhouette_samples(X[rows], bat[rows])
            per_label.append(float(np.mean(1 - np.abs(s))))
        out["silhouette_batch"] = float(np.mean(per_label)) if per_label else float("nan")
        out["ilisi"] = float((np.median(_inverse_simpson(nbrs, bat, B)) - 1) / (B - 1))
    n = X.shape[0]
    k = nbrs.shape[1]
    A = sp.csr_matrix((np.ones(n * k), (np.repeat(np.arange(n), k), nbrs.ravel())),
                      shape=(n, n))
    fractions = []
    for c in range(L):
        rows = np.flatnonzero(lab == c)
        _, comp = connected_components(A[rows][:, rows], directed=False)
        fractions.append(np.bincount(comp).max() / rows.size)
    if B >= 2:
        out["graph_connectivity"] = float(np.mean(fractions))
    out["bio"] = float(np.mean([out[m] for m in BIO_METRICS]))
    if B >= 2:
        out["batch"] = float(np.nanmean([out[m] for m in BATCH_METRICS]))
        out["total"] = 0.6 * out["bio"] + 0.4 * out["batch"]
    return out


def scib_metrics_scores(adata, embedding_keys: list[str], *, batch_key: str, label_key: str,
                        pre_integrated_key: str = "X_pca", n_jobs: int = 1) -> dict[str, dict]:
    """scib-metrics' Benchmarker (default metric set) on ``adata.obsm[key]`` for each key, raw
    scores (no min-max scaling across methods): ``{key: {"bio": ..., "batch": ..., "total":
    ..., <metric>: ...}}``. Needs ``pip install scib-metrics``."""
    try:
        from scib_metrics.benchmark import Benchmarker
    except ImportError:
        raise MissingDependencyError("scib-metrics", feature="scib_metrics_scores") from None
    bm = Benchmarker(adata, batch_key=batch_key, label_key=label_key,
                     embedding_obsm_keys=list(embedding_keys),
                     pre_integrated_embedding_obsm_key=pre_integrated_key, n_jobs=n_jobs)
    bm.benchmark()
    df = bm.get_results(min_max_scale=False)
    res: dict[str, dict] = {}
    for key in embedding_keys:
        row = df.loc[key]
        d = {str(c): float(row[c]) for c in df.columns}
        res[key] = {**d, "bio": d.get("Bio conservation", float("nan")),
                    "batch": d.get("Batch correction", float("nan")),
                    "total": d.get("Total", float("nan"))}
    return res
