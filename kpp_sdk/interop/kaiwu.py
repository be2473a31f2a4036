"""Kaiwu-style optimizers (objects with ``solve(ising_matrix)``) and kpp devices, both ways.

QBoson's Kaiwu SDK and kaiwu-torch-plugin hand an optimizer an ``(N+1) x (N+1)`` Kaiwu matrix
(:meth:`IsingProblem.to_kaiwu`: energy ``-s^T M s`` with an ancilla spin carrying the fields) and
get ``(k, N+1)`` spins back. :class:`KaiwuOptimizerDevice` makes such an optimizer a
:class:`~kpp_sdk.Device`; :class:`DeviceOptimizer` gives any Device a ``solve`` method. No torch,
no Kaiwu SDK needed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..device import Device, DeviceProperties, RunContext, RunResult
from ..errors import InvalidOptionError
from ..problem import IsingProblem

__all__ = ["KaiwuOptimizerDevice", "DeviceOptimizer"]


class KaiwuOptimizerDevice(Device):
    """A Kaiwu-style optimizer (any object with ``solve(ising_matrix) -> spins``) as a Device.

    ``solve`` receives :meth:`IsingProblem.to_kaiwu` (``H = -s^T M s`` with an ancilla spin) and
    returns ``(k, n+1)`` spins; it is called until ``num_reads`` rows are gathered (the rest of
    the last call is dropped), and the ancilla gauge is fixed (:meth:`IsingProblem.spins_from_kaiwu`).

    Kaiwu optimizers take no seed. With ``seed_numpy`` (default) NumPy's global legacy
    generator is seeded with the job's seed around each job and restored afterwards, which makes
    optimizers that draw from ``np.random`` reproducible.

    Parameters
    ----------
    optimizer : object with ``solve(ising_matrix)``
    max_spins : int, optional
        The optimizer's size limit (e.g. 550 for QBoson's cloud CIM); default unlimited.
    """

    name = "kaiwu.optimizer"
    DEFAULT_NUM_READS = 10
    OPTIONS: dict = {}

    def __init__(self, optimizer: Any, *, max_spins: int | None = None, seed_numpy: bool = True,
                 **kwargs: Any):
        if not callable(getattr(optimizer, "solve", None)):
            raise InvalidOptionError(
                f"expected a Kaiwu-style optimizer with a solve(ising_matrix) method, got "
                f"{type(optimizer).__name__}")
        self.optimizer = optimizer
        self._max_spins = int(max_spins) if max_spins is not None else 1 << 20
        self.seed_numpy = bool(seed_numpy)
        super().__init__(**kwargs)

    @property
    def properties(self) -> DeviceProperties:
        return DeviceProperties(max_spins=self._max_spins, supports_fields=True, is_remote=False,
                                extra={"optimizer": type(self.optimizer).__name__})

    def _run(self, problem: IsingProblem, *, num_reads: int, seed: int, options: dict,
             ctx: RunContext) -> RunResult:
        M = problem.to_kaiwu()
        saved = np.random.get_state() if self.seed_numpy else None
        if self.seed_numpy:
            np.random.seed(seed % (2**32))
        try:
            rows, total = [], 0
            while total < num_reads:
                # a solve may take long and cannot check for cancellation: wait where a cancel
                # is seen (RunContext.call)
                spins = IsingProblem.spins_from_kaiwu(ctx.call(self.optimizer.solve, M),
                                                      problem.n)
                rows.append(spins)
                total += spins.shape[0]
        finally:
            if saved is not None:
                np.random.set_state(saved)
        return RunResult(spins=np.concatenate(rows)[:num_reads],
                         info={"solve_calls": len(rows)})


class DeviceOptimizer:
    """The other direction: a Device behind Kaiwu's ``solve(ising_matrix)``, for code written
    against Kaiwu optimizers. Returns ``(num_reads, n+1)`` int8 spins with the ancilla +1.

    ``seed``: an int or Generator for the job seeds; None draws them from NumPy's global
    generator (so :class:`KaiwuOptimizerDevice`'s seeding applies)."""

    def __init__(self, device: Any, num_reads: int | None = None, *, seed: Any = None,
                 **options: Any):
        from . import as_device

        self.device = as_device(device)
        self.num_reads = num_reads
        self.options = options
        self._rng = None if seed is None else np.random.default_rng(seed)

    def solve(self, ising_matrix: Any) -> np.ndarray:
        problem = IsingProblem.from_kaiwu(ising_matrix)
        seed = (int(self._rng.integers(2**63 - 1)) if self._rng is not None
                else int(np.random.randint(0, 2**31 - 1)))
        ss = self.device.sample(problem, num_reads=self.num_reads, seed=seed, **self.options)
        spins = np.repeat(ss.spins, ss.num_occurrences, axis=0)
        return np.concatenate([spins, np.ones((spins.shape[0], 1), dtype=np.int8)], axis=1)
