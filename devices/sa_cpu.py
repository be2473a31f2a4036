"""``sa.cpu``: simulated annealing on the CPU, the reference device every other one is checked
against."""

from __future__ import annotations

from kpp_sdk.config import available_cores
from kpp_sdk.device import Device, DeviceProperties, JobSpec, RunContext, RunResult, result_bytes
from kpp_sdk.limits import JobCost
from kpp_sdk.options import Option, OptionSpec
from kpp_sdk.problem import IsingProblem

from .annealing import (
    SA_OPTIONS,
    AnnealPlan,
    anneal_memory,
    check_mode,
    schedule_length,
    seed_streams,
)

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
                           "this process may use); results do not depend on it", type=int, ge=1,
                           le=4096),
    )
    COST_HINT = "num_sweeps or num_reads"

    #: Seconds per spin visit (decision and random draw) and per element of a field update
    #: (dense: a row of J per flip, about a quarter of the visits flip over an anneal; sparse:
    #: one stored coupling), one core; measured on SK and sparse +-1 problems (n = 10..10^4),
    #: rounded up.
    SECONDS_PER_VISIT = 20e-9
    SECONDS_PER_DENSE_ELEMENT = 0.05e-9
    SECONDS_PER_SPARSE_ELEMENT = 3e-9

    FAST_OPTIONS = {"num_sweeps": 50}
    SLOW_OPTIONS = {"num_reads": 64, "num_sweeps": 200_000}

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

    def estimate_cost(self, spec: JobSpec) -> JobCost:
        """Time: ``reads x sweeps x (n x SECONDS_PER_VISIT + work per flip)`` (see the class
        constants). Memory: :func:`~kpp_sdk.devices.annealing.anneal_memory`, the float32 copy
        of a dense J the kernel may use (or a canonical copy of a sparse one), the result."""
        p, reads = spec.problem, spec.num_reads
        visits = float(reads) * schedule_length(spec.options) * p.n
        parts = anneal_memory(p, reads, spec.options)
        if p.is_sparse:
            per_visit = (self.SECONDS_PER_VISIT
                         + self.SECONDS_PER_SPARSE_ELEMENT * p.J.nnz / p.n)
            parts["couplings_copy"] = 24 * p.J.nnz + 16 * p.n  # canonical CSR, |J| for beta
        else:
            per_visit = self.SECONDS_PER_VISIT + self.SECONDS_PER_DENSE_ELEMENT * p.n
            parts["couplings_copy"] = 4 * p.n * p.n
        parts["result"] = result_bytes(reads, p.n)
        return JobCost(visits * per_visit, int(sum(parts.values())), parts)

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

