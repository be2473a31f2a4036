import numpy as np
import pytest
import scipy.sparse as sp

from kpp_sdk import (
    AsymmetricCouplingError,
    DiagonalCouplingError,
    EmptyProblemError,
    InvalidSpinsError,
    IsingProblem,
    NonFiniteError,
    NotSquareError,
    ProblemError,
    SizeMismatchError,
    quantize,
)
from kpp_sdk.exact import all_states


def brute_energy(J, h, offset, s):
    """Double loop straight from the definition E = -1/2 sum_ij J_ij s_i s_j - sum_i h_i s_i."""
    n = len(s)
    e = offset
    for i in range(n):
        e -= h[i] * s[i]
        for j in range(n):
            e -= 0.5 * J[i][j] * s[i] * s[j]
    return e


@pytest.fixture
def rnd():
    return IsingProblem.random_sk(7, seed=3, fields=True)


def test_energy_matches_the_definition_for_dense_and_sparse(rnd):
    p = IsingProblem(rnd.J, rnd.h, offset=2.5)
    states = all_states(7)
    expected = [brute_energy(p.J, p.h, 2.5, s) for s in states]
    np.testing.assert_allclose(p.energy(states), expected, atol=1e-12)
    np.testing.assert_allclose(p.to_sparse().energy(states), expected, atol=1e-12)
    assert p.energy(states[5]) == pytest.approx(expected[5])


def test_flip_changes_energy_by_two_s_times_local_field(rnd):
    s = all_states(7)[37]
    f = rnd.local_fields(s)[0]
    for i in range(7):
        t = s.copy()
        t[i] = -t[i]
        assert rnd.energy(t) - rnd.energy(s) == pytest.approx(2 * s[i] * f[i])


@pytest.mark.parametrize(
    "J,h,err,where",
    [
        (np.zeros((2, 3)), None, NotSquareError, "(2, 3)"),
        (np.zeros((0, 0)), None, EmptyProblemError, "no variables"),
        (np.array([[0, 1.0], [2.0, 0]]), None, AsymmetricCouplingError, "J[0, 1]"),
        (np.array([[0, np.nan], [np.nan, 0]]), None, NonFiniteError, "J[0, 1]"),
        (np.array([[1.0, 0], [0, 0]]), None, DiagonalCouplingError, "J[0, 0]"),
        (np.zeros((2, 2)), [1.0, 2.0, 3.0], SizeMismatchError, "3 entries"),
        (np.zeros((2, 2)), [1.0, np.inf], NonFiniteError, "h[1]"),
        (sp.csr_matrix(np.array([[0, 1.0], [0, 0]])), None, AsymmetricCouplingError, "not symmetric"),
        (sp.csr_matrix(np.array([[0, np.inf], [np.inf, 0]])), None, NonFiniteError, "J[0, 1]"),
        (sp.csr_matrix((2, 3)), None, NotSquareError, "(2, 3)"),
        (sp.csr_matrix(np.eye(2)), None, DiagonalCouplingError, "J[0, 0]"),
    ],
)
def test_validation_errors_name_the_problem_and_the_place(J, h, err, where):
    with pytest.raises(err) as info:
        IsingProblem(J, h)
    assert where in str(info.value)
    assert isinstance(info.value, ProblemError) and isinstance(info.value, ValueError)


def test_invalid_spins_are_rejected(rnd):
    with pytest.raises(InvalidSpinsError, match=r"spins\[0, 2\] = 0"):
        rnd.energy(np.array([1, 1, 0, 1, 1, 1, 1]))
    with pytest.raises(InvalidSpinsError, match="shape"):
        rnd.energy(np.ones((2, 6)))


def test_qubo_round_trip_is_exact_by_enumeration():
    rng = np.random.default_rng(0)
    Q = rng.normal(size=(6, 6))  # deliberately not symmetric
    p = IsingProblem.from_qubo(Q, offset=0.75)
    s = all_states(6)
    x = (s + 1) // 2
    np.testing.assert_allclose(p.energy(s), np.einsum("ki,ij,kj->k", x, Q, x) + 0.75, atol=1e-12)
    Q2, off2 = p.to_qubo()
    np.testing.assert_allclose(np.einsum("ki,ij,kj->k", x, Q2, x) + off2, p.energy(s), atol=1e-12)
    assert IsingProblem.from_qubo(Q2, off2).allclose(p)
    assert not IsingProblem.from_qubo(Q2, off2 + 1e-6).allclose(p)
    ps = IsingProblem.from_qubo(sp.csr_matrix(Q), 0.75)
    np.testing.assert_allclose(ps.energy(s), p.energy(s), atol=1e-12)


def test_kaiwu_matrix_energy_and_round_trip(rnd):
    M = rnd.to_kaiwu()
    assert M.shape == (8, 8) and np.allclose(M, M.T)
    s = all_states(7)
    sa = np.hstack([s, np.ones((len(s), 1), dtype=np.int8)])
    np.testing.assert_allclose(-np.einsum("ki,ij,kj->k", sa, M, sa), rnd.energy(s), atol=1e-12)
    assert IsingProblem.from_kaiwu(M, rnd.offset).allclose(rnd)
    # gauge fix: a state with the ancilla at -1 is the flipped state
    flipped = np.hstack([-s[:3], -np.ones((3, 1), dtype=np.int8)])
    np.testing.assert_array_equal(IsingProblem.spins_from_kaiwu(flipped), s[:3])


def test_quantize_to_8_bits():
    p = IsingProblem.random_sk(20, seed=1, fields=True)
    q = quantize(p, bits=8)
    coeffs = np.r_[q.problem.J.ravel(), q.problem.h]
    assert np.abs(coeffs).max() == 127
    assert np.array_equal(coeffs, np.round(coeffs))
    assert q.scale == pytest.approx(127 / p.max_abs_coefficient())
    worst = max(np.abs(q.problem.J / q.scale - p.J).max(), np.abs(q.problem.h / q.scale - p.h).max())
    assert q.max_error == pytest.approx(worst)
    assert 0 < q.max_error <= 0.5 / q.scale + 1e-15
    # +-1 couplings scale to +-127 with no rounding at all
    pm = IsingProblem.random_sk(20, seed=2, gaussian=False)
    qi = pm.quantize(8)
    assert qi.max_error == 0.0 and qi.scale == 127.0
    np.testing.assert_array_equal(qi.problem.J, 127 * pm.J)


def test_from_ising_dicts_and_repr():
    p = IsingProblem.from_ising_dicts({0: 1.0}, {(0, 1): -2.0, (1, 2): 0.5})
    assert p.n == 3 and p.is_sparse
    assert p.J[0, 1] == p.J[1, 0] == -2.0
    assert "n=3" in repr(p)
    with pytest.raises(DiagonalCouplingError):
        IsingProblem.from_ising_dicts({}, {(1, 1): 1.0})
