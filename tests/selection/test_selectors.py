"""Selectors: one API, each baseline checked against a naive re-implementation, and the QUBO
selector's weights checked by the selections they must produce."""

import numpy as np
import pytest

import kpp_sdk
from kpp_sdk.selection import (
    EmbeddingDimensionError,
    InvalidBatchSizeError,
    KCenterGreedySelector,
    NonFiniteEmbeddingError,
    NumpyStore,
    QUBOSelector,
    RandomSelector,
    SelectionError,
    Selector,
    TopUncertaintySelector,
    nearest_reference_distance,
    similarity_matrix,
)


@pytest.fixture(scope="module")
def sa():
    return kpp_sdk.get_device("sa.cpu")


@pytest.fixture(scope="module")
def selectors(sa):
    return [RandomSelector(), TopUncertaintySelector(), KCenterGreedySelector(), QUBOSelector(sa)]


def test_every_selector_returns_k_distinct_valid_indices(selectors):
    rng = np.random.default_rng(0)
    X, u = rng.normal(size=(60, 5)), rng.random(60)
    for sel in selectors:
        assert isinstance(sel, Selector)
        picks = sel.select(X, 12, uncertainty=u, reference=rng.normal(size=(4, 5)), seed=1)
        assert picks.dtype == np.int64 and picks.shape == (12,)
        assert len(set(picks.tolist())) == 12 and picks.min() >= 0 and picks.max() < 60


def test_bad_pools_are_rejected_by_every_selector_before_any_work(selectors):
    X = np.random.default_rng(0).normal(size=(10, 3))
    nan = X.copy()
    nan[4, 1] = np.nan
    for sel in selectors:
        with pytest.raises(InvalidBatchSizeError, match="cannot select 11 items from a pool of 10"):
            sel.select(X, 11, uncertainty=np.ones(10))
        with pytest.raises(NonFiniteEmbeddingError, match=r"embeddings\[4, 1\] = nan.*row 4"):
            sel.select(nan, 2, uncertainty=np.ones(10))
        with pytest.raises(EmbeddingDimensionError):
            sel.select(np.ones((2, 3, 4)), 1, uncertainty=np.ones(2))
    with pytest.raises(NonFiniteEmbeddingError, match="uncertainty"):
        TopUncertaintySelector().select(X, 2, uncertainty=np.r_[np.ones(9), np.inf])
    with pytest.raises(kpp_sdk.SizeMismatchError, match="9 entries but the pool has 10"):
        QUBOSelector(kpp_sdk.get_device("sa.cpu")).select(X, 2, uncertainty=np.ones(9))


def test_random_selector_is_seeded_and_uniform():
    X = np.zeros((20, 2))
    assert np.array_equal(RandomSelector().select(X, 5, seed=3), RandomSelector().select(X, 5, seed=3))
    counts = np.bincount(np.concatenate([RandomSelector().select(X, 5, seed=s) for s in range(2000)]),
                         minlength=20)
    # each item is chosen with probability 1/4: 500 expected, sd ~19
    assert counts.min() > 420 and counts.max() < 580


def test_top_uncertainty_takes_the_highest_scores_and_needs_them():
    u = np.array([0.1, 0.9, 0.5, 0.9, 0.2])
    assert TopUncertaintySelector().select(np.zeros((5, 1)), 3, uncertainty=u).tolist() == [1, 3, 2]
    with pytest.raises(SelectionError, match="needs uncertainty"):
        TopUncertaintySelector().select(np.zeros((5, 1)), 3)


def naive_k_center(X, k, centers):
    picks = []
    C = list(centers)
    for _ in range(k):
        d = np.array([min(np.linalg.norm(x - c) for c in C) if C else 0.0 for x in X])
        d[picks] = -np.inf
        i = int(np.argmax(d))
        picks.append(i)
        C.append(X[i])
    return picks


@pytest.mark.parametrize("seed", range(3))
def test_k_center_matches_a_naive_implementation_with_and_without_reference(seed):
    rng = np.random.default_rng(seed)
    X, ref = rng.normal(size=(40, 3)), rng.normal(size=(5, 3))
    got = KCenterGreedySelector().select(X, 8, reference=ref)
    assert got.tolist() == naive_k_center(X, 8, ref)
    store = NumpyStore.from_embeddings(ref, "l2")
    assert KCenterGreedySelector().select(X, 8, reference=store).tolist() == got.tolist()
    free = KCenterGreedySelector().select(X, 8, seed=seed)
    assert free[1:].tolist() == naive_k_center(X, 7, [X[free[0]]])


def test_nearest_reference_distance_agrees_for_arrays_and_both_store_metrics():
    rng = np.random.default_rng(1)
    X, ref = rng.normal(size=(30, 4)), rng.normal(size=(12, 4))
    direct = np.sqrt(((X[:, None] - ref[None]) ** 2).sum(-1)).min(1)
    assert np.allclose(nearest_reference_distance(X, ref, block=5), direct)
    assert np.allclose(nearest_reference_distance(X, NumpyStore.from_embeddings(ref, "l2")), direct,
                       atol=1e-4)
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)
    chord = np.sqrt(((unit(X)[:, None] - unit(ref)[None]) ** 2).sum(-1)).min(1)
    assert np.allclose(nearest_reference_distance(X, NumpyStore.from_embeddings(ref, "cosine")), chord,
                       atol=1e-3)


def test_similarity_kernels_are_in_unit_range_with_median_bandwidth():
    X = np.random.default_rng(2).normal(size=(25, 3))
    S, sigma = similarity_matrix(X)
    d = np.sqrt(((X[:, None] - X[None]) ** 2).sum(-1))
    assert sigma == pytest.approx(np.median(d[np.triu_indices(25, 1)]))
    off = ~np.eye(25, dtype=bool)
    assert np.allclose(S[off], np.exp(-d[off] ** 2 / (2 * sigma**2)))
    assert (np.diagonal(S) == 0).all()
    C, none = similarity_matrix(X, "cosine")
    assert none is None and C.min() >= 0 and C.max() <= 1 and (np.diagonal(C) == 0).all()
    with pytest.raises(SelectionError, match="similarity"):
        similarity_matrix(X, "jaccard")


def test_qubo_without_diversity_selects_exactly_the_top_uncertainty_set(sa):
    rng = np.random.default_rng(3)
    X, u = rng.normal(size=(50, 4)), rng.random(50)
    picks = QUBOSelector(sa, diversity_weight=0.0).select(X, 10, uncertainty=u, seed=0)
    assert set(picks.tolist()) == set(np.argsort(-u)[:10].tolist())


def test_qubo_diversity_never_picks_two_copies_when_distinct_items_remain(sa):
    # 8 equidistant points (the corners of a simplex), 4 copies each: any two distinct points are
    # less similar (exp(-1/2) at the median bandwidth) than two copies (1)
    X = np.repeat(10.0 * np.eye(8), 4, axis=0)
    u = np.ones(32)
    picks = QUBOSelector(sa, uncertainty_weight=0.0).select(X, 8, uncertainty=u, seed=1)
    assert sorted(set((picks // 4).tolist())) == list(range(8))
    # top-uncertainty, blind to redundancy, takes copies
    assert len(set((TopUncertaintySelector().select(X, 8, uncertainty=u) // 4).tolist())) < 8


def test_qubo_reference_steers_away_from_items_already_chosen(sa):
    rng = np.random.default_rng(5)
    X = rng.normal(size=(30, 3)) * 4
    u = np.ones(30)
    u[:5] = 1.05  # slightly preferred, but ...
    ref = X[:5] + 1e-3  # ... already labelled
    sel = QUBOSelector(sa, diversity_weight=0.0)
    assert set(sel.select(X, 5, uncertainty=u, seed=0).tolist()) == set(range(5))
    assert not set(sel.select(X, 5, uncertainty=u, reference=ref, seed=0).tolist()) & set(range(5))
    store = NumpyStore.from_embeddings(ref, "l2")
    assert not set(sel.select(X, 5, uncertainty=u, reference=store, seed=0).tolist()) & set(range(5))
    with pytest.raises(SelectionError, match="metric='l2'"):
        sel.select(X, 5, uncertainty=u, reference=NumpyStore.from_embeddings(ref, "cosine"))
    with pytest.raises(EmbeddingDimensionError, match="dimension 3 but the store holds 4-dimensional"):
        sel.select(X, 5, uncertainty=u, reference=NumpyStore.from_embeddings(np.ones((2, 4)), "l2"))
    with pytest.raises(EmbeddingDimensionError, match="reference have dimension 2"):
        sel.select(X, 5, uncertainty=u, reference=ref[:, :2])


def test_qubo_selector_rejects_bad_settings():
    with pytest.raises(SelectionError, match="diversity_weight"):
        QUBOSelector(diversity_weight=-1)
    with pytest.raises(SelectionError, match="similarity"):
        QUBOSelector(similarity="dot")
    with pytest.raises(SelectionError, match="Kaiwu"):
        QUBOSelector(solver=42)
    with pytest.raises(kpp_sdk.DeviceNotFoundError):
        QUBOSelector(solver="no.such.device")


def test_rbf_similarity_equals_the_median_heuristic_written_out():
    from kpp_sdk.selection import similarity_matrix

    rng = np.random.default_rng(5)
    x = rng.normal(size=(40, 6))
    x[7] = x[3]  # a duplicate: distance 0 must not enter the median
    d2 = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    iu = np.triu_indices(40, 1)
    pos = d2[iu][d2[iu] > 0]
    sigma = np.sqrt(np.median(pos))
    ref = np.exp(-d2 / (2 * sigma**2))
    np.fill_diagonal(ref, 0.0)
    s, got_sigma = similarity_matrix(x)
    assert got_sigma == pytest.approx(sigma, rel=1e-9)
    assert np.allclose(s, ref, atol=1e-12) and np.array_equal(s, s.T)
    s2, sig2 = similarity_matrix(x, bandwidth=0.5)
    ref2 = np.exp(-d2 / 0.5)
    np.fill_diagonal(ref2, 0.0)
    assert sig2 == 0.5 and np.allclose(s2, ref2, atol=1e-12)


def test_rbf_bandwidth_is_the_exact_median_with_ties_and_either_parity():
    """Lattice points tie at many distances; the histogram median must still be np.median's
    (the mean of the two middle values when the count of positive distances is even)."""
    from kpp_sdk.selection import similarity_matrix

    rng = np.random.default_rng(8)
    parities = set()
    for n in (2, 3, 5, 12, 31, 64, 300):
        for spread in (2, 4, 50):
            x = rng.integers(0, spread, size=(n, 3)).astype(float)
            d2 = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
            pos = d2[np.triu_indices(n, 1)]
            pos = pos[pos > 0]
            if pos.size == 0:
                continue
            parities.add(pos.size % 2)
            _, sigma = similarity_matrix(x)
            assert sigma == pytest.approx(np.sqrt(np.median(pos)), rel=1e-12), (n, spread)
    assert parities == {0, 1}
