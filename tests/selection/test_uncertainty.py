"""Uncertainty scores at their known values, for NumPy and torch input; import stays light."""

import subprocess
import sys

import numpy as np
import pytest

from kpp_sdk.selection import SelectionError, entropy, least_confidence, margin, variance
from kpp_sdk.selection import uncertainty as u


def test_scores_at_their_extremes():
    uniform = np.zeros((1, 10))
    sure = np.array([[50.0, 0, 0, 0]])
    assert entropy(uniform)[0] == pytest.approx(np.log(10))
    assert entropy(sure)[0] == pytest.approx(0, abs=1e-12)
    assert margin(uniform)[0] == pytest.approx(1) and margin(sure)[0] == pytest.approx(0, abs=1e-12)
    assert least_confidence(uniform)[0] == pytest.approx(0.9)


def test_scores_match_direct_formulas_and_accept_probabilities():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(20, 5))
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    assert np.allclose(entropy(z), -(p * np.log(p)).sum(1))
    assert np.allclose(entropy(p, probs=True), entropy(z))
    s = np.sort(p, axis=1)
    assert np.allclose(margin(z), 1 - (s[:, -1] - s[:, -2]))
    assert np.allclose(least_confidence(z), 1 - s[:, -1])
    with pytest.raises(SelectionError, match="sum to 1"):
        entropy(z, probs=True)


def test_variance_over_draws():
    draws = np.array([[0.0, 1.0], [2.0, 1.0], [4.0, 1.0]])
    assert np.allclose(variance(draws), [8 / 3, 0])
    assert np.allclose(variance(np.stack([draws, draws], -1)), [16 / 3, 0])
    with pytest.raises(SelectionError, match="num_draws >= 2"):
        variance(draws[:1])


def test_torch_tensors_are_accepted():
    torch = pytest.importorskip("torch")
    z = torch.randn(6, 3, requires_grad=True)
    assert np.allclose(entropy(z), entropy(z.detach().numpy()))


def test_importing_selection_loads_neither_torch_nor_sklearn_nor_faiss():
    code = ("import sys, kpp_sdk.selection as s; "
            "print(sorted(m for m in ('torch', 'sklearn', 'faiss') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- ScoreTable: the training loop's record of each sample's latest score --------------------

def test_score_table_reads_what_was_written_and_fills_unseen_samples():
    from kpp_sdk.selection import ScoreTable

    t = ScoreTable(6)
    assert t.num_scored == 0 and np.array_equal(t[[0, 5]], [1.0, 1.0])  # nothing written yet
    t.update(np.array([4, 1]), [0.3, 2.5])
    got = t[np.array([0, 1, 4, 5])]
    # unseen samples read as the running maximum, so they count as the most uncertain
    assert np.array_equal(got, [2.5, 2.5, 0.3, 2.5]) and t.num_scored == 2
    t.update([1], [0.1])  # a newer score replaces the old one; the maximum is the largest written
    assert np.array_equal(t[[1, 0]], [0.1, 2.5])
    fixed = ScoreTable(3, initial=-1.0)
    fixed.update([2], [7.0])
    assert np.array_equal(fixed[[0, 1, 2]], [-1.0, -1.0, 7.0])
    got[0] = 99.0  # reads are copies
    assert t[[0]][0] == 2.5


def test_score_table_turns_logits_into_entropy_and_takes_torch_tensors():
    torch = pytest.importorskip("torch")
    from kpp_sdk.selection import ScoreTable

    logits = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    t = ScoreTable(10)
    t.update(torch.arange(5) * 2, logits)
    assert np.allclose(t[[0, 2, 4, 6, 8]], u.entropy(logits.numpy()))


def test_score_table_rejects_bad_input_before_writing_anything():
    from kpp_sdk.selection import ScoreTable, SelectionError

    for bad in (0, -3, 2.5, True):
        with pytest.raises(SelectionError, match="num_samples must be a positive integer"):
            ScoreTable(bad)
    with pytest.raises(SelectionError, match="initial must be a finite"):
        ScoreTable(3, initial=float("nan"))
    t = ScoreTable(4)
    with pytest.raises(SelectionError, match="index 4 is out of range for a table of 4"):
        t.update([0, 4], [1.0, 2.0])
    with pytest.raises(SelectionError, match="index -1 is out of range"):
        t[[-1]]
    with pytest.raises(SelectionError, match="1-D array of integers"):
        t[np.array([0.5])]
    with pytest.raises(SelectionError, match="got 3 scores for 2 indices"):
        t.update([0, 1], [1.0, 2.0, 3.0])
    with pytest.raises(u.NonFiniteEmbeddingError, match="NaN"):
        t.update([0, 1], [1.0, float("nan")])
    assert t.num_scored == 0  # none of the failed writes left a trace
