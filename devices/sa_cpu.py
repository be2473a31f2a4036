"""``sa.cpu``: simulated annealing on the CPU, the reference device every other one is checked
against."""

from __future__ import annotations

import os
from typing import Any

from kpp_sdk.device import Device, DeviceProperties, RunContext, RunResult
from kpp_sdk.errors import InvalidOptionError
from kpp_sdk.problem import IsingProblem

from .annealing import (
    ACCEPTANCES,
    check_initial_states,
    make_schedule,
    seed_streams,
)

__all__ = ["SimulatedAnnealingCPU"]


class SimulatedAnnealingCPU(Device):
    """Single-spin-flip simulated annealing over many independent reads (replicas).

    Each read starts from uniformly random spins (or ``initial_states``) and makes one sweep (all
    spins in index order) per beta of the schedule. Kernels are numba-compiled (``nogil``); reads
    are split over ``num_threads`` threads (default: all cores). Every read has its own random
    stream derived from ``seed``, so results are identical for any thread count.

    Options (defaults in brackets)
    ------------------------------
    num_sweeps [1000]
        Sweeps per read (the length of the schedule).
    beta_schedule ["geometric"]
        ``"geometric"``, ``"linear"`` or an explicit array of betas (one per sweep).
    beta_range [None]
        ``(beta_hot, beta_cold)``; None uses :func:`kpp_sdk.devices.annealing.default_beta_range`: the
        largest single-flip energy increase accepted with probability 1/2 at the start, the
        smallest with probability 1/100 at the end.
    acceptance ["metropolis"]
        ``"metropolis"`` (accept with ``min(1, exp(-beta dE))``) or ``"gibbs"`` (heat bath,
        ``1 / (1 + exp(beta dE))``). Both satisfy detailed balance.
    mode ["anneal"]
        ``"anneal"`` follows the schedule; ``"sample"`` runs every sweep at the fixed ``beta``, so
        each read is a Markov chain whose final state is a Boltzmann sample at ``beta``.
    beta [None]
        The inverse temperature of ``mode="sample"``.
    initial_states [None]
        ``(num_reads, n)`` or ``(n,)`` array of ±1 starting states.
    num_threads [None]
        Threads used for the reads of one job (default ``os.cpu_count()``).
    """

    name = "sa.cpu"
    DEFAULT_NUM_READS = 100
    OPTIONS = {
        "num_sweeps": 1000,
        "beta_schedule": "geometric",
        "beta_range": None,
        "acceptance": "metropolis",
        "mode": "anneal",
        "beta": None,
        "initial_states": None,
        "num_threads": None,
    }

    FAST_OPTIONS = {"num_sweeps": 50}

    #: The largest problem; dense J needs n^2 * 8 bytes, so dense problems this large are
    #: limited by memory long before this.
    MAX_SPINS = 1 << 20

    @property
    def properties(self) -> DeviceProperties:
        return DeviceProperties(max_spins=self.MAX_SPINS, coefficient_bits=None, supports_fields=True,
                                is_remote=False, max_reads=10_000_000)

    def _check_options(self, options: dict, problem: IsingProblem | None) -> dict:
        if options["acceptance"] not in ACCEPTANCES:
            raise InvalidOptionError(
                f"acceptance must be one of {ACCEPTANCES}, got {options['acceptance']!r}"
            )
        nt = options["num_threads"]
        if nt is not None and (isinstance(nt, bool) or not isinstance(nt, int) or nt < 1):
            raise InvalidOptionError(f"num_threads must be a positive integer, got {nt!r}")
        if problem is not None:
            # builds (and so validates) the schedule now, before the job is queued
            make_schedule(problem, num_sweeps=options["num_sweeps"], beta_range=options["beta_range"],
                          beta_schedule=options["beta_schedule"], mode=options["mode"],
                          beta=options["beta"])
        return options

    def _check_run(self, problem: IsingProblem, num_reads: int, options: dict) -> None:
        check_initial_states(options["initial_states"], num_reads, problem.n)

    def _run(self, problem: IsingProblem, *, num_reads: int, seed: int, options: dict,
             ctx: RunContext) -> RunResult:
        from ._sa_kernels import anneal

        betas = make_schedule(problem, num_sweeps=options["num_sweeps"],
                              beta_range=options["beta_range"],
                              beta_schedule=options["beta_schedule"], mode=options["mode"],
                              beta=options["beta"])
        init = check_initial_states(options["initial_states"], num_reads, problem.n)
        spins = anneal(problem.J, problem.h, betas, num_reads=num_reads,
                       seed_streams=seed_streams(seed, num_reads),
                       acceptance=options["acceptance"], initial_states=init,
                       num_threads=options["num_threads"] or os.cpu_count(),
                       cancel_check=ctx.cancelled)
        info: dict[str, Any] = {"beta_first": float(betas[0]), "beta_last": float(betas[-1]),
                                "num_sweeps_run": int(betas.size)}
        return RunResult(spins=spins, info=info)
