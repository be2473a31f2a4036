"""What the Kaiwu stand-in's optimizers share: reading a Kaiwu matrix, the seed Kaiwu does not
take, and spins with the ancilla."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InvalidOptionError, NotSquareError
from ..problem import IsingProblem


def kaiwu_problem(ising_matrix: Any) -> IsingProblem:
    """The :class:`IsingProblem` of a Kaiwu matrix (energy ``-s^T M s``, ancilla last).

    Kaiwu's energy is defined for any square ``M``, and ``-s^T M s = -s^T ((M + M^T)/2) s``, so
    a triangular matrix (as some Kaiwu conversions return) is symmetrised first; a diagonal is a
    constant (``s_i^2 = 1``)."""
    if ising_matrix is None:
        raise InvalidOptionError("no Ising matrix: pass solve(ising_matrix) or set_matrix() first")
    M = np.asarray(ising_matrix, dtype=np.float64)
    if M.ndim != 2 or M.shape[0] != M.shape[1] or M.shape[0] < 2:
        raise NotSquareError(
            f"a Kaiwu Ising matrix is square with N spins + 1 ancilla (at least 2 rows), got "
            f"shape {M.shape}")
    return IsingProblem.from_kaiwu(0.5 * (M + M.T))


def numpy_seed(seed: int | None) -> int:
    """Kaiwu's optimizers draw from NumPy's global generator (``np.random.seed`` makes a run
    repeatable); an explicit seed wins."""
    if seed is not None:
        return int(seed)
    return int(np.random.randint(0, 2**31 - 1))


def with_ancilla(spins: np.ndarray) -> np.ndarray:
    """``(k, N)`` spins -> ``(k, N+1)`` int8 with the ancilla +1 (Kaiwu's output layout)."""
    spins = np.asarray(spins, dtype=np.int8)
    return np.concatenate([spins, np.ones((spins.shape[0], 1), dtype=np.int8)], axis=1)


def initial_spins(init_solution: Any, n: int, reads: int) -> np.ndarray:
    """Kaiwu's ``init_solution`` (``(N+1,)`` or ``(k, N+1)`` spins, ancilla last) as ``(reads, N)``
    starting states (rows repeated in turn)."""
    s = np.asarray(init_solution)
    s = s[None, :] if s.ndim == 1 else s
    spins = IsingProblem.spins_from_kaiwu(s, n)
    return spins[np.arange(reads) % spins.shape[0]]
