"""cim.kaiwu: the conversion to and from QBoson's Kaiwu format, checked with a stand-in optimizer
that solves the (n+1)x(n+1) matrix exactly. The live test needs the kaiwu package (CPython
3.10) and credentials."""

import itertools
import os

import numpy as np
import pytest
from kpp_sdk.devices.cim_kaiwu import KaiwuCIM, kaiwu_matrix, spins_from_kaiwu_output

import kpp_sdk
from kpp_sdk import (
    InvalidResponseError,
    IsingProblem,
    JobFailedError,
    MissingDependencyError,
    ProblemTooLargeError,
)
from kpp_sdk.exact import ground_state


class ExactKaiwuSolver:
    """Enumerates all (n+1)-spin states and returns the lowest of ``H(x) = -x^T M x``, both
    members of each ``(x, -x)`` pair, as the machine may report either gauge."""

    def __init__(self, keep: int = 6):
        self.keep = keep
        self.matrices: list[np.ndarray] = []

    def solve(self, matrix):
        M = np.asarray(matrix, dtype=float)
        self.matrices.append(M)
        states = np.array(list(itertools.product([-1, 1], repeat=M.shape[0])), dtype=np.int8)
        H = -np.einsum("ki,ij,kj->k", states, M, states)
        return states[np.argsort(H, kind="stable")[: self.keep]]


def test_the_kaiwu_matrix_is_integer_8_bit_and_encodes_the_problem():
    p = IsingProblem.random_sk(9, seed=4, fields=True)
    M, qp = kaiwu_matrix(p)
    assert M.shape == (10, 10) and np.array_equal(M, M.T) and not np.any(np.diag(M))
    assert np.array_equal(M, np.round(M)) and np.abs(M).max() == 127
    np.testing.assert_allclose(M / (2 * qp.scale), p.to_kaiwu(), atol=qp.max_error)
    # -[s,1]^T M [s,1] is twice the quantized energy (up to its offset) for every s
    s = np.array(list(itertools.product([-1, 1], repeat=9)), dtype=np.int8)
    x = np.hstack([s, np.ones((len(s), 1), np.int8)]).astype(float)
    lhs = -np.einsum("ki,ij,kj->k", x, M, x)
    np.testing.assert_allclose(lhs, 2 * (qp.problem.energy(s) - qp.problem.offset))


def test_the_adapter_returns_gauge_fixed_ground_states_with_recomputed_energies():
    # integer couplings up to 127: 8-bit quantization is exact, so the machine's optimum is ours
    rng = np.random.default_rng(7)
    J = np.triu(rng.integers(-127, 128, size=(8, 8)), 1).astype(float)
    J[0, 1] = 127
    p = IsingProblem(J + J.T, rng.integers(-50, 51, size=8).astype(float), offset=3.0)
    solver = ExactKaiwuSolver(keep=6)
    dev = KaiwuCIM(optimizer=solver)
    ss = dev.sample(p, num_reads=6, seed=0)
    emin, _ = ground_state(p)
    assert ss.best_energy == pytest.approx(emin)
    np.testing.assert_allclose(ss.energies, p.energy(ss.spins))
    raw = solver.solve(solver.matrices[0])
    assert (raw[:, -1] == -1).any(), "the stand-in reports flipped gauges too"
    # each returned row maps to the state with ancilla +1 of the same pair: same energy order
    H = -np.einsum("ki,ij,kj->k", raw, solver.matrices[0], raw)
    np.testing.assert_allclose(np.sort(2 * (ss.energies - p.offset)), np.sort(H))
    assert ss.info["device"] == "cim.kaiwu" and ss.info["quantization_max_error"] == 0.0


def test_spins_from_the_machine_are_checked():
    with pytest.raises(InvalidResponseError, match=r"\(num_samples, 5\)"):
        spins_from_kaiwu_output(np.ones((3, 4)), 4)
    with pytest.raises(InvalidResponseError, match="-1 and \\+1"):
        spins_from_kaiwu_output(np.zeros((3, 5)), 4)

    class Broken:
        def solve(self, matrix):
            return np.ones((2, 3))

    job = KaiwuCIM(optimizer=Broken()).submit(IsingProblem.random_sk(6, seed=0), num_reads=2)
    with pytest.raises(JobFailedError) as info:
        job.result(timeout=30)
    assert isinstance(info.value.__cause__, InvalidResponseError)


def test_problems_over_the_hardware_size_are_rejected_before_submission():
    dev = KaiwuCIM(optimizer=ExactKaiwuSolver())
    assert dev.properties.max_spins == 549 and dev.properties.coefficient_bits == 8
    with pytest.raises(ProblemTooLargeError, match="549"):
        dev.submit(IsingProblem.random_sk(550, seed=0), num_reads=1)


def test_sdk_code_never_shows_and_missing_kaiwu_names_the_install():
    dev = KaiwuCIM(user_id="u1", sdk_code="s3cr3t-sdk-code-0123", optimizer=ExactKaiwuSolver())
    assert "s3cr3t-sdk-code-0123" not in repr(dev)
    try:
        import kaiwu  # noqa: F401
    except ImportError:
        with pytest.raises(MissingDependencyError, match="pip install kaiwu"):
            kpp_sdk.get_device("cim.kaiwu")
    else:  # pragma: no cover - only where the SDK installs (CPython 3.10)
        assert kpp_sdk.get_device("cim.kaiwu").name == "cim.kaiwu"


@pytest.mark.live
def test_live_kaiwu_cloud_finds_a_small_ground_state():
    pytest.importorskip("kaiwu", reason="the kaiwu SDK is not installed (CPython 3.10 only)")
    if not (os.environ.get("KAIWU_USER_ID") and os.environ.get("KAIWU_SDK_CODE")):
        pytest.skip("set KAIWU_USER_ID and KAIWU_SDK_CODE to run against QBoson's cloud")
    p = IsingProblem.random_sk(12, seed=1, fields=True)
    ss = kpp_sdk.get_device("cim.kaiwu").sample(p, num_reads=20, seed=0, timeout=3600)
    emin, _ = ground_state(p)
    assert ss.best_energy <= emin + 1e-6 + 0.05 * abs(emin)
