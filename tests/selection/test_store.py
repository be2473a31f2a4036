"""Vector stores: the exact NumPy store against direct computation, FAISS against the NumPy store,
persistence, and the input checks."""

import numpy as np
import pytest

from kpp_sdk import ProblemFormatError
from kpp_sdk.selection import (
    EmbeddingDimensionError,
    FaissStore,
    InvalidBatchSizeError,
    NonFiniteEmbeddingError,
    NumpyStore,
    SelectionError,
    VectorStore,
    load_store,
)

pytest.importorskip("faiss")


def clustered(n, d, seed, centers=20):
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centers, d)) * 3
    return (c[rng.integers(centers, size=n)] + rng.normal(size=(n, d))).astype(np.float32)


def direct_knn(X, Q, k, metric):
    X, Q = X.astype(np.float64), Q.astype(np.float64)
    if metric == "cosine":
        X = X / np.linalg.norm(X, axis=1, keepdims=True)
        Q = Q / np.linalg.norm(Q, axis=1, keepdims=True)
        D = 1 - Q @ X.T
    else:
        D = ((Q[:, None, :] - X[None, :, :]) ** 2).sum(-1)
    ids = np.argsort(D, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(D, ids, 1), ids


def recall(a, b):
    return np.mean([len(set(x) & set(y)) / len(x) for x, y in zip(a, b)])


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_numpy_store_returns_the_exact_neighbours_nearest_first(metric):
    X = clustered(500, 8, 0)
    Q = clustered(40, 8, 1)
    store = NumpyStore(8, metric, block_size=7)  # several query blocks
    store.add(X[:200])
    assert np.array_equal(store.add(X[200:]), np.arange(200, 500))
    d, ids = store.search(Q, 10)
    dd, ii = direct_knn(X, Q, 10, metric)
    assert d.dtype == np.float32 and ids.dtype == np.int64 and ids.shape == (40, 10)
    assert np.allclose(d, dd, rtol=1e-4, atol=1e-4)
    assert recall(ids, ii) == 1.0
    assert (np.diff(d, axis=1) >= 0).all()


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_faiss_flat_equals_the_numpy_store(metric):
    X, Q = clustered(800, 16, 2), clustered(50, 16, 3)
    ref = NumpyStore.from_embeddings(X, metric)
    flat = FaissStore.from_embeddings(X, metric, index="flat")
    d0, i0 = ref.search(Q, 8)
    d1, i1 = flat.search(Q, 8)
    assert recall(i0, i1) == 1.0
    assert np.allclose(d0, d1, atol=1e-3)


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_faiss_hnsw_recall_against_the_exact_store_is_at_least_0_95(metric):
    X, Q = clustered(2000, 16, 4), clustered(100, 16, 5)
    ref = NumpyStore.from_embeddings(X, metric)
    ann = FaissStore.from_embeddings(X, metric)
    _, i0 = ref.search(Q, 10)
    d1, i1 = ann.search(Q, 10)
    assert recall(i0, i1) >= 0.95
    # whatever it returns, the distances it reports are the true distances of those ids
    Xu, Qu = X.astype(np.float64), Q.astype(np.float64)
    if metric == "cosine":
        Xu, Qu = [a / np.linalg.norm(a, axis=1, keepdims=True) for a in (Xu, Qu)]
        true = 1 - np.einsum("qd,qkd->qk", Qu, Xu[i1])
    else:
        true = ((Xu[i1] - Qu[:, None, :]) ** 2).sum(-1)
    assert np.allclose(d1, true, rtol=1e-4, atol=1e-3)
    # and it asks for more neighbours than its default beam without padding with -1
    _, many = ann.search(Q[:5], 100)
    assert (many >= 0).all()


@pytest.mark.parametrize("cls", [NumpyStore, FaissStore])
@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_save_and_load_give_the_same_answers(tmp_path, cls, metric):
    X, Q = clustered(600, 12, 6), clustered(30, 12, 7)
    store = cls.from_embeddings(X, metric)
    path = tmp_path / "store.npz"
    store.save(path)
    for loaded in (cls.load(path), load_store(path)):
        assert isinstance(loaded, cls) and isinstance(loaded, VectorStore)
        assert len(loaded) == 600 and loaded.dim == 12 and loaded.metric == metric
        for a, b in zip(store.search(Q, 5), loaded.search(Q, 5)):
            assert np.array_equal(a, b)
        assert np.array_equal(store.get([0, 599, 7]), loaded.get([0, 599, 7]))
    assert [p.name for p in tmp_path.iterdir()] == ["store.npz"]  # no temporary file left behind


@pytest.mark.parametrize("cls", [NumpyStore, FaissStore])
def test_get_returns_what_was_stored(cls):
    X = clustered(100, 5, 8)
    assert np.allclose(cls.from_embeddings(X, "l2").get([3, 50]), X[[3, 50]])
    unit = X / np.linalg.norm(X, axis=1, keepdims=True)
    assert np.allclose(cls.from_embeddings(X, "cosine").get(np.array([9, 1])), unit[[9, 1]], atol=1e-6)
    with pytest.raises(SelectionError, match="not in the store"):
        cls.from_embeddings(X, "l2").get([100])


@pytest.mark.parametrize("cls", [NumpyStore, FaissStore])
def test_dimension_mismatch_nan_and_oversized_k_are_clear_errors(cls):
    store = cls.from_embeddings(clustered(50, 6, 9), "l2")
    with pytest.raises(EmbeddingDimensionError, match="dimension 7 but the store holds 6-dimensional"):
        store.search(np.ones((2, 7)), 3)
    with pytest.raises(EmbeddingDimensionError, match="dimension 4"):
        store.add(np.ones((2, 4)))
    bad = np.ones((3, 6))
    bad[2, 4] = np.nan
    with pytest.raises(NonFiniteEmbeddingError, match=r"embeddings\[2, 4\] = nan"):
        store.add(bad)
    assert len(store) == 50  # nothing half-added
    with pytest.raises(NonFiniteEmbeddingError, match="queries"):
        store.search(bad, 1)
    with pytest.raises(InvalidBatchSizeError, match="51 neighbours from a pool of 50"):
        store.search(np.ones((1, 6)), 51)
    with pytest.raises(SelectionError, match="empty"):
        cls(6).search(np.ones((1, 6)), 1)
    with pytest.raises(SelectionError, match="zero vector"):
        cls(6, "cosine").add(np.zeros((1, 6)))


def test_loading_a_file_that_is_not_a_store_fails_clearly(tmp_path):
    p = tmp_path / "x.npz"
    np.savez(p, a=np.ones(3))
    with pytest.raises(ProblemFormatError, match="not a kpp vector store"):
        load_store(p)
    NumpyStore.from_embeddings(np.ones((2, 2)), "l2").save(p)
    with pytest.raises(ProblemFormatError, match="numpy store"):
        FaissStore.load(p)


def test_unknown_metric_and_index_are_rejected():
    with pytest.raises(SelectionError, match="metric"):
        NumpyStore(4, "manhattan")
    with pytest.raises(SelectionError, match="index"):
        FaissStore(4, index="ivf")
