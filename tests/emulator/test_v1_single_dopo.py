"""V1 (docs/cim-physics.md section 8): a single DOPO, J = 0, 1e5 runs.

Above threshold <|x|> = sqrt(p - 1) and the sign is a fair coin; below threshold the
linearised map gives Var x = (1-T)(g^2/4)/(1 - exp(-2 dtau (1-p))) and
Var y = (1-T)(g^2/4)/(1 - exp(-2 dtau (1+p))).
"""

import math

import numpy as np
import pytest
from kpp_sdk.emulator import CIMParameters, simulate

RUNS = 100_000
ENGINES = ["numba", "xp"]


@pytest.mark.parametrize("engine", ENGINES)
def test_above_threshold_amplitude_and_sign(engine):
    p = CIMParameters(p0=1.5, p1=1.5, round_trips=200, track_quadrature=True)
    r = simulate(
        np.zeros((1, 1)), None, p, runs=RUNS, seed=11, engine=engine, return_amplitudes=True
    )
    x = r.final_amplitudes[:, 0]
    mean_abs = float(np.abs(x).mean())
    assert mean_abs == pytest.approx(math.sqrt(0.5), rel=0.01)  # 0.707 +- 1%
    assert abs(float((x > 0).mean()) - 0.5) < 0.01
    assert abs(float((r.spins[:, 0] > 0).mean()) - 0.5) < 0.01


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("pump", [0.0, 0.5, 0.9])
def test_below_threshold_variances(engine, pump):
    p = CIMParameters(p0=pump, p1=pump, round_trips=120, track_quadrature=True)
    r = simulate(
        np.zeros((1, 1)), None, p, runs=RUNS, seed=5, engine=engine, return_amplitudes=True
    )
    T, g2, d = p.transmission, p.g2, p.dtau
    var_x = (1 - T) * (g2 / 4) / (1 - math.exp(-2 * d * (1 - pump)))
    var_y = (1 - T) * (g2 / 4) / (1 - math.exp(-2 * d * (1 + pump)))
    assert float(r.final_amplitudes[:, 0].var()) == pytest.approx(var_x, rel=0.03)
    assert float(r.final_quadratures[:, 0].var()) == pytest.approx(var_y, rel=0.03)
    # continuum limits (g^2/4)/(1 -+ p) are only approached for small dtau; the map's values
    # are what the hardware with finite round-trip loss shows.
