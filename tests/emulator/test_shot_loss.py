"""A profile's shot loss (HardwareProfile.shot_loss, emulator.physics.lose_shots): a lost shot's
pulses bifurcate uncoupled, so every run (copy) in it reads uniform random spins."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from kpp_sdk.emulator import ParameterError, get_profile, ising_energy, sample, simulate
from kpp_sdk.emulator.profiles import PROFILES
from kpp_sdk.emulator.timing import copies_per_shot

from kpp_sdk import IsingProblem, get_device


def _ferromagnet(n=10):
    J = np.ones((n, n)) - np.eye(n)
    return J, -0.5 * n * (n - 1)  # ground energy: all spins equal


def test_zero_loss_changes_nothing():
    J, _ = _ferromagnet()
    prof = get_profile("ntt-2000", shot_loss=0.0)
    a = simulate(J, None, prof.cim, runs=400, seed=5)
    b = sample(prof, J, runs=400, seed=5)
    np.testing.assert_array_equal(a.spins, b.spins)
    assert "lost_runs" not in b.info


def test_lost_shots_are_whole_shots_of_random_spins_with_their_energies():
    J, e0 = _ferromagnet()
    prof = get_profile("ntt-2000", shot_loss=0.4)
    c = copies_per_shot(prof, 10)
    assert c == 200  # floor(2000 / 10) copies of a 10-spin problem per shot
    res = sample(prof, J, runs=40 * c, seed=11)
    lost = res.info["lost_runs"]
    # whole shots: the lost runs are unions of blocks of c consecutive runs
    shots = np.unique(lost // c)
    assert np.array_equal(np.sort(lost), (shots[:, None] * c + np.arange(c)).ravel())
    assert 0.4 * 40 - 3 * np.sqrt(40 * 0.24) <= len(shots) <= 0.4 * 40 + 3 * np.sqrt(40 * 0.24)
    # the energies are those of the returned spins
    np.testing.assert_allclose(res.energies, ising_energy(J, None, res.spins))
    kept = np.setdiff1d(np.arange(len(res.spins)), lost)
    assert np.mean(res.energies[kept] == e0) > 0.99  # the coupled runs find the ferromagnet
    # the lost runs are uniform: each spin +1 half of the time, ground (2 of 1024) rare
    assert abs(np.mean(res.spins[lost] == 1) - 0.5) < 0.02
    assert np.mean(res.energies[lost] == e0) < 0.01
    # the same seed gives the same losses; another seed other ones
    again = sample(prof, J, runs=40 * c, seed=11)
    np.testing.assert_array_equal(again.spins, res.spins)
    other = sample(prof, J, runs=40 * c, seed=12)
    assert not np.array_equal(other.info["lost_runs"], lost)


def test_one_run_per_shot_without_copies():
    J, _ = _ferromagnet()
    prof = get_profile("qboson-550", shot_loss=0.5)
    res = sample(prof, J, runs=1000, seed=3)
    lost = res.info["lost_runs"]
    assert 500 - 3 * np.sqrt(250) <= len(lost) <= 500 + 3 * np.sqrt(250)
    assert np.any(np.diff(lost) > 1)  # not blocks: every run is its own shot


def test_the_device_applies_the_profile_loss(monkeypatch):
    J, e0 = _ferromagnet(12)
    prob = IsingProblem(J=J)
    lossy = dataclasses.replace(get_profile("qboson-550", shot_loss=0.5), name="lossy")
    monkeypatch.setitem(PROFILES, "lossy", lossy)
    dev = get_device("cim.emulator", profile="lossy")
    ss = dev.sample(prob, num_reads=400, seed=4)
    p_ground = np.mean(np.isclose(ss.energies, e0))
    assert 0.5 - 0.1 <= p_ground <= 0.5 + 0.1
    assert get_device("cim.emulator").sample(prob, num_reads=400, seed=4).energies.max() == e0


@pytest.mark.parametrize("bad", [-0.1, 1.0, float("nan")])
def test_a_loss_outside_0_1_is_refused_with_the_range(bad):
    with pytest.raises(ParameterError, match="shot_loss"):
        get_profile("ntt-2000", shot_loss=bad)
