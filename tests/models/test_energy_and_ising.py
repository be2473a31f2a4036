"""Energies, the {0,1} -> spin mapping, the Kaiwu matrix and exact partition functions."""

import math

import numpy as np
import pytest
import torch
from kpp_sdk.models import (
    BoltzmannMachine,
    GaussianBernoulliRBM,
    RestrictedBoltzmannMachine,
    exact_log_partition,
    quadratic_to_ising,
)
from kpp_sdk.models.base import binary_states
from scipy import integrate
from scipy.special import logsumexp

from kpp_sdk.exact import all_states, exact_energies


def _g(seed=0):
    return torch.Generator().manual_seed(seed)


def _models():
    return [
        BoltzmannMachine(4, 3, init_std=0.7, generator=_g(1), dtype=torch.float64),
        BoltzmannMachine(6, 0, init_std=0.7, generator=_g(2), dtype=torch.float64),
        RestrictedBoltzmannMachine(4, 5, init_std=0.7, generator=_g(3), dtype=torch.float64),
    ]


def _with_random_biases(model, seed=0):
    with torch.no_grad():
        model.linear_bias.copy_(torch.randn(model.linear_bias.shape, generator=_g(seed),
                                            dtype=model.linear_bias.dtype))
    return model


@pytest.mark.parametrize("model", _models(), ids=lambda m: type(m).__name__ + str(m.num_hidden))
def test_ising_energy_equals_model_energy_for_every_state_under_s_equals_2x_minus_1(model):
    model = _with_random_biases(model)
    problem = model.to_ising()
    x = binary_states(model.num_nodes)
    spins = (2 * x - 1).numpy().astype(np.int8)
    np.testing.assert_allclose(problem.energy(spins), model.energy(x).detach().numpy(),
                               rtol=0, atol=1e-12)


def test_spin_up_is_unit_on_and_states_from_spins_inverts_the_mapping():
    model = RestrictedBoltzmannMachine(2, 1, dtype=torch.float64)
    states = model.states_from_spins(np.array([[1, -1, 1], [-1, -1, 1]], dtype=np.int8))
    expected = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    assert torch.equal(states, expected)


def test_spin_mapping_puts_unit_biases_into_fields_and_couplings_divided_by_four():
    # E(x) = -b x_0 - w x_0 x_1 in spins: J = w/4, h = (b/2 + w/4, w/4)
    b, w = 0.8, -1.2
    model = BoltzmannMachine(2, 0, torch.tensor([[0.0, w], [0.0, 0.0]]), torch.tensor([b, 0.0]),
                             dtype=torch.float64)
    p = model.to_ising()
    np.testing.assert_allclose(p.J, [[0, w / 4], [w / 4, 0]])
    np.testing.assert_allclose(p.h, [b / 2 + w / 4, w / 4])
    np.testing.assert_allclose(p.offset, -b / 2 - w / 4)


def test_quadratic_to_ising_moves_the_diagonal_into_fields():
    rng = np.random.default_rng(0)
    A = rng.normal(size=(5, 5))
    A = A + A.T
    b = rng.normal(size=5)
    p = quadratic_to_ising(A, b, 0.3)
    x = all_states(5).astype(float) * 0.5 + 0.5
    direct = -x @ b - 0.5 * np.einsum("ki,ij,kj->k", x, A, x) + 0.3
    np.testing.assert_allclose(p.energy(all_states(5)), direct, atol=1e-12)


@pytest.mark.parametrize("model", _models(), ids=lambda m: type(m).__name__ + str(m.num_hidden))
def test_kaiwu_matrix_follows_the_plugin_convention(model):
    """kaiwu-torch-plugin builds M[:n,:n] = W/8, M[:n,n] = b/4 + W 1/8 with H = -s^T M s."""
    model = _with_random_biases(model, 3)
    W, b, _ = model.quadratic_form()
    W, b = W.detach().numpy(), b.detach().numpy()
    n = model.num_spins
    M = model.get_ising_matrix()
    assert M.shape == (n + 1, n + 1)
    np.testing.assert_allclose(M[:n, :n], W / 8, atol=1e-12)
    np.testing.assert_allclose(M[:n, n], b / 4 + W.sum(0) / 8, atol=1e-12)
    np.testing.assert_allclose(M[n, :n], M[:n, n])
    # and -[s,1]^T M [s,1] differs from the model energy by one constant
    s = all_states(n).astype(float)
    sa = np.hstack([s, np.ones((s.shape[0], 1))])
    diff = -np.einsum("ki,ij,kj->k", sa, M, sa) - model.energy(
        torch.as_tensor((s + 1) / 2)).detach().numpy()
    assert np.ptp(diff) < 1e-10


@pytest.mark.parametrize("model", _models(), ids=lambda m: type(m).__name__ + str(m.num_hidden))
def test_exact_log_partition_matches_enumeration_of_the_ising_problem(model):
    model = _with_random_biases(model, 5)
    reference = logsumexp(-exact_energies(model.to_ising()))
    assert exact_log_partition(model) == pytest.approx(reference, abs=1e-10)


def test_rbm_log_partition_enumerating_either_layer_agrees():
    wide = RestrictedBoltzmannMachine(3, 9, init_std=0.8, generator=_g(7), dtype=torch.float64)
    tall = RestrictedBoltzmannMachine(9, 3, wide.quadratic_coef.detach().t().clone(),
                                      torch.cat([wide.hidden_bias, wide.visible_bias]).detach(),
                                      dtype=torch.float64)
    assert exact_log_partition(wide) == pytest.approx(exact_log_partition(tall), abs=1e-10)
    reference = logsumexp(-exact_energies(wide.to_ising()))
    assert exact_log_partition(wide) == pytest.approx(reference, abs=1e-10)


@pytest.mark.parametrize("model", [
    RestrictedBoltzmannMachine(4, 3, init_std=0.7, generator=_g(11), dtype=torch.float64),
    BoltzmannMachine(3, 4, init_std=0.7, generator=_g(12), dtype=torch.float64),
], ids=["rbm", "bm"])
def test_free_energy_is_minus_log_sum_over_hidden_states(model):
    model = _with_random_biases(model, 9)
    V, H = model.num_visible, model.num_hidden
    v = binary_states(V)
    h = binary_states(H)
    joint = torch.cat([v.repeat_interleave(h.shape[0], 0), h.repeat(v.shape[0], 1)], dim=1)
    e = model.energy(joint).detach().reshape(v.shape[0], h.shape[0])
    expected = -torch.logsumexp(-e, dim=1)
    torch.testing.assert_close(model.free_energy(v).detach(), expected, rtol=0, atol=1e-12)


def test_gaussian_bernoulli_log_partition_matches_numerical_integration():
    model = GaussianBernoulliRBM(1, 3, init_std=0.8, init_var=0.7, generator=_g(4),
                                 dtype=torch.float64)
    with torch.no_grad():
        model.mu.fill_(0.3)
    h = binary_states(3)

    def density(v):
        x = torch.cat([torch.full((h.shape[0], 1), v, dtype=torch.float64), h], dim=1)
        return float(torch.exp(-model.energy(x).detach()).sum())

    z, _ = integrate.quad(density, -30, 30, limit=200)
    assert exact_log_partition(model) == pytest.approx(math.log(z), abs=1e-8)


def test_gaussian_bernoulli_ising_view_is_the_exact_hidden_marginal():
    model = GaussianBernoulliRBM(2, 3, init_std=0.6, generator=_g(6), dtype=torch.float64)
    h = binary_states(3)
    # p(h) by integrating v out numerically, one h at a time
    grid = torch.linspace(-12, 12, 801, dtype=torch.float64)
    vv = torch.cartesian_prod(grid, grid)
    dv = float(grid[1] - grid[0]) ** 2
    marg = []
    for row in h:
        x = torch.cat([vv, row.expand(vv.shape[0], 3)], dim=1)
        marg.append(float(torch.exp(-model.energy(x).detach()).sum()) * dv)
    p_numeric = np.array(marg) / sum(marg)
    e = model.to_ising().energy((2 * h - 1).numpy().astype(np.int8))
    p_ising = np.exp(-(e - e.min()))
    p_ising /= p_ising.sum()
    np.testing.assert_allclose(p_ising, p_numeric, atol=1e-6)
