"""Samplers: device sampling against exact distributions, clamped sampling, the effective
temperature correction, CD/PCD, and the Kaiwu optimizer adapters."""

import numpy as np
import pytest
import torch
from kpp_sdk.models import (
    BoltzmannMachine,
    GaussianBernoulliRBM,
    RestrictedBoltzmannMachine,
    exact_model_distribution,
)
from kpp_sdk.models.samplers import (
    BoltzmannSampler,
    ContrastiveDivergence,
    ExactSampler,
    PersistentContrastiveDivergence,
    pseudo_likelihood_beta,
    supports_boltzmann_sampling,
)

import kpp_sdk
from kpp_sdk import Device, DeviceProperties, IsingProblem, RunResult
from kpp_sdk.errors import InvalidOptionError, ProblemTooLargeError, UnknownOptionError
from kpp_sdk.exact import all_states, boltzmann_distribution
from kpp_sdk.interop import as_device
from kpp_sdk.interop.kaiwu import DeviceOptimizer, KaiwuOptimizerDevice
from kpp_sdk.testing import DeviceConformance


def _g(seed):
    return torch.Generator().manual_seed(seed)


def _rbm(seed=0, std=0.8):
    m = RestrictedBoltzmannMachine(4, 3, init_std=std, generator=_g(seed), dtype=torch.float64)
    with torch.no_grad():
        m.linear_bias.normal_(0, 0.5, generator=_g(seed + 100))
    return m


def _moments(x: torch.Tensor, w: torch.Tensor | None = None):
    """First and second moments <x_i>, <x_i x_j> (weighted when w is given)."""
    x = x.double()
    w = torch.full((x.shape[0],), 1.0 / x.shape[0], dtype=torch.float64) if w is None else w
    return (w[:, None] * x).sum(0), torch.einsum("k,ki,kj->ij", w, x, x)


def _max_moment_error(samples, model):
    states, p = exact_model_distribution(model)
    m1, m2 = _moments(samples)
    e1, e2 = _moments(states, p)
    return max(float((m1 - e1).abs().max()), float((m2 - e2).abs().max()))


class HiddenTemperatureDevice(Device):
    """Exact Boltzmann samples of the problem it is sent at a hidden inverse temperature; with
    ``normalise`` the problem is first rescaled to max |coefficient| = 1, as int8 hardware
    rescales every problem (rescaling what is sent then changes nothing)."""

    name = "test.hidden-temperature"
    OPTIONS: dict = {}

    def __init__(self, beta_dev: float, normalise: bool = False, **kw):
        self.beta_dev, self.normalise = beta_dev, normalise
        super().__init__(**kw)

    @property
    def properties(self):
        return DeviceProperties(max_spins=14)

    def _run(self, problem, *, num_reads, seed, options, ctx):
        scale = 1.0 / problem.max_abs_coefficient() if self.normalise else 1.0
        p = boltzmann_distribution(problem, self.beta_dev * scale)
        idx = np.random.default_rng(seed).choice(p.size, size=num_reads, p=p)
        return RunResult(spins=all_states(problem.n)[idx])


# --- the temperature estimate -------------------------------------------------------------------


@pytest.mark.parametrize("beta", [0.3, 1.0, 2.5])
def test_pseudo_likelihood_beta_is_exact_on_the_exact_distribution(beta):
    """Weighting every state by its probability, the pseudo-likelihood maximum is beta itself."""
    problem = IsingProblem.random_sk(10, seed=3, fields=True)
    p = boltzmann_distribution(problem, beta)
    assert pseudo_likelihood_beta(problem, all_states(10), p * 1e6) == pytest.approx(beta, rel=1e-8)


@pytest.mark.parametrize("beta", [0.3, 1.0])
def test_pseudo_likelihood_beta_recovers_the_temperature_of_exact_boltzmann_samples(beta):
    problem = IsingProblem.random_sk(10, seed=3, fields=True)
    p = boltzmann_distribution(problem, beta)
    idx = np.random.default_rng(0).choice(p.size, size=4000, p=p)
    assert pseudo_likelihood_beta(problem, all_states(10)[idx]) == pytest.approx(beta, rel=0.05)


def test_pseudo_likelihood_beta_saturates_for_local_minima_and_is_zero_for_uphill_states():
    problem = IsingProblem(np.array([[0.0, 1.0], [1.0, 0.0]]), np.zeros(2))
    aligned = np.array([[1, 1], [-1, -1]], dtype=np.int8)
    assert pseudo_likelihood_beta(problem, aligned, beta_max=50.0) == 50.0
    assert pseudo_likelihood_beta(problem, -aligned * np.array([1, -1], dtype=np.int8)) == 0.0


# --- device sampling against exact distributions -------------------------------------------------


def test_boltzmann_sampler_on_sa_cpu_draws_the_model_distribution():
    model = _rbm()
    sampler = BoltzmannSampler("sa.cpu", num_reads=4000, num_sweeps=20, num_threads=1, seed=0)
    assert sampler.mode == "sample" and sampler.beta == 1.0
    samples = sampler.sample(model)
    assert samples.shape == (4000, 7) and samples.dtype == torch.float64
    assert _max_moment_error(samples, model) < 0.05


def test_persistent_device_chains_with_one_sweep_per_job_stay_at_the_model_distribution():
    model = _rbm(1)
    sampler = BoltzmannSampler("sa.cpu", num_reads=500, num_sweeps=1, num_threads=1, seed=1)
    draws = [sampler.negative(model) for _ in range(12)][2:]  # two jobs of burn-in
    neg = torch.cat(draws)
    states, p = exact_model_distribution(model)
    m1, _ = _moments(neg)
    e1, _ = _moments(states, p)
    # visible units are samples, hidden ones E[h|v]: both average to the exact marginals
    assert float((m1 - e1).abs().max()) < 0.04


def test_clamped_sampling_on_sa_cpu_draws_p_h_given_v():
    model = BoltzmannMachine(3, 3, init_std=1.2, generator=_g(5), dtype=torch.float64)
    sampler = BoltzmannSampler("sa.cpu", num_reads=10, num_sweeps=30, num_threads=1, seed=2)
    rows = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]], dtype=torch.float64)
    v = rows.repeat_interleave(1500, 0)
    pos = sampler.positive(model, v)
    assert pos.shape == (3000, 6) and torch.equal(pos[:, :3], v)
    hid = torch.tensor(all_states(3) > 0, dtype=torch.float64)
    for r in range(2):
        states = torch.cat([rows[r].expand(8, 3), hid], dim=1)
        p = torch.softmax(-model.energy(states).detach(), 0)
        expected = (p[:, None] * hid).sum(0)
        got = pos[r * 1500:(r + 1) * 1500, 3:].mean(0)
        assert float((got - expected).abs().max()) < 0.05


def test_clamped_rows_are_packed_up_to_the_device_size_limit():
    calls = []

    class Counting:
        def __init__(self):
            self.inner = DeviceOptimizer(kpp_sdk.get_device("sa.cpu", num_sweeps=5, num_threads=1),
                                         num_reads=1)

        def solve(self, M):
            calls.append(M.shape[0] - 1)
            return self.inner.solve(M)

    model = BoltzmannMachine(2, 3, init_std=0.5, generator=_g(0), dtype=torch.float64)
    sampler = BoltzmannSampler(KaiwuOptimizerDevice(Counting(), max_spins=7), num_reads=1,
                               mode="anneal", beta=1.0)
    pos = sampler.positive(model, torch.ones(5, 2, dtype=torch.float64))
    assert pos.shape == (5, 5)
    assert calls == [6, 6, 3]  # two rows of 3 hidden spins per job, then the last row


def test_exact_sampler_matches_the_exact_distribution():
    model = _rbm(2)
    samples = ExactSampler(5000, seed=0).sample(model)
    assert _max_moment_error(samples, model) < 0.04


# --- effective temperature correction ------------------------------------------------------------


def test_estimated_beta_converges_to_a_hot_devices_temperature_and_fixes_its_samples():
    model = _rbm(3, std=1.0)
    dev = HiddenTemperatureDevice(beta_dev=0.4)
    assert not supports_boltzmann_sampling(dev)
    naive = BoltzmannSampler(dev, num_reads=3000, mode="anneal", beta=1.0, seed=0)
    corrected = BoltzmannSampler(dev, num_reads=3000, seed=0)
    assert corrected.mode == "anneal" and corrected.estimate
    for _ in range(6):
        corrected.sample(model)
    assert corrected.beta == pytest.approx(0.4, rel=0.1)
    assert _max_moment_error(naive.sample(model), model) > 0.08
    assert _max_moment_error(corrected.sample(model), model) < 0.05


def test_reweighting_corrects_a_device_that_normalises_every_problem():
    model = _rbm(4, std=1.0)
    dev = HiddenTemperatureDevice(beta_dev=3.0, normalise=True)
    plain = BoltzmannSampler(dev, num_reads=4000, reweight=False, seed=1)
    reweighted = BoltzmannSampler(dev, num_reads=4000, seed=1)
    err_plain = _max_moment_error(plain.sample(model), model)
    err_rw = _max_moment_error(reweighted.sample(model), model)
    assert reweighted.last["beta_hat"] > 1.2  # the device is colder than the model
    assert 0 < reweighted.last["ess"] < 4000
    assert err_plain > 0.2 and err_rw < err_plain / 2


# --- CD / PCD / API ------------------------------------------------------------------------------


def test_cd_starts_at_the_data_and_pcd_keeps_its_chains():
    model = _rbm(5)
    v = torch.ones(8, 4, dtype=torch.float64)
    with pytest.raises(InvalidOptionError, match="data"):
        ContrastiveDivergence(1).negative(model)
    assert ContrastiveDivergence(2, seed=0).negative(model, v).shape == (8, 7)
    pcd = PersistentContrastiveDivergence(1, num_chains=16, seed=0)
    pcd.negative(model, v)
    first = pcd._state[model].clone()
    pcd.negative(model, v)
    assert pcd._state[model].shape == (16, 7) and not torch.equal(first, pcd._state[model])
    pcd.reset(model)
    assert model not in pcd._state


def test_pcd_chains_reach_the_model_distribution():
    model = _rbm(6)
    pcd = PersistentContrastiveDivergence(1, num_chains=2000, seed=0)
    for _ in range(30):
        pcd.negative(model)
    assert _max_moment_error(pcd.sample(model, 3000), model) < 0.05


@pytest.mark.parametrize("make", [
    lambda: ContrastiveDivergence(1, seed=0),
    lambda: PersistentContrastiveDivergence(1, seed=0),
    lambda: ExactSampler(50, seed=0),
    lambda: BoltzmannSampler("sa.cpu", num_reads=50, num_sweeps=2, num_threads=1, seed=0),
], ids=["cd", "pcd", "exact", "device"])
def test_every_sampler_gives_both_phases_for_every_model_kind(make):
    for model in (_rbm(7), BoltzmannMachine(3, 2, generator=_g(1), dtype=torch.float64),
                  GaussianBernoulliRBM(3, 2, generator=_g(2), dtype=torch.float64)):
        s = make()
        v = torch.tensor([[1.0, 0.0, 1.0, 1.0][: model.num_visible]] * 6, dtype=torch.float64)
        pos, neg = s.positive(model, v), s.negative(model, v)
        assert pos.shape[1] == neg.shape[1] == model.num_nodes
        assert torch.equal(pos[:, : model.num_visible], v[: pos.shape[0]])
        loss = model.objective(pos, neg)
        loss.backward()
        assert all(p.grad is not None for p in model.parameters())


def test_sampler_options_are_checked_at_construction():
    with pytest.raises(UnknownOptionError, match="num_sweeps"):
        BoltzmannSampler("sa.cpu", bogus_option=1)
    with pytest.raises(InvalidOptionError, match="estimate"):
        BoltzmannSampler("sa.cpu", beta="estimate", mode="sample")
    with pytest.raises(InvalidOptionError, match="Boltzmann sampling mode"):
        BoltzmannSampler(HiddenTemperatureDevice(1.0), mode="sample")
    with pytest.raises(InvalidOptionError, match="sets the device options"):
        BoltzmannSampler("sa.cpu", mode="sample", options={"beta": 2.0})
    anneal = BoltzmannSampler("sa.cpu", mode="anneal", beta=2.0, options={"mode": "anneal"})
    assert anneal.device_options == {"mode": "anneal"} and not anneal.estimate
    with pytest.raises(InvalidOptionError, match="Device"):
        as_device(42)


def test_a_model_larger_than_the_device_is_rejected_before_any_job():
    dev = HiddenTemperatureDevice(1.0)
    model = RestrictedBoltzmannMachine(10, 5)
    sampler = BoltzmannSampler(dev, num_reads=2)
    with pytest.raises(ProblemTooLargeError, match=r"needs 15 spins .* at most 14"):
        sampler.negative(model)


# --- Kaiwu optimizers -----------------------------------------------------------------------------


class _FixedSolver:
    """Returns fixed rows (ancilla last), like a Kaiwu optimizer's solve()."""

    def __init__(self, rows):
        self.rows = np.asarray(rows)
        self.seen = []

    def solve(self, ising_matrix):
        self.seen.append(np.asarray(ising_matrix))
        return self.rows


def test_model_sample_with_a_kaiwu_optimizer_fixes_the_ancilla_gauge():
    model = RestrictedBoltzmannMachine(2, 1, dtype=torch.float64)
    solver = _FixedSolver([[1, -1, 1, 1], [1, -1, 1, -1]])
    states = model.sample(solver)
    # the second row's ancilla is -1: flipping the whole row is the same Kaiwu energy
    assert torch.equal(states, torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]],
                                            dtype=torch.float64))
    np.testing.assert_allclose(solver.seen[0], model.get_ising_matrix())


def test_kaiwu_optimizer_device_rejects_malformed_solver_output():
    dev = KaiwuOptimizerDevice(_FixedSolver([[1, 0, 1]]))
    with pytest.raises(kpp_sdk.JobFailedError):
        dev.sample(IsingProblem(np.zeros((2, 2))), num_reads=1)


def test_device_optimizer_round_trips_through_the_kaiwu_format():
    problem = IsingProblem.random_sk(8, seed=1, fields=True)
    opt = DeviceOptimizer("sa.cpu", num_reads=20, seed=0, num_sweeps=200, num_threads=1)
    out = opt.solve(problem.to_kaiwu())
    assert out.shape == (20, 9) and np.all(out[:, -1] == 1)
    ground = min(problem.energy(all_states(8)))
    assert problem.energy(out[:, :8]).min() == pytest.approx(ground)


class TestKaiwuOptimizerDeviceConformance(DeviceConformance):
    """The adapter is a Device like any other (sa.cpu behind a Kaiwu-style solve())."""

    def make_device(self):
        inner = kpp_sdk.get_device("sa.cpu", num_sweeps=20, num_threads=1)
        return KaiwuOptimizerDevice(DeviceOptimizer(inner, num_reads=3), max_spins=64)


def test_thermostat_turns_the_emulator_knob_until_samples_are_at_beta_one():
    """cim.emulator normalises its couplings, so rescaling cannot set its temperature; the sampler
    turns its temperature knob instead, and the estimated beta of the samples moves towards 1."""
    import numpy as np
    from kpp_sdk.models import RestrictedBoltzmannMachine
    from kpp_sdk.models.samplers import BoltzmannSampler

    rbm = RestrictedBoltzmannMachine(9, 6, init_std=0.5, generator=torch.Generator().manual_seed(0))
    s = BoltzmannSampler("cim.emulator", num_reads=100, seed=0, round_trips=200)
    assert s.thermostat and s.knob == 0.0
    betas = []
    for _ in range(12):
        s.negative(rbm)
        betas.append(s.last["beta_hat"])
    assert betas[0] > 1.5  # the cold machine first: samples far colder than the model
    assert s.knob > 0.05 and s.beta == 1.0  # the knob moved; the problem is not rescaled
    assert abs(np.log(np.median(betas[-4:]))) < abs(np.log(betas[0])) / 2
    fixed = BoltzmannSampler("cim.emulator", num_reads=20, seed=0, round_trips=100, temperature=0.3)
    assert not fixed.thermostat
    fixed.negative(rbm)
    assert "temperature" not in fixed.last


# --- sampler variants against exact enumeration (issue 16) ---------------------------------------


def _kl_to_exact(samples: torch.Tensor, model) -> float:
    """KL(q || p) from the empirical distribution q of full states to the model's exact p."""
    states, p = exact_model_distribution(model)
    n = model.num_nodes
    weights = 2 ** torch.arange(n, dtype=torch.int64)
    idx_all = (states.round().long() * weights).sum(1).numpy()
    p_by_index = np.zeros(2**n)
    p_by_index[idx_all] = p.numpy()
    idx = (samples.round().long() * weights).sum(1).numpy()
    q = np.bincount(idx, minlength=2**n) / idx.size
    keep = q > 0
    return float(np.sum(q[keep] * np.log(q[keep] / p_by_index[keep])))


def test_kl_helper_is_small_for_exact_samples_and_large_for_a_point_mass():
    model = _rbm(5, std=1.0)
    assert _kl_to_exact(ExactSampler(4000, seed=0).sample(model), model) < 0.03
    states, p = exact_model_distribution(model)
    worst = states[int(torch.argmin(p))].repeat(10, 1)
    assert _kl_to_exact(worst, model) > 3


def test_hybrid_gibbs_chains_from_a_cold_devices_states_reach_the_model_distribution():
    """The hybrid: a device four times colder than the model (and normalising every problem, so
    nothing sent can fix it) gives states that start short Gibbs chains; their ends follow the
    model. Without the Gibbs steps the same device is far off."""
    model = _rbm(6, std=1.0)
    dev = HiddenTemperatureDevice(beta_dev=4.0, normalise=True)
    plain = BoltzmannSampler(dev, num_reads=4000, mode="anneal", beta=1.0, seed=2)
    hybrid = BoltzmannSampler(dev, num_reads=4000, mode="anneal", beta=1.0, gibbs_steps=10,
                              seed=2)
    kl_plain = _kl_to_exact(plain.sample(model), model)
    kl_hybrid = _kl_to_exact(hybrid.sample(model), model)
    assert hybrid.last["sampler"] == "hybrid" and "hybrid" in repr(hybrid)
    assert plain.last["sampler"] == "device"
    assert kl_plain > 0.5
    assert kl_hybrid < 0.05


def test_hybrid_on_the_emulator_draws_the_model_distribution():
    model = _rbm(7, std=1.0)
    s = BoltzmannSampler("cim.emulator", num_reads=500, gibbs_steps=5, seed=0, round_trips=100)
    pooled = torch.cat([s.sample(model) for _ in range(8)])
    assert _kl_to_exact(pooled, model) < 0.08


def _topk_samples(reweight: bool, model, calls: int = 10):
    s = BoltzmannSampler("cim.emulator", num_reads=128, beta=1.0, topk_runs=1000,
                         reweight=reweight, seed=3, round_trips=100, temperature=0.5)
    out = torch.cat([s.sample(model) for _ in range(calls)])
    assert s.last["distinct_states"] <= 128 and s.last["device_s"] > 0
    return out


def test_topk_with_energy_weights_draws_the_model_restricted_to_the_states_found():
    """The cloud's de-duplicated Top-K: weighted by its counts (the machine's own distribution)
    the samples miss the model; weighted by exp(-E) of each distinct state they follow it."""
    model = _rbm(8, std=1.0)
    kl_counts = _kl_to_exact(_topk_samples(False, model), model)
    kl_energy = _kl_to_exact(_topk_samples(True, model), model)
    assert kl_energy < 0.25  # the states found at this knob hold most, not all, of the mass
    assert kl_counts > 3 * kl_energy


def test_thermostat_samples_are_closer_to_the_model_than_the_cold_emulators():
    model = RestrictedBoltzmannMachine(5, 3, init_std=1.0, generator=_g(9), dtype=torch.float64)
    cold = BoltzmannSampler("cim.emulator", num_reads=500, beta=1.0, seed=0, round_trips=200)
    warm = BoltzmannSampler("cim.emulator", num_reads=500, reweight=False, seed=0,
                            round_trips=200)
    for _ in range(15):
        warm.sample(model)
    kl_cold = _kl_to_exact(cold.sample(model), model)
    kl_warm = _kl_to_exact(torch.cat([warm.sample(model) for _ in range(4)]), model)
    assert warm.knob > 0.05
    assert kl_warm < kl_cold / 3


def test_topk_and_hybrid_options_are_checked_at_construction():
    with pytest.raises(InvalidOptionError, match="output='topk'"):
        BoltzmannSampler("sa.cpu", num_reads=10, topk_runs=100)
    with pytest.raises(InvalidOptionError, match="topk_runs >= num_reads"):
        BoltzmannSampler("cim.emulator", num_reads=100, topk_runs=50)
    with pytest.raises(InvalidOptionError, match="'output' and 'runs'"):
        BoltzmannSampler("cim.emulator", num_reads=10, topk_runs=100, output="topk")
    with pytest.raises(InvalidOptionError, match="gibbs_steps"):
        BoltzmannSampler("sa.cpu", num_reads=10, gibbs_steps=-1)


def test_topk_leaves_the_clamped_jobs_of_a_bm_with_hidden_units_as_samples():
    bm = BoltzmannMachine(4, 2, generator=_g(0))
    s = BoltzmannSampler("cim.emulator", num_reads=10, beta=1.0, topk_runs=100, seed=0,
                         round_trips=50)
    assert "output" not in s.clamped_options
    pos = s.positive(bm, torch.ones(3, 4))
    assert pos.shape == (3, 6) and s.negative(bm).shape == (10, 6)


# --- the hybrid with persistent chains (refresh < 1) ---------------------------------------------


def _visible_kl(visible: torch.Tensor, model) -> float:
    """KL(q || p) from the empirical distribution of visible rows to the model's exact p(v)."""
    states, p = exact_model_distribution(model)
    V = model.num_visible
    weights = 2 ** torch.arange(V, dtype=torch.int64)
    pv = np.bincount((states[:, :V].round().long() * weights).sum(1).numpy(), weights=p.numpy(),
                     minlength=2**V)
    q = np.bincount((visible.round().long() * weights).sum(1).numpy(), minlength=2**V)
    q = q / q.sum()
    keep = q > 0
    return float(np.sum(q[keep] * np.log(q[keep] / pv[keep])))


def test_persistent_hybrid_chains_carry_their_sweeps_from_call_to_call():
    """A device eight times colder than the model: one Gibbs sweep from its fresh states is far
    from the model; with refresh=0.1 the chains persist (a tenth replaced per call) and their
    visible states follow the model, at a tenth of the device's reads."""
    model = RestrictedBoltzmannMachine(4, 3, init_std=2.0, generator=_g(1), dtype=torch.float64)
    dev = HiddenTemperatureDevice(beta_dev=8.0, normalise=True)
    out = {}
    for refresh in (1.0, 0.1):
        s = BoltzmannSampler(dev, num_reads=2000, mode="anneal", beta=1.0, gibbs_steps=1,
                             refresh=refresh, seed=5)
        for _ in range(20):
            s.negative(model)
        pooled = torch.cat([s.negative(model)[:, :4] for _ in range(10)])
        out[refresh] = (_visible_kl(pooled, model), s.last["num_samples"], s.last["sampler"])
    assert out[0.1][1:] == (2000, "hybrid")
    assert "refresh=0.1" in repr(s) and s.last["refreshed"] == 200
    assert out[1.0][0] > 0.05
    assert out[0.1][0] < out[1.0][0] / 10


def test_persistent_hybrid_chains_are_saved_and_restored():
    model = _rbm(11, std=1.0)
    kw = {"num_reads": 50, "mode": "anneal", "beta": 1.0, "gibbs_steps": 2, "refresh": 0.2,
          "seed": 7}
    a = BoltzmannSampler(HiddenTemperatureDevice(beta_dev=2.0), **kw)
    for _ in range(3):
        a.negative(model)
    state = a.state_dict(model)
    assert state["gibbs_chains"].shape == (50, 7)
    b = BoltzmannSampler(HiddenTemperatureDevice(beta_dev=2.0), **kw)
    b.load_state_dict(state, model)
    assert torch.equal(a.negative(model), b.negative(model))
    b.reset(model)
    assert "gibbs_chains" not in b.state_dict(model)


def test_refresh_is_checked_at_construction():
    with pytest.raises(InvalidOptionError, match="gibbs_steps >= 1"):
        BoltzmannSampler("cim.emulator", num_reads=10, refresh=0.5)
    with pytest.raises(InvalidOptionError, match="refresh must be in"):
        BoltzmannSampler("cim.emulator", num_reads=10, gibbs_steps=2, refresh=1.5)
