"""calibrate_knob: fitting one imperfection knob to a target mean energy (used for V5)."""

import numpy as np
import pytest
from kpp_sdk.emulator import ParameterError, calibrate_knob, get_profile, sample


@pytest.fixture(scope="module")
def setting():
    rng = np.random.default_rng(8)
    n = 30
    J = np.triu(rng.choice([-1.0, 1.0], size=(n, n)), 1)
    J = J + J.T
    prof = get_profile("qboson-550", round_trips=300)
    return J, prof


def test_recovers_the_knob_that_produced_the_target(setting):
    J, prof = setting
    kw = {"runs": 64, "seed": 5}
    target = float(sample(prof, J, sigma_add=0.25, **kw).energies.mean())
    cold = float(sample(prof, J, sigma_add=0.0, **kw).energies.mean())
    assert target > cold + 1.0  # the knob matters here: more excess noise, higher energy
    cal = calibrate_knob(
        prof, J, target, knob="sigma_add", bounds=(0.0, 0.6), rtol=0.002, max_evals=14, **kw
    )
    assert cal.rel_error <= 0.002
    assert cal.mean_energy == pytest.approx(
        float(sample(prof, J, sigma_add=cal.value, **kw).energies.mean())
    )
    assert 0.1 < cal.value < 0.45
    assert cal.profile.cim.sigma_add == cal.value and prof.cim.sigma_add == 0.0
    assert len(cal.history) <= 14


def test_unreachable_target_is_a_clear_error(setting):
    J, prof = setting
    with pytest.raises(ParameterError) as ei:
        calibrate_knob(prof, J, -1e6, knob="sigma_add", bounds=(0.0, 0.3), runs=8)
    assert "target_energy" in str(ei.value)
    with pytest.raises(ParameterError):
        calibrate_knob(prof, J, -10.0, knob="no_such_knob", runs=8)
