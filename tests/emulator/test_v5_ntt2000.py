"""V5 (docs/cim-physics.md section 8): the ntt-2000 profile on a 2000-node complete graph.

Inagaki et al. (Science 354, 603, 2016) ran WK2000_1 = `rudy -clique 2000 -random 0 1 20001
-times 2 -plus -1` (+-1 weights on all pairs) and reached E = sum_{i<j} w_ij s_i s_j = -60278
(-0.674 N^1.5). We do not reproduce rudy's random generator: the instance here has the same
distribution (independent +-1 weights, NumPy seed 20001); the ground-state energy of such dense
+-1 graphs self-averages (instance-to-instance spread well below 1% at N = 2000).

The 2016 operating point below (gain normalised by the spectral radius, xi0 = 0.6, pump ramp
over 80% of 1000 round trips, additive excess noise ``sigma_add``) was fitted to that one
number with :func:`kpp_sdk.emulator.calibrate_knob` (runs=8, seed=0, bounds 0.05-0.2: 0.1804,
stored 0.18). It was the ntt-2000 profile until the profile was calibrated on the machine's
per-run statistics on the Hamerly 2019 instances (issue 20, docs/validation.md); that
calibration is colder on a dense N = 2000 problem (about -0.736 N^1.5 against the 2016 run's
-0.674 N^1.5), so this test keeps the 2016 point as explicit overrides. It checks it on other
random numbers (seed 1): the mean run energy after 1000 round trips must be within 1% of
-60278. With J = -W the emulator's energy -1/2 s^T J s equals sum_{i<j} w_ij s_i s_j.
"""

import numpy as np
import pytest
from kpp_sdk.emulator import get_profile, sample

N = 2000
TARGET = -60278.0
#: The 2016 WK2000 operating point (see the module doc).
NTT_2016 = dict(coupling_norm="radius", xi0=0.6, sigma_add=0.18, ramp_fraction=0.8,
                round_trips=1000, shot_loss=0.0)


def wk2000_like(seed: int = 20001) -> np.ndarray:
    rng = np.random.default_rng(seed)
    W = np.triu(rng.integers(0, 2, size=(N, N)) * 2 - 1, 1).astype(np.float64)
    return W + W.T


@pytest.mark.slow
def test_ntt2000_lands_at_the_hardware_energy():
    W = wk2000_like()
    prof = get_profile("ntt-2000", **NTT_2016)
    res = sample(prof, -W, runs=16, seed=1)
    mean = float(res.energies.mean())
    assert abs(mean - TARGET) <= 0.01 * abs(TARGET), (mean, mean / N**1.5)
    # without the calibrated excess noise the ideal-ish machine overshoots (prototype: -0.73)
    cold = float(sample(prof, -W, runs=8, seed=1, sigma_add=0.0).energies.mean())
    assert cold < TARGET * 1.05
