"""``sa.cpu``: simulated annealing on the CPU, the reference device every other one is checked
against."""

from __future__ import annotations

from kpp_sdk.config import available_cores
from kpp_sdk.device import Device, DeviceProperties, RunContext, RunResult
from kpp_sdk.options import Option, OptionSpec
from kpp_sdk.problem import IsingProblem

from .annealing import SA_OPTIONS, AnnealPlan, check_mode, seed_streams

__all__ = ["SimulatedAnnealingCPU"]


class SimulatedAnnealingCPU(Device):
    """Single-spin-flip simulated annealing over many independent reads (replicas).

    Each read starts from uniformly random spins (or ``initial_states``) and makes one sweep (all
    spins in index order) per beta of the schedule. Kernels are numba-compiled (``nogil``); reads
    are split over ``num_threads`` threads (default: all cores). Every read has its own random
    stream derived from ``seed``, so results are identical for any thread count.

    The options (``help(device.sample)``, ``kpp devices --options sa.cpu``) are
    :data:`SA_OPTIONS`, shared with ``sa.gpu``.
    """

    name = "sa.cpu"
    DEFAULT_NUM_READS = 100
    OPTIONS = OptionSpec(
        SA_OPTIONS,
        num_threads=Option(None, "threads used for the reads of one job (default: the cores "
                           "this process may use); results do not depend on it", type=int, ge=1),
    )

    FAST_OPTIONS = {"num_sweeps": 50}

    #: The largest problem; dense J needs n^2 * 8 bytes, so dense problems this large are
    #: limited by memory long before this.
    MAX_SPINS = 1 << 20

    @property
    def properties(self) -> DeviceProperties:
        return DeviceProperties(max_spins=self.MAX_SPINS, coefficient_bits=None, supports_fields=True,
                                is_remote=False, max_reads=10_000_000)

    def _check_options(self, options: dict, problem: IsingProblem | None) -> dict:
        check_mode(options)
        return options

    def _prepare(self, problem: IsingProblem, num_reads: int, options: dict) -> AnnealPlan:
        return AnnealPlan.build(problem, num_reads, options)

    def _run(self, problem: IsingProblem, *, num_reads: int, seed: int, options: dict,
             ctx: RunContext) -> RunResult:
        from ._sa_kernels import anneal

        plan = ctx.prepared or AnnealPlan.build(problem, num_reads, options)
        spins = anneal(problem.J, problem.h, plan.betas, num_reads=num_reads,
                       seed_streams=seed_streams(seed, num_reads),
                       acceptance=options["acceptance"], initial_states=plan.initial_states,
                       num_threads=options["num_threads"] or available_cores(),
                       cancel_check=ctx.cancelled)
        return RunResult(spins=spins, info=plan.info())

