"""V7 (docs/cim-physics.md section 8): int8 quantisation of the couplings.

The FPGA takes J (with h through the ancilla) rescaled so that max|J_ij| = 127 and rounded.
For integer +-1 couplings (and integer ones with max|J| = 127) this is exact up to the scale,
so the quantised optimum is the float optimum; for real-valued J we compute the gap
E(s*_int8) - E(s*_float) >= 0 exactly by enumeration.
"""

import numpy as np
import pytest
from kpp_sdk.emulator import CIMParameters, ising_energy, quantize_couplings, simulate
from kpp_sdk.emulator.calibration import enumerate_energies
from kpp_sdk.emulator.coupling import augment_with_ancilla


def _opt(J, h=None):
    e = enumerate_energies(J, h)
    return e, int(np.argmin(e)), float(e.min())


def test_pm1_quantisation_exact(instance):
    J, g = instance("SK", 20, 0)
    Jq, scale, err = quantize_couplings(J, 8)
    assert err == 0.0 and scale == pytest.approx(1 / 127)
    assert np.array_equal(Jq, 127 * J)
    e_f, _i_f, m_f = _opt(J)
    _e_q, i_q, m_q = _opt(Jq * scale)
    assert m_f == g == m_q
    assert e_f[i_q] == m_f  # the quantised optimum is a float optimum: zero gap


def test_integer_couplings_up_to_127_exact():
    rng = np.random.default_rng(1)
    A = rng.integers(-127, 128, size=(12, 12)).astype(float)
    J = np.triu(A, 1)
    J = J + J.T
    J[0, 1] = J[1, 0] = 127.0
    Jq, scale, err = quantize_couplings(J, 8)
    assert scale == 1.0 and err == 0.0 and np.array_equal(Jq, J)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_real_valued_gap(seed):
    """Measured: gap 0 for all three seeds at 8 bits (max rounding error ~0.01 of |J| ~ 1-4)."""
    rng = np.random.default_rng(seed)
    n = 14
    A = rng.standard_normal((n, n))
    J = np.triu(A, 1)
    J = J + J.T
    h = 0.3 * rng.standard_normal(n)
    M = augment_with_ancilla(J, h)
    Mq, scale, err = quantize_couplings(M, 8)
    assert np.max(np.abs(Mq)) == 127
    assert err <= scale / 2 + 1e-12
    assert np.allclose(Mq * scale, M, atol=scale / 2 + 1e-12)
    e_f, _i_f, m_f = _opt(J, h)
    # the quantised problem, read back through the ancilla (last row/column)
    Jq = Mq[:n, :n] * scale
    hq = Mq[:n, n] * scale
    _e_q, i_q, _m_q = _opt(Jq, hq)
    gap = e_f[i_q] - m_f
    assert gap >= 0.0
    # the gap is bounded by the energy change of the rounding: |dE| <= sum_{i<j}|dJ| + sum|dh|
    dJ = np.abs(Jq - J)
    bound = 2 * (np.triu(dJ, 1).sum() + np.abs(hq - h).sum())
    assert gap <= bound
    assert gap / abs(m_f) < 0.02  # small for 8 bits on these instances
    # the emulator (int8 couplings, field through the ancilla) reports energies of the
    # gauge-fixed spins with the float J, h; none can beat the float optimum
    r = simulate(J, h, CIMParameters(), runs=200, seed=seed)
    assert np.allclose(r.energies, ising_energy(J, h, r.spins))
    assert r.energies.min() >= m_f - 1e-9


def test_gap_appears_with_coarse_coefficients():
    """The gap computation on a case where it is non-zero: 3-bit coefficients, seed 2
    (measured gap 0.1937, 0.66% of |E_opt|)."""
    rng = np.random.default_rng(2)
    n = 14
    A = rng.standard_normal((n, n))
    J = np.triu(A, 1)
    J = J + J.T
    h = 0.3 * rng.standard_normal(n)
    Mq, scale, _err = quantize_couplings(augment_with_ancilla(J, h), 3)
    assert np.max(np.abs(Mq)) == 3
    e_f = enumerate_energies(J, h)
    e_q = enumerate_energies(Mq[:n, :n] * scale, Mq[:n, n] * scale)
    i_q = int(np.argmin(e_q))
    s_q = 1 - 2 * ((i_q >> np.arange(n)) & 1)
    gap = ising_energy(J, h, s_q) - e_f.min()
    assert gap == pytest.approx(e_f[i_q] - e_f.min())
    assert gap == pytest.approx(0.1937, abs=1e-3)
