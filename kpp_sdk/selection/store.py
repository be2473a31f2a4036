"""Vector stores: the embeddings of a whole training set, persisted, with nearest-neighbour search.

Every store follows :class:`VectorStore` (``add``, ``search``, ``get``, ``save``, ``load``), so a
selector or a Dataset never names a concrete index. Two implementations:

* :class:`NumpyStore`: exact brute force (one matrix product per query block). It is the
  reference the approximate store is tested against, and fast enough up to ~10^5 vectors.
* :class:`FaissStore`: FAISS (``pip install 'kpp-sdk[selection]'``), an HNSW graph by default
  (approximate, sub-linear queries) or ``index="flat"`` (exact, BLAS).

Conventions (shared by both):

* ids are row positions: the first vector added has id 0, the next 1, and so on, so a dataset's
  index *is* the store id of its embedding.
* ``metric="cosine"`` (default) normalises vectors on ``add`` and on ``search``; the distance is
  ``1 - cos(q, x)`` in [0, 2] and :meth:`~VectorStore.get` returns the unit vectors.
  ``metric="l2"`` keeps vectors as given; the distance is the *squared* Euclidean distance.
* ``search(queries, k)`` returns ``(distances, ids)``, both ``(num_queries, k)``, nearest first;
  distances are float32, ids int64.
* Vectors are held as float32 (FAISS's type); input is checked (2-D, finite, right dimension)
  before anything is stored or searched.
* Files are ``.npz`` archives tagged ``format = "kpp-vector-store"`` with the store's kind;
  :func:`load_store` opens either kind. Writes go to a temporary file that is then renamed, so a
  failure never leaves half a store.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..errors import MissingDependencyError, ProblemFormatError
from .errors import SelectionError, check_batch_size, check_embeddings

__all__ = ["METRICS", "FaissStore", "NumpyStore", "VectorStore", "load_store"]

METRICS = ("cosine", "l2")
_FORMAT = "kpp-vector-store"
_VERSION = 1


@runtime_checkable
class VectorStore(Protocol):
    """What selectors and :class:`~kpp_sdk.selection.EmbeddingDataset` need from a store."""

    @property
    def dim(self) -> int: ...

    @property
    def metric(self) -> str: ...

    def __len__(self) -> int: ...

    def add(self, embeddings: Any) -> np.ndarray:
        """Append vectors; returns their ids (consecutive row positions)."""

    def search(self, queries: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest stored vectors of each query: ``(distances, ids)``, nearest first."""

    def get(self, ids: Any) -> np.ndarray:
        """The stored vectors with these ids, shape ``(len(ids), dim)`` float32."""

    def save(self, path: str | os.PathLike) -> None:
        """Write the store to ``path`` (an ``.npz`` file)."""


def _check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise SelectionError(f"metric must be one of {METRICS}, got {metric!r}")
    return metric


def _check_dim(dim: Any) -> int:
    if isinstance(dim, (bool, np.bool_)) or not isinstance(dim, (int, np.integer)) or dim < 1:
        raise SelectionError(f"dim must be a positive integer, got {dim!r}")
    return int(dim)


def _prepare(x: Any, dim: int, metric: str, name: str) -> np.ndarray:
    a = check_embeddings(x, dim, name=name, dtype=np.float32)
    if metric == "cosine":
        norms = np.linalg.norm(a, axis=1, keepdims=True)
        zero = norms[:, 0] == 0
        if zero.any():
            r = int(np.flatnonzero(zero)[0])
            raise SelectionError(
                f"{name}[{r}] is the zero vector, which has no direction for the cosine metric; "
                "drop it or use metric='l2'"
            )
        a = a / norms
    return np.ascontiguousarray(a, dtype=np.float32)


def _check_ids(ids: Any, size: int) -> np.ndarray:
    if hasattr(ids, "detach"):
        ids = ids.detach().cpu().numpy()
    idx = np.asarray(ids)
    if idx.dtype.kind not in "iu":
        raise SelectionError(f"ids must be integers, got dtype {idx.dtype}")
    idx = idx.astype(np.int64).reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() >= size):
        bad = int(idx[(idx < 0) | (idx >= size)][0])
        raise SelectionError(f"id {bad} is not in the store (ids are 0..{size - 1})")
    return idx


def _check_k(k: Any, size: int) -> int:
    if size == 0:
        raise SelectionError("the store is empty; add embeddings before searching")
    return check_batch_size(k, size, what="neighbours")


def _atomic_savez(path: str | os.PathLike, **arrays: Any) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _read_archive(path: str | os.PathLike) -> dict:
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise ProblemFormatError(f"{path} is not a readable vector store: {exc}") from None
    if str(data.get("format", "")) != _FORMAT:
        raise ProblemFormatError(f"{path} is not a kpp vector store (no format = {_FORMAT!r})")
    if int(data.get("version", -1)) != _VERSION:
        raise ProblemFormatError(
            f"{path} is a vector store of version {data.get('version')}; this kpp-sdk reads "
            f"version {_VERSION}"
        )
    return data


class NumpyStore:
    """Exact nearest neighbours by brute force; the reference implementation.

    Parameters
    ----------
    dim : int
        Dimension of every vector.
    metric : {"cosine", "l2"}
        See the module docstring (default ``"cosine"``).
    block_size : int
        Queries per matrix product (bounds the ``block_size x len(store)`` distance matrix).
    """

    kind = "numpy"

    def __init__(self, dim: int, metric: str = "cosine", *, block_size: int = 1024):
        self._dim = _check_dim(dim)
        self._metric = _check_metric(metric)
        self._block = max(1, int(block_size))
        self._x = np.empty((0, self._dim), dtype=np.float32)
        self._sq = np.empty(0, dtype=np.float32)

    @classmethod
    def from_embeddings(cls, embeddings: Any, metric: str = "cosine", **kwargs: Any) -> NumpyStore:
        a = check_embeddings(embeddings, dtype=np.float32)
        store = cls(a.shape[1], metric, **kwargs)
        store.add(a)
        return store

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def metric(self) -> str:
        return self._metric

    def __len__(self) -> int:
        return int(self._x.shape[0])

    def __repr__(self) -> str:
        return f"NumpyStore(n={len(self)}, dim={self._dim}, metric={self._metric!r})"

    def add(self, embeddings: Any) -> np.ndarray:
        a = _prepare(embeddings, self._dim, self._metric, "embeddings")
        start = len(self)
        self._x = np.concatenate([self._x, a]) if start else a
        self._sq = np.einsum("ij,ij->i", self._x, self._x)
        return np.arange(start, start + a.shape[0], dtype=np.int64)

    def get(self, ids: Any) -> np.ndarray:
        return self._x[_check_ids(ids, len(self))]

    def search(self, queries: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = _check_k(k, len(self))
        q = _prepare(queries, self._dim, self._metric, "queries")
        m = q.shape[0]
        dist = np.empty((m, k), dtype=np.float32)
        ids = np.empty((m, k), dtype=np.int64)
        for lo in range(0, m, self._block):
            qb = q[lo:lo + self._block]
            g = qb @ self._x.T
            if self._metric == "cosine":
                d = 1.0 - g
            else:
                d = np.einsum("ij,ij->i", qb, qb)[:, None] - 2.0 * g + self._sq[None, :]
            np.maximum(d, 0.0, out=d)
            part = np.argpartition(d, k - 1, axis=1)[:, :k] if k < d.shape[1] else \
                np.broadcast_to(np.arange(d.shape[1]), d.shape).copy()
            pd = np.take_along_axis(d, part, axis=1)
            order = np.argsort(pd, axis=1, kind="stable")
            ids[lo:lo + qb.shape[0]] = np.take_along_axis(part, order, axis=1)
            dist[lo:lo + qb.shape[0]] = np.take_along_axis(pd, order, axis=1)
        return dist, ids

    def save(self, path: str | os.PathLike) -> None:
        _atomic_savez(path, format=_FORMAT, version=_VERSION, kind=self.kind, metric=self._metric,
                      dim=self._dim, vectors=self._x)

    @classmethod
    def load(cls, path: str | os.PathLike) -> NumpyStore:
        data = _read_archive(path)
        if str(data["kind"]) != cls.kind:
            raise ProblemFormatError(f"{path} holds a {data['kind']} store; open it with load_store")
        store = cls(int(data["dim"]), str(data["metric"]))
        if data["vectors"].shape[0]:
            store._x = np.ascontiguousarray(data["vectors"], dtype=np.float32)
            store._sq = np.einsum("ij,ij->i", store._x, store._x)
        return store


def _import_faiss():
    try:
        import faiss
    except ImportError:
        raise MissingDependencyError("faiss-cpu", extra="selection",
                                     feature="FaissStore") from None
    return faiss


class FaissStore:
    """Nearest neighbours with FAISS: an HNSW graph (approximate) or a flat index (exact).

    Parameters
    ----------
    dim : int
        Dimension of every vector.
    metric : {"cosine", "l2"}
        See the module docstring (default ``"cosine"``).
    index : {"hnsw", "flat"}
        ``"hnsw"`` (default): ``IndexHNSWFlat``, logarithmic queries, recall below 1 on hard data;
        ``"flat"``: exact brute force in BLAS.
    hnsw_m : int
        Graph degree of HNSW (default 32; more: better recall, more memory).
    ef_construction, ef_search : int
        HNSW beam widths at build and query time (defaults 80 and 64; ``ef_search`` is raised to
        ``k`` when a query asks for more neighbours).
    """

    kind = "faiss"

    def __init__(self, dim: int, metric: str = "cosine", *, index: str = "hnsw", hnsw_m: int = 32,
                 ef_construction: int = 80, ef_search: int = 64):
        self._dim = _check_dim(dim)
        self._metric = _check_metric(metric)
        if index not in ("hnsw", "flat"):
            raise SelectionError(f"index must be 'hnsw' or 'flat', got {index!r}")
        for name, v in (("hnsw_m", hnsw_m), ("ef_construction", ef_construction),
                        ("ef_search", ef_search)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise SelectionError(f"{name} must be a positive integer, got {v!r}")
        self._index_kind = index
        self._ef_search = int(ef_search)
        faiss = _import_faiss()
        fmetric = faiss.METRIC_INNER_PRODUCT if self._metric == "cosine" else faiss.METRIC_L2
        if index == "hnsw":
            self._index = faiss.IndexHNSWFlat(self._dim, int(hnsw_m), fmetric)
            self._index.hnsw.efConstruction = int(ef_construction)
            self._index.hnsw.efSearch = self._ef_search
        else:
            self._index = faiss.IndexFlat(self._dim, fmetric)

    @classmethod
    def from_embeddings(cls, embeddings: Any, metric: str = "cosine", **kwargs: Any) -> FaissStore:
        a = check_embeddings(embeddings, dtype=np.float32)
        store = cls(a.shape[1], metric, **kwargs)
        store.add(a)
        return store

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def metric(self) -> str:
        return self._metric

    @property
    def index_kind(self) -> str:
        return self._index_kind

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def __repr__(self) -> str:
        return (f"FaissStore(n={len(self)}, dim={self._dim}, metric={self._metric!r}, "
                f"index={self._index_kind!r})")

    def add(self, embeddings: Any) -> np.ndarray:
        a = _prepare(embeddings, self._dim, self._metric, "embeddings")
        start = len(self)
        self._index.add(a)
        return np.arange(start, start + a.shape[0], dtype=np.int64)

    def get(self, ids: Any) -> np.ndarray:
        idx = _check_ids(ids, len(self))
        if idx.size == 0:
            return np.empty((0, self._dim), dtype=np.float32)
        return np.asarray(self._index.reconstruct_batch(idx), dtype=np.float32)

    def search(self, queries: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = _check_k(k, len(self))
        q = _prepare(queries, self._dim, self._metric, "queries")
        if self._index_kind == "hnsw":
            # a beam narrower than k cannot return k results (FAISS pads with id -1)
            self._index.hnsw.efSearch = max(self._ef_search, k)
        d, ids = self._index.search(q, k)
        if self._metric == "cosine":
            d = 1.0 - d
        return np.maximum(d, 0.0).astype(np.float32), ids.astype(np.int64)

    def save(self, path: str | os.PathLike) -> None:
        faiss = _import_faiss()
        blob = faiss.serialize_index(self._index)
        _atomic_savez(path, format=_FORMAT, version=_VERSION, kind=self.kind, metric=self._metric,
                      dim=self._dim, index_kind=self._index_kind, ef_search=self._ef_search,
                      index=np.asarray(blob, dtype=np.uint8))

    @classmethod
    def load(cls, path: str | os.PathLike) -> FaissStore:
        data = _read_archive(path)
        if str(data["kind"]) != cls.kind:
            raise ProblemFormatError(f"{path} holds a {data['kind']} store; open it with load_store")
        faiss = _import_faiss()
        store = cls.__new__(cls)
        store._dim = int(data["dim"])
        store._metric = _check_metric(str(data["metric"]))
        store._index_kind = str(data["index_kind"])
        store._ef_search = int(data["ef_search"])
        store._index = faiss.deserialize_index(np.ascontiguousarray(data["index"], dtype=np.uint8))
        if store._index.d != store._dim:
            raise ProblemFormatError(f"{path}: index dimension {store._index.d} != dim {store._dim}")
        return store


_KINDS = {NumpyStore.kind: NumpyStore, FaissStore.kind: FaissStore}


def load_store(path: str | os.PathLike) -> VectorStore:
    """Open a store written by any store's ``save`` (the kind is read from the file)."""
    data = _read_archive(path)
    kind = str(data["kind"])
    if kind not in _KINDS:
        raise ProblemFormatError(f"{path} holds an unknown store kind {kind!r}; known: {sorted(_KINDS)}")
    return _KINDS[kind].load(path)
