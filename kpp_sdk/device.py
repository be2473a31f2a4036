"""The Device contract: one abstract method, everything else derived.

A device implements :meth:`Device._run` (blocking, in whatever worker runs it) and declares its
:attr:`Device.OPTIONS`. Users call :meth:`Device.submit` (non-blocking, returns a :class:`Job`) or
the blocking :meth:`Device.sample`, :meth:`Device.sample_ising`, :meth:`Device.sample_qubo`.
"""

from __future__ import annotations

import abc
import concurrent.futures as cf
import dataclasses
import threading
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

import numpy as np

from .errors import (
    InvalidOptionError,
    ProblemError,
    ProblemTooLargeError,
    UnknownOptionError,
)
from .job import Job, new_job_id
from .problem import IsingProblem
from .sampleset import SampleSet

__all__ = ["Device", "DeviceProperties", "RunResult", "RunContext", "resolve_seed"]


@dataclass(frozen=True)
class DeviceProperties:
    """What a device can take; checked by :meth:`Device.submit` before any work.

    ``max_spins``: largest problem. ``coefficient_bits``: precision of couplings on the hardware
    (None: float64). ``supports_fields``: external fields h. ``is_remote``: jobs leave this
    machine. ``device_time_per_sample``: seconds of (real or emulated) hardware time per read,
    None when it depends on the problem. ``max_reads``: largest ``num_reads``.
    """

    max_spins: int
    coefficient_bits: int | None = None
    supports_fields: bool = True
    is_remote: bool = False
    device_time_per_sample: float | None = None
    max_reads: int = 1_000_000
    supports_sparse: bool = True
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class RunResult:
    """What :meth:`Device._run` returns; the base class turns it into a :class:`SampleSet`."""

    spins: np.ndarray
    num_occurrences: np.ndarray | None = None
    device_s: float | None = None
    info: dict = field(default_factory=dict)


@dataclass
class RunContext:
    """Handed to :meth:`Device._run`: the job id and a cooperative cancellation check."""

    job_id: str
    cancel_event: threading.Event | None = None

    def cancelled(self) -> bool:
        return self.cancel_event is not None and self.cancel_event.is_set()

    def raise_if_cancelled(self) -> None:
        if self.cancelled():
            raise InterruptedError(f"job {self.job_id} cancelled")


def resolve_seed(seed: Any) -> int:
    """An int seed (a numpy Generator gives one draw), so a job is picklable and reproducible."""
    if seed is None:
        return int(np.random.SeedSequence().entropy % (2**63))
    if isinstance(seed, np.random.Generator):
        return int(seed.integers(0, 2**63 - 1))
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise InvalidOptionError(f"seed must be an int or a numpy Generator, got {seed!r}")
    if seed < 0:
        raise InvalidOptionError(f"seed must be non-negative, got {seed}")
    return int(seed)


def _describe(value: Any) -> Any:
    """Option values as recorded in ``SampleSet.info``: arrays by shape, not by content."""
    if isinstance(value, np.ndarray):
        return f"<array {value.shape} {value.dtype}>"
    if isinstance(value, (list, tuple)) and len(value) > 16:
        return f"<sequence of {len(value)}>"
    return value


def _execute(device: "Device", problem: IsingProblem, num_reads: int, seed: int,
             options: dict, job_id: str, submitted_at: float,
             cancel_event: threading.Event | None) -> SampleSet:
    """Runs in the executor's worker (a thread, a process or a dask worker)."""
    started = time.time()
    ctx = RunContext(job_id, cancel_event)
    ctx.raise_if_cancelled()
    t0 = time.perf_counter()
    out = device._run(problem, num_reads=num_reads, seed=seed, options=options, ctx=ctx)
    run_s = time.perf_counter() - t0
    info = {"device": device.name, "num_reads": num_reads, "seed": seed,
            **{k: _describe(v) for k, v in options.items()}, **out.info}
    return SampleSet(
        problem,
        out.spins,
        out.num_occurrences,
        timing={
            "queue_s": max(started - submitted_at, 0.0),
            "run_s": run_s,
            "device_s": run_s if out.device_s is None else out.device_s,
        },
        info=info,
        job_id=job_id,
    )


class Device(abc.ABC):
    """An Ising machine, real or simulated.

    Subclasses set :attr:`name`, :attr:`OPTIONS` (known options and their defaults),
    :attr:`DEFAULT_NUM_READS`, implement :attr:`properties`, :meth:`_run`, and, if they need to
    check option values, :meth:`_check_options`.

    Parameters
    ----------
    executor : concurrent.futures.Executor, optional
        Runs this device's jobs. Default: one worker thread per device instance, so jobs run one
        at a time in submission order, as on a real machine.
    **defaults
        Default values for any of :attr:`OPTIONS` (and ``num_reads``), validated now.
    """

    name: ClassVar[str] = ""
    OPTIONS: ClassVar[Mapping[str, Any]] = {}
    DEFAULT_NUM_READS: ClassVar[int] = 100
    #: Options that make a run short (used by the conformance suite over every registered device).
    FAST_OPTIONS: ClassVar[Mapping[str, Any]] = {}

    def __init__(self, *, executor: cf.Executor | None = None, **defaults: Any):
        self._executor = executor
        self._own_executor: cf.ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._default_num_reads = int(defaults.pop("num_reads", self.DEFAULT_NUM_READS))
        self._check_num_reads(self._default_num_reads)
        self._defaults = self._merge_options(defaults)

    # --- pickling (process pools, dask) ---------------------------------------------------

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_executor"] = None
        state["_own_executor"] = None
        state["_lock"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"

    # --- what subclasses provide -----------------------------------------------------------

    @property
    @abc.abstractmethod
    def properties(self) -> DeviceProperties:
        """The device's limits (see :class:`DeviceProperties`)."""

    @abc.abstractmethod
    def _run(self, problem: IsingProblem, *, num_reads: int, seed: int, options: dict,
             ctx: RunContext) -> RunResult:
        """Do the work, blocking. ``options`` is complete (defaults filled in) and checked."""

    def _check_options(self, options: dict, problem: IsingProblem | None) -> dict:
        """Validate option values; return the (possibly normalised) dict. Raise
        :class:`InvalidOptionError` naming the option, the value and the allowed range."""
        return options

    def _check_run(self, problem: IsingProblem, num_reads: int, options: dict) -> None:
        """Checks that need the problem and ``num_reads`` together (e.g. the shape of initial
        states); runs in :meth:`submit` after :meth:`_check_options`."""

    @classmethod
    def check_available(cls) -> None:
        """Raise :class:`MissingDependencyError` if an optional dependency is missing."""

    # --- the derived API -----------------------------------------------------------------------

    @property
    def options(self) -> dict:
        """The known options with this instance's defaults."""
        return dict(self._defaults)

    def _merge_options(self, options: Mapping[str, Any], base: Mapping[str, Any] | None = None) -> dict:
        unknown = sorted(set(options) - set(self.OPTIONS))
        if unknown:
            known = ", ".join(["num_reads", "seed", *self.OPTIONS]) or "(none)"
            raise UnknownOptionError(
                f"{self.name} does not know the option(s) {', '.join(map(repr, unknown))}; "
                f"known options: {known}"
            )
        merged = dict(self.OPTIONS if base is None else base)
        merged.update(options)
        return merged

    def _check_num_reads(self, num_reads: Any) -> int:
        if isinstance(num_reads, (bool, np.bool_)) or not isinstance(num_reads, (int, np.integer)):
            raise InvalidOptionError(f"num_reads must be a positive integer, got {num_reads!r}")
        if num_reads < 1:
            raise InvalidOptionError(f"num_reads must be >= 1, got {num_reads}")
        limit = self.properties.max_reads
        if num_reads > limit:
            raise InvalidOptionError(f"num_reads = {num_reads} exceeds {self.name}'s limit of {limit}")
        return int(num_reads)

    def check_problem(self, problem: Any) -> IsingProblem:
        """Type and size checks; raises before any work."""
        if not isinstance(problem, IsingProblem):
            raise ProblemError(
                f"expected an IsingProblem, got {type(problem).__name__}; build one with "
                "IsingProblem(J, h), IsingProblem.from_qubo(Q) or IsingProblem.load(path)"
            )
        props = self.properties
        if problem.n > props.max_spins:
            raise ProblemTooLargeError(
                f"the problem has {problem.n} spins but {self.name} takes at most "
                f"{props.max_spins}; reduce the problem or choose a larger device/profile"
            )
        if problem.has_fields and not props.supports_fields:
            raise ProblemError(f"{self.name} does not support external fields h")
        return problem

    def _executor_for(self, executor: cf.Executor | None) -> cf.Executor:
        if executor is not None:
            return executor
        if self._executor is not None:
            return self._executor
        with self._lock:
            if self._own_executor is None:
                self._own_executor = cf.ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix=f"kpp-{self.name}"
                )
            return self._own_executor

    def submit(self, problem: IsingProblem, *, num_reads: int | None = None, seed: Any = None,
               executor: cf.Executor | None = None, **options: Any) -> Job:
        """Queue a sampling job and return at once.

        Everything is validated here, before any work: the problem against :attr:`properties`,
        unknown options (:class:`UnknownOptionError` naming the known ones), option values.
        ``seed`` (int or numpy Generator) makes the result reproducible; None draws a fresh one,
        recorded in ``result().info["seed"]``.
        """
        problem = self.check_problem(problem)
        num_reads = self._check_num_reads(self._default_num_reads if num_reads is None else num_reads)
        opts = self._check_options(self._merge_options(options, self._defaults), problem)
        self._check_run(problem, num_reads, opts)
        seed = resolve_seed(seed)
        ex = self._executor_for(executor)
        job_id = new_job_id()
        submitted_at = time.time()
        cancel_event = threading.Event() if isinstance(ex, cf.ThreadPoolExecutor) else None
        fut = ex.submit(_execute, self, problem, num_reads, seed, opts, job_id, submitted_at,
                        cancel_event)
        return Job(fut, job_id, self.name, cancel_event=cancel_event, submitted_at=submitted_at)

    sample_async = submit

    def sample(self, problem: IsingProblem, *, num_reads: int | None = None, seed: Any = None,
               timeout: float | None = None, **options: Any) -> SampleSet:
        """Blocking :meth:`submit` + :meth:`Job.result`."""
        return self.submit(problem, num_reads=num_reads, seed=seed, **options).result(timeout)

    def sample_ising(self, h: Any, J: Any, offset: float = 0.0, **kwargs: Any) -> SampleSet:
        """Sample ``E = -1/2 s^T J s - h^T s + offset`` (kpp convention; J a symmetric matrix, or a
        dict ``{(i, j): J_ij}`` with one entry per coupled pair; h a vector or ``{i: h_i}``)."""
        if isinstance(J, dict):
            problem = IsingProblem.from_ising_dicts(h, J, offset)
        else:
            problem = IsingProblem(J, h, offset)
        return self.sample(problem, **kwargs)

    def sample_qubo(self, Q: Any, offset: float = 0.0, **kwargs: Any) -> SampleSet:
        """Sample ``E = x^T Q x + offset``; the result's energies equal the QUBO energies and
        :meth:`SampleSet.binary` gives ``x = (s + 1) / 2``."""
        return self.sample(IsingProblem.from_qubo(Q, offset), **kwargs)

    def close(self) -> None:
        """Shut down the device's own worker thread (waits for running jobs)."""
        if self._own_executor is not None:
            self._own_executor.shutdown(wait=True)
            self._own_executor = None

    def __enter__(self) -> "Device":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
