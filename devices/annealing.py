"""What the annealers (``sa.cpu``, ``sa.gpu``) share: their options (:data:`SA_OPTIONS`), the
inverse-temperature schedules, the per-read random streams and the plan of one job
(:class:`AnnealPlan`: schedule and starting states, built once when the job is validated)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from kpp_sdk.errors import InvalidOptionError
from kpp_sdk.options import Option, OptionSpec
from kpp_sdk.problem import IsingProblem

__all__ = ["default_beta_range", "make_schedule", "seed_streams", "check_initial_states",
           "check_mode", "AnnealPlan", "SA_OPTIONS", "SCHEDULES", "ACCEPTANCES", "MODES",
           "schedule_length", "anneal_memory", "MAX_SWEEPS", "COLD_EXCITATIONS",
           "COLD_EXCITATIONS_PER_SPIN"]

SCHEDULES = ("geometric", "linear")
#: Upper bound of ``num_sweeps`` (a schedule of 1e9 betas is 8 GB); the job limits
#: (:mod:`kpp_sdk.limits`) usually refuse far less.
MAX_SWEEPS = 10**9
ACCEPTANCES = ("metropolis", "gibbs")
MODES = ("anneal", "sample")


#: The expected number of single-spin excitations per sweep out of a local minimum at the cold
#: end of the default schedule (:func:`default_beta_range`)...
COLD_EXCITATIONS = 0.1
#: ...and at most this many per spin, so that a small problem also ends frozen (a one-spin
#: problem would otherwise end excited in ~1 read in 11; 1/100 per spin is the older rule).
COLD_EXCITATIONS_PER_SPIN = 0.01


def default_beta_range(problem: IsingProblem) -> tuple[float, float]:
    """The default ``(beta_hot, beta_cold)``, from the problem's energy scale.

    Hot: with ``sigma_i = sqrt(h_i**2 + sum_j J_ij**2)``, the root-mean-square local field of
    spin ``i`` over uniformly random states, a typical uphill move of the stiffest spin
    (``dE = 2 max_i sigma_i``) is accepted with probability 1/2: the anneal starts disordered
    but not at infinite temperature (the worst-case field ``|h_i| + sum_j |J_ij|`` used before
    made the first ~20 % of SK sweeps random flips).

    Cold: the expected number of excitations per sweep out of a local minimum,
    ``sum_i exp(-beta dE_i)``, is :data:`COLD_EXCITATIONS` (0.1), or 0.01 per spin on problems
    of fewer than 10 spins (:data:`COLD_EXCITATIONS_PER_SPIN`), with ``dE_i`` estimated twice;
    the smaller beta is taken (either bound already freezes the reads):

    * discrete: ``dE_i = 2 min(|h_i| != 0, |J_ij| != 0)``, every spin at its smallest possible
      excitation (tight for integer couplings; dwave-samplers' rule with that target);
    * continuous: the local fields at a local minimum of a dense spin glass have a linear
      pseudo-gap, ``P(|f|) ~ |f| / sigma**2``, so ``sum_i exp(-2 beta |f_i|) ~ n / (4 beta**2
      sigma**2)``, giving ``beta = sqrt(n / 0.1) / (2 sigma)``. Here ``sigma**2`` is the mean
      over spins of ``(h_i - mean(h))**2 + sum_j (J_ij - m_i)**2``, ``m_i`` the mean coupling of
      spin ``i``: a uniform part of the couplings and fields (a ferromagnet, a cardinality
      penalty) orders or constrains the spins rather than frustrating them, and would otherwise
      end the anneal before the rest of the energy is resolved.

    For Gaussian couplings the discrete bound (the smallest ``|J_ij|``, ~1e-6) ended the anneal
    at beta ~ 1e6, about 60 % of the sweeps after the last flip; the continuous one ends at
    beta ~ 1.6 for SK n = 1000. No interactions at all: ``(0.1, 1.0)``.
    """
    from ._sa_kernels import row_stats

    J, h, n = problem.J, problem.h, problem.n
    _, sq_sum, nz_min, _ = row_stats(J, h)
    active = sq_sum > 0
    if not active.any():
        return 0.1, 1.0  # no interactions at all: any schedule samples the flat distribution
    hot = math.log(2.0) / (2.0 * math.sqrt(float(sq_sum[active].max())))
    row_sum = np.asarray(J.sum(axis=1)).ravel()
    spread = (sq_sum - h * h) - row_sum ** 2 / max(n - 1, 1) + (h - h.mean()) ** 2
    sigma2 = float(np.mean(np.maximum(spread[active], 0.0)))
    n_active = int(np.count_nonzero(active))
    target = min(COLD_EXCITATIONS, COLD_EXCITATIONS_PER_SPIN * n_active)
    cold = _cold_discrete(2.0 * nz_min[active], target)
    if sigma2 > 0:
        cold = min(cold, math.sqrt(n_active / target) / (2.0 * math.sqrt(sigma2)))
    return hot, max(cold, hot)


def _cold_discrete(gaps: np.ndarray, target: float) -> float:
    """The beta at which ``sum_i exp(-beta gaps_i) = target`` (gaps > 0): Newton's method on the
    convex, decreasing log of the sum, from the left (the root's lower bound
    ``log(#smallest / target) / smallest``), so it converges monotonically."""
    values, counts = np.unique(gaps, return_counts=True)
    g0 = float(values[0])
    beta = max(math.log(counts[0] / target), 0.0) / g0
    for _ in range(50):
        w = counts * np.exp(-beta * (values - g0))  # scaled by exp(beta g0): no underflow
        total = float(w.sum())
        value = math.log(total) - beta * g0 - math.log(target)
        slope = -float((w * values).sum()) / total
        step = value / slope
        beta -= step
        if abs(step) <= 1e-12 * beta:
            break
    return beta


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


def _check_beta_schedule(value: Any) -> Any:
    if isinstance(value, str):
        if value not in SCHEDULES:
            raise InvalidOptionError(
                f"beta_schedule must be one of {SCHEDULES} or an array of betas, got {value!r}")
        return value
    try:
        betas = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidOptionError(
            f"beta_schedule must be one of {SCHEDULES} or an array of betas, got {value!r}") from None
    if betas.ndim != 1 or betas.size == 0:
        raise InvalidOptionError("a custom beta_schedule must be a non-empty 1-D array of betas")
    bad = ~np.isfinite(betas) | (betas < 0)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise InvalidOptionError(f"beta_schedule[{k}] = {betas[k]}; betas must be finite and >= 0")
    return betas


def _check_beta_range(value: Any) -> tuple[float, float]:
    try:
        b0, b1 = (float(b) for b in value)
    except (TypeError, ValueError):
        raise InvalidOptionError(f"beta_range must be a pair (hot, cold), got {value!r}") from None
    return _positive_beta(b0, "beta_range[0]"), _positive_beta(b1, "beta_range[1]")


def _check_states(value: Any) -> np.ndarray:
    s = np.asarray(value)
    if s.ndim not in (1, 2) or s.size == 0:
        raise InvalidOptionError("initial_states must be a (num_reads, n) or (n,) array of +-1, "
                                 f"got shape {s.shape}")
    if np.any((s != 1) & (s != -1)):
        raise InvalidOptionError("initial_states must hold only -1 and +1")
    return np.ascontiguousarray(s, dtype=np.int8)


#: The options of ``sa.cpu`` and ``sa.gpu`` (defaults in the table; ``help(device.sample)``).
SA_OPTIONS = OptionSpec(
    num_sweeps=Option(1000, "sweeps per read, i.e. the length of the schedule (one sweep visits "
                      "every spin once, in index order)", type=int, ge=1, le=MAX_SWEEPS,
                      unit="sweeps"),
    beta_schedule=Option("geometric", "'geometric' or 'linear' from beta_range[0] to "
                         "beta_range[1], or an explicit array of betas (one per sweep)",
                         check=_check_beta_schedule),
    beta_range=Option(None, "(beta_hot, beta_cold); None: default_beta_range(problem), from the "
                      "problem's energy scale: a typical uphill move of the stiffest spin is "
                      "accepted with probability 1/2 at the start, and a local minimum is left "
                      "about once in ten sweeps at the end",
                      check=_check_beta_range),
    acceptance=Option("metropolis", "'metropolis' (min(1, exp(-beta dE))) or 'gibbs' (heat bath, "
                      "1/(1 + exp(beta dE))); both satisfy detailed balance", type=str,
                      choices=ACCEPTANCES),
    mode=Option("anneal", "'anneal' follows the schedule; 'sample' runs every sweep at the fixed "
                "beta, so each read is a Markov chain whose final state is a Boltzmann sample",
                type=str, choices=MODES),
    beta=Option(None, "the inverse temperature of mode='sample'", type=float, gt=0, le=1e300),
    initial_states=Option(None, "starting states, (num_reads, n) or (n,) of +-1 (default: "
                          "uniformly random)", check=_check_states),
)


def check_mode(options: dict) -> None:
    """``mode="sample"`` needs ``beta``; annealing takes ``beta_range`` instead."""
    if options["mode"] == "sample" and options["beta"] is None:
        raise InvalidOptionError("mode='sample' needs beta=<inverse temperature>, e.g. beta=1.0")
    if options["mode"] == "anneal" and options["beta"] is not None:
        raise InvalidOptionError("beta is for mode='sample'; for annealing give "
                                 "beta_range=(hot, cold)")


def schedule_length(options: dict) -> int:
    """Sweeps per read of a job (``num_sweeps``, or the length of a custom ``beta_schedule``),
    without building the schedule."""
    sched = options["beta_schedule"]
    if sched is not None and not isinstance(sched, str):
        return int(np.size(sched))
    return int(options["num_sweeps"])


def anneal_memory(problem: IsingProblem, num_reads: int, options: dict) -> dict:
    """The memory terms (bytes) every annealer's job has: the schedule (``np.geomspace`` builds
    it with two temporaries), the per-read seeds, the starting states and the output spins."""
    n, sweeps = problem.n, schedule_length(options)
    return {"schedule": 3 * 8 * sweeps,
            "seeds": 16 * num_reads,
            "initial_states": num_reads * n if options["initial_states"] is not None else 0,
            "spins": num_reads * n}


@dataclass(frozen=True)
class AnnealPlan:
    """What one annealing job needs besides the problem: one beta per sweep and the starting
    states (None: random). Built once per job, when the job is validated."""

    betas: np.ndarray
    initial_states: np.ndarray | None

    @classmethod
    def build(cls, problem: IsingProblem, num_reads: int, options: dict) -> "AnnealPlan":
        betas = make_schedule(problem, num_sweeps=options["num_sweeps"],
                              beta_range=options["beta_range"],
                              beta_schedule=options["beta_schedule"], mode=options["mode"],
                              beta=options["beta"])
        return cls(betas, check_initial_states(options["initial_states"], num_reads, problem.n))

    def info(self) -> dict:
        return {"beta_first": float(self.betas[0]), "beta_last": float(self.betas[-1]),
                "num_sweeps_run": int(self.betas.size)}
