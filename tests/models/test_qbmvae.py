"""QBM-VAE core (torch only): the spike-and-exponential relaxation, the KL term against exact
enumeration, gradients, the count likelihoods, bad input."""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from kpp_sdk.models import (
    BoltzmannMachine,
    InvalidDataError,
    RestrictedBoltzmannMachine,
    exact_log_partition,
    exact_model_distribution,
)
from kpp_sdk.models.base import binary_states
from kpp_sdk.models.qbmvae import (
    QBMVAE,
    GaussianVAE,
    bernoulli_neg_entropy,
    nb_log_likelihood,
    posterior_energy,
    relaxation_mean,
    spike_exp_relaxation,
    zinb_log_likelihood,
)
from kpp_sdk.models.samplers import BoltzmannSampler

BETA = 0.5


def _zeta_density(t, beta=BETA):
    """Density of zeta on (0, 1] given zeta > 0."""
    return beta * np.exp(beta * t) / np.expm1(beta)


# --- the relaxation ------------------------------------------------------------------------


@pytest.mark.parametrize("beta", [0.5, 2.0])
def test_relaxation_mean_spike_mass_and_range_match_the_distribution(beta):
    g = torch.Generator().manual_seed(0)
    q = torch.tensor([0.0, 0.05, 0.3, 0.5, 0.9, 1.0], dtype=torch.float64)
    n = 200_000
    zeta = spike_exp_relaxation(q.expand(n, -1), beta=beta, generator=g)
    assert zeta.min() >= 0 and zeta.max() <= 1
    # z = [zeta > 0] is Bernoulli(q)
    frac_on = (zeta > 0).double().mean(0)
    assert torch.allclose(frac_on, q, atol=4 * math.sqrt(0.25 / n))
    # mean: q * (e^b / (e^b - 1) - 1/b), checked against numerical integration of the density
    c = float(np.trapezoid(np.linspace(0, 1, 10001) * _zeta_density(np.linspace(0, 1, 10001),
                                                                     beta),
                           np.linspace(0, 1, 10001)))
    assert relaxation_mean(1.0, beta) == pytest.approx(c, rel=1e-6)
    se = zeta.std(0) / math.sqrt(n) + 1e-12
    assert torch.all((zeta.mean(0) - relaxation_mean(q, beta)).abs() <= 5 * se)


def test_relaxation_conditional_cdf_is_the_truncated_exponential():
    g = torch.Generator().manual_seed(1)
    zeta = spike_exp_relaxation(torch.full((100_000,), 0.6, dtype=torch.float64), generator=g)
    on = zeta[zeta > 0].numpy()
    for t in (0.1, 0.3, 0.5, 0.8):
        expected = np.expm1(BETA * t) / np.expm1(BETA)
        assert abs((on <= t).mean() - expected) < 0.01


def test_relaxation_is_finite_with_finite_gradients_at_q_0_and_1():
    logits = torch.tensor([-200.0, -40.0, -15.0, 0.0, 15.0, 40.0, 200.0], requires_grad=True)
    q = torch.sigmoid(logits)
    assert q[0] == 0 and q[-1] == 1  # the end points themselves, not just near them
    rho = torch.linspace(0, 1, 101)[:, None].expand(-1, 7)
    zeta = spike_exp_relaxation(q.expand(101, -1), rho)
    assert torch.isfinite(zeta).all() and zeta.min() >= 0 and zeta.max() <= 1
    zeta.sum().backward()
    assert torch.isfinite(logits.grad).all()
    # q = 1 exactly: zeta = log1p(rho (e^b - 1)) / b, i.e. never the spike for rho > 0
    assert torch.allclose(zeta[1:, -1], torch.log1p(rho[1:, -1] * math.expm1(BETA)) / BETA)
    assert (zeta[:-1, 0] == 0).all()
    # and through the KL's entropy term
    assert torch.isfinite(bernoulli_neg_entropy(logits)).all()


def test_relaxation_gradient_matches_the_analytic_derivative():
    g = torch.Generator().manual_seed(2)
    q = torch.rand(500, dtype=torch.float64, generator=g) * 0.98 + 0.01
    rho = torch.rand(500, dtype=torch.float64, generator=g)
    q.requires_grad_(True)
    zeta = spike_exp_relaxation(q, rho)
    (grad,) = torch.autograd.grad(zeta.sum(), q)
    qd = q.detach()
    r = (rho + qd - 1) / qd
    k = math.expm1(BETA)
    analytic = torch.where(rho > 1 - qd, (1 - rho) / qd**2 * k / (BETA * (1 + r * k)),
                           torch.zeros_like(qd))
    assert torch.allclose(grad, analytic, rtol=1e-10, atol=1e-12)
    assert (grad[rho > 1 - qd] > 0).all()  # gradients flow to q wherever zeta leaves the spike


def test_pathwise_gradient_of_the_mean_is_unbiased():
    # d E[zeta] / dq = e^b / (e^b - 1) - 1/b; the reparameterised gradient must average to it
    g = torch.Generator().manual_seed(3)
    q = torch.tensor([0.2, 0.5, 0.8], dtype=torch.float64, requires_grad=True)
    zeta = spike_exp_relaxation(q.expand(200_000, -1), generator=g)
    (grad,) = torch.autograd.grad(zeta.mean(0).sum(), q)
    assert torch.allclose(grad, torch.full_like(grad, relaxation_mean(1.0)), rtol=0.02)


def test_relaxation_rejects_nonpositive_beta():
    with pytest.raises(InvalidDataError, match="beta"):
        spike_exp_relaxation(torch.rand(3), beta=0.0)


# --- the KL term against enumeration -----------------------------------------------------------


def _prior(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return BoltzmannMachine(n, dtype=torch.float64, init_std=0.6, generator=g,
                            linear_bias=torch.randn(n, generator=g, dtype=torch.float64))


def _exact_kl(logits, prior):
    """sum_z q(z) [log q(z) + E(z)] + log Z over all 2^n states, differentiable."""
    z = binary_states(prior.num_nodes)
    logq = (z[None] * torch.nn.functional.logsigmoid(logits)[:, None]
            + (1 - z[None]) * torch.nn.functional.logsigmoid(-logits)[:, None]).sum(-1)
    e = prior.energy(z)
    log_z = torch.logsumexp(-e, 0)
    return (logq.exp() * (logq + e[None])).sum(-1) + log_z


def _vae(prior, n_genes=5):
    torch.manual_seed(0)
    return QBMVAE(n_genes, prior.num_nodes, prior=prior, n_hidden=8, dropout=0.0).double()


@pytest.mark.parametrize("prior_kind", ["bm", "rbm"])
def test_kl_matches_exact_enumeration(prior_kind):
    prior = _prior() if prior_kind == "bm" else RestrictedBoltzmannMachine(
        5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(4), init_std=0.7)
    vae = _vae(prior)
    logits = torch.randn(4, prior.num_nodes, dtype=torch.float64,
                         generator=torch.Generator().manual_seed(5)) * 2
    kl = vae.kl_divergence(logits, exact_log_partition(prior))
    assert torch.allclose(kl, _exact_kl(logits, prior), rtol=1e-10, atol=1e-10)
    assert (kl >= -1e-10).all()


def test_kl_is_zero_when_the_posterior_is_the_prior():
    # a prior without couplings is factorial: q = sigmoid(b) gives KL = 0
    b = torch.tensor([0.3, -1.2, 2.0, 0.0], dtype=torch.float64)
    prior = BoltzmannMachine(4, quadratic_coef=torch.zeros(4, 4, dtype=torch.float64),
                             linear_bias=b, dtype=torch.float64)
    vae = _vae(prior)
    kl = vae.kl_divergence(b[None], exact_log_partition(prior))
    assert abs(float(kl.detach())) < 1e-12


def test_kl_gradient_with_the_exact_negative_phase_equals_the_exact_gradient():
    prior = _prior(seed=6)
    vae = _vae(prior)
    logits = (torch.randn(3, 8, dtype=torch.float64,
                          generator=torch.Generator().manual_seed(7))).requires_grad_(True)
    params = [logits, prior.quadratic_coef, prior.linear_bias]
    exact = torch.autograd.grad(_exact_kl(logits, prior).sum(), params)
    states, p = exact_model_distribution(prior)
    neg_h, e = vae.kl_terms(logits)
    surrogate = (neg_h + e).sum() + 3 * vae.log_partition_surrogate(states, weights=p)
    ours = torch.autograd.grad(surrogate, params)
    for a, b in zip(ours, exact):
        assert torch.allclose(a, b, rtol=1e-8, atol=1e-10)


def test_loss_with_device_negative_phase_estimates_the_prior_gradient():
    # positive phase from the posterior (analytic), negative phase from sa.cpu samples
    prior = _prior(n=6, seed=8)
    vae = _vae(prior, n_genes=4)
    logits = torch.randn(2, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    params = [prior.quadratic_coef, prior.linear_bias]
    exact = torch.autograd.grad(_exact_kl(logits, prior).mean(), params)
    sampler = BoltzmannSampler("sa.cpu", num_reads=10_000, num_sweeps=20, seed=0,
                               persistent=False)
    neg = sampler.negative(prior)
    neg_h, e = vae.kl_terms(logits)
    est = torch.autograd.grad((neg_h + e).mean() + vae.log_partition_surrogate(neg), params)
    # each entry is a difference of means of {0,1} products: 10k samples give sd <= 0.005
    for a, b in zip(est, exact):
        assert torch.allclose(a, b, atol=0.02)
    assert not torch.allclose(est[1], torch.zeros_like(est[1]), atol=0.05)


def test_posterior_energy_is_the_expected_energy_of_sampled_states():
    prior = _prior(n=6, seed=10)
    q = torch.rand(2, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(11))
    g = torch.Generator().manual_seed(12)
    z = (torch.rand(2, 100_000, 6, generator=g, dtype=torch.float64) < q[:, None]).double()
    with torch.no_grad():
        mc = prior.energy(z.reshape(-1, 6)).reshape(2, -1)
        tol = float(5 * mc.std(1).max() / math.sqrt(100_000))
        assert torch.allclose(posterior_energy(prior, q), mc.mean(1), atol=tol)


# --- the model: gradients, likelihoods, bad input -------------------------------------------


def _counts(n=16, genes=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.poisson(torch.rand(n, genes, generator=g) * 5, generator=g)


@pytest.mark.parametrize("likelihood", ["nb", "zinb"])
def test_loss_gradients_reach_encoder_decoder_and_prior(likelihood):
    torch.manual_seed(0)
    vae = QBMVAE(12, 6, 2, n_hidden=16, likelihood=likelihood)
    x = _counts()
    batch = torch.arange(16) % 2
    neg = (torch.rand(50, 6) < 0.5).float()
    out = vae.loss(x, batch, neg, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    for name, p in vae.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_training_steps_lower_the_loss():
    # two cell types with different gene profiles: a decoder that starts uniform must learn them
    g = torch.Generator().manual_seed(0)
    profiles = torch.rand(2, 12, generator=g) ** 3 * 30
    x = torch.poisson(profiles[torch.arange(64) % 2], generator=g)
    batch = torch.arange(64) // 32
    torch.manual_seed(0)
    sampler = BoltzmannSampler("sa.cpu", num_reads=32, num_sweeps=1, seed=0)
    for m in (QBMVAE(12, 6, 2, n_hidden=16, dropout=0.0),
              GaussianVAE(12, 6, 2, n_hidden=16, dropout=0.0)):
        opt = torch.optim.Adam(m.parameters(), lr=2e-2)
        losses = []
        for _ in range(40):
            neg = sampler.negative(m.prior) if isinstance(m, QBMVAE) else None
            loss = m.loss(x, batch, neg, generator=g)["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), type(m).__name__


def test_nb_and_zinb_log_likelihoods_are_normalised_and_match_scipy():
    stats = pytest.importorskip("scipy.stats")
    x = torch.arange(0, 400, dtype=torch.float64)
    mu, theta = torch.tensor(7.5, dtype=torch.float64), torch.tensor(1.7, dtype=torch.float64)
    ll = nb_log_likelihood(x, mu, theta)
    ref = stats.nbinom.logpmf(x.numpy(), float(theta), float(theta / (theta + mu)))
    assert np.allclose(ll.numpy(), ref, rtol=1e-7, atol=1e-7)  # eps = 1e-8 in the logs
    zll = zinb_log_likelihood(x, mu, theta, torch.tensor(0.4, dtype=torch.float64))
    assert float(zll.exp().sum()) == pytest.approx(1.0, abs=1e-7)
    pi = 1 / (1 + math.exp(-0.4))
    assert float(zll[0].exp()) == pytest.approx(pi + (1 - pi) * math.exp(ref[0]), rel=1e-7)


def test_latent_is_q_in_unit_interval_and_ignores_batch():
    torch.manual_seed(0)
    vae = QBMVAE(12, 6, 3, n_hidden=16)
    z = vae.latent(_counts())
    assert z.shape == (16, 6) and z.min() >= 0 and z.max() <= 1
    assert vae.training  # restored


@pytest.mark.parametrize("bad, match", [
    (lambda x: x[:, :5], r"shape \(cells, 12\)"),
    (lambda x: x.index_fill(1, torch.tensor([2]), -1.0), "counts\\[0, 2\\] = -1.0"),
    (lambda x: x.index_fill(1, torch.tensor([3]), float("nan")), "finite"),
])
def test_bad_counts_are_rejected_with_the_offending_entry(bad, match):
    vae = QBMVAE(12, 4, 0, n_hidden=8)
    with pytest.raises(InvalidDataError, match=match):
        vae.loss(bad(_counts()))


def test_bad_batch_prior_and_parameters_are_rejected():
    vae = QBMVAE(12, 4, 2, n_hidden=8)
    with pytest.raises(InvalidDataError, match="pass batch indices"):
        vae.loss(_counts())
    with pytest.raises(InvalidDataError, match=r"\[0, 2\)"):
        vae.loss(_counts(), torch.full((16,), 2))
    with pytest.raises(InvalidDataError, match="negative_states"):
        vae.loss(_counts(), torch.zeros(16), torch.zeros(10, 5))
    with pytest.raises(InvalidDataError, match="n_latent = 4"):
        QBMVAE(12, 4, prior=BoltzmannMachine(5))
    with pytest.raises(InvalidDataError, match="beta"):
        QBMVAE(12, 4, beta=-1.0)
    with pytest.raises(InvalidDataError, match="likelihood"):
        QBMVAE(12, 4, likelihood="poisson")
