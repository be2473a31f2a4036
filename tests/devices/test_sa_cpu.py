"""sa.cpu through the Device contract: conformance, exact Boltzmann statistics, ground states."""

import numpy as np
import pytest

import kpp_sdk
from kpp_sdk import InvalidOptionError, IsingProblem
from kpp_sdk.exact import (
    boltzmann_distribution,
    empirical_distribution,
    ground_state,
    total_variation,
)
from kpp_sdk.instances import ground_energy, load_instance
from kpp_sdk.testing import DeviceConformance


class TestSACPUConformance(DeviceConformance):
    fast_options = {"num_sweeps": 50}

    def make_device(self):
        return kpp_sdk.get_device("sa.cpu")


@pytest.fixture(scope="module")
def sa():
    return kpp_sdk.get_device("sa.cpu")


# With 20,000 samples the total-variation distance of even a perfect sampler is not zero: at
# n = 10, beta = 0.5 it is ~0.036 (measured by drawing from the exact distribution), so TV < 0.05
# leaves little room for a biased sampler. (At beta = 0.3 that floor is already 0.062.)
@pytest.mark.parametrize("acceptance", ["metropolis", "gibbs"])
@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("n", [8, 10])
def test_sample_mode_matches_exact_boltzmann_distribution(sa, acceptance, sparse, n):
    p = IsingProblem.random_sk(n, seed=11, fields=True)
    p = p.to_sparse() if sparse else p
    beta = 0.5
    ss = sa.sample(p, num_reads=20_000, seed=5, mode="sample", beta=beta, num_sweeps=100,
                   acceptance=acceptance)
    tv = total_variation(empirical_distribution(p.n, ss.spins), boltzmann_distribution(p, beta))
    assert tv < 0.05, f"TV = {tv:.3f}"


def test_a_wrong_temperature_is_detected(sa):
    """The TV check has teeth: samples at beta = 0.5 are far from the beta = 0.75 distribution."""
    p = IsingProblem.random_sk(10, seed=11, fields=True)
    ss = sa.sample(p, num_reads=20_000, seed=5, mode="sample", beta=0.5, num_sweeps=100)
    assert total_variation(empirical_distribution(p.n, ss.spins), boltzmann_distribution(p, 0.75)) > 0.15


@pytest.mark.parametrize("seed", range(4))
def test_anneal_finds_exact_ground_state_for_n_le_12(sa, seed):
    p = IsingProblem.random_sk(12, seed=100 + seed, fields=seed % 2 == 0)
    emin, _ = ground_state(p)
    ss = sa.sample(p, num_reads=20, seed=seed)
    assert ss.best_energy == pytest.approx(emin)


@pytest.mark.parametrize("family,n,index", [("SK1", 20, 0), ("SK1", 50, 1), ("SK1", 100, 0),
                                            ("MC50", 20, 1), ("MC50", 60, 2), ("MC50", 100, 1)])
def test_shipped_instances_reach_their_known_ground_energy(sa, family, n, index):
    p = load_instance(family, n, index)
    ss = sa.sample(p, num_reads=64, seed=0, num_sweeps=2000)
    assert ss.best_energy == pytest.approx(ground_energy(family, n, index))


def test_results_do_not_depend_on_thread_count(sa):
    p = IsingProblem.random_sk(30, seed=1)
    a = sa.sample(p, num_reads=37, seed=3, num_sweeps=100, num_threads=1)
    b = sa.sample(p, num_reads=37, seed=3, num_sweeps=100, num_threads=2)
    np.testing.assert_array_equal(a.spins, b.spins)


def test_a_running_job_is_cancelled_within_a_second(sa):
    import time

    from kpp_sdk import JobCancelledError, JobStatus

    # ~1e10 spin updates: minutes of work in one chunk per thread (the old check between chunks
    # of reads let a job like this run to the end)
    job = sa.submit(IsingProblem.random_sk(300, seed=3), num_reads=4, seed=0,
                    num_sweeps=2_000_000)
    deadline = time.monotonic() + 30
    while job.status() is not JobStatus.RUNNING and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)  # inside the kernels
    assert job.status() is JobStatus.RUNNING
    t0 = time.perf_counter()
    assert job.cancel()
    with pytest.raises(JobCancelledError):
        job.result(timeout=10)
    assert time.perf_counter() - t0 < 1.0
    assert job.status() is JobStatus.CANCELLED


def test_initial_states_and_custom_schedule(sa):
    p = IsingProblem.random_sk(8, seed=2)
    start = np.ones(8, dtype=np.int8)
    # at a huge beta no uphill move is accepted, so a read started in the ground state stays there
    emin, states = ground_state(p)
    ss = sa.sample(p, num_reads=5, seed=0, beta_schedule=np.full(10, 1e6), initial_states=states[0])
    np.testing.assert_array_equal(ss.spins, np.broadcast_to(states[0], (5, 8)))
    with pytest.raises(InvalidOptionError, match="initial_states"):
        sa.submit(p, num_reads=2, initial_states=np.zeros((2, 8)))
    assert sa.sample(p, num_reads=3, seed=0, initial_states=start, num_sweeps=1,
                     beta_schedule="linear").num_reads == 3


@pytest.mark.parametrize(
    "options,msg",
    [({"acceptance": "glauber"}, "acceptance"), ({"mode": "sample"}, "needs beta"),
     ({"mode": "sample", "beta": -1.0}, "beta must be a finite number > 0"), ({"beta_range": (1.0,)}, "pair"),
     ({"beta_schedule": "cosine"}, "beta_schedule"), ({"num_sweeps": 0}, "num_sweeps"),
     ({"beta_schedule": [0.1, float("nan")]}, r"beta_schedule\[1\]"), ({"num_threads": 0}, "num_threads"),
     ({"beta": 1.0}, "mode='sample'")],
)
def test_bad_option_values_are_rejected_at_submit(sa, options, msg):
    with pytest.raises(InvalidOptionError, match=msg):
        sa.submit(IsingProblem.random_sk(4, seed=0), **options)


def test_default_beta_range_rule():
    from kpp_sdk.devices.annealing import (
        COLD_EXCITATIONS,
        COLD_EXCITATIONS_PER_SPIN,
        default_beta_range,
    )

    # +-1 couplings and one field: the discrete bound sets the cold end
    J = np.array([[0, 1.0, -1.0, 0], [1.0, 0, 1.0, 0], [-1.0, 1.0, 0, 0], [0, 0, 0, 0]])
    h = np.array([0.0, 0.0, 0.0, 0.5])
    hot, cold = default_beta_range(IsingProblem(J, h))
    # stiffest spin: sqrt(1 + 1) (spins 0-2; spin 3 has sqrt(0.25)); typical uphill move 2 sqrt(2)
    assert np.exp(-hot * 2 * np.sqrt(2)) == pytest.approx(0.5)
    # smallest excitations: 2 for spins 0-2, 2 * 0.5 for spin 3; at most 0.01 per spin (4 spins:
    # 0.04 per sweep, fewer than the 0.1 of larger problems)
    target = min(COLD_EXCITATIONS, 4 * COLD_EXCITATIONS_PER_SPIN)
    assert target == pytest.approx(0.04)
    assert 3 * np.exp(-cold * 2.0) + np.exp(-cold * 1.0) == pytest.approx(target)
    # one spin with a field: the read ends excited in at most ~1 % of sweeps
    hot, cold = default_beta_range(IsingProblem(np.zeros((1, 1)), [1.0]))
    assert np.exp(-cold * 2.0) == pytest.approx(COLD_EXCITATIONS_PER_SPIN)
    # Gaussian couplings: the pseudo-gap bound, not the smallest |J_ij| (~1e-4 here)
    p = IsingProblem.random_sk(200, seed=31)
    hot, cold = default_beta_range(p)
    row = p.J.sum(axis=1)
    sigma2 = (p.J ** 2).sum(axis=1) - row ** 2 / 199
    assert cold == pytest.approx(np.sqrt(200 / COLD_EXCITATIONS) / (2 * np.sqrt(sigma2.mean())))
    assert np.exp(-hot * 2 * np.sqrt((p.J ** 2).sum(axis=1).max())) == pytest.approx(0.5)
    assert cold < 0.01 * np.log(100) / (2 * np.abs(p.J[p.J != 0]).min())
    # a uniform coupling and field on top (a cardinality penalty) leaves the cold end alone: it
    # constrains the spins, and the rest of the energy must still be resolved at the end
    penalty = IsingProblem(p.J - 5.0 * (1 - np.eye(200)), np.full(200, 40.0))
    assert default_beta_range(penalty)[1] == pytest.approx(cold, rel=1e-9)
    assert default_beta_range(penalty)[0] < hot / 5  # the start sees the penalty's fields
    # no interactions: the documented fallback
    assert default_beta_range(IsingProblem(np.zeros((3, 3)))) == (0.1, 1.0)


def test_default_schedule_of_a_selection_qubo_ends_with_the_cardinality_satisfied(sa):
    # the QUBOs of kpp_sdk.selection (k of n with a penalty on sum(x) - k) at their 20 sweeps:
    # the anneal must end frozen with respect to the penalty (a cold end set by the penalty's
    # field scale left ~1.4 items to repair per read)
    from kpp_sdk.selection import QUBOSelector

    rng = np.random.default_rng(8)
    at_k = []
    for pool in range(5):
        qubo = QUBOSelector().build(rng.standard_normal((128, 16)), 32,
                                    uncertainty=rng.random(128))
        x = (sa.sample(qubo.to_ising(), num_reads=8, seed=pool, num_sweeps=20).spins + 1) // 2
        at_k += list(x.sum(axis=1) == 32)
    assert np.mean(at_k) >= 0.9


def _gaussian_graph(n: int, degree: float, seed: int) -> IsingProblem:
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    A = np.triu((rng.random((n, n)) < degree / n) * rng.standard_normal((n, n)), 1)
    return IsingProblem(sp.csr_matrix(A + A.T))


def _worst_case_beta_range(p: IsingProblem) -> tuple[float, float]:
    """The previous default (the control): the largest possible increase accepted with p = 1/2
    at the start, the smallest |coefficient| with p = 1/100 at the end."""
    a = np.abs(p.dense_J())
    return (np.log(2) / (2 * (a.sum(axis=1) + np.abs(p.h)).max()),
            np.log(100) / (2 * a[a > 0].min()))


# fresh instances: none of these families or seeds was used to choose the rule
_FRESH = {"SK n=150": lambda: IsingProblem.random_sk(150, seed=2024),
          "SK n=300, fields": lambda: IsingProblem.random_sk(300, seed=77, fields=True),
          "sparse Gaussian graph n=500": lambda: _gaussian_graph(500, 4.0, 5)}


@pytest.mark.parametrize("family", list(_FRESH))
def test_default_schedule_still_moves_in_its_last_40_percent(family):
    from kpp_sdk.devices._sa_kernels import anneal
    from kpp_sdk.devices.annealing import default_beta_range, seed_streams

    p = _FRESH[family]()
    reads, sweeps = 16, 200
    sd = seed_streams(0, reads)

    def changed(b0, b1):
        betas = np.geomspace(b0, b1, sweeps)
        # a read's first k sweeps are those of the full run: same seed, same stream
        mid = anneal(p.J, p.h, betas[:int(0.6 * sweeps)], num_reads=reads, seed_streams=sd)
        end = anneal(p.J, p.h, betas, num_reads=reads, seed_streams=sd)
        return np.mean(np.any(mid != end, axis=1))

    assert changed(*default_beta_range(p)) >= 0.9
    assert changed(*_worst_case_beta_range(p)) <= 0.7  # the control: frozen (or nearly)


@pytest.mark.parametrize("family", list(_FRESH))
def test_default_schedule_reaches_lower_energy_than_the_worst_case_rule(sa, family):
    from kpp_sdk.devices.annealing import default_beta_range

    p = _FRESH[family]()
    runs = {}
    for rule, rng in (("default", None), ("worst case", _worst_case_beta_range(p))):
        assert rng is None or rng != pytest.approx(default_beta_range(p))
        e = sa.sample(p, num_reads=32, seed=1, num_sweeps=100, beta_range=rng).energies
        runs[rule] = (e.mean(), e.std() / np.sqrt(e.size))
    (new, se_new), (old, se_old) = runs["default"], runs["worst case"]
    assert new < old - 2 * np.hypot(se_new, se_old), runs


def test_dimod_sampler_and_sampleset_round_trip():
    dimod = pytest.importorskip("dimod")
    from kpp_sdk.interop.dimod import as_dimod_sampler, from_dimod_sampleset, to_dimod_sampleset

    bqm = dimod.BinaryQuadraticModel({"a": 1.0, "b": -0.5}, {("a", "b"): -1.0, ("b", "c"): 2.0}, 0.3,
                                     dimod.BINARY)
    sampler = as_dimod_sampler(kpp_sdk.get_device("sa.cpu"))
    res = sampler.sample(bqm, num_reads=10, seed=1, num_sweeps=100)
    assert res.vartype is dimod.BINARY
    np.testing.assert_allclose(res.record.energy, bqm.energies(res))
    assert res.first.energy == pytest.approx(min(bqm.energies(s) for s in dimod.ExactSolver().sample(bqm).samples()))
    p = IsingProblem.random_sk(5, seed=0, fields=True)
    ours = kpp_sdk.get_device("sa.cpu").sample(p, num_reads=4, seed=0, num_sweeps=20)
    theirs = to_dimod_sampleset(ours)
    np.testing.assert_allclose(theirs.record.energy, ours.energies)
    back = from_dimod_sampleset(theirs, p)
    np.testing.assert_array_equal(back.spins, ours.spins)
