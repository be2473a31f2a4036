"""Uncertainty scores at their known values, for NumPy and torch input; import stays light."""

import subprocess
import sys

import numpy as np
import pytest

from kpp_sdk.selection import SelectionError, entropy, least_confidence, margin, variance


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
