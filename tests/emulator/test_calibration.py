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
    before = prof.cim.sigma_add
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
    assert cal.profile.cim.sigma_add == cal.value and prof.cim.sigma_add == before  # a copy
    assert len(cal.history) <= 14


def test_unreachable_target_is_a_clear_error(setting):
    J, prof = setting
    with pytest.raises(ParameterError) as ei:
        calibrate_knob(prof, J, -1e6, knob="sigma_add", bounds=(0.0, 0.3), runs=8)
    assert "target_energy" in str(ei.value)
    with pytest.raises(ParameterError):
        calibrate_knob(prof, J, -10.0, knob="no_such_knob", runs=8)


class _Measured:
    """A measured instance as fit_profile takes it (what hardware.load_measurements returns)."""

    def __init__(self, J, ground_energy, p, cls="sk"):
        from kpp_sdk import IsingProblem

        self._problem = IsingProblem(J)
        self.n = J.shape[0]
        self.ground_energy = ground_energy
        self.p = p
        self.cls = cls

    def problem(self):
        return self._problem


def _ground(J):
    from kpp_sdk.emulator import enumerate_energies

    return float(enumerate_energies(J).min())


def test_fit_profile_recovers_the_parameter_that_produced_the_measurements():
    from kpp_sdk.emulator import fit_profile

    prof = get_profile("qboson-550", round_trips=200)
    truth = 0.2
    measured = []
    for k, n in enumerate((10, 12, 14, 16)):
        rng = np.random.default_rng(500 + k)
        J = np.triu(rng.choice([-1.0, 1.0], size=(n, n)), 1)
        J = J + J.T
        e0 = _ground(J)
        # "hardware": other random numbers than the fit's
        res = sample(prof, J, runs=400, seed=900 + k, sigma_add=truth)
        measured.append(_Measured(J, e0, float(np.mean(res.energies <= e0 + 1e-9))))
    assert 0.05 < np.median([m.p for m in measured]) < 0.95
    fit = fit_profile(prof, measured, {"sigma_add": (0.02, 0.6)}, runs=200, seed=0, max_evals=14)
    assert fit.values["sigma_add"] == pytest.approx(truth, rel=0.3)
    assert fit.profile.cim.sigma_add == fit.values["sigma_add"]
    assert fit.loss < 0.1 and len(fit.history) <= 14
    # the start (qboson's sigma_add = 0: clipped to the lower bound) was far off
    assert fit.history[0][1] > 10 * fit.loss


def test_fit_profile_rejects_bad_bounds_before_running():
    from kpp_sdk.emulator import fit_profile

    prof = get_profile("qboson-550")
    with pytest.raises(ParameterError, match="0 < lo < hi"):
        fit_profile(prof, [object()], {"sigma_add": (0.0, 0.2)})
    with pytest.raises(ParameterError, match="CIMParameters or profile field"):
        fit_profile(prof, [_Measured(np.zeros((2, 2)), 0.0, 0.5)], {"sigma_ad": (0.1, 0.2)})
