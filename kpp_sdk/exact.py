"""Exact answers by enumeration, for small problems: the ground truth tests compare against."""

from __future__ import annotations

import numpy as np

from .errors import ProblemTooLargeError
from .problem import IsingProblem

__all__ = ["all_states", "exact_energies", "ground_state", "boltzmann_distribution",
           "empirical_distribution", "total_variation", "state_index", "MAX_ENUMERATION_SPINS"]

MAX_ENUMERATION_SPINS = 24


def all_states(n: int) -> np.ndarray:
    """All ``2^n`` spin configurations, row ``k`` is the binary expansion of ``k`` (bit i -> spin i,
    1 -> +1), shape ``(2^n, n)`` int8."""
    if n > MAX_ENUMERATION_SPINS:
        raise ProblemTooLargeError(f"enumeration is limited to {MAX_ENUMERATION_SPINS} spins, got {n}")
    k = np.arange(2**n, dtype=np.int64)[:, None]
    bits = (k >> np.arange(n, dtype=np.int64)) & 1
    return (2 * bits - 1).astype(np.int8)


def state_index(spins: np.ndarray) -> np.ndarray:
    """Inverse of :func:`all_states`: the row index of each configuration."""
    s = np.asarray(spins)
    return ((s > 0).astype(np.int64) << np.arange(s.shape[1], dtype=np.int64)).sum(axis=1)


def exact_energies(problem: IsingProblem) -> np.ndarray:
    """Energy of every state in :func:`all_states` order."""
    return problem.energy(all_states(problem.n))


def ground_state(problem: IsingProblem) -> tuple[float, np.ndarray]:
    """``(E_min, states)``: the ground energy and every state attaining it (within 1e-9)."""
    states = all_states(problem.n)
    e = problem.energy(states)
    emin = float(e.min())
    return emin, states[np.abs(e - emin) <= 1e-9 * max(1.0, abs(emin))]


def boltzmann_distribution(problem: IsingProblem, beta: float) -> np.ndarray:
    """``p(s) ∝ exp(-beta E(s))`` over :func:`all_states`."""
    e = exact_energies(problem)
    w = np.exp(-beta * (e - e.min()))
    return w / w.sum()


def empirical_distribution(problem_n: int, spins: np.ndarray, num_occurrences=None) -> np.ndarray:
    """Histogram of samples over :func:`all_states` order, normalised."""
    idx = state_index(spins)
    w = None if num_occurrences is None else np.asarray(num_occurrences, dtype=np.float64)
    counts = np.bincount(idx, weights=w, minlength=2**problem_n).astype(np.float64)
    return counts / counts.sum()


def total_variation(p: np.ndarray, q: np.ndarray) -> float:
    return 0.5 * float(np.abs(np.asarray(p) - np.asarray(q)).sum())
