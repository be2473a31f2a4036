"""The ntt-2000 profile against NTT's own machine: the success probabilities the 2000-pulse
measurement-feedback CIM reached on the SK and cubic instances of Hamerly et al., Sci. Adv. 5,
eaau0823 (2019), packaged in kpp_sdk/data/hardware/hamerly2019 (docs/validation.md).

The profile was calibrated on the SK measurements (one parameter set for every N); the cubic
measurements were not used for it and are a held-out check.
"""

from __future__ import annotations

import numpy as np
import pytest

from kpp_sdk.emulator import get_profile
from kpp_sdk.validation import hardware as hw


def _medians(rows, p):
    """{N: (machine median P, emulator median P)}, as ``kpp validate`` computes them."""
    return {r["n"]: (r["hardware"], r["emulator"]) for r in hw.compare(rows, p)["sk"]["per_n"]}


def test_small_sk_medians_are_within_a_factor_1p5_of_the_machine():
    # 2000 runs: at N = 10 the ring runs 200 copies per shot, so 10 shots per instance
    rows = hw.select(hw.hamerly2019(("sk",)), ns=(10, 20, 30))
    p = hw.emulate("ntt-2000", rows, runs=2000, seed=7)
    for n, (measured, emulated) in _medians(rows, p).items():
        assert measured / 1.5 <= emulated <= 1.5 * measured, (n, measured, emulated)
    # the check can fail: without the shot loss the same physics solves N = 10 in nearly every
    # run (the machine: 0.39), and the profile's 2016 values (fitted to the WK2000 energy alone,
    # gain normalised by the spectral radius) are far off at N = 30
    small = [m for m in rows if m.n == 10]
    p_kept = hw.emulate("ntt-2000", small, runs=400, seed=7, shot_loss=0.0)
    assert np.median(p_kept) > 1.5 * np.median([m.p for m in small])
    old = get_profile("ntt-2000", coupling_norm="radius", xi0=0.6, sigma_add=0.18,
                      ramp_fraction=0.8, round_trips=1000, shot_loss=0.0)
    p_old = hw.emulate(old, rows, runs=200, seed=7)
    measured, emulated = _medians(rows, p_old)[30]
    assert emulated < measured / 1.5


@pytest.mark.slow
def test_sk_per_n_medians_decay_rate_and_rank_correlation():
    """Issue 20's SK goals on all 150 instances (1000 runs each; minutes on one core).

    Measured with this seed (docs/validation.md): 14 of 15 sizes within a factor 1.5 of the
    machine's median, N = 60 at 1.52 (0.147 against 0.223); alpha 0.0202 against 0.0205;
    Spearman 0.70. The machine's own medians scatter: no curve A exp(-alpha N) comes within
    1.7 of all 15, and at every N the ratio's 90% bootstrap interval over the ten instances
    reaches into [1/1.5, 1.5]. The test holds that: it fails when the calibration is undone
    (the former profile reached the ground state in 0-0.5% of the runs at N = 100, where the
    machine reached it in ~10%).
    """
    rows = hw.hamerly2019(("sk",))
    p = hw.emulate("ntt-2000", rows, runs=1000, seed=1000)
    s = hw.compare(rows, p)["sk"]
    ratios = [max(r["emulator"] / r["hardware"], r["hardware"] / r["emulator"])
              for r in s["per_n"]]
    assert sum(q <= 1.5 for q in ratios) >= 13, ratios
    assert max(ratios) <= 1.75, ratios
    for r in s["per_n"]:
        lo, hi = r["ratio_interval"]
        assert lo <= 1.5 and hi >= 1 / 1.5, r
    assert s["alpha_emulator"] == pytest.approx(s["alpha_hardware"], rel=0.2)
    assert s["spearman"] >= 0.5


def test_qboson_plain_mode_solves_the_n100_instances_ntts_machine_solved():
    """qboson-550's excess noise and run length come from NTT's SK statistics (its decay rate,
    docs/emulator-validation.md). SK1 n=100 #2 and #3 are Hamerly's N = 100 instances 2 and 3,
    which NTT's machine solved in 24.5% and 15.1% of its runs; the profile as calibrated
    reaches them in ~9% and ~23% (five seeds of 2,000 runs). Fails when the calibration is
    undone: the former noiseless, 1,000-round-trip profile never reached either ground
    (0 of 10,000 runs each)."""
    from kpp_sdk.emulator import sample
    from kpp_sdk.instances import ground_energy, load_instance

    def p_ground(i, **overrides):
        p, g = load_instance("SK1", 100, i), ground_energy("SK1", 100, i)
        e = sample(get_profile("qboson-550", **overrides), p.J, runs=400, seed=5100 + i).energies
        return float(np.mean(e <= g + 1e-9))

    p2, p3 = p_ground(2), p_ground(3)
    assert p2 >= 0.02 and p3 >= 0.08, (p2, p3)
    assert p_ground(2, sigma_add=0.0, round_trips=1000) == 0.0
    assert p_ground(3, sigma_add=0.0, round_trips=1000) == 0.0


@pytest.mark.slow
def test_qboson_decay_rate_is_the_closest_to_the_machines():
    """The grid behind qboson-550's sigma_add = 0.09 and round_trips = 2000: on all 150 SK
    instances its decay rate is 0.027 (the machine's 0.0205), closer than with less or more
    noise at the same run length (sigma_add 0.06: 0.030, 0.12: 0.035; seed 1000, as `kpp
    validate --profile qboson-550 --against hamerly2019 --classes sk --runs 1000 --seed 1000`
    measures it). The former noiseless point (0.058) is the quick test's. About 9 minutes on
    one core."""
    rows = hw.hamerly2019(("sk",))

    def summary(**overrides):
        p = hw.emulate("qboson-550", rows, runs=1000, seed=1000, **overrides)
        return hw.compare(rows, p)["sk"]

    s = summary()
    a, target = s["alpha_emulator"], s["alpha_hardware"]
    assert abs(a - target) < 0.01, (a, target)
    for other in ({"sigma_add": 0.06}, {"sigma_add": 0.12}):
        assert abs(summary(**other)["alpha_emulator"] - target) > abs(a - target), other
