"""One test per physical effect of the round-trip map (docs/cim-physics.md section 3; issue 15):
each fails when its effect is removed or scaled x10 (listed in the doc's validation table).

Noise sources are checked against the exact stationary covariance of the linearised map (a
discrete Lyapunov equation), so the test knows how much each source contributes; the
deterministic effects (pump ramp, gain saturation, latency, ADC, int8 couplings) against the
map's own formulas on noise-free runs.

Linearised map with one round trip of latency, around a fixed point x_bar (y_bar after the gain):
    dy_k = G dx_{k-1} + v_k,   dm_k = dy_k + n_k   (measured),
    dx_k = dy_k + c J dm_{k-1} + c sigma_inj diag(J y_bar) w_k,   c = dtau xi,
with G_i = sqrt(T) exp(dtau (p - x_bar_i^2)) (1 - 2 dtau x_bar_i^2), v the vacuum noise of the
loss (variance (1 - T) g^2/4), n the homodyne noise (g^2 (1 - eta R_m)/(4 eta R_m)) and w the
injection noise. The state (dx_k, dm_k) obeys s_k = A s_{k-1} + noise.
"""

import math

import numpy as np
import pytest
from scipy.linalg import solve_discrete_lyapunov

from kpp_sdk.emulator import CIMParameters, simulate

FERRO2 = np.array([[0.0, 1.0], [1.0, 0.0]])
#: no ADC/DAC/int8 and no pump noise: only the noise source under test shapes the variance
LINEAR = dict(adc_bits=None, dac_bits=None, coef_bits=None, sigma_pump=0.0, ramp_fraction=0.0)


def _stationary_var(par: CIMParameters, J, xi, x_bar, vac=True, meas=True, inj=True):
    """Stationary variance of each pulse's x (end of a round trip) of the linearised map."""
    n = J.shape[0]
    d, p = par.dtau, par.p1
    st = math.exp(-d)
    y_bar = st * x_bar * np.exp(d * (p - x_bar**2))
    G = np.diag(st * np.exp(d * (p - x_bar**2)) * (1 - 2 * d * x_bar**2))
    c = d * xi
    A = np.block([[G, c * J], [G, np.zeros((n, n))]])
    sv2 = (1 - par.transmission) * par.g2 / 4 if vac else 0.0
    sm2 = par.measurement_noise_std**2 if meas else 0.0
    si2 = (c * par.sigma_inj * (J @ y_bar)) ** 2 if inj else np.zeros(n)
    I = np.eye(n)
    Q = np.block([[sv2 * I + np.diag(si2), sv2 * I], [sv2 * I, (sv2 + sm2) * I]])
    P = solve_discrete_lyapunov(A, Q)
    return np.diag(P)[:n]


def _close(a, b, rel):
    return abs(a - b) <= rel * abs(b)


def test_vacuum_and_homodyne_noise_below_threshold():
    """Below threshold (p = 0.3) x is pure noise: the vacuum noise of the loss and, through the
    feedback, the homodyne noise of the measurement (18x the vacuum variance at R_m = 0.1,
    eta = 0.8). The measured variance matches their sum; each one removed or x10 does not."""
    par = CIMParameters(p0=0.3, p1=0.3, round_trips=200, xi0=0.6, sigma_inj=0.0, **LINEAR)
    r = simulate(FERRO2, None, par, runs=20000, seed=5, return_amplitudes=True)
    xi = r.info["xi"]
    var = float(r.final_amplitudes.var(axis=0).mean())
    pred = float(_stationary_var(par, FERRO2, xi, np.zeros(2)).mean())
    assert _close(var, pred, 0.04), (var, pred)
    # the test can tell each source: removing it or scaling its amplitude x10 (variance x100)
    # moves the prediction far outside the tolerance
    v_vac = float(_stationary_var(par, FERRO2, xi, np.zeros(2), meas=False).mean())
    v_meas = float(_stationary_var(par, FERRO2, xi, np.zeros(2), vac=False).mean())
    assert _close(v_vac + v_meas, pred, 1e-9)
    for alt in (v_meas, 100 * v_vac + v_meas, v_vac, v_vac + 100 * v_meas):
        assert not _close(var, alt, 0.15), (var, alt, v_vac, v_meas)


def test_injection_noise_above_threshold():
    """Noise-free pulses (g2 = 0) at their coupled fixed point x_bar^2 = p - 1 + ln(1 + c)/dtau
    fluctuate only through the injection noise u (1 + sigma_inj N(0, 1))."""
    par = CIMParameters(
        p0=1.3, p1=1.3, round_trips=300, xi0=0.6, sigma_inj=0.01, g2=0.0, init_amplitude=0.5,
        **LINEAR,
    )
    r = simulate(FERRO2, None, par, runs=4000, seed=6, return_amplitudes=True)
    xi = r.info["xi"]
    c = par.dtau * xi
    xb = math.sqrt(par.p1 - 1 + math.log1p(c) / par.dtau)
    amps = np.abs(r.final_amplitudes)
    assert _close(float(amps.mean()), xb, 0.01)
    var = float(amps.var(axis=0).mean())
    pred = float(_stationary_var(par, FERRO2, xi, np.full(2, xb)).mean())
    assert _close(var, pred, 0.06), (var, pred)


def test_pump_ramp_noise_free_growth():
    """Noise-free, uncoupled, float64: x_k = x_0 prod_j sqrt(T) exp(dtau (p_j - x^2)) with the
    linear ramp p_j = p0 + (p1 - p0) j / K_ramp; x stays tiny so the product is exact."""
    par = CIMParameters(
        p0=0.5, p1=1.5, ramp_fraction=0.5, round_trips=200, g2=0.0, init_amplitude=1e-9,
        sigma_pump=0.0, dtype="float64",
    )
    x0 = np.array([1e-9])
    r = simulate(np.zeros((1, 1)), None, par, runs=1, x0=x0, engine="xp", record_runs=1)
    traj = r.trajectories[:, 0, 0]
    k = np.arange(200)
    p = par.pump(k)
    expect = 1e-9 * np.exp(np.cumsum(par.dtau * (p - 1.0)))
    small = expect < 1e-5  # x^2 < 1e-10: the saturation term is negligible
    assert small.sum() > 120  # the whole ramp and beyond
    np.testing.assert_allclose(traj[1:][small], expect[small], rtol=1e-6)


@pytest.mark.parametrize("engine", ["numba", "xp"])
def test_gain_saturation_fixed_point(engine):
    """A noise-free solitary pulse settles at x* = sqrt(p - 1) (saturation x^2 in the gain)."""
    par = CIMParameters(
        p0=1.5, p1=1.5, ramp_fraction=0.0, round_trips=300, g2=0.0, init_amplitude=0.1,
        sigma_pump=0.0,
    )
    r = simulate(np.zeros((1, 1)), None, par, runs=4, seed=1, engine=engine,
                 return_amplitudes=True)
    np.testing.assert_allclose(np.abs(r.final_amplitudes), math.sqrt(0.5), rtol=1e-4)


@pytest.mark.parametrize("latency", [1, 3])
def test_feedback_latency_impulse(latency):
    """Pulse 1 starts at 0.5, pulse 2 at 0 (no noise): pulse 2 stays exactly 0 until the
    measurement of round trip 0 comes back, L round trips later, as c * y_1(0)."""
    par = CIMParameters(
        p0=0.5, p1=0.5, round_trips=8, g2=0.0, init_amplitude=0.1, latency=latency,
        sigma_inj=0.0, **LINEAR,
    )
    r = simulate(FERRO2, None, par, runs=1, x0=np.array([0.5, 0.0]), record_runs=1,
                 engine="xp")
    x2 = r.trajectories[1:, 0, 1]  # after round trips 0, 1, ...
    assert np.all(x2[:latency] == 0.0), x2
    y1 = math.exp(-par.dtau) * 0.5 * math.exp(par.dtau * (0.5 - 0.25))
    assert x2[latency] == pytest.approx(par.dtau * r.info["xi"] * y1, rel=1e-5)


@pytest.mark.parametrize("engine", ["numba", "xp"])
def test_adc_quantisation_of_the_feedback(engine):
    """The FPGA sees the ADC code round(y / lsb) (lsb = 2 X_fs / 2**bits): the first injection
    into pulse 2 is c * lsb * round(y_1 / lsb), not c * y_1 (here y_1 is 2.4 lsb)."""
    par = CIMParameters(
        p0=0.5, p1=0.5, round_trips=2, g2=0.0, init_amplitude=0.1, latency=1, sigma_inj=0.0,
        dac_bits=None, coef_bits=None, sigma_pump=0.0, ramp_fraction=0.0, adc_bits=10,
    )
    lsb = 2 * par.adc_full_scale / 2**10
    st = math.exp(-par.dtau)
    # choose x1(0) so that y1 = 2.4 lsb after the gain
    y1 = 2.4 * lsb
    x1 = y1 / (st * math.exp(par.dtau * 0.5))  # x1^2 is negligible (1e-4): correct below
    for _ in range(5):
        x1 = y1 / (st * math.exp(par.dtau * (0.5 - x1 * x1)))
    r = simulate(FERRO2, None, par, runs=1, x0=np.array([x1, 0.0]), engine=engine,
                 return_amplitudes=True)
    x2 = float(r.final_amplitudes[0, 1])
    # round trip 1: x2 = G(0) = 0 after the gain, plus the injection of the code of y1
    assert x2 == pytest.approx(par.dtau * r.info["xi"] * 2 * lsb, rel=1e-5)


def test_int8_couplings_in_the_feedback():
    """The FPGA multiplies int8 couplings: J = [[0, 1, 0.3], ...] is scaled to 127 and rounded,
    so the coupling 0.3 acts as 38/127 = 0.29921 in the injection into pulse 3."""
    J = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.3], [0.0, 0.3, 0.0]])
    par = CIMParameters(
        p0=0.5, p1=0.5, round_trips=2, g2=0.0, init_amplitude=0.1, latency=1, sigma_inj=0.0,
        adc_bits=None, dac_bits=None, sigma_pump=0.0, ramp_fraction=0.0, coef_bits=8,
    )
    r = simulate(J, None, par, runs=1, x0=np.array([0.0, 0.5, 0.0]), engine="xp",
                 return_amplitudes=True, )
    y2 = math.exp(-par.dtau) * 0.5 * math.exp(par.dtau * (0.5 - 0.25))
    x3 = float(r.final_amplitudes[0, 2])
    assert x3 == pytest.approx(par.dtau * r.info["xi"] * (38 / 127) * y2, rel=1e-6)
    assert r.info["coupling_quantization_error"] == pytest.approx(abs(38 / 127 - 0.3), rel=1e-6)
