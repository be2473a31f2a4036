"""QGAN: the Boltzmann prior's score-function gradient against the exact gradient, training on a
device, the baseline priors, and the sample-quality metrics."""

import itertools

import numpy as np
import pytest
import torch
from kpp_sdk.models import InvalidDataError, RestrictedBoltzmannMachine
from kpp_sdk.models.qgan import (
    QGAN,
    BernoulliPrior,
    BoltzmannPrior,
    GaussianPrior,
    code_entropy_bits,
    fit_qgan,
    load_digits_grayscale,
    make_prior,
)
from kpp_sdk.models.sample_quality import (
    DigitClassifier,
    nearest_neighbour_distances,
    sample_quality,
)
from kpp_sdk.models.samplers import BoltzmannSampler, ExactSampler

from kpp_sdk import ProblemTooLargeError
from kpp_sdk.interop.kaiwu import KaiwuOptimizerDevice

pytest.importorskip("sklearn")


def test_prior_surrogate_gradient_matches_the_exact_gradient_by_enumeration():
    """grad of E_p[c(z)] - lambda H(p) for an RBM prior over 4 latent bits, computed exactly by
    enumerating the 16 codes (with the exact log Z), against the gradient of the score-function
    surrogate on exact samples of the prior."""
    g = torch.Generator().manual_seed(0)
    rbm = RestrictedBoltzmannMachine(4, 3, dtype=torch.float64, init_std=0.7, generator=g)
    with torch.no_grad():
        rbm.linear_bias.copy_(torch.randn(7, generator=g, dtype=torch.float64) * 0.5)
    prior = BoltzmannPrior(rbm, ExactSampler(20000, seed=1))
    codes = torch.tensor(list(itertools.product([0.0, 1.0], repeat=4)), dtype=torch.float64)
    cost = torch.randn(16, generator=g, dtype=torch.float64)
    lam = 1.5

    log_p = -rbm.free_energy(codes)
    log_p = log_p - torch.logsumexp(log_p, 0)
    p = log_p.exp()
    exact_obj = (p * cost).sum() + lam * (p * log_p).sum()
    exact = torch.autograd.grad(exact_obj, list(rbm.parameters()))

    z = prior.sample(20000)
    idx = (z.long() * torch.tensor([8, 4, 2, 1])).sum(1)
    surrogate = prior.surrogate_loss(z.double(), cost[idx], lam)
    est = torch.autograd.grad(surrogate, list(rbm.parameters()))
    e = torch.cat([t.ravel() for t in exact])
    s = torch.cat([t.ravel() for t in est])
    assert float(e.norm()) > 0.1
    assert float((s - e).norm() / e.norm()) < 0.1
    # without the entropy term the gradient is a different vector
    s0 = torch.cat([t.ravel() for t in torch.autograd.grad(
        prior.surrogate_loss(z.double(), cost[idx], 0.0), list(rbm.parameters()))])
    assert float((s0 - e).norm() / e.norm()) > 0.2


def test_fit_qgan_with_a_boltzmann_prior_sampled_on_sa_cpu_trains_the_prior_jointly():
    torch.manual_seed(0)
    train, _, _, _ = load_digits_grayscale()
    sampler = BoltzmannSampler("sa.cpu", num_reads=32, num_sweeps=1, num_threads=1, seed=0)
    prior = make_prior("boltzmann", 8, sampler=sampler, num_hidden=4,
                       generator=torch.Generator().manual_seed(0))
    gan = QGAN(prior)
    before = [p.detach().clone() for p in prior.parameters()]
    hist = fit_qgan(gan, train[:256], steps=12, batch_size=32, log_every=6)
    assert [h["step"] for h in hist] == [6, 12]
    assert all(np.isfinite(h["d_loss"]) and np.isfinite(h["g_loss"]) for h in hist)
    assert 0 < hist[-1]["prior_code_entropy"] <= 8
    assert sampler.last["device"] == "sa.cpu"
    assert any(not torch.equal(a, b) for a, b in zip(before, prior.parameters()))
    x = gan.generate(40)
    assert x.shape == (40, 64) and float(x.min()) >= 0 and float(x.max()) <= 1
    z = prior.sample(40)
    assert z.shape == (40, 8) and set(torch.unique(z).tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("prior", [BernoulliPrior(6), GaussianPrior(6)])
def test_baseline_priors_train_the_same_gan_and_have_no_parameters(prior):
    torch.manual_seed(1)
    train, _, _, _ = load_digits_grayscale()
    gan = QGAN(prior, hidden=32)
    hist = fit_qgan(gan, train[:128], steps=4, batch_size=16, log_every=2)
    assert len(hist) == 2 and "prior_code_entropy" not in hist[0]
    assert list(prior.parameters()) == []
    z = prior.sample(5000, torch.Generator().manual_seed(0))
    if isinstance(prior, BernoulliPrior):
        assert abs(float(z.mean()) - 0.5) < 0.02 and set(torch.unique(z).tolist()) == {0.0, 1.0}
    else:
        assert abs(float(z.mean())) < 0.03 and abs(float(z.std()) - 1) < 0.03


def test_code_entropy_counts_distinct_codes():
    z = torch.tensor([[0, 1], [0, 1], [1, 1], [1, 0]], dtype=torch.float32)
    assert code_entropy_bits(z) == pytest.approx(1.5)
    assert code_entropy_bits(torch.zeros(10, 3)) == 0.0


def test_sample_quality_separates_real_digits_noise_and_a_collapsed_generator():
    train, test, ytr, yte = load_digits_grayscale()
    clf = DigitClassifier(train, ytr)
    assert clf.accuracy(test, yte) > 0.9
    assert np.allclose(nearest_neighbour_distances(test, test), 0, atol=1e-6)
    real = sample_quality(train[:300], test, classifier=clf)
    noise = sample_quality(np.random.default_rng(0).random((300, 64)), test, classifier=clf)
    collapsed = sample_quality(np.repeat(test[:1], 300, axis=0), test, classifier=clf)
    assert real["classifier_score"] > 5 and real["class_coverage"] == 10
    assert noise["sample_to_data_distance"] > 2 * real["sample_to_data_distance"]
    assert collapsed["class_coverage"] == 1 and collapsed["classifier_score"] < 1.01
    assert collapsed["sample_to_data_distance"] < 1e-6 < real["sample_to_data_distance"]
    assert collapsed["data_to_sample_distance"] > 1.5 * real["data_to_sample_distance"]


def test_bad_input_is_rejected_before_training():
    train, _, _, _ = load_digits_grayscale()
    gan = QGAN(BernoulliPrior(4), hidden=8)
    with pytest.raises(InvalidDataError, match=r"in \[0, 1\]"):
        fit_qgan(gan, train * 16, steps=1)
    with pytest.raises(InvalidDataError, match=r"shape \(N, 64\)"):
        fit_qgan(gan, train[:, :10], steps=1)
    with pytest.raises(InvalidDataError, match="unknown prior 'uniform'"):
        make_prior("uniform", 4)
    with pytest.raises(InvalidDataError, match="sample"):
        QGAN(object())

    class _Solver:
        def solve(self, matrix):
            return np.ones((1, matrix.shape[0]), dtype=np.int8)

    small = BoltzmannSampler(KaiwuOptimizerDevice(_Solver(), max_spins=8), num_reads=4)
    with pytest.raises(ProblemTooLargeError, match="needs 12 spins"):
        BoltzmannPrior(RestrictedBoltzmannMachine(8, 4), small)
