"""objective() with exact model statistics is the exact log-likelihood gradient."""

import numpy as np
import pytest
import torch
from kpp_sdk.models import (
    BoltzmannMachine,
    GaussianBernoulliRBM,
    RestrictedBoltzmannMachine,
    exact_log_likelihood,
    exact_model_distribution,
)
from kpp_sdk.models.base import binary_states


def _g(seed):
    return torch.Generator().manual_seed(seed)


def _model(kind):
    if kind == "bm_hidden":
        m = BoltzmannMachine(4, 3, init_std=0.6, generator=_g(1), dtype=torch.float64)
    elif kind == "bm_visible":
        m = BoltzmannMachine(6, 0, init_std=0.6, generator=_g(2), dtype=torch.float64)
    else:
        m = RestrictedBoltzmannMachine(5, 4, init_std=0.6, generator=_g(3), dtype=torch.float64)
    with torch.no_grad():
        m.linear_bias.normal_(0, 0.5, generator=_g(4))
    return m


def _data(model, n=7):
    rng = np.random.default_rng(0)
    return torch.as_tensor((rng.random((n, model.num_visible)) < 0.4).astype(np.float64))


def _exact_positive(model, v):
    """Every (v_r, h) with weight p(h | v_r) / B: the exact data statistics."""
    if model.num_hidden == 0:
        return v, None
    h = binary_states(model.num_hidden)
    states = torch.cat([v.repeat_interleave(h.shape[0], 0), h.repeat(v.shape[0], 1)], dim=1)
    with torch.no_grad():
        e = model.energy(states).reshape(v.shape[0], h.shape[0])
        w = torch.softmax(-e, dim=1) / v.shape[0]
    return states, w.reshape(-1)


def _grads(model, loss):
    model.zero_grad()
    loss.backward()
    return {k: p.grad.clone() for k, p in model.named_parameters()}


@pytest.mark.parametrize("kind", ["bm_hidden", "bm_visible", "rbm"])
def test_objective_with_exact_statistics_is_the_negative_loglik_gradient_to_1e_6(kind):
    model = _model(kind)
    v = _data(model)
    pos, pos_w = _exact_positive(model, v)
    neg, neg_w = exact_model_distribution(model)
    g_obj = _grads(model, model.objective(pos, neg, data_weights=pos_w, model_weights=neg_w))

    # reference: autograd through log p(v) = -F(v) - log Z with Z summed over every state
    all_x = binary_states(model.num_nodes)
    nll = model.free_energy(v).mean() + torch.logsumexp(-model.energy(all_x), dim=0)
    g_ref = _grads(model, nll)
    for k in g_ref:
        np.testing.assert_allclose(g_obj[k].numpy(), g_ref[k].numpy(), rtol=0, atol=1e-6,
                                   err_msg=k)
    assert max(float(g.abs().max()) for g in g_ref.values()) > 1e-2  # not a vacuous comparison


@pytest.mark.parametrize("kind", ["bm_hidden", "rbm"])
def test_objective_gradient_matches_finite_differences_of_exact_loglik(kind):
    model = _model(kind)
    v = _data(model)
    pos, pos_w = _exact_positive(model, v)
    neg, neg_w = exact_model_distribution(model)
    g = _grads(model, model.objective(pos, neg, data_weights=pos_w, model_weights=neg_w))
    rng = np.random.default_rng(1)
    eps = 1e-5
    for name, p in model.named_parameters():
        flat = p.data.view(-1)
        for idx in rng.choice(flat.numel(), size=3, replace=False):
            if name == "quadratic_coef" and kind.startswith("bm"):
                i, j = divmod(int(idx), p.shape[1])
                if j <= i:  # only the strict upper triangle is a parameter of W
                    continue
            old = float(flat[idx])
            flat[idx] = old + eps
            up = exact_log_likelihood(model, v)
            flat[idx] = old - eps
            down = exact_log_likelihood(model, v)
            flat[idx] = old
            fd = -(up - down) / (2 * eps)
            assert float(g[name].view(-1)[idx]) == pytest.approx(fd, abs=1e-6), (name, idx)


def test_rbm_positive_phase_expectation_equals_sum_over_hidden_states():
    """E linear in h: E(v, E[h|v]) equals the p(h|v)-weighted energy average, so the RBM's
    exact positive phase needs no sampling."""
    model = _model("rbm")
    v = _data(model)
    pos, pos_w = _exact_positive(model, v)
    exact = (model.energy(pos) * pos_w).sum().detach()
    rb = model.energy(model.hidden_expectation(v)).mean().detach()
    assert float(rb) == pytest.approx(float(exact), abs=1e-12)


def test_gaussian_bernoulli_free_energy_gradient_matches_positive_phase_expectation():
    model = GaussianBernoulliRBM(3, 4, init_std=0.5, generator=_g(8), dtype=torch.float64)
    v = torch.randn(6, 3, generator=_g(9), dtype=torch.float64)
    h = binary_states(4)
    states = torch.cat([v.repeat_interleave(16, 0), h.repeat(6, 1)], dim=1)
    with torch.no_grad():
        w = torch.softmax(-model.energy(states).reshape(6, 16), dim=1).reshape(-1) / 6
    g_exact = _grads(model, (model.energy(states) * w).sum())
    g_rb = _grads(model, model.energy(model.hidden_expectation(v)).mean())
    g_free = _grads(model, model.free_energy(v).mean())
    for k in g_exact:
        np.testing.assert_allclose(g_rb[k].numpy(), g_exact[k].numpy(), atol=1e-10, err_msg=k)
        np.testing.assert_allclose(g_free[k].numpy(), g_exact[k].numpy(), atol=1e-10, err_msg=k)
