"""cim.emulator as a Device: conformance on each profile, output modes, device time, the
temperature knob, bad input before any work, and ``kpp emulate``."""

import json
import os

import numpy as np
import pytest
from kpp_sdk.devices.cim_emulator import CIMEmulator, estimate_beta

import kpp_sdk
from kpp_sdk import InvalidOptionError, IsingProblem, ProblemTooLargeError, UnknownOptionError
from kpp_sdk.cli import main
from kpp_sdk.exact import ground_state
from kpp_sdk.instances import ground_energy, load_instance
from kpp_sdk.testing import DeviceConformance

FAST = dict(CIMEmulator.FAST_OPTIONS)


class TestConformanceIdeal(DeviceConformance):
    """The contract on the ``ideal`` profile (float couplings)."""

    fast_options = FAST

    def make_device(self):
        return CIMEmulator(profile="ideal")


def test_raw_mode_returns_one_sample_per_run_with_device_time():
    d = kpp_sdk.get_device("cim.emulator")
    p = IsingProblem.random_sk(30, seed=3)
    ss = d.sample(p, num_reads=50, seed=1, round_trips=200)
    assert ss.spins.shape == (50, 30) and np.all(ss.num_occurrences == 1)
    np.testing.assert_allclose(ss.energies, p.energy(ss.spins))
    prof = d.profile
    expected = prof.task_overhead_s + 50 * (200 + prof.reset_round_trips) * prof.round_trip_time_s
    assert ss.timing["device_s"] == pytest.approx(expected, rel=1e-12)
    assert ss.info["profile"] == "qboson-550" and ss.info["round_trips"] == 200


def test_topk_is_the_deduplicated_lowest_of_all_runs():
    d = CIMEmulator()
    p = load_instance("MC50", 20, 1)
    raw = d.sample(p, num_reads=300, seed=5, round_trips=300)
    top = d.sample(p, num_reads=10, seed=5, round_trips=300, output="topk", runs=300)
    # the same seed and runs: top-k is exactly the post-processing of the raw samples
    want = raw.top_k(10)
    np.testing.assert_array_equal(top.spins, want.spins)
    np.testing.assert_array_equal(top.num_occurrences, want.num_occurrences)
    assert np.all(np.diff(top.energies) >= 0)
    assert len({r.tobytes() for r in top.spins}) == len(top)
    # the device time is that of all 300 runs, not of the 10 returned states
    assert top.timing["device_s"] == pytest.approx(raw.timing["device_s"])


def test_emulator_finds_the_ground_state_of_small_instances():
    d = CIMEmulator()
    p = load_instance("MC50", 20, 1)
    ss = d.sample(p, num_reads=5, seed=0, output="topk", runs=200)
    assert ss.energies[0] == pytest.approx(ground_energy("MC50", 20, 1))


def test_fields_ride_on_the_ancilla_and_are_respected():
    rng = np.random.default_rng(0)
    n = 12
    W = rng.normal(size=(n, n))
    J = np.triu(W, 1)
    p = IsingProblem(J + J.T, rng.normal(size=n) * 2.0)
    e0, _ = ground_state(p)
    ss = CIMEmulator(profile="ideal").sample(p, num_reads=3, seed=0, output="topk", runs=200)
    assert ss.energies[0] == pytest.approx(e0)


def test_sparse_and_dense_give_the_same_samples():
    p = load_instance("MC50", 20, 2)
    d = CIMEmulator()
    a = d.sample(p.to_dense(), num_reads=20, seed=9, round_trips=150, engine="xp")
    b = d.sample(p.to_sparse(), num_reads=20, seed=9, round_trips=150, engine="xp")
    np.testing.assert_array_equal(a.spins, b.spins)


def test_temperature_knob_heats_the_samples():
    rng = np.random.default_rng(1)
    n = 10
    W = np.triu(rng.choice([-1.0, 1.0], size=(n, n)), 1)
    p = IsingProblem(W + W.T)
    d = CIMEmulator()
    cold = d.sample(p, num_reads=600, seed=0, round_trips=300)
    hot = d.sample(p, num_reads=600, seed=0, round_trips=300, temperature=1.0)
    b_cold, b_hot = estimate_beta(p, cold), estimate_beta(p, hot)
    assert hot.energies.mean() > cold.energies.mean()
    assert b_hot.beta_moment < b_cold.beta_moment
    assert hot.info["sigma_add"] > cold.info["sigma_add"] and hot.info["p1"] < cold.info["p1"]


def test_estimate_beta_recovers_an_exact_boltzmann_sample():
    from kpp_sdk.exact import all_states, boltzmann_distribution

    p = IsingProblem.random_sk(8, seed=4)
    states, probs = all_states(8), boltzmann_distribution(p, beta=0.7)
    rng = np.random.default_rng(0)
    idx = rng.choice(len(probs), size=40_000, p=probs)
    ss = kpp_sdk.SampleSet(p, states[idx])
    est = estimate_beta(p, ss)
    assert est.beta_moment == pytest.approx(0.7, rel=0.05)
    assert est.beta_ml == pytest.approx(0.7, rel=0.05)


def test_profiles_set_the_properties():
    assert CIMEmulator().properties.max_spins == 550
    assert CIMEmulator().properties.coefficient_bits == 8
    assert CIMEmulator(profile="ntt-2000").properties.max_spins == 2000
    assert CIMEmulator(profile="ideal").properties.coefficient_bits is None


@pytest.mark.parametrize("kwargs, exc, words", [
    ({"profile": "qboson-9999"}, InvalidOptionError, "known profiles"),
    ({"params": {"detector_efficiency": 1.5}}, InvalidOptionError, "detector_efficiency"),
    ({"params": {"dtau": -0.1}}, InvalidOptionError, "dtau"),
    ({"params": {"loss_db": -3.0}}, InvalidOptionError, "loss_db"),
    ({"params": {"no_such_knob": 1}}, InvalidOptionError, "known parameter"),
    ({"output": "best"}, InvalidOptionError, "output"),
    ({"temperature": 2.0}, InvalidOptionError, "temperature"),
    ({"round_trips": 0}, InvalidOptionError, "round_trips"),
    ({"runs": 100}, InvalidOptionError, "num_reads"),
    ({"feedback": "pid"}, InvalidOptionError, "feedback"),
    ({"num_sweeps": 10}, UnknownOptionError, "known options"),
])
def test_bad_options_are_rejected_at_submit(kwargs, exc, words):
    d = CIMEmulator()
    p = IsingProblem.random_sk(5, seed=0)
    with pytest.raises(exc, match=words):
        d.submit(p, num_reads=2, **kwargs)


def test_bad_profile_at_construction_and_profile_is_fixed_per_device():
    with pytest.raises(InvalidOptionError, match="known profiles: .*qboson-550"):
        kpp_sdk.get_device("cim.emulator", profile="nope")
    with pytest.raises(InvalidOptionError, match="fixed per device"):
        CIMEmulator().submit(IsingProblem.random_sk(5, seed=0), profile="ideal")


def test_too_large_problems_are_rejected_before_any_work():
    d = CIMEmulator()
    with pytest.raises(ProblemTooLargeError, match="550"):
        d.submit(IsingProblem.random_sk(551, seed=0))
    # 550 spins fit; 550 spins plus the ancilla of a field do not fit a 550-spin machine's ring?
    # They do (the ring has 4896 slots); the spin limit is the machine's and counts spins only.
    d.validate(IsingProblem.random_sk(550, seed=0, fields=True), 1)
    with pytest.raises(ProblemTooLargeError, match="2000"):
        CIMEmulator(profile="ntt-2000").submit(IsingProblem.random_sk(2001, seed=0))
    # the too-large error names the profiles that fit (issue 15 item 6)
    with pytest.raises(ProblemTooLargeError, match=r"profiles that fit: ideal .*ntt-2000"):
        d.submit(IsingProblem.random_sk(551, seed=0))
    with pytest.raises(ProblemTooLargeError, match=r"profiles that fit: ideal \(no spin limit\); choose"):
        CIMEmulator(profile="ntt-2000").submit(IsingProblem.random_sk(2001, seed=0))


def test_cli_sample_with_a_larger_profile(tmp_path, capsys):
    """`kpp sample FILE --device cim.emulator -o profile=ntt-2000` takes an 800-spin problem
    (the profile is a construction option: it sets the device's spin limit)."""
    from kpp_sdk.cli import main

    IsingProblem.random_sk(600, seed=1).save(tmp_path / "p.npz")
    rc = main(["sample", str(tmp_path / "p.npz"), "--device", "cim.emulator", "-o",
               "profile=ntt-2000", "-o", "round_trips=20", "--num-reads", "3"])
    assert rc == 0
    assert "n=600" in capsys.readouterr().out
    rc = main(["sample", str(tmp_path / "p.npz"), "--device", "cim.emulator", "-o",
               "round_trips=20", "--num-reads", "3"])
    assert rc == 2
    assert "profiles that fit" in capsys.readouterr().err


def test_topk_num_reads_above_runs_is_rejected():
    with pytest.raises(InvalidOptionError, match="at most runs=10"):
        CIMEmulator().submit(IsingProblem.random_sk(5, seed=0), num_reads=11, output="topk", runs=10)


def test_trace_records_amplitudes_that_bifurcate_to_the_spins():
    d = CIMEmulator()
    p = load_instance("MC50", 20, 1)
    tr = d.trace(p, runs=2, seed=0, round_trips=300, record_every=10)
    x = np.asarray(tr.trajectories)
    assert x.shape == (len(tr.trajectory_round_trips), 2, 20)
    assert tr.trajectory_round_trips[-1] == 300
    np.testing.assert_array_equal(np.sign(x[-1]), tr.spins)  # no field: no gauge flip
    assert np.abs(x[0]).max() < 0.05 < np.abs(x[-1]).min()  # vacuum -> bifurcated pulses


def test_kpp_emulate_prints_topk_writes_json_and_plot(tmp_path, capsys):
    f = tmp_path / "p.npz"
    load_instance("MC50", 20, 1).save(f)
    out, png = tmp_path / "r.json", tmp_path / "amp.png"
    rc = main(["emulate", str(f), "--runs", "100", "--round-trips", "200", "--top", "3",
               "--out", str(out), "--plot", str(png)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "device time" in text and "real-time factor" in text
    data = json.loads(out.read_text())
    assert len(data["energies"]) <= 3
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert oct(os.stat(png).st_mode & 0o777) != oct(0o600)  # a normal file mode, not mkstemp's


def test_kpp_emulate_bad_input_writes_nothing(tmp_path, capsys):
    f = tmp_path / "p.npz"
    IsingProblem.random_sk(600, seed=0).save(f)
    png = tmp_path / "amp.png"
    assert main(["emulate", str(f), "--plot", str(png)]) == 2
    assert "550" in capsys.readouterr().err and not png.exists()
    assert main(["emulate", str(f), "--plot", str(tmp_path / "amp.txt")]) == 2
    assert main(["emulate", str(f), "--profile", "nope"]) == 2
    assert "known profiles" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [f]
