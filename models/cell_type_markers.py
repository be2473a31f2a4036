"""Cell-type labels from a published marker-gene panel, derived batch by batch before any
integration.

These labels are **derived**, not ground truth: they stand in for annotations a data set does not
ship (the Kang et al. interferon-beta PBMC pair has none), so that integration benchmarks can
score biology conservation. Each batch is labelled on its own, from its own cells only, so no
label carries information from another batch or from any integration method.

The panel (:data:`PBMC_MARKERS`) is the canonical-markers table of Seurat's PBMC 3k
guided-clustering tutorial (Satija lab; the table scanpy's PBMC 3k tutorial uses too; Seurat:
Butler et al., "Integrating single-cell transcriptomic data across different conditions,
technologies, and species", Nat. Biotechnol. 36, 411-420, 2018, whose integration example is the
Kang et al. interferon-beta PBMC data), row by row with the tutorial's names. The tutorial tells
naive from memory CD4 T cells after clustering; two-gene scores cannot do it cell by cell (on the
Kang data 0.4 % of the control and 0.9 % of the stimulated cells took the memory label), so :data:`PBMC_COARSE` merges
the two into ``"CD4 T"`` *after* labelling; the loaders use it.

The procedure (:func:`label_by_markers`), for each batch separately:

1. log-normalise: ``log1p(1e4 * x / total counts of the cell)``;
2. z-score each panel gene across the batch's cells (a gene constant in the batch scores 0);
3. score each type by the mean z-score of its markers present in the data;
4. smooth: average the scores over the cell's ``n_neighbors`` nearest neighbours (itself
   included) in the first ``n_pcs`` principal components of the batch's ``n_top_genes`` most
   variable log-normalised genes, which averages out the dropouts of single marker genes;
5. label each cell with the type of highest smoothed score, or ``"unassigned"`` when no score
   exceeds ``min_score`` (default 0: no panel above the batch average); then rename labels
   through ``merge`` (e.g. :data:`PBMC_COARSE`).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .errors import InvalidDataError

__all__ = ["PBMC_COARSE", "PBMC_MARKERS", "UNASSIGNED", "label_by_markers", "marker_scores"]

#: Seurat's PBMC 3k canonical markers, cell type -> marker genes (module docstring).
PBMC_MARKERS: dict[str, tuple[str, ...]] = {
    "Naive CD4 T": ("IL7R", "CCR7"),
    "CD14+ Mono": ("CD14", "LYZ"),
    "Memory CD4 T": ("IL7R", "S100A4"),
    "B": ("MS4A1",),
    "CD8 T": ("CD8A",),
    "FCGR3A+ Mono": ("FCGR3A", "MS4A7"),
    "NK": ("GNLY", "NKG7"),
    "DC": ("FCER1A", "CST3"),
    "Platelet": ("PPBP",),
}

#: Labels merged after labelling: naive and memory CD4 T become ``"CD4 T"`` (module docstring).
PBMC_COARSE: dict[str, str] = {"Naive CD4 T": "CD4 T", "Memory CD4 T": "CD4 T"}

#: The label of cells no panel scores above ``min_score``.
UNASSIGNED = "unassigned"


def _log_normalise(X):
    import scipy.sparse as sp

    X = sp.csr_matrix(X, dtype=np.float64)
    lib = np.asarray(X.sum(1)).ravel()
    if (lib <= 0).any():
        i = int(np.argmax(lib <= 0))
        raise InvalidDataError(f"cell {i} has no counts; remove empty cells before labelling "
                               "(scanpy.pp.filter_cells(adata, min_counts=1))")
    out = sp.diags(1e4 / lib) @ X
    out.data = np.log1p(out.data)
    return sp.csr_matrix(out)


def _panel_columns(var_names: Sequence[str], markers: Mapping[str, Sequence[str]]):
    """Column indices of each type's markers present in ``var_names``; types with none are
    dropped with a warning (all dropped: an error)."""
    index = {str(g): i for i, g in enumerate(var_names)}
    cols, missing = {}, []
    for cell_type, genes in markers.items():
        present = [index[g] for g in genes if g in index]
        if present:
            cols[cell_type] = present
        else:
            missing.append(cell_type)
    if not cols:
        raise InvalidDataError(
            f"none of the panel's marker genes is among the data's genes (e.g. "
            f"{list(var_names[:5])}); the panel needs gene symbols such as "
            f"{next(iter(markers.values()))}: pass the symbols as var_names")
    if missing:
        warnings.warn(f"no marker of {missing} is among the genes: those types cannot be "
                      "assigned", stacklevel=4)
    return cols


def _scores(L, cols: dict[str, list[int]]) -> np.ndarray:
    scores = np.empty((L.shape[0], len(cols)))
    for t, idx in enumerate(cols.values()):
        G = L[:, idx].toarray()
        sd = G.std(0)
        z = np.divide(G - G.mean(0), sd, out=np.zeros_like(G), where=sd > 0)
        scores[:, t] = z.mean(1)
    return scores


def marker_scores(X, var_names: Sequence[str],
                  markers: Mapping[str, Sequence[str]] = PBMC_MARKERS) -> tuple[np.ndarray,
                                                                                list[str]]:
    """Steps 1-3 of the module docstring on one batch of raw counts ``X`` ``(cells, genes)``:
    ``(cells, types)`` scores and the type names (those with a marker in ``var_names``)."""
    cols = _panel_columns(var_names, markers)
    return _scores(_log_normalise(X), cols), list(cols)


def _smooth(L, scores: np.ndarray, *, n_neighbors: int, n_pcs: int, n_top_genes: int,
            seed: int) -> np.ndarray:
    from sklearn.decomposition import PCA
    from sklearn.neighbors import NearestNeighbors

    n = L.shape[0]
    k = min(int(n_neighbors), n)
    if k <= 1:
        return scores
    mean = np.asarray(L.mean(0)).ravel()
    var = np.asarray(L.multiply(L).mean(0)).ravel() - mean**2
    top = np.argsort(-var, kind="stable")[:min(int(n_top_genes), L.shape[1])]
    Y = L[:, top].toarray()
    n_comp = max(1, min(int(n_pcs), n - 1, Y.shape[1]))
    emb = PCA(n_comp, random_state=seed).fit_transform(Y - Y.mean(0))
    nbrs = NearestNeighbors(n_neighbors=k).fit(emb).kneighbors(emb, return_distance=False)
    return scores[nbrs].mean(1)


def label_by_markers(adata, markers: Mapping[str, Sequence[str]] = PBMC_MARKERS, *,
                     batch_key: str | None = None, layer: str | None = None,
                     n_neighbors: int = 15, n_pcs: int = 30, n_top_genes: int = 2000,
                     min_score: float = 0.0, merge: Mapping[str, str] | None = None,
                     seed: int = 0) -> Any:
    """Label every cell of ``adata`` with a type of ``markers`` (module docstring), each batch of
    ``obs[batch_key]`` on its own (None: one batch). ``layer``: raw counts (None: ``adata.X``).

    Returns a pandas Series of labels (categorical, index ``adata.obs_names``) with
    :data:`UNASSIGNED` for cells no panel scores above ``min_score``, and labels renamed by
    ``merge`` (type -> label; types not in it keep their name). ``n_neighbors <= 1`` switches
    the smoothing off. Gene symbols are matched exactly against ``adata.var_names``.
    """
    import pandas as pd

    from .single_cell import counts_matrix

    if not markers or any(not genes for genes in markers.values()):
        raise InvalidDataError("markers must map each cell type to at least one gene symbol")
    merge = dict(merge or {})
    if UNASSIGNED in markers or UNASSIGNED in merge.values():
        raise InvalidDataError(f"{UNASSIGNED!r} is reserved for cells no panel scores")
    unknown = sorted(set(merge) - set(markers))
    if unknown:
        raise InvalidDataError(f"merge names types that are not in the panel: {unknown}; the "
                               f"panel's types are {list(markers)}")
    if batch_key is not None and batch_key not in adata.obs.columns:
        raise InvalidDataError(f"batch_key={batch_key!r} is not a column of adata.obs; its "
                               f"columns are {list(adata.obs.columns)}")
    X = counts_matrix(adata, layer)
    batches = (np.zeros(adata.n_obs, dtype=np.int64) if batch_key is None else
               adata.obs[batch_key].astype("category").cat.codes.to_numpy())
    cols = _panel_columns(list(map(str, adata.var_names)), markers)
    types = list(cols)
    labels = np.full(adata.n_obs, UNASSIGNED, dtype=object)
    for b in np.unique(batches):
        rows = np.flatnonzero(batches == b)
        L = _log_normalise(X[rows])
        scores = _scores(L, cols)
        smooth = _smooth(L, scores, n_neighbors=n_neighbors, n_pcs=n_pcs,
                         n_top_genes=n_top_genes, seed=seed)
        best = smooth.argmax(1)
        lab = np.asarray(types, dtype=object)[best]
        lab[smooth[np.arange(rows.size), best] <= min_score] = UNASSIGNED
        labels[rows] = lab
    labels = np.array([merge.get(t, t) for t in labels], dtype=object)
    order = list(dict.fromkeys(merge.get(t, t) for t in markers))
    present = set(labels)
    categories = [t for t in order if t in present] + (
        [UNASSIGNED] if UNASSIGNED in present else [])
    return pd.Series(pd.Categorical(labels, categories=categories), index=adata.obs_names,
                     name="cell_type")
