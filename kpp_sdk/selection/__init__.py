"""Active sample selection: pick informative, non-redundant samples by solving a QUBO on a Device.

* Stores (:mod:`.store`): :class:`NumpyStore` (exact) and :class:`FaissStore` (FAISS HNSW) behind
  the :class:`VectorStore` protocol; :func:`load_store`.
* Selectors (:mod:`.selectors`): :class:`QUBOSelector` and the baselines :class:`RandomSelector`,
  :class:`TopUncertaintySelector`, :class:`KCenterGreedySelector`, one ``select`` API.
* The QUBO itself (:mod:`.qubo`): :func:`build_selection_qubo`, :func:`solve_selection`,
  :func:`repair_to_k`, :func:`penalty_bound`.
* Uncertainty scores (:mod:`.uncertainty`): :func:`entropy`, :func:`margin`,
  :func:`least_confidence`, :func:`variance`; :class:`ScoreTable`.
* PyTorch (:mod:`.dataset`, needs torch): :class:`EmbeddingDataset`,
  :class:`CandidatePoolSampler`, :class:`SelectionCollate`,
  :class:`PrefetchSelectionLoader` (selects the next batch while this one trains),
  :class:`SelectionSampler` (a batch sampler that selects ahead from stored embeddings and a
  :class:`ScoreTable` of the training loop's own scores: no extra loading or forward pass).
* Feature selection (:mod:`.features`, needs scikit-learn): :class:`QUBOFeatureSelector`.

The torch and scikit-learn parts load on first use, so ``import kpp_sdk.selection`` needs neither.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .errors import (
    EmbeddingDimensionError,
    InvalidBatchSizeError,
    NonFiniteEmbeddingError,
    SelectionError,
)
from .qubo import (
    SelectionQUBO,
    SelectionResult,
    build_selection_qubo,
    penalty_bound,
    repair_to_k,
    solve_selection,
)
from .selectors import (
    KCenterGreedySelector,
    QUBOSelector,
    RandomSelector,
    Selector,
    TopUncertaintySelector,
    nearest_reference_distance,
    similarity_matrix,
)
from .store import FaissStore, NumpyStore, VectorStore, load_store
from .uncertainty import ScoreTable, entropy, least_confidence, margin, variance

_LAZY = {
    "EmbeddingDataset": ".dataset",
    "CandidatePoolSampler": ".dataset",
    "SelectionCollate": ".dataset",
    "PrefetchSelectionLoader": ".dataset",
    "SelectionSampler": ".dataset",
    "QUBOFeatureSelector": ".features",
    "feature_relevance": ".features",
    "feature_redundancy": ".features",
}

__all__ = [
    "CandidatePoolSampler",
    "EmbeddingDataset",
    "EmbeddingDimensionError",
    "FaissStore",
    "InvalidBatchSizeError",
    "KCenterGreedySelector",
    "NonFiniteEmbeddingError",
    "NumpyStore",
    "PrefetchSelectionLoader",
    "QUBOFeatureSelector",
    "QUBOSelector",
    "RandomSelector",
    "SelectionCollate",
    "SelectionError",
    "SelectionQUBO",
    "SelectionResult",
    "SelectionSampler",
    "ScoreTable",
    "Selector",
    "TopUncertaintySelector",
    "VectorStore",
    "build_selection_qubo",
    "entropy",
    "feature_redundancy",
    "feature_relevance",
    "least_confidence",
    "load_store",
    "margin",
    "nearest_reference_distance",
    "penalty_bound",
    "repair_to_k",
    "similarity_matrix",
    "solve_selection",
    "variance",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
