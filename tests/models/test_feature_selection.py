"""QUBO feature selection: the QUBO, its solvers, and selection on data with known signal."""

import itertools

import numpy as np
import pytest
import torch
from kpp_sdk.models.feature_selection import (
    FeatureSelectionWrapper,
    QuadraticLinearSolver,
    qubo_objective,
    solve_qubo,
)
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from kpp_sdk import IsingProblem


def _random_qubo(seed, n):
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(n, n))
    return A + A.T, rng.normal(size=n) * 2


def _exact_min(Q, l):
    xs = np.array(list(itertools.product([0, 1], repeat=len(l))))
    f = qubo_objective(Q, l, xs)
    return f.min()


@pytest.mark.parametrize("seed", [31, 32])
def test_the_kaiwu_matrix_has_the_qubos_energies_up_to_a_constant(seed):
    Q, l = _random_qubo(seed, 6)
    M = QuadraticLinearSolver().solve(Q, l)
    xs = np.array(list(itertools.product([0, 1], repeat=6)))
    s = np.concatenate([2 * xs - 1, np.ones((64, 1))], axis=1)
    diff = qubo_objective(Q, l, xs) - (-np.einsum("ki,ij,kj->k", s, M, s))
    assert np.ptp(diff) < 1e-9
    np.testing.assert_allclose(M, M.T)


@pytest.mark.parametrize("solver,kwargs,seed", [
    ("sa", {"alpha": 0.95, "size_limit": 10, "rand_seed": 0}, 41),
    ("sa", {"alpha": 0.95, "size_limit": 10, "rand_seed": 0}, 42),
    ("sa.cpu", {"num_reads": 20, "seed": 0}, 41),
    ("sa.cpu", {"num_reads": 20, "seed": 0}, 42),
    ("kaiwu_cim", {"sample_number": 10, "task_mode": "quota", "target_precision": 14}, 41),
    ("kaiwu_cim", {"sample_number": 10, "task_mode": "quota"}, 42),
])
def test_solvers_reach_the_exact_minimum_of_fresh_qubos(solver, kwargs, seed):
    Q, l = _random_qubo(seed, 9)
    x = solve_qubo(Q, l, np.ones(9, dtype=int), solver, **kwargs)
    assert x.shape == (9,) and np.isin(x, (0, 1)).all()
    assert qubo_objective(Q, l, x) == pytest.approx(_exact_min(Q, l), abs=1e-9)


def test_local_search_ends_in_a_local_minimum_no_single_flip_improves():
    Q, l = _random_qubo(43, 12)
    x = solve_qubo(Q, l, np.zeros(12, dtype=int), "local_search")
    f = qubo_objective(Q, l, x)
    for i in range(12):
        y = x.copy()
        y[i] ^= 1
        assert qubo_objective(Q, l, y) >= f - 1e-12


def test_bad_solver_names_and_states_are_refused():
    Q, l = _random_qubo(1, 3)
    with pytest.raises(ValueError, match="Unsupported solver"):
        solve_qubo(Q, l, np.ones(3, dtype=int), "magic")
    with pytest.raises(ValueError, match="0/1"):
        solve_qubo(Q, l, np.full(3, 2), "local_search")
    with pytest.raises(ValueError, match="Unsupported solver"):
        FeatureSelectionWrapper(nn.Identity(), 3, solver="magic")
    with pytest.raises(TypeError, match="nn.Module"):
        FeatureSelectionWrapper(lambda x: x, 3)


def test_mask_derivatives_are_the_losss_gradient_and_hessian():
    torch.manual_seed(0)
    x = torch.randn(40, 4)
    y = x @ torch.tensor([[1.0], [-2.0], [0.0], [0.5]])
    lin = nn.Linear(4, 1, bias=False)
    sel = FeatureSelectionWrapper(lin, 4)
    g, H = sel.compute_mask_derivatives(DataLoader(TensorDataset(x, y), batch_size=40),
                                        nn.MSELoss())
    # MSE of w * m * x: the Hessian in m is 2/N sum (w_i x_i)(w_j x_j)
    wx = x * lin.weight.detach()
    np.testing.assert_allclose(H, (2 / 40 * wx.T @ wx).numpy(), rtol=1e-4, atol=1e-6)
    r = (wx.sum(1, keepdim=True) - y)
    np.testing.assert_allclose(g, (2 / 40 * (r * wx).sum(0)).numpy(), rtol=1e-4, atol=1e-6)


def test_selection_finds_the_signal_features_of_a_fresh_regression():
    torch.manual_seed(5)
    rng = np.random.default_rng(5)
    F, k = 24, 4
    signal = np.sort(rng.choice(F, k, replace=False))
    w = torch.zeros(F, 1)
    w[signal, 0] = torch.tensor(rng.uniform(2, 4, k) * rng.choice([-1, 1], k), dtype=torch.float)
    x = torch.randn(512, F)
    y = x @ w + 0.01 * torch.randn(512, 1)
    loader = DataLoader(TensorDataset(x, y), batch_size=128)
    sel = FeatureSelectionWrapper(nn.Linear(F, 1, bias=False), F, cardinality_k=k, solver="sa",
                                  solver_kwargs={"alpha": 0.95, "size_limit": 20, "rand_seed": 1},
                                  mask_update_epochs=10)
    sel.fit_weights(loader, nn.MSELoss(), torch.optim.SGD(sel.model.parameters(), lr=0.05),
                    train_epochs=20)
    assert sel.selected_indices().tolist() == signal.tolist()
    assert sel.num_selected() == k and sel.get_support().dtype == bool
    out = sel(x).detach()
    assert float(nn.MSELoss()(out, y)) < 0.1 * float(y.var())


def test_count_bounds_are_enforced_by_the_cheapest_changes():
    Q, l = np.zeros((4, 4)), np.array([-4.0, -3.0, -2.0, -1.0])
    sel = FeatureSelectionWrapper(nn.Identity(), 4, max_selected_features=2,
                                  min_selected_features=1)
    assert sel.project_to_bounds(np.ones(4, dtype=int), Q, l).tolist() == [1, 1, 0, 0]
    assert sel.project_to_bounds(np.zeros(4, dtype=int), Q, l).tolist() == [1, 0, 0, 0]
    with pytest.raises(ValueError, match="feature_dim"):
        sel(torch.zeros(2, 5))


def test_mask_applies_on_any_axis():
    sel = FeatureSelectionWrapper(nn.Identity(), 3, input_feature_axis=1)
    with torch.no_grad():
        sel.mask.copy_(torch.tensor([1.0, 0.0, 1.0]))
    x = torch.ones(2, 3, 5)
    assert torch.equal(sel(x)[:, 1], torch.zeros(2, 5)) and torch.equal(sel(x)[:, 0],
                                                                          torch.ones(2, 5))
    assert IsingProblem  # the QUBO travels as an IsingProblem to devices
