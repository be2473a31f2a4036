"""V2 (docs/cim-physics.md section 8): coupled oscillation threshold and the delayed-feedback
stability bound.

Threshold. The in-phase mode of eigenvalue lambda_max gains exp(dtau (p-1)) (1 + dtau xi
lambda) per round trip, so the map's threshold is p_map = 1 - ln(1 + dtau xi lambda)/dtau; the
continuum value 1 - xi lambda_max is its small-(dtau xi lambda) limit (for dtau = 0.5 they differ by
0.01 at xi0 = 0.2 and by 0.075 at xi0 = 0.6). We scan a fixed pump below threshold: the
variance of the top eigenmode diverges as 1/(p_th - p), so 1/Var extrapolates linearly to p_th.

Stability. With latency L = 1 a mode of eigenvalue lambda < 0 obeys z^2 - a z + a c|lambda| = 0
(a = exp(dtau (p-1)), c = dtau xi), unstable when a dtau xi |lambda_min| > 1: the doc's bound
dtau xi |lambda_min| < 1 at p -> 1. The unstable pair sits near 60 degrees (period ~6). With
L = 0 the instability is the period-2 flip z = a (1 - c|lambda|) < -1, at c|lambda| > 1 + 1/a.
"""

import math

import numpy as np
import pytest
from kpp_sdk.emulator import CIMParameters, coupled_threshold, simulate, spectral_bounds
from kpp_sdk.emulator.coupling import feedback_gain

QUIET = {"sigma_pump": 0.0, "sigma_inj": 0.0}
#: threshold scans without ADC/DAC: near threshold the SK20 feedback u = xi f is ~1 DAC LSB
#: (4/4096), and rounding small feedback to zero raises the measured threshold by ~0.011.
FLOAT_FPGA = {"adc_bits": None, "dac_bits": None}


def _threshold_scan(J, xi0, runs=1000, float_fpga=True):
    """Onset of oscillation from below: the variance of the top mode diverges as 1/(p_th - p);
    fit 1/Var with a line and find its zero."""
    lmin, lmax = spectral_bounds(J)
    base = CIMParameters(xi0=xi0, round_trips=1000, **QUIET, **(FLOAT_FPGA if float_fpga else {}))
    xi, delta = feedback_gain(base, lmin, lmax)
    assert delta == 0.0  # these spectra need no self-feedback
    p_map, p_cont = coupled_threshold(base, lmax, xi)
    v = np.linalg.eigh(J)[1][:, -1]  # the mode that goes first
    ps = p_map - np.array([0.04, 0.03, 0.02, 0.01])
    inv = []
    for k, p in enumerate(ps):
        r = simulate(
            J,
            None,
            base.replace(p0=float(p), p1=float(p)),
            runs=runs,
            seed=100 + k,
            return_amplitudes=True,
        )
        inv.append(1.0 / float(((r.final_amplitudes @ v) ** 2).mean()))
    slope, icpt = np.polyfit(ps, inv, 1)
    above = simulate(
        J,
        None,
        base.replace(p0=p_map + 0.05, p1=p_map + 0.05),
        runs=50,
        seed=7,
        return_amplitudes=True,
    )
    return (
        -icpt / slope,
        p_map,
        p_cont,
        1.0 / inv[-1],
        float(((above.final_amplitudes @ v) ** 2).mean()),
    )


@pytest.mark.parametrize("sign", [1.0, -1.0], ids=["ferro", "antiferro"])
@pytest.mark.parametrize("xi0", [0.2, 0.6])
def test_threshold_two_spins(sign, xi0):
    J = sign * np.array([[0.0, 1.0], [1.0, 0.0]])
    p_est, p_map, p_cont, below, above = _threshold_scan(J, xi0)
    assert abs(p_est - p_map) < 0.01
    if xi0 <= 0.2:
        assert abs(p_est - p_cont) < 0.03  # continuum formula, doc tolerance
    assert below < 0.05 * above  # oscillation: a macroscopic amplitude only above p_th


@pytest.mark.parametrize("xi0", [0.2, 0.6])
def test_threshold_sk20(xi0, instance):
    J, _ = instance("SK", 20, 0)
    p_est, p_map, p_cont, below, above = _threshold_scan(J, xi0, runs=400)
    assert abs(p_est - p_map) < 0.01
    if xi0 <= 0.2:
        assert abs(p_est - p_cont) < 0.03
    assert below < 0.05 * above


def _uniform_mode(xi0, latency, p=0.85, n=20, norm="radius"):
    """The bound itself, with the former gain xi = xi0/rho (no self-feedback) unless norm is
    "spectrum"."""
    J = -(np.ones((n, n)) - np.eye(n))  # lambda_min = -(n-1) (uniform mode), others +1
    par = CIMParameters(
        p0=p, p1=p, round_trips=400, xi0=xi0, latency=latency, coupling_norm=norm, **QUIET
    )
    r = simulate(J, None, par, runs=6, seed=3, record_runs=6)
    m = r.trajectories[-100:].mean(axis=2)  # uniform-mode amplitude, last 100 round trips
    flips = float(np.mean(np.sign(m[1:]) != np.sign(m[:-1])))
    return float(np.abs(m).mean()), flips, r.info["stability_margin"]


def test_delayed_feedback_bound_latency_1():
    a = math.exp(0.5 * (0.85 - 1.0))
    amp_ok, _, margin_ok = _uniform_mode(1.8, latency=1)
    assert margin_ok == pytest.approx(0.9) and a * margin_ok < 1
    assert amp_ok < 0.03  # below the bound: the uniform (antiferro) mode stays at noise level
    for xi0 in (2.3, 2.6):
        amp, flips, margin = _uniform_mode(xi0, latency=1)
        assert margin > 1 and a * margin > 1
        assert amp > 0.2  # above the bound it blows up
        assert 0.2 < flips < 0.5  # oscillation with a period of about 6 round trips, not 2


def test_period_two_blowup_latency_0():
    a = math.exp(0.5 * (0.85 - 1.0))
    amp, flips, margin = _uniform_mode(3.5, latency=0)
    assert margin < 1 + 1 / a and amp < 0.03
    amp, flips, margin = _uniform_mode(4.5, latency=0)
    assert margin > 1 + 1 / a
    assert amp > 0.2 and flips > 0.95  # period 2: the sign flips every round trip


@pytest.mark.parametrize("latency", [1, 0])
def test_self_feedback_keeps_uniform_mode_stable(latency):
    """The problem-aware gain: xi = xi0/lambda_max = 0.6 here, 15x the 0.6/19 of the spectral
    radius, so without the self-feedback dtau xi |lambda_min| = 5.7 (far past both bounds);
    with it the most negative mode sits at the stability margin and does not blow up (the
    19-fold mode lambda = +1 oscillates, amplitudes ~1, so the uniform component of a balanced
    state is ~0.1 from their spread, against ~0.6-1 for the blown-up uniform mode)."""
    amp, flips, margin = _uniform_mode(0.6, latency=latency, norm="spectrum")
    assert margin == pytest.approx(0.9, abs=0.02)
    assert amp < 0.15
    amp_off, _, margin_off = _uniform_mode(0.6 * 19, latency=latency, norm="radius")
    assert margin_off > 5 and amp_off > 0.4  # the same gain without self-feedback blows up
