"""Profiles, parameter validation and bad input."""

import math

import numpy as np
import pytest
import scipy.sparse as sp
from kpp_sdk.emulator import (
    CIMParameters,
    ParameterError,
    ProblemError,
    SpinLimitError,
    UnknownProfileError,
    check_problem,
    get_profile,
    list_profiles,
    simulate,
)


def test_known_profiles():
    assert set(list_profiles()) == {"qboson-550", "ntt-2000", "ideal"}
    q = get_profile()
    assert q.name == "qboson-550" and q.max_spins == 550 and q.coefficient_bits == 8
    assert q.fiber_length_m == 1000.0
    assert q.round_trip_time_s == pytest.approx(4.897e-6, rel=1e-3)
    n = get_profile("ntt-2000")
    assert n.max_spins == 2000 and n.round_trip_time_s == pytest.approx(4.90e-6, rel=1e-2)
    i = get_profile("ideal")
    c = i.cim
    assert c.coef_bits is None and c.adc_bits is None and c.dac_bits is None
    assert c.sigma_pump == c.sigma_inj == c.sigma_el == 0.0


def test_unknown_profile_lists_names():
    with pytest.raises(UnknownProfileError) as ei:
        get_profile("dwave")
    assert isinstance(ei.value, ValueError)
    for name in ("qboson-550", "ntt-2000", "ideal"):
        assert name in str(ei.value)


@pytest.mark.parametrize(
    "kw, name",
    [
        ({"dtau": -0.1}, "dtau"),
        ({"loss_db": -1.0}, "loss_db"),
        ({"transmission": 1.2}, "transmission"),
        ({"transmission": 0.0}, "transmission"),
        ({"detector_efficiency": 1.2}, "detector_efficiency"),
        ({"detector_efficiency": 0.0}, "detector_efficiency"),
        ({"adc_bits": 0}, "adc_bits"),
        ({"coef_bits": 1}, "coef_bits"),
        ({"sigma_pump": -0.01}, "sigma_pump"),
        ({"sigma_el": -1e-3}, "sigma_el"),
        ({"g2": -1e-4}, "g2"),
        ({"tap_ratio": 1.5}, "tap_ratio"),
        ({"feedback": "magic"}, "feedback"),
        ({"round_trips": 0}, "round_trips"),
        ({"p1": float("nan")}, "p1"),
        ({"no_such_thing": 1}, "no_such_thing"),
    ],
)
def test_parameter_validation_names_parameter(kw, name):
    with pytest.raises(ParameterError) as ei:
        get_profile("qboson-550", **kw)
    msg = str(ei.value)
    assert isinstance(ei.value, ValueError)
    assert name in msg and "allowed" in msg
    assert ei.value.name == name


def test_replace_and_derived():
    p = CIMParameters().replace(loss_db=10 * math.log10(math.e))  # T = 1/e -> dtau = 0.5
    assert p.dtau == pytest.approx(0.5)
    assert p.transmission == pytest.approx(math.exp(-1.0))
    q = get_profile("qboson-550", xi0=0.8, fiber_length_m=2000.0)
    assert q.cim.xi0 == 0.8 and q.round_trip_time_s == pytest.approx(2 * 4.897e-6, rel=1e-3)
    assert get_profile("qboson-550").cim.xi0 == 0.6  # the registry is not mutated
    with pytest.raises(ParameterError):
        CIMParameters(dtau=0.5).replace(p1=4.0)  # dtau*(p-1) >= 1: unstable gain map


def test_spin_limit():
    q = get_profile("qboson-550")
    check_problem(q, 550)
    with pytest.raises(SpinLimitError) as ei:
        check_problem(q, 551)
    assert isinstance(ei.value, ValueError) and "550" in str(ei.value)
    check_problem(get_profile("ntt-2000"), 2000, has_field=True)
    check_problem(get_profile("ideal"), 100_000)


def test_profile_rejects_spin_limit_above_slots():
    with pytest.raises(ParameterError):
        get_profile("qboson-550").replace(fiber_length_m=50.0)  # 244 slots < 550 spins


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_couplings(bad):
    J = np.array([[0.0, 1.0], [1.0, 0.0]])
    J[0, 1] = J[1, 0] = bad
    with pytest.raises(ProblemError) as ei:
        simulate(J, runs=2, params=CIMParameters(round_trips=5))
    assert isinstance(ei.value, ValueError) and "non-finite" in str(ei.value)
    with pytest.raises(ProblemError):
        simulate(sp.csr_matrix(J), runs=2, params=CIMParameters(round_trips=5))
    with pytest.raises(ProblemError):
        simulate(
            np.zeros((2, 2)), h=np.array([bad, 0.0]), runs=2, params=CIMParameters(round_trips=5)
        )


def test_malformed_problems():
    p = CIMParameters(round_trips=5)
    with pytest.raises(ProblemError):
        simulate(np.ones((2, 3)), params=p)
    with pytest.raises(ProblemError):
        simulate(np.array([[0.0, 1.0], [2.0, 0.0]]), params=p)  # asymmetric
    with pytest.raises(ProblemError):
        simulate(np.eye(2), params=p)  # non-zero diagonal
    with pytest.raises(ProblemError):
        simulate(np.zeros((2, 2)), h=np.ones(3), params=p)
    with pytest.raises(ParameterError):
        simulate(np.zeros((2, 2)), params=p, runs=0)


@pytest.mark.parametrize("name,limit", [("qboson-550", 550), ("ntt-2000", 2000)])
def test_sample_over_spin_limit_raises_before_work(name, limit):
    from kpp_sdk.emulator import sample

    J = np.zeros((limit + 1, limit + 1))
    with pytest.raises(SpinLimitError) as ei:
        sample(get_profile(name), J, runs=1, round_trips=1)
    assert ei.value.n_spins == limit + 1 and ei.value.limit == limit
    assert name in str(ei.value) and str(limit) in str(ei.value)


@pytest.mark.parametrize(
    "kw, name",
    [({"loss_db": -3.0}, "loss_db"), ({"detector_efficiency": 1.01}, "detector_efficiency")],
)
def test_bad_physical_parameter_through_sample(kw, name):
    from kpp_sdk.emulator import sample

    with pytest.raises(ParameterError) as ei:
        sample(get_profile("qboson-550"), np.zeros((3, 3)), runs=1, **kw)
    assert ei.value.name == name
