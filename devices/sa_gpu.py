"""``sa.gpu``: the simulated annealing of ``sa.cpu`` on an NVIDIA GPU, through CuPy."""

from __future__ import annotations

from typing import Any

import numpy as np

from kpp_sdk.device import Device, DeviceProperties, JobSpec, RunContext, RunResult, result_bytes
from kpp_sdk.errors import InvalidOptionError, MissingDependencyError
from kpp_sdk.limits import JobCost
from kpp_sdk.options import Option, OptionSpec
from kpp_sdk.problem import IsingProblem

from . import _sa_array
from .annealing import (
    SA_OPTIONS,
    AnnealPlan,
    anneal_memory,
    check_mode,
    schedule_length,
    seed_streams,
)

__all__ = ["CudaUnavailableError", "SimulatedAnnealingGPU", "require_cuda"]

BACKENDS = ("cupy", "numpy")
KERNELS = ("auto", "fused", "array")


class CudaUnavailableError(MissingDependencyError):
    """CuPy is installed but finds no usable CUDA device (no GPU, or a driver/CuPy mismatch)."""

    def __init__(self, detail: str):
        super().__init__("cupy", extra="gpu", feature="sa.gpu")
        message = (f"sa.gpu needs a CUDA GPU, but CuPy finds none ({detail}); use sa.cpu on this "
                   "machine, or, if it has an NVIDIA GPU, install the CuPy build for its CUDA "
                   "version: pip install 'kpp-sdk[gpu]' (CUDA 12)")
        self.args = (message,)
        self.msg = message  # ImportError's str() shows msg


def require_cuda() -> Any:
    """The ``cupy`` module, or :class:`MissingDependencyError` (extra ``gpu``) when CuPy is not
    installed, or :class:`CudaUnavailableError` when it sees no CUDA device."""
    try:
        import cupy
    except ImportError:
        raise MissingDependencyError("cupy", extra="gpu", feature="sa.gpu") from None
    try:
        count = int(cupy.cuda.runtime.getDeviceCount())
        detail = "0 devices"
    except Exception as exc:  # noqa: BLE001 - CUDA reports a missing driver in several ways
        count, detail = 0, f"{type(exc).__name__}: {exc}"
    if count < 1:
        raise CudaUnavailableError(detail)
    return cupy


class SimulatedAnnealingGPU(Device):
    """Single-spin-flip simulated annealing over many reads at once on a GPU.

    The algorithm, the options and their meaning are those of ``sa.cpu``
    (:class:`kpp_sdk.devices.sa_cpu.SimulatedAnnealingCPU`): one sweep of all spins in index order
    per beta, Metropolis or Gibbs acceptance, annealing or fixed-beta sampling, dense or sparse J,
    float64 fields. Same seed, same samples on the same backend; the random numbers differ from
    ``sa.cpu``'s, so the two devices agree in distribution, not sample by sample.

    Options: those of ``sa.cpu`` (:data:`kpp_sdk.devices.annealing.SA_OPTIONS`) plus ``backend``
    and ``kernel`` (``help(device.sample)``, ``kpp devices --options sa.gpu``).

    A problem with integer couplings and fields gives bit-identical spins with either kernel and
    either backend. ``kpp_sdk.get_device("sa.gpu")`` checks for CuPy and a GPU first and raises
    :class:`MissingDependencyError` without them; construct the class directly with
    ``backend="numpy"`` to run the reference anywhere.
    """

    name = "sa.gpu"
    DEFAULT_NUM_READS = 100
    OPTIONS = OptionSpec(
        SA_OPTIONS,
        backend=Option("cupy", "'cupy': run on the GPU (needs pip install 'kpp-sdk[gpu]' and a CUDA "
                       "device); 'numpy': the same array code on the CPU, the reference "
                       "implementation (much slower than sa.cpu)", type=str, choices=BACKENDS),
        kernel=Option("auto", "'fused': one CUDA kernel runs every sweep (one warp per read); "
                      "'array': the reference array code, one array operation per spin for all "
                      "reads; 'auto': fused on CuPy, array on NumPy", type=str, choices=KERNELS),
    )

    FAST_OPTIONS = {"num_sweeps": 50}
    SLOW_OPTIONS = {"num_sweeps": 10_000_000}
    COST_HINT = "num_sweeps or num_reads"

    #: Host seconds of the NumPy reference per (spin, sweep): a fixed cost of the per-spin array
    #: operations plus a cost per read and per (read, spin) of the tile products; measured,
    #: rounded up. On CuPy the host waits for the GPU: SECONDS_PER_GPU_VISIT per (read, sweep,
    #: spin) is a rough figure for the fused kernel.
    NUMPY_SECONDS = (20e-6, 0.6e-6, 2e-9)
    SECONDS_PER_GPU_VISIT = 1e-9

    #: The largest problem (as ``sa.cpu``); dense J needs n^2 * 8 bytes of GPU memory.
    MAX_SPINS = 1 << 20

    #: Reads x spins per chunk of one job: bounds host/GPU memory, never changes a result.
    CHUNK_ELEMENTS = {"numpy": 1 << 22, "cupy": 1 << 26}

    def __init__(self, **defaults: Any):
        super().__init__(**defaults)
        # a device that cannot run (no CuPy, bad backend) fails here, not at the first job
        self.check_options()

    @classmethod
    def check_available(cls) -> None:
        require_cuda()

    @property
    def properties(self) -> DeviceProperties:
        return DeviceProperties(max_spins=self.MAX_SPINS, coefficient_bits=None,
                                supports_fields=True, is_remote=False, max_reads=10_000_000)

    def _check_options(self, options: dict, problem: IsingProblem | None) -> dict:
        check_mode(options)
        if options["kernel"] == "fused" and options["backend"] != "cupy":
            raise InvalidOptionError("kernel='fused' is a CUDA kernel and needs backend='cupy'; "
                                     "with backend='numpy' use kernel='array' (or 'auto')")
        if options["backend"] == "cupy":
            require_cuda()
        return options

    def _prepare(self, problem: IsingProblem, num_reads: int, options: dict) -> AnnealPlan:
        return AnnealPlan.build(problem, num_reads, options)

    def estimate_cost(self, spec: JobSpec) -> JobCost:
        """Time: the NumPy reference is vectorised over the reads of a chunk and loops over
        spins and sweeps (:attr:`NUMPY_SECONDS`); CuPy: :attr:`SECONDS_PER_GPU_VISIT`. Host
        memory: :func:`~kpp_sdk.devices.annealing.anneal_memory`, one chunk's state (spins and
        fields, float64, and the uniforms of a sweep) and the result."""
        p, reads, opts = spec.problem, spec.num_reads, spec.options
        sweeps = schedule_length(opts)
        backend = opts["backend"]
        chunk = min(reads, max(1, self.CHUNK_ELEMENTS[backend] // p.n))
        if backend == "numpy":
            c0, c1, c2 = self.NUMPY_SECONDS
            chunks = -(-reads // chunk)
            seconds = float(sweeps) * p.n * (chunks * c0 + reads * c1 + reads * p.n * c2)
        else:
            seconds = float(reads) * sweeps * p.n * self.SECONDS_PER_GPU_VISIT
        parts = anneal_memory(p, reads, opts)
        parts["chunk_state"] = 6 * 8 * chunk * p.n if backend == "numpy" else 0
        parts["result"] = result_bytes(reads, p.n)
        return JobCost(seconds, int(sum(parts.values())), parts)

    def _run(self, problem: IsingProblem, *, num_reads: int, seed: int, options: dict,
             ctx: RunContext) -> RunResult:
        plan = ctx.prepared or AnnealPlan.build(problem, num_reads, options)
        betas, init = plan.betas, plan.initial_states
        backend = options["backend"]
        kernel = options["kernel"]
        if kernel == "auto":
            kernel = "fused" if backend == "cupy" else "array"
        gibbs = options["acceptance"] == "gibbs"
        am = _sa_array.cupy_module() if backend == "cupy" else _sa_array.numpy_module()
        xp, n, J = am.xp, problem.n, problem.J
        keys = _sa_array.read_keys(seed_streams(seed, num_reads))
        J_dev = am.csr(J) if problem.is_sparse else am.asarray(J)
        info: dict[str, Any] = {"backend": backend, "kernel": kernel, **plan.info()}
        fused = None
        if kernel == "fused":
            from ._sa_cuda import FusedAnnealer

            fused = FusedAnnealer(J, betas, gibbs=gibbs)
            info["coupling_dtype"] = "float32" if fused.float32 else "float64"
        out = np.empty((num_reads, n), dtype=np.int8)
        chunk = max(1, self.CHUNK_ELEMENTS[backend] // n)
        for lo in range(0, num_reads, chunk):
            hi = min(num_reads, lo + chunk)
            keys_dev = am.asarray(keys[lo:hi])
            S, F = _sa_array.initial_state(am, J_dev, problem.h, keys_dev,
                                           None if init is None else init[lo:hi])
            if fused is not None:
                spins = fused.run(keys_dev, S, F, cancel_check=ctx.cancelled)
            else:
                spins = _sa_array.sweep_array(am, J, betas, keys_dev, S, F, gibbs=gibbs,
                                              cancel_check=ctx.cancelled)
            out[lo:hi] = am.to_host(spins)
            del S, F, spins
        if backend == "cupy":
            info["gpu"] = _gpu_name(xp)
        return RunResult(spins=out, info=info)


def _gpu_name(cp: Any) -> str:
    try:
        props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
        name = props.get("name", b"")
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:  # noqa: BLE001 - informational only
        return "unknown"
