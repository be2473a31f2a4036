"""AIS against exact partition functions, and log-likelihood bookkeeping."""

import math

import numpy as np
import pytest
import torch
from kpp_sdk.models import (
    BoltzmannMachine,
    GaussianBernoulliRBM,
    InvalidDataError,
    RestrictedBoltzmannMachine,
    ais_log_partition,
    can_enumerate,
    exact_log_likelihood,
    exact_log_partition,
    log_likelihood,
)


def _g(seed):
    return torch.Generator().manual_seed(seed)


def _biased(model, seed, std=0.5):
    with torch.no_grad():
        model.linear_bias.normal_(0, std, generator=_g(seed))
    return model


@pytest.mark.parametrize("model, betas", [
    (_biased(RestrictedBoltzmannMachine(10, 8, init_std=0.6, generator=_g(1)), 2), 1000),
    (_biased(RestrictedBoltzmannMachine(20, 6, init_std=0.4, generator=_g(3)), 4), 1000),
    (_biased(BoltzmannMachine(7, 3, init_std=0.5, generator=_g(5)), 6), 300),
    (GaussianBernoulliRBM(3, 6, init_std=0.5, generator=_g(7)), 300),
], ids=["rbm10x8", "rbm20x6", "bm7+3", "gbrbm3x6"])
def test_ais_log_partition_agrees_with_enumeration(model, betas):
    exact = exact_log_partition(model)
    res = ais_log_partition(model, num_chains=100, num_betas=betas, seed=0)
    assert abs(res.log_z - exact) < max(3 * res.stderr, 0.02) + 0.02
    assert res.log_z_low <= res.log_z <= res.log_z_high


def test_ais_with_a_data_matched_base_is_accurate_for_a_peaked_model():
    """A trained-looking model: strong biases and weights. The data-matched base keeps AIS
    accurate where a uniform base needs many more temperatures."""
    model = RestrictedBoltzmannMachine(16, 10, init_std=1.0, generator=_g(11))
    with torch.no_grad():
        model.linear_bias[:16] = torch.linspace(-3, 3, 16)
    data = (torch.rand(200, 16, generator=_g(12)) < torch.sigmoid(model.visible_bias)).float()
    exact = exact_log_partition(model)
    res = ais_log_partition(model, num_chains=200, num_betas=2000, data=data, seed=1)
    assert abs(res.log_z - exact) < max(3 * res.stderr, 0.05) + 0.05


def test_log_likelihood_picks_exact_or_ais_and_both_agree():
    model = _biased(RestrictedBoltzmannMachine(12, 30, init_std=0.3, generator=_g(2)), 3)
    data = (torch.rand(50, 12, generator=_g(4)) < 0.5).float()
    assert can_enumerate(model)
    exact = log_likelihood(model, data)
    ais = log_likelihood(model, data, method="ais", num_betas=1000)
    assert exact["method"] == "exact" and exact["stderr"] == 0
    assert ais["method"] == "ais" and ais["stderr"] > 0
    assert ais["log_likelihood"] == pytest.approx(exact["log_likelihood"], abs=0.1)
    assert not can_enumerate(RestrictedBoltzmannMachine(30, 30))


def test_a_model_without_weights_assigns_minus_n_log2_to_every_example():
    model = RestrictedBoltzmannMachine(9, 4, init_std=0.0)
    data = (torch.rand(5, 9, generator=_g(0)) < 0.5).float()
    per_row = exact_log_likelihood(model, data, reduction="none")
    np.testing.assert_allclose(per_row.numpy(), -9 * math.log(2), atol=1e-12)


def test_exact_log_likelihood_sums_to_one_over_all_visible_states():
    model = _biased(BoltzmannMachine(5, 2, init_std=0.8, generator=_g(9)), 1)
    from kpp_sdk.models.base import binary_states

    ll = exact_log_likelihood(model, binary_states(5), reduction="none")
    assert float(torch.logsumexp(ll, 0)) == pytest.approx(0.0, abs=1e-10)


def test_evaluation_leaves_a_float32_model_untouched():
    model = RestrictedBoltzmannMachine(6, 4, generator=_g(0))
    exact_log_likelihood(model, torch.zeros(2, 6))
    assert model.dtype == torch.float32


def test_enumeration_of_too_many_units_is_refused():
    with pytest.raises(InvalidDataError, match="annealed importance sampling"):
        exact_log_partition(BoltzmannMachine(26, 0))
