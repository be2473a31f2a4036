"""The QVAE of kaiwu-torch-plugin's interface: its relaxed posterior and its training step."""

import types

import numpy as np
import pytest
import torch
from kpp_sdk.models.kaiwu_compat import RestrictedBoltzmannMachine
from kpp_sdk.models.qvae import QVAE, Exponential, MixtureGeneric

import kpp_sdk


@pytest.mark.parametrize("beta", [2.0, 8.0])
def test_exponential_smoothing_density_integrates_to_one_and_inverts_its_cdf(beta):
    d = Exponential(beta)
    z = torch.linspace(0, 1, 20001, dtype=torch.float64)
    pdf = d.pdf(z)
    assert float(torch.trapezoid(pdf, z)) == pytest.approx(1.0, abs=1e-6)
    u = d.sample((50000,), generator=torch.Generator().manual_seed(0))
    assert float(u.min()) >= 0 and float(u.max()) <= 1
    # the empirical CDF of the draws matches the CDF at a few points
    for t in (0.05, 0.2, 0.5):
        assert float((u < t).double().mean()) == pytest.approx(float(d.cdf(torch.tensor(t))),
                                                                abs=0.01)


def test_mixture_log_prob_is_a_density_for_any_q():
    z = torch.linspace(0, 1, 20001, dtype=torch.float64)
    for logit in (-2.0, 0.3, 3.0):
        dist = MixtureGeneric(torch.full((1,), logit, dtype=torch.float64), 5.0)
        p = torch.exp(dist.log_prob_per_var(z[:, None]))[:, 0]
        assert float(torch.trapezoid(p, z)) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("q", [0.2, 0.7])
def test_reparameterised_zeta_has_the_right_mean_and_gradient(q):
    """E[zeta] = (1 - q) m + q (1 - m) with m the smoothing mean, so d E[zeta] / d q = 1 - 2m:
    the implicit gradient of the sampler must reproduce it."""
    torch.manual_seed(1)
    beta = 4.0
    logit = torch.full((200000,), float(np.log(q / (1 - q))), requires_grad=True)
    zeta = MixtureGeneric(logit, beta).reparameterize(True)
    m = 1 / beta - np.exp(-beta) / (1 - np.exp(-beta))  # mean of the truncated exponential
    assert float(zeta.detach().mean()) == pytest.approx((1 - q) * m + q * (1 - m), abs=0.005)
    zeta.mean().backward()
    dq_dlogit = q * (1 - q)
    grad_per_q = float(logit.grad.sum()) / dq_dlogit
    assert grad_per_q == pytest.approx(1 - 2 * m, abs=0.02)


class _TinyQVAE(QVAE):
    def _create_encoder(self):
        return torch.nn.Linear(9, 6)

    def _create_decoder(self):
        return torch.nn.Linear(6, 9)

    def _create_bm(self):
        return RestrictedBoltzmannMachine(3, 3)

    def _create_sampler(self, sampler_type):
        return kpp_sdk.get_device("sa.cpu", num_sweeps=20, num_threads=1)


def test_qvae_trains_on_bars_and_stripes_with_a_device_sampler():
    from kpp_sdk.models.datasets import load_bars_and_stripes

    torch.manual_seed(0)
    x = torch.as_tensor(load_bars_and_stripes(3, 3, repeats=4).train)
    cfg = types.SimpleNamespace(num_latent_units=6, loss_type="bernoulli", dist_beta=8.0,
                                kl_beta=0.1, weight_decay=1e-4)
    model = _TinyQVAE(9, None, cfg)
    model.set_dataset_mean(x.mean(0))
    model.set_train_bias(x.mean(0))
    opt = torch.optim.Adam(model.parameters(), lr=0.02)

    def recon_nll():
        model.eval()
        with torch.no_grad():
            recon, *_ = model(x)
            return float(torch.nn.functional.binary_cross_entropy_with_logits(recon, x))

    before = recon_nll()
    model.train()
    for _ in range(150):
        recon, posterior, q, _ = model(x)
        loss = model.loss(x, recon, posterior) + model.bm_loss(q)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = recon_nll()
    assert after < 0.6 * before
    with pytest.raises(ValueError, match="loss_type"):
        model.energy(x, loss_type="mse")
