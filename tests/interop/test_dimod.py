"""dimod both ways: any Device is a dimod.Sampler that passes dimod's own tests, any dimod.Sampler
is a Device (models and selection included), and sample_ising/sample_qubo mean what they mean in
dimod."""

import itertools
import unittest

import numpy as np
import pytest

dimod = pytest.importorskip("dimod")

import kpp_sdk
from kpp_sdk.interop import as_device
from kpp_sdk.interop.dimod import DimodDevice, DimodSampler


def SaCpu():
    return DimodSampler("sa.cpu", num_sweeps=50, num_threads=1)


def CimEmulator():
    return DimodSampler("cim.emulator", round_trips=120, num_reads=10)


@dimod.testing.load_sampler_bqm_tests(SaCpu)
class TestDimodGeneratedSaCpu(unittest.TestCase):
    """dimod's 32 generated tests (empty, one variable, paths; SPIN and BINARY; three BQM classes)."""


@dimod.testing.load_sampler_bqm_tests(CimEmulator)
class TestDimodGeneratedCimEmulator(unittest.TestCase):
    pass


@pytest.mark.parametrize("factory", [SaCpu, CimEmulator])
def test_dimod_sampler_api(factory):
    sampler = factory()
    dimod.testing.assert_sampler_api(sampler)
    assert "num_reads" in sampler.parameters and "seed" in sampler.parameters


def test_dimod_sampler_takes_a_device_or_a_name_and_refuses_anything_else():
    dev = kpp_sdk.get_device("sa.cpu")
    assert DimodSampler(dev).device is dev
    assert DimodSampler("sa.cpu").device.name == "sa.cpu"
    with pytest.raises(kpp_sdk.KppError, match="Device or a device name"):
        DimodSampler(42)
    with pytest.raises(kpp_sdk.UnknownOptionError):
        DimodSampler(dev, num_sweepz=3)


def _random_ising(rng, n, labels=None):
    labels = list(range(n)) if labels is None else labels
    h = {labels[i]: float(rng.normal()) for i in range(n)}
    J = {(labels[i], labels[j]): float(rng.normal()) for i, j in itertools.combinations(range(n), 2)
         if rng.random() < 0.6}
    return h, J


def test_device_sample_ising_uses_dimods_sign():
    dev = kpp_sdk.get_device("sa.cpu", num_sweeps=100, num_threads=1)
    ss = dev.sample_ising({0: 1.0}, {}, num_reads=8, seed=0)
    assert (ss.spins == -1).all() and np.allclose(ss.energies, -1.0)
    ss = dev.sample_ising([0.0, 0.0], {(0, 1): 1.0}, num_reads=8, seed=0)
    assert (ss.spins[:, 0] == -ss.spins[:, 1]).all()  # antiferromagnetic in dimod's sign


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_device_sample_ising_energies_and_ground_states_match_dimod(seed):
    rng = np.random.default_rng(seed)
    n = 7
    h, J = _random_ising(rng, n)
    dev = kpp_sdk.get_device("sa.cpu", num_sweeps=300, num_threads=1)
    ss = dev.sample_ising(h, J, offset=0.25, num_reads=30, seed=seed)
    for s, e in zip(ss.spins, ss.energies):
        assert e == pytest.approx(dimod.ising_energy(dict(enumerate(s)), h, J, 0.25))
    exact = dimod.ExactSolver().sample_ising(h, J).first.energy + 0.25
    assert ss.energies.min() == pytest.approx(exact)
    # the same problem as a matrix (dimod's dense rule: every off-diagonal entry counts; the
    # diagonal is a constant)
    Jm = np.zeros((n, n))
    for (i, j), v in J.items():
        Jm[j, i] = v
    Jm[np.diag_indices(n)] = 0.5
    ssm = dev.sample_ising([h[i] for i in range(n)], Jm, num_reads=4, seed=seed)
    for s, e in zip(ssm.spins, ssm.energies):
        assert e == pytest.approx(dimod.ising_energy(dict(enumerate(s)), h, J) + 0.5 * n)


def test_device_sample_qubo_takes_dimods_dict_and_matrices():
    rng = np.random.default_rng(5)
    Q = {(i, j): float(rng.normal()) for i in range(5) for j in range(i, 5)}
    Q[(3, 1)] = 0.7  # both orders of a pair add up, as in dimod
    dev = kpp_sdk.get_device("sa.cpu", num_sweeps=200, num_threads=1)
    ss = dev.sample_qubo(Q, num_reads=20, seed=1)
    for x, e in zip(ss.binary(), ss.energies):
        assert e == pytest.approx(dimod.qubo_energy(dict(enumerate(x)), Q))
    assert ss.energies.min() == pytest.approx(dimod.ExactSolver().sample_qubo(Q).first.energy)


# --- parameters as dimod samplers take them ---------------------------------------------------


@pytest.mark.parametrize("bad", [3.5, float("inf"), "string", [], {}])
def test_wrong_types_of_num_reads_and_seed_are_type_errors_and_kpp_errors(bad):
    sampler = SaCpu()
    for key in ("num_reads", "seed"):
        with pytest.raises(TypeError) as info:
            sampler.sample_ising({}, {}, **{key: bad})
        assert isinstance(info.value, kpp_sdk.KppError)


@pytest.mark.parametrize("key,bad", [("num_reads", 0), ("num_reads", -3), ("seed", -1),
                                     ("seed", 2**65)])
def test_out_of_range_num_reads_and_seed_are_value_errors(key, bad):
    with pytest.raises(ValueError):
        SaCpu().sample_ising({"a": 1}, {}, **{key: bad})


def test_unknown_keywords_are_warned_and_ignored_as_dimod_does():
    sampler = SaCpu()
    with pytest.warns(dimod.exceptions.SamplerUnknownArgWarning, match="foobar"):
        ss = sampler.sample_ising({"a": 1}, {}, num_reads=3, foobar=1)
    assert len(ss) == 3
    assert sampler.remove_unknown_kwargs(num_sweeps=2) == {"num_sweeps": 2}


def test_empty_bqm_gives_an_empty_sampleset_of_its_vartype():
    for vartype in (dimod.SPIN, dimod.BINARY):
        ss = SaCpu().sample(dimod.BQM(vartype), num_reads=5)
        assert len(ss) == 0 and ss.vartype is vartype and len(ss.variables) == 0


# --- initial states ------------------------------------------------------------------------------

CHAIN = dimod.BQM.from_ising({}, {(f"v{i}", f"v{i + 1}"): -1.0 for i in range(9)})
UP = {f"v{i}": 1 for i in range(10)}
DOWN = {f"v{i}": -1 for i in range(10)}


def _frozen():
    """One sweep at a very low temperature: a chain's ground state stays where it starts."""
    return DimodSampler("sa.cpu", beta_schedule=[50.0], num_sweeps=1, num_threads=1)


@pytest.mark.parametrize("form", ["sampleset", "dicts", "dict", "tuple", "array"])
def test_every_dimod_initial_states_form_is_used(form):
    bqm, rows = CHAIN, [UP, DOWN]
    if form == "array":  # a bare array labels the variables 0..n-1
        bqm = CHAIN.relabel_variables({f"v{i}": i for i in range(10)}, inplace=False)
        rows = [{i: r[f"v{i}"] for i in range(10)} for r in rows]
    labels = list(bqm.variables)
    given = {
        "sampleset": dimod.SampleSet.from_samples_bqm(rows, bqm),
        "dicts": rows,
        "dict": UP,
        "tuple": (np.array([[r[v] for v in labels] for r in rows]), labels),
        "array": np.array([[r[v] for v in labels] for r in rows]),
    }[form]
    ss = _frozen().sample(bqm, initial_states=given, seed=3)
    expect = [UP] if form == "dict" else rows
    assert len(ss) == len(expect)  # dwave-samplers' soft num_reads: one read per state
    got = [dict(zip(ss.variables, row)) for row in ss.record.sample]
    assert got == expect


def test_initial_states_generators_tile_none_random_and_mismatch():
    init = dimod.SampleSet.from_samples_bqm([UP, DOWN], CHAIN)
    tiled = _frozen().sample(CHAIN, initial_states=init, initial_states_generator="tile",
                             num_reads=5)
    assert [int(r[0]) for r in tiled.record.sample] == [1, -1, 1, -1, 1]
    assert len(_frozen().sample(CHAIN, initial_states=init, num_reads=1)) == 1
    assert len(_frozen().sample(CHAIN, initial_states=init, num_reads=7)) == 7
    empty = (np.empty((0, 10)), list(CHAIN.variables))  # extended by random states
    assert len(_frozen().sample(CHAIN, initial_states=empty, num_reads=6)) == 6
    with pytest.raises(ValueError):
        _frozen().sample(CHAIN, initial_states=init, initial_states_generator="none",
                         num_reads=3)
    with pytest.raises(ValueError):
        _frozen().sample(CHAIN, initial_states_generator="tile", num_reads=3)
    with pytest.raises(ValueError):
        _frozen().sample(CHAIN, initial_states={"a": 1, "b": 1})


def test_binary_initial_states_for_a_binary_bqm():
    bqm = CHAIN.change_vartype(dimod.BINARY, inplace=False)
    ones = {v: 1 for v in bqm.variables}
    ss = _frozen().sample(bqm, initial_states=[ones], seed=0)
    assert ss.vartype is dimod.BINARY and (ss.record.sample == 1).all()


# --- a dimod sampler as a Device -----------------------------------------------------------------


def test_as_device_wraps_any_dimod_sampler_and_energies_are_the_problems():
    samplers = pytest.importorskip("dwave.samplers")
    dev = as_device(samplers.SimulatedAnnealingSampler())
    assert isinstance(dev, DimodDevice) and dev.name == "dimod.SimulatedAnnealingSampler"
    p = kpp_sdk.IsingProblem.random_sk(12, seed=21, fields=True)
    ss = dev.sample(p, num_reads=25, seed=4, num_sweeps=200)
    assert ss.spins.shape == (25, 12)
    np.testing.assert_allclose(ss.energies, p.energy(ss.spins))
    ref = kpp_sdk.get_device("sa.cpu", num_threads=1).sample(p, num_reads=50, seed=0)
    assert ss.energies.min() <= ref.energies.min() + 1e-9  # 12 spins: both find the ground state
    same = dev.sample(p, num_reads=25, seed=4, num_sweeps=200)
    assert np.array_equal(same.spins, ss.spins)  # the seed reaches the sampler
    with pytest.raises(kpp_sdk.UnknownOptionError, match="num_sweeps"):
        dev.sample(p, num_sweepz=3)


def test_a_sampler_without_num_reads_returns_what_it_returns():
    from kpp_sdk.exact import all_states, exact_energies

    dev = as_device(dimod.ExactSolver())
    p = kpp_sdk.IsingProblem.random_sk(5, seed=2, fields=True)
    ss = dev.sample(p)
    assert len(ss.spins) == 32 and len({tuple(s) for s in ss.spins}) == 32
    np.testing.assert_allclose(np.sort(ss.energies), np.sort(exact_energies(p)))
    assert all_states(5).shape == (32, 5)


def test_round_trip_device_to_dimod_and_back():
    inner = kpp_sdk.get_device("sa.cpu", num_sweeps=100, num_threads=1)
    back = as_device(DimodSampler(inner))
    p = kpp_sdk.IsingProblem.random_sk(8, seed=3, fields=True)
    ss = back.sample(p, num_reads=10, seed=1, num_sweeps=100)
    np.testing.assert_allclose(ss.energies, p.energy(ss.spins))
    assert ss.energies.min() == pytest.approx(inner.sample(p, num_reads=10, seed=1).energies.min())


def test_selection_solvers_accept_a_dimod_sampler():
    samplers = pytest.importorskip("dwave.samplers")
    from kpp_sdk.selection.qubo import resolve_solver

    assert isinstance(resolve_solver(samplers.SimulatedAnnealingSampler()), DimodDevice)


def test_an_ocean_sampler_drives_the_models():
    samplers = pytest.importorskip("dwave.samplers")
    torch = pytest.importorskip("torch")
    from kpp_sdk.models import BoltzmannSampler, RestrictedBoltzmannMachine

    rbm = RestrictedBoltzmannMachine(4, 3, generator=torch.Generator().manual_seed(0))
    x = rbm.sample(samplers.SimulatedAnnealingSampler())
    assert x.shape[1] == 7 and set(x.unique().tolist()) <= {0.0, 1.0}
    bs = BoltzmannSampler(samplers.SimulatedAnnealingSampler(), num_reads=9, num_sweeps=10)
    assert bs.mode == "anneal" and bs.negative(rbm, None).shape == (9, 7)


@pytest.fixture(scope="module")
def bas():
    from kpp_sdk.models.datasets import load_bars_and_stripes

    return load_bars_and_stripes(3, 3)


def test_a_dimod_sampler_trains_an_rbm_through_boltzmann_sampler(bas):
    """dwave-samplers' SA at a fixed beta of 1 (beta_range=[1, 1]) is a Boltzmann sampler of
    the model, so training with it through BoltzmannSampler must learn bars and stripes at
    least as fast as CD-1 does in the same number of epochs (the exact test log-likelihood)."""
    samplers = pytest.importorskip("dwave.samplers")
    torch = pytest.importorskip("torch")
    from kpp_sdk.models import RestrictedBoltzmannMachine, exact_log_likelihood, fit
    from kpp_sdk.models.samplers import BoltzmannSampler, ContrastiveDivergence

    def train(sampler):
        rbm = RestrictedBoltzmannMachine(9, 16, init_std=0.1,
                                         generator=torch.Generator().manual_seed(3))
        before = exact_log_likelihood(rbm, bas.test)
        fit(rbm, bas.train, sampler, epochs=100, batch_size=14, lr=0.2, momentum=0.5, seed=3)
        return before, exact_log_likelihood(rbm, bas.test)

    before, ocean = train(BoltzmannSampler(samplers.SimulatedAnnealingSampler(), num_reads=100,
                                           mode="anneal", beta=1.0, beta_range=[1.0, 1.0],
                                           num_sweeps=5, seed=3))
    _, cd1 = train(ContrastiveDivergence(1, seed=3))
    print(f"\nBAS 3x3 exact test LL after 100 epochs: start {before:.3f}, dwave SA {ocean:.3f}, "
          f"CD-1 {cd1:.3f}")
    assert ocean > before + 0.25
    assert ocean >= cd1 - 0.05
