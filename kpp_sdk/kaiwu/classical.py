"""``kw.classical``: Kaiwu's simulated-annealing optimizer, on ``sa.cpu``."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import InvalidOptionError
from ..job import InlineExecutor
from ..options import check_int, check_number
from ._matrix import initial_spins, kaiwu_problem, numpy_seed, with_ancilla

__all__ = ["SimulatedAnnealingOptimizer"]


class SimulatedAnnealingOptimizer:
    """Kaiwu's ``SimulatedAnnealingOptimizer``: simulated annealing on a Kaiwu matrix, returning
    up to ``size_limit`` distinct low-energy solutions, lowest first.

    Source (Kaiwu's documentation): the parameters and their defaults
    (``initial_temperature=100``, ``alpha=0.99``, ``cutoff_temperature=0.001``,
    ``iterations_per_t=10``, ``size_limit=100``, ``rand_seed=None``, ``process_num=1``); geometric
    cooling ``T <- alpha T`` from ``initial_temperature`` down to ``cutoff_temperature``;
    ``solve(ising_matrix, init_solution=None)`` returns the de-duplicated solutions of all
    processes, ``(k, N+1)`` spins with the ancilla; the output is random unless seeded through
    NumPy (``rand_seed``, or ``np.random.seed`` before the call).

    Assumptions (not documented by Kaiwu): one "iteration" is one single-spin-flip attempt, so
    a solve makes ``K * iterations_per_t`` flip attempts per read for the ``K`` temperatures of
    the schedule, run here as ``ceil(K * iterations_per_t / N)`` sweeps of ``sa.cpu`` (at least
    one) following the same geometric temperatures; the ``size_limit`` solutions come from
    ``size_limit`` independent reads (Kaiwu keeps a pool along its chains), de-duplicated after
    the ancilla gauge is fixed (so the ancilla is always +1), sorted by energy.
    ``process_num`` is the number of threads (``-1``: every core); results do not depend on it.
    ``flag_evolution_history`` and ``verbose`` are accepted; the history is not recorded.
    """

    def __init__(self, initial_temperature: float = 100, alpha: float = 0.99,
                 cutoff_temperature: float = 0.001, iterations_per_t: int = 10,
                 size_limit: int = 100, flag_evolution_history: bool = False,
                 verbose: bool = False, rand_seed: int | None = None, process_num: int = 1):
        self.initial_temperature = check_number(initial_temperature, "initial_temperature", gt=0)
        self.alpha = check_number(alpha, "alpha", gt=0, lt=1)
        self.cutoff_temperature = check_number(cutoff_temperature, "cutoff_temperature", gt=0)
        if self.cutoff_temperature > self.initial_temperature:
            raise InvalidOptionError(
                f"cutoff_temperature ({cutoff_temperature}) must not exceed initial_temperature "
                f"({initial_temperature})")
        self.iterations_per_t = check_int(iterations_per_t, "iterations_per_t", ge=1)
        self.size_limit = check_int(size_limit, "size_limit", ge=1)
        self.rand_seed = None if rand_seed is None else check_int(rand_seed, "rand_seed", ge=0)
        self.process_num = check_int(process_num, "process_num", ge=-1)
        if self.process_num == 0:
            raise InvalidOptionError("process_num must be -1 (every core) or >= 1, got 0")
        self.flag_evolution_history = bool(flag_evolution_history)
        self.verbose = bool(verbose)
        self._matrix = None
        self._device = None

    def __repr__(self) -> str:
        return (f"SimulatedAnnealingOptimizer(initial_temperature={self.initial_temperature}, "
                f"alpha={self.alpha}, cutoff_temperature={self.cutoff_temperature}, "
                f"iterations_per_t={self.iterations_per_t}, size_limit={self.size_limit})")

    def set_matrix(self, ising_matrix: Any) -> None:
        """Keep ``ising_matrix`` for later ``solve()`` calls without one."""
        kaiwu_problem(ising_matrix)
        self._matrix = np.asarray(ising_matrix, dtype=np.float64)

    def temperatures(self) -> np.ndarray:
        """The ``K`` temperatures ``T_k = initial_temperature * alpha^k >= cutoff_temperature``."""
        k = math.floor(math.log(self.cutoff_temperature / self.initial_temperature)
                       / math.log(self.alpha) + 1e-9) + 1
        return self.initial_temperature * self.alpha ** np.arange(k)

    def betas(self, n: int) -> np.ndarray:
        """One inverse temperature per sweep of ``sa.cpu`` for ``n`` spins (class docstring)."""
        temps = self.temperatures()
        sweeps = max(1, math.ceil(temps.size * self.iterations_per_t / n))
        return 1.0 / np.geomspace(temps[0], temps[-1], sweeps)

    def _sa(self):
        if self._device is None:
            from ..config import available_cores
            from ..registry import get_device

            threads = available_cores() if self.process_num == -1 else self.process_num
            self._device = get_device("sa.cpu", num_threads=threads)
        return self._device

    def solve(self, ising_matrix: Any = None, init_solution: Any = None) -> np.ndarray:
        """Up to ``size_limit`` distinct solutions, ``(k, N+1)`` int8 spins (ancilla +1),
        lowest energy first."""
        problem = kaiwu_problem(self._matrix if ising_matrix is None else ising_matrix)
        reads = self.size_limit
        betas = self.betas(problem.n)
        options = {"beta_schedule": betas, "num_sweeps": int(betas.size)}
        if init_solution is not None:
            options["initial_states"] = initial_spins(init_solution, problem.n, reads)
        ss = self._sa().sample(problem, num_reads=reads, seed=numpy_seed(self.rand_seed),
                               executor=InlineExecutor(), **options)
        return with_ancilla(ss.unique().spins[: self.size_limit])
