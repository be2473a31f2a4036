"""Q-Diffusion: NCE, importance sampling, the energy's Ising view and the evidence bound, checked
against exact enumeration on problems small enough to enumerate."""

import itertools
import math

import numpy as np
import pytest
import torch
from kpp_sdk.models import BoltzmannMachine, InvalidDataError
from kpp_sdk.models.qdiffusion import (
    QDiffusion,
    fit_diffusion,
    fit_energy,
    importance_sample,
    load_text_corpus,
    nce_loss,
    perplexity,
    reveal_schedule,
)


def _all_states(n):
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=n)))


def _chi2_pvalue(counts, probs):
    from scipy.stats import chisquare

    counts = np.asarray(counts, dtype=float)
    expected = np.asarray(probs, dtype=float) * counts.sum()
    small = expected < 5  # pool the rare outcomes into one bin (chi-square needs >= 5 expected)
    if small.any():
        counts = np.append(counts[~small], counts[small].sum())
        expected = np.append(expected[~small], expected[small].sum())
    expected *= counts.sum() / expected.sum()  # float32 probabilities: renormalise
    return chisquare(counts, expected).pvalue


# --- NCE ------------------------------------------------------------------------------------------


def test_nce_recovers_a_known_ising_energy_including_its_normaliser():
    """Data p = q * exp(-E_true) with q a known noise distribution over 5 bits: minimising the
    NCE loss over a Boltzmann machine plus an offset recovers E_true = log q - log p on every
    state (to sampling error), the normaliser included."""
    n = 5
    g = torch.Generator().manual_seed(0)
    x = _all_states(n).double()
    q_logits = 0.5 * torch.randn(n, generator=g, dtype=torch.float64)
    log_q = (x * torch.nn.functional.logsigmoid(q_logits)
             + (1 - x) * torch.nn.functional.logsigmoid(-q_logits)).sum(1)
    true_bm = BoltzmannMachine(n, 0, quadratic_coef=torch.randn(n, n, generator=g) * 0.6,
                               linear_bias=0.5 * torch.randn(n, generator=g), dtype=torch.float64)
    with torch.no_grad():
        e_raw = true_bm.energy(x)
    log_p = log_q - e_raw - torch.logsumexp(log_q - e_raw, 0)
    e_true = log_q - log_p  # the NCE optimum

    rng = np.random.default_rng(1)
    N = 20000
    pos = torch.from_numpy(rng.choice(x.shape[0], N, p=log_p.exp().numpy()))
    neg = torch.from_numpy(rng.choice(x.shape[0], N, p=log_q.exp().numpy()))
    bm = BoltzmannMachine(n, 0, dtype=torch.float64)
    offset = torch.zeros((), dtype=torch.float64, requires_grad=True)
    params = [*bm.parameters(), offset]
    opt = torch.optim.LBFGS(params, lr=1, max_iter=100, tolerance_grad=1e-9,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        e = bm.energy(x) + offset  # every sample is one of the 32 states: index their energies
        loss = nce_loss(e[pos], e[neg])
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        e_fit = bm.energy(x) + offset
    err = (e_fit - e_true).abs()
    # states with non-negligible mass are estimated to a few hundredths
    heavy = (log_p.exp() > 0.01) & (log_q.exp() > 0.01)
    assert heavy.sum() >= 14
    assert float(err[heavy].max()) < 0.15
    # a loss with the roles of the classes swapped would give -E_true: far off
    assert float((e_fit + e_true).abs()[heavy].max()) > 1.0


def test_nce_loss_is_the_logistic_loss_of_minus_energy_as_log_odds():
    e_pos = torch.tensor([-2.0, 0.5])
    e_neg = torch.tensor([1.0, -0.3, 3.0])
    expected = (-torch.log(torch.sigmoid(-e_pos)).mean()
                - torch.log(1 - torch.sigmoid(-e_neg)).mean())
    assert torch.allclose(nce_loss(e_pos, e_neg), expected, atol=1e-6)


# --- importance sampling ------------------------------------------------------------------------


def test_importance_sampling_with_zero_energy_reproduces_the_proposal():
    g = torch.Generator().manual_seed(0)
    probs = torch.tensor([0.5, 0.2, 0.15, 0.1, 0.05])
    B, k = 40000, 6
    cand = torch.multinomial(probs, B * k, replacement=True, generator=g).view(B, k)
    chosen, ess = importance_sample(cand, torch.zeros(B, k), g)
    counts = np.bincount(chosen.numpy(), minlength=5)
    assert _chi2_pvalue(counts, probs) > 1e-3
    assert torch.allclose(ess, torch.full((B,), float(k), dtype=torch.float64))


def test_importance_sampling_with_many_candidates_follows_the_tilted_distribution():
    g = torch.Generator().manual_seed(1)
    probs = torch.tensor([0.4, 0.3, 0.2, 0.1])
    energy = torch.tensor([1.0, 0.0, -0.5, -1.5])
    target = probs * torch.exp(-energy)
    target /= target.sum()
    B, k = 20000, 200
    cand = torch.multinomial(probs, B * k, replacement=True, generator=g).view(B, k)
    chosen, _ = importance_sample(cand, energy[cand], g)
    freq = np.bincount(chosen.numpy(), minlength=4) / B
    assert np.abs(freq - target.numpy()).max() < 0.015
    assert np.abs(freq - probs.numpy()).max() > 0.1  # the energy did move the distribution


# --- the model ------------------------------------------------------------------------------------


def _tiny(seq_len=2, vocab=3, seed=0, energy_std=0.8):
    g = torch.Generator().manual_seed(seed)
    m = QDiffusion(seq_len, vocab, hidden=16, num_layers=1, energy_init_std=energy_std,
                   generator=g)
    with torch.no_grad():
        m.energy_model.linear_bias.copy_(torch.randn(seq_len * vocab, generator=g))
        m.energy_offset.fill_(0.3)
        # a sharper proposal than the near-uniform initialisation, so that errors show
        m.diffusion.out.weight.mul_(3.0)
        m.diffusion.out.bias.copy_(torch.randn(seq_len * vocab, generator=g))
    return m


def _sequences(L, V):
    return torch.tensor(list(itertools.product(range(V), repeat=L)))


def _exact_joint(m, xt):
    """p(x0 | x_t) over every sequence (enumeration), as a dict of probabilities."""
    seqs = _sequences(m.seq_len, m.vocab_size)
    with torch.no_grad():
        logp = m.diffusion.log_probs(xt[None])[0].double()
        log_mu = logp[torch.arange(m.seq_len), seqs].sum(1)
        w = log_mu - m.energy(seqs).double()
    return seqs, torch.softmax(w, 0)


def test_energy_equals_the_boltzmann_machine_on_the_one_hot_code_and_its_ising_problem():
    m = _tiny(seq_len=4, vocab=5, energy_std=0.5)
    x = torch.randint(0, 5, (50, 4), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        e = m.energy(x)
        e_bm = m.energy_model.energy(m.one_hot(x)) + m.energy_offset
    assert torch.allclose(e, e_bm, atol=1e-5)
    spins = (2 * m.one_hot(x) - 1).numpy().astype(np.int8)
    assert np.allclose(m.energy_ising().energy(spins), e.numpy(), atol=1e-4)
    assert m.energy_ising().n == 4 * 5


def test_generate_with_zero_energy_reproduces_the_proposals_distribution():
    """Two reverse steps over L=2 with importance sampling over 8 candidates and E = 0: the
    sequences follow ancestral sampling of the proposal, computed exactly by enumeration
    (average over the two reveal orders of mu(x_a | all masked) * mu(x_b | x_a))."""
    m = _tiny()
    m.energy_scale = 0.0
    L, V, M = 2, 3, m.diffusion.mask_id
    seqs = _sequences(L, V)
    with torch.no_grad():
        lp0 = m.diffusion.log_probs(torch.full((1, L), M))[0]
        exact = torch.zeros(len(seqs), dtype=torch.float64)
        for j, s in enumerate(seqs):
            for first in range(L):
                xt = torch.full((1, L), M)
                xt[0, first] = s[first]
                lp1 = m.diffusion.log_probs(xt)[0]
                other = 1 - first
                exact[j] += 0.5 * math.exp(float(lp0[first, s[first]] + lp1[other, s[other]]))
    x = m.generate(30000, steps=2, k=8, generator=torch.Generator().manual_seed(5))
    counts = np.bincount((x[:, 0] * V + x[:, 1]).numpy(), minlength=V * V)
    assert abs(float(exact.sum()) - 1) < 1e-5
    assert _chi2_pvalue(counts, exact.numpy()) > 1e-3
    # and the single-step joint with the energy switched back on differs from it
    m.energy_scale = 1.0
    _, joint = _exact_joint(m, torch.full((L,), M))
    assert float((joint - exact).abs().max()) > 0.03


def test_generate_with_energy_and_many_candidates_samples_the_reweighted_joint():
    m = _tiny(seed=2)
    L, V, M = 2, 3, m.diffusion.mask_id
    _, joint = _exact_joint(m, torch.full((L,), M))
    x = m.generate(20000, steps=1, k=128, generator=torch.Generator().manual_seed(6))
    freq = np.bincount((x[:, 0] * V + x[:, 1]).numpy(), minlength=V * V) / x.shape[0]
    assert np.abs(freq - joint.numpy()).max() < 0.02


def _exact_bound(m, x0, sizes, log_prob_block):
    """The T-step bound averaged over every order, each step's term given by
    ``log_prob_block(xt, block)``."""
    L, M = m.seq_len, m.diffusion.mask_id
    orders = list(itertools.permutations(range(L)))
    total = 0.0
    for order in orders:
        start = 0
        for size in sizes:
            xt = torch.full((L,), M)
            xt[list(order[:start])] = x0[list(order[:start])]
            total -= log_prob_block(xt, list(order[start:start + size])) / len(orders)
            start += size
    return total


def _log_p_block(m, x0):
    """log p(x0[block] | x_t) of the reweighted joint (K -> infinity), by enumeration."""
    def f(xt, block):
        seqs, joint = _exact_joint(m, xt)
        return math.log(float(joint[(seqs[:, block] == x0[block]).all(1)].sum()))
    return f


@pytest.mark.parametrize("steps", [1, 3])
def test_nll_bound_estimator_matches_the_exact_bound_by_enumeration(steps):
    """L=3, V=3: the exact T-step bound (average over the 6 orders of the exact marginals of
    the reweighted joint) against both estimators with K=2048 averaged over many copies of the
    sequence; with E = 0 the same code gives the proposal's bound exactly."""
    m = _tiny(seq_len=3, vocab=3, seed=4, energy_std=0.6)
    L = 3
    x0 = torch.tensor([2, 0, 1])
    sizes = reveal_schedule(L, steps)
    exact = _exact_bound(m, x0, sizes, _log_p_block(m, x0))
    m.energy_scale = 0.0
    exact_mu = _exact_bound(m, x0, sizes, _log_p_block(m, x0))
    m.energy_scale = 1.0

    orders = torch.tensor(list(itertools.permutations(range(L)))).repeat(40, 1)
    copies = x0.repeat(orders.shape[0], 1)
    r = m.nll_bound(copies, steps=steps, num_samples=2048, orders=orders,
                    generator=torch.Generator().manual_seed(7))
    r0 = m.nll_bound(copies, steps=steps, num_samples=4, use_energy=False, orders=orders,
                     generator=torch.Generator().manual_seed(7))
    assert abs(float(r["nll"].mean()) - exact) < 0.02
    assert abs(float(r["nll_is"].mean()) - exact) < 0.02
    assert abs(float(r0["nll"].mean()) - exact_mu) < 1e-5
    assert torch.equal(r0["nll"], r0["nll_is"])
    assert abs(exact - exact_mu) > 0.1
    assert torch.all(r0["log_z_bias"] == 0)
    if steps == 1:  # a single step reveals everything: the bound is -log p(x0) itself
        assert float(r["nll_is"].std()) < 0.06  # only the log Z estimate is random


def _masked_configs(m, xt):
    """Every completion z of x_t and its proposal probability mu(z | x_t)."""
    seqs = _sequences(m.seq_len, m.vocab_size)
    keep = ((seqs == xt) | (xt == m.diffusion.mask_id)).all(1)
    seqs = seqs[keep]
    with torch.no_grad():
        logp = m.diffusion.log_probs(xt[None])[0].double()
    return seqs, logp[torch.arange(m.seq_len), seqs].sum(1).exp()


def _estimator_expectations(m, x0, xt, block, K):
    """Exact expectations, over every K-tuple of proposal samples, of one step's two log-ratio
    estimates (the SIR one: log mean_m A_m; the IS one: log mean w(y) - log mean w(z)), and the
    exact log q_K(x0[block] | x_t) - log mu(x0[block] | x_t) of the K-candidate sampler."""
    z, pz = _masked_configs(m, xt)
    y = z.clone()
    y[:, block] = x0[block]
    with torch.no_grad():
        lwz, lwy = -m.energy(z).double(), -m.energy(y).double()
    n = z.shape[0]
    tup = torch.tensor(list(itertools.product(range(n), repeat=K)))   # (n^K, K)
    weight = pz[tup].prod(1)
    a, b = lwz[tup], lwy[tup]
    tot = torch.logsumexp(a, 1, keepdim=True)
    log_a = b + math.log(K) - torch.logaddexp(tot + torch.log1p(-torch.exp(a - tot)), b)
    sir = torch.logsumexp(log_a, 1) - math.log(K)
    is_ = torch.logsumexp(b, 1) - torch.logsumexp(a, 1)
    exact_q = math.log(float((weight * log_a[:, 0].exp()).sum()))
    return float((weight * sir).sum()), float((weight * is_).sum()), exact_q


def test_sir_estimate_is_conservative_and_is_estimate_biased_as_enumerated():
    """L=3, V=3, K=3, a strong energy: the exact expectation of each estimator (enumerating every
    3-tuple of proposal samples at every step of every order) against the Monte Carlo mean of
    nll_bound over 12,000 copies. The SIR estimate's expectation lies above the exact bound of the
    K=3 sampler (a valid upper bound); the IS estimate's expectation lies below the exact bound
    of the reweighted joint (optimistic) by the enumerated bias. K=1 gives the proposal's bound."""
    m = _tiny(seq_len=3, vocab=3, seed=5, energy_std=1.5)
    L, K, steps = 3, 3, 3
    x0 = torch.tensor([1, 2, 0])
    sizes = reveal_schedule(L, steps)
    cache = {}

    def expect(xt, block):
        key = (tuple(xt.tolist()), tuple(block))
        if key not in cache:
            with torch.no_grad():
                lp = m.diffusion.log_probs(xt[None])[0].double()
            log_mu_block = float(lp[block, x0[block]].sum())
            cache[key] = (log_mu_block, *_estimator_expectations(m, x0, xt, block, K))
        return cache[key]

    e_sir = _exact_bound(m, x0, sizes, lambda xt, b: expect(xt, b)[0] + expect(xt, b)[1])
    e_is = _exact_bound(m, x0, sizes, lambda xt, b: expect(xt, b)[0] + expect(xt, b)[2])
    bound_q = _exact_bound(m, x0, sizes, lambda xt, b: expect(xt, b)[0] + expect(xt, b)[3])
    bound_p = _exact_bound(m, x0, sizes, _log_p_block(m, x0))

    orders = torch.tensor(list(itertools.permutations(range(L)))).repeat(2000, 1)
    copies = x0.repeat(orders.shape[0], 1)
    r = m.nll_bound(copies, steps=steps, num_samples=K, orders=orders,
                    generator=torch.Generator().manual_seed(11))
    n = copies.shape[0]
    for key, exact in (("nll", e_sir), ("nll_is", e_is)):
        se = float(r[key].std()) / n ** 0.5
        assert abs(float(r[key].mean()) - exact) < 4 * se + 1e-3, key
    assert abs(e_sir - e_is) > 0.3   # the two estimators differ by far more than the noise
    assert e_sir > bound_q           # conservative: an upper bound on the K=3 sampler's bound
    assert e_is < bound_p - 0.1      # optimistic here, by the enumerated bias
    r1 = m.nll_bound(copies[:60], steps=steps, num_samples=1, orders=orders[:60],
                     generator=torch.Generator().manual_seed(12))
    r0 = m.nll_bound(copies[:60], steps=steps, use_energy=False, orders=orders[:60])
    assert torch.allclose(r1["nll"], r0["nll"], atol=1e-9)   # one candidate: the proposal


def test_the_proposal_learns_a_repetitive_corpus():
    corpus = load_text_corpus("toy", text="the cat sat on the mat. " * 300)
    V = corpus.tokenizer.vocab_size
    m = QDiffusion(8, V, hidden=64, num_layers=1, generator=torch.Generator().manual_seed(0))
    test = corpus.blocks("test", 8)
    g = torch.Generator().manual_seed(0)
    before = perplexity(m.nll_bound(test, steps=4, use_energy=False, generator=g)["nll"], 8)
    hist = fit_diffusion(m, corpus, steps=150, batch_size=64, lr=3e-3, log_every=50)
    after = perplexity(m.nll_bound(test, steps=4, use_energy=False, generator=g)["nll"], 8)
    assert before > 0.8 * V and after < 2.0
    assert hist[-1]["loss"] < hist[0]["loss"]
    hist_e = fit_energy(m, corpus, steps=20, batch_size=32, log_every=10)
    assert len(hist_e) == 2 and all(math.isfinite(h["loss"]) for h in hist_e)
    text = corpus.tokenizer.decode(m.generate(1, steps=4, k=4)[0])
    assert len(text) == 8


# --- data and bad input -------------------------------------------------------------------------


def test_shipped_corpus_loads_offline_and_round_trips():
    c = load_text_corpus()
    assert c.tokenizer.vocab_size == 39
    assert abs(c.test.size / (c.train.size + c.test.size) - 0.1) < 1e-3
    assert c.tokenizer.decode(c.train[:20]) == "first citizen:\nbefor"
    w = c.windows("test", 16, 5, torch.Generator().manual_seed(0))
    assert w.shape == (5, 16) and int(w.max()) < 39


def test_bad_input_is_rejected_with_the_fix():
    m = _tiny()
    with pytest.raises(InvalidDataError, match=r"shape \(batch, 2\)"):
        m.nll_bound(torch.zeros(4, 3, dtype=torch.long))
    with pytest.raises(InvalidDataError, match="token ids must be in 0..2"):
        m.nll_bound(torch.tensor([[0, 3]]))
    with pytest.raises(InvalidDataError, match="steps must be in 1..seq_len=2"):
        m.generate(3, steps=3)
    with pytest.raises(InvalidDataError, match="not in the tokenizer's alphabet"):
        load_text_corpus().tokenizer.encode("Capital")
    with pytest.raises(InvalidDataError, match="unknown corpus"):
        load_text_corpus("war-and-peace")
    with pytest.raises(InvalidDataError, match="vocab_size=corpus.tokenizer.vocab_size"):
        fit_diffusion(m, load_text_corpus(), steps=1)


@pytest.mark.slow
def test_the_energy_lowers_the_held_out_perplexity_bound_on_tinyshakespeare():
    """The paper's claim at a small budget: the same proposal with the NCE-trained energy has a
    lower 4-step bound on held-out text than without it (same sequences, same orders), by more
    than the estimated log Z bias."""
    torch.set_num_threads(2)
    corpus = load_text_corpus()
    m = QDiffusion(16, corpus.tokenizer.vocab_size, hidden=256, num_layers=1,
                   generator=torch.Generator().manual_seed(0))
    fit_diffusion(m, corpus, steps=1500, seed=0)
    fit_energy(m, corpus, steps=500, seed=1)
    test = corpus.blocks("test", 16, 512)
    orders = torch.rand(test.shape, generator=torch.Generator().manual_seed(2)).argsort(1)
    with_e = m.nll_bound(test, num_samples=64, orders=orders,
                         generator=torch.Generator().manual_seed(3))
    without = m.nll_bound(test, use_energy=False, orders=orders,
                          generator=torch.Generator().manual_seed(3))
    gain = float((without["nll"] - with_e["nll"]).mean())
    assert gain > 10 * float(with_e["log_z_bias"].mean()) > 0
    assert perplexity(with_e["nll"], 16) < perplexity(without["nll"], 16)
