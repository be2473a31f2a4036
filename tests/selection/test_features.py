"""QUBO feature selection as a scikit-learn selector."""

import numpy as np
import pytest

pytest.importorskip("sklearn")

import kpp_sdk
from kpp_sdk.exact import all_states
from kpp_sdk.selection import InvalidBatchSizeError, QUBOFeatureSelector
from kpp_sdk.selection.features import feature_redundancy, feature_relevance


def redundant_problem(seed, n=400):
    """4 informative features, 4 near-copies of them, 4 noise features; y depends on the first 4."""
    rng = np.random.default_rng(seed)
    inf = rng.normal(size=(n, 4))
    copies = inf + 0.05 * rng.normal(size=(n, 4))
    noise = rng.normal(size=(n, 4))
    X = np.c_[inf, copies, noise]
    score = inf @ np.array([1.0, 0.9, 0.8, 0.7])
    y_cls = (score > np.median(score)).astype(int) + (score > np.quantile(score, 0.8)).astype(int)
    return X, y_cls, score


def test_redundancy_is_absolute_correlation_with_zero_diagonal():
    X, _, _ = redundant_problem(0)
    R = feature_redundancy(X)
    assert np.allclose(R, np.abs(np.corrcoef(X.T)) * (1 - np.eye(12)))
    Xc = np.c_[X, np.ones(len(X))]  # a constant column is redundant with nothing
    assert (feature_redundancy(Xc)[-1] == 0).all()


@pytest.mark.parametrize("relevance", ["mutual_info", "abs_corr"])
@pytest.mark.parametrize("target", ["classification", "regression"])
def test_selects_one_of_each_informative_pair_and_no_noise(relevance, target):
    X, y_cls, score = redundant_problem(1)
    y = y_cls if target == "classification" else score
    sel = QUBOFeatureSelector(4, relevance=relevance, random_state=0).fit(X, y)
    support = sel.get_support()
    assert support.sum() == 4 and sel.get_support(indices=True).tolist() == np.flatnonzero(support).tolist()
    chosen = set(np.flatnonzero(support).tolist())
    assert not chosen & {8, 9, 10, 11}
    assert sorted(i % 4 for i in chosen) == [0, 1, 2, 3]  # never a feature and its copy
    assert sel.transform(X).shape == (len(X), 4)
    assert np.array_equal(sel.transform(X), X[:, support])


def test_without_redundancy_weight_it_is_the_top_relevance_set_and_takes_copies():
    X, y, _ = redundant_problem(2)
    sel = QUBOFeatureSelector(4, relevance="abs_corr", redundancy_weight=0.0).fit(X, y)
    top = np.argsort(-sel.relevance_)[:4]
    assert set(sel.get_support(indices=True).tolist()) == set(top.tolist())
    assert len({i % 4 for i in top}) < 4


def test_feature_selection_is_the_exhaustive_optimum_of_its_qubo():
    X, y, _ = redundant_problem(3)
    sel = QUBOFeatureSelector(5, relevance="abs_corr", num_reads=128, polish=False,
                              options={"num_sweeps": 300}, random_state=1).fit(X, y)
    q = sel.build_qubo(X, y)
    x = (all_states(12) + 1) // 2
    at_k = x[x.sum(1) == 5]
    assert sel.objective_ == pytest.approx(q.objective(at_k).min())


def test_works_in_a_pipeline_and_survives_clone():
    from sklearn.base import clone
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    X, y, _ = redundant_problem(4)
    pipe = make_pipeline(QUBOFeatureSelector(4, relevance="abs_corr", random_state=0),
                         LogisticRegression(max_iter=500))
    pipe.fit(X, y)
    noise_only = LogisticRegression(max_iter=500).fit(X[:, 8:], y).score(X[:, 8:], y)
    assert pipe.score(X, y) > noise_only + 0.15
    c = clone(pipe[0])
    assert c.get_params()["n_features_to_select"] == 4 and not hasattr(c, "support_")


def test_more_features_than_exist_and_bad_targets_are_clear_errors():
    X, y, _ = redundant_problem(5)
    with pytest.raises(InvalidBatchSizeError, match="cannot select 13 features from a pool of 12"):
        QUBOFeatureSelector(13).fit(X, y)
    with pytest.raises(kpp_sdk.KppError, match="399 targets|400 targets"):
        QUBOFeatureSelector(3).fit(X, y[:-1])
    bad = X.copy()
    bad[3, 3] = np.nan
    with pytest.raises(kpp_sdk.NonFiniteError, match=r"X\[3, 3\]"):
        QUBOFeatureSelector(3).fit(bad, y)
    with pytest.raises(kpp_sdk.KppError, match="relevance"):
        feature_relevance(X, y, "chi2")
