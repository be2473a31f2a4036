"""Inverse-temperature schedules shared by the annealers (``sa.cpu``, ``sa.gpu``)."""

from __future__ import annotations

import math
import weakref
from typing import Any

import numpy as np

from kpp_sdk.errors import InvalidOptionError
from kpp_sdk.problem import IsingProblem

__all__ = ["default_beta_range", "make_schedule", "seed_streams", "SCHEDULES", "ACCEPTANCES"]

SCHEDULES = ("geometric", "linear")
ACCEPTANCES = ("metropolis", "gibbs")


_last_range: tuple = (None, None)  # (weakref to the last problem, its range): see below


def default_beta_range(problem: IsingProblem) -> tuple[float, float]:
    """The default ``(beta_hot, beta_cold)``.

    Rule: at ``beta_hot`` the largest possible single-spin energy increase,
    ``max_i 2 (|h_i| + sum_j |J_ij|)``, is accepted with probability 1/2; at ``beta_cold`` the
    smallest nonzero one, ``2 min(|J_ij|, |h_i| != 0)``, is accepted with probability 1/100. So the
    anneal starts where almost every move is taken and ends where only downhill moves are.
    """
    # problems are immutable, and a device computes the range twice per job (when it validates
    # the options at submit, and when it runs): remember the last one (two passes over a dense
    # J, ~0.1 ms at n = 256, a fifth of a small selection job's overhead)
    global _last_range
    last, rng = _last_range  # one tuple, rebound atomically: safe across threads
    if last is not None and last() is problem:
        return rng
    rng = _beta_range(problem)
    _last_range = (weakref.ref(problem), rng)
    return rng


def _beta_range(problem: IsingProblem) -> tuple[float, float]:
    J = problem.J
    if problem.is_sparse:
        absJ = abs(J)
        rows = np.asarray(absJ.sum(axis=1)).ravel()
        dmax = float(2.0 * (rows + np.abs(problem.h)).max())
        nz_min = float(absJ.data.min()) if absJ.nnz else np.inf
    else:  # one compiled pass, no n x n temporaries (this runs on every submit)
        from ._sa_kernels import dense_abs_stats

        top, nz_min = dense_abs_stats(J, problem.h)
        dmax, nz_min = float(2.0 * top), float(nz_min)
    hz = np.abs(problem.h)[problem.h != 0]
    cands = [nz_min] if np.isfinite(nz_min) else []
    if hz.size:
        cands.append(float(hz.min()))
    if dmax == 0 or not cands:
        return 0.1, 1.0  # no interactions at all: any schedule samples the flat distribution
    dmin = 2.0 * min(cands)
    hot = math.log(2.0) / dmax
    cold = math.log(100.0) / dmin
    return hot, max(cold, hot)


def make_schedule(problem: IsingProblem, *, num_sweeps: int, beta_range: Any = None,
                  beta_schedule: Any = "geometric", mode: str = "anneal",
                  beta: float | None = None) -> np.ndarray:
    """One beta per sweep (float64, length ``num_sweeps``, or the custom array's length).

    ``mode="anneal"``: ``beta_schedule`` is ``"geometric"`` (default), ``"linear"`` or an array
    of betas; ``beta_range`` defaults to :func:`default_beta_range`. ``mode="sample"``: every sweep
    at the fixed ``beta`` (Boltzmann sampling at that inverse temperature).
    """
    if mode not in ("anneal", "sample"):
        raise InvalidOptionError(f"mode must be 'anneal' or 'sample', got {mode!r}")
    if isinstance(num_sweeps, bool) or not isinstance(num_sweeps, (int, np.integer)) or num_sweeps < 1:
        raise InvalidOptionError(f"num_sweeps must be a positive integer, got {num_sweeps!r}")
    if mode == "sample":
        if beta is None:
            raise InvalidOptionError("mode='sample' needs beta=<inverse temperature>, e.g. beta=1.0")
        beta = _positive_beta(beta, "beta")
        return np.full(int(num_sweeps), beta)
    if beta is not None:
        raise InvalidOptionError("beta is for mode='sample'; for annealing give beta_range=(hot, cold)")
    if not isinstance(beta_schedule, str):
        betas = np.asarray(beta_schedule, dtype=np.float64)
        if betas.ndim != 1 or betas.size == 0:
            raise InvalidOptionError("a custom beta_schedule must be a non-empty 1-D array of betas")
        bad = ~np.isfinite(betas) | (betas < 0)
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise InvalidOptionError(f"beta_schedule[{k}] = {betas[k]}; betas must be finite and >= 0")
        return betas
    if beta_schedule not in SCHEDULES:
        raise InvalidOptionError(
            f"beta_schedule must be one of {SCHEDULES} or an array of betas, got {beta_schedule!r}"
        )
    if beta_range is None:
        b0, b1 = default_beta_range(problem)
    else:
        try:
            b0, b1 = (float(b) for b in beta_range)
        except (TypeError, ValueError):
            raise InvalidOptionError(f"beta_range must be a pair (hot, cold), got {beta_range!r}") from None
        b0, b1 = _positive_beta(b0, "beta_range[0]"), _positive_beta(b1, "beta_range[1]")
    if num_sweeps == 1:
        return np.array([b1])
    if beta_schedule == "geometric":
        return np.geomspace(b0, b1, int(num_sweeps))
    return np.linspace(b0, b1, int(num_sweeps))


def _positive_beta(b: Any, what: str) -> float:
    try:
        b = float(b)
    except (TypeError, ValueError):
        raise InvalidOptionError(f"{what} must be a positive number, got {b!r}") from None
    if not (np.isfinite(b) and b > 0):
        raise InvalidOptionError(f"{what} must be a positive finite number, got {b}")
    return b


def seed_streams(seed: int, num_reads: int) -> np.ndarray:
    """One independent 64-bit seed per read from ``SeedSequence(seed)``; reads never share a stream
    and the result does not depend on how reads are split over threads or devices."""
    return np.random.SeedSequence(seed).generate_state(num_reads, dtype=np.uint64)


def check_initial_states(initial_states: Any, num_reads: int, n: int) -> np.ndarray | None:
    if initial_states is None:
        return None
    s = np.asarray(initial_states)
    if s.ndim == 1:
        s = np.broadcast_to(s, (num_reads, s.shape[0]))
    if s.shape != (num_reads, n):
        raise InvalidOptionError(
            f"initial_states must have shape ({num_reads}, {n}) or ({n},), got {np.shape(initial_states)}"
        )
    if np.any((s != 1) & (s != -1)):
        raise InvalidOptionError("initial_states must hold only -1 and +1")
    return np.ascontiguousarray(s, dtype=np.int8)
