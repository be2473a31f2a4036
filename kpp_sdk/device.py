"""The Device contract: one abstract method, everything else derived.

A device implements :meth:`Device._run` (blocking, in whatever worker runs it) and declares its
:attr:`Device.OPTIONS`. Users call :meth:`Device.submit` (non-blocking, returns a :class:`Job`) or
the blocking :meth:`Device.sample`, :meth:`Device.sample_ising`, :meth:`Device.sample_qubo`.
"""

from __future__ import annotations

import abc
import concurrent.futures as cf
import dataclasses
import textwrap
import threading
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

import numpy as np

from .errors import InvalidOptionError, InvalidOptionTypeError, ProblemError, ProblemTooLargeError
from .job import CancelToken, InlineExecutor, Job, new_job_id
from .limits import JobCost, JobLimits, resolve_limits
from .options import OptionSpec, as_spec, check_int
from .problem import IsingProblem
from .sampleset import SampleSet

__all__ = ["Device", "DeviceProperties", "JobSpec", "RunResult", "RunContext", "resolve_seed",
           "result_bytes"]


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
    """Handed to :meth:`Device._run`: the job id, a cooperative cancellation check and what
    :meth:`Device._prepare` returned at validation (``prepared``).

    ``cancel_event`` is anything with ``is_set()`` (a :class:`~kpp_sdk.job.CancelToken`, a
    ``threading.Event``). A device's hot loop calls :meth:`cancelled` (cheap: an attribute read
    in-process, one ``stat`` across processes) at least every ~100 ms of work and stops when it
    says True, raising ``InterruptedError`` (:meth:`raise_if_cancelled`); the job then ends
    CANCELLED."""

    job_id: str
    cancel_event: Any = None
    prepared: Any = None

    def cancelled(self) -> bool:
        return self.cancel_event is not None and bool(self.cancel_event.is_set())

    def raise_if_cancelled(self) -> None:
        if self.cancelled():
            raise InterruptedError(f"job {self.job_id} cancelled")

    def call(self, fn: Any, *args: Any, poll_s: float = 0.05, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` for work that cannot check for cancellation itself (a blocking
        call into another SDK): it runs in a helper thread while this thread checks every
        ``poll_s`` seconds; on a cancellation ``InterruptedError`` is raised at once and the
        call is abandoned (it runs to its end in the background; its result is dropped)."""
        self.raise_if_cancelled()
        box: dict = {}
        done = threading.Event()

        def target() -> None:
            try:
                box["value"] = fn(*args, **kwargs)
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
                box["error"] = exc
            finally:
                done.set()

        threading.Thread(target=target, name=f"kpp-call-{self.job_id[:8]}", daemon=True).start()
        while not done.wait(poll_s):
            self.raise_if_cancelled()
        if "error" in box:
            raise box["error"]
        return box["value"]


@dataclass(frozen=True)
class JobSpec:
    """A job checked by :meth:`Device.validate`: the problem, ``num_reads``, the complete options
    (defaults filled in, values normalised), what the device prepared for it and its estimated
    :class:`~kpp_sdk.limits.JobCost` (None before :meth:`Device.estimate_cost` has run)."""

    problem: IsingProblem
    num_reads: int
    options: dict
    prepared: Any = None
    cost: JobCost | None = None


def result_bytes(num_reads: int, n: int) -> int:
    """Memory of a result of ``num_reads`` samples of ``n`` spins: the int8 spins a
    :class:`SampleSet` keeps, its float64 energies and int64 occurrences, and the temporaries of
    checking the spins and computing the energies (three float64 blocks of at most
    :data:`kpp_sdk.problem.BLOCK_ELEMENTS` spins)."""
    from .problem import BLOCK_ELEMENTS

    r, n = int(num_reads), int(n)
    return r * (n + 32) + 3 * 8 * min(r * n, max(BLOCK_ELEMENTS, n))


def resolve_seed(seed: Any) -> int:
    """An int seed (a numpy Generator gives one draw), so a job is picklable and reproducible."""
    if seed is None:
        return int(np.random.SeedSequence().entropy % (2**63))
    if isinstance(seed, np.random.Generator):
        return int(seed.integers(0, 2**63 - 1))
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise InvalidOptionTypeError(f"seed must be an int or a numpy Generator, got {seed!r}")
    return check_int(seed, "seed", ge=0, le=2**63 - 1)


def _describe(value: Any) -> Any:
    """Option values as recorded in ``SampleSet.info``: arrays by shape, not by content."""
    if isinstance(value, np.ndarray):
        return f"<array {value.shape} {value.dtype}>"
    if isinstance(value, (list, tuple)) and len(value) > 16:
        return f"<sequence of {len(value)}>"
    return value


def _execute(device: "Device", spec: "JobSpec", seed: int, job_id: str, submitted_at: float,
             cancel_event: Any) -> SampleSet:
    """Runs in the executor's worker (a thread, a process or a dask worker)."""
    started = time.time()
    ctx = RunContext(job_id, cancel_event, spec.prepared)
    ctx.raise_if_cancelled()
    t0 = time.perf_counter()
    out = device._run(spec.problem, num_reads=spec.num_reads, seed=seed, options=spec.options,
                      ctx=ctx)
    run_s = time.perf_counter() - t0
    info = {"device": device.name, "num_reads": spec.num_reads, "seed": seed,
            **{k: _describe(v) for k, v in spec.options.items()}, **out.info}
    return SampleSet(
        spec.problem,
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


def _document_options(cls: type) -> None:
    """Give ``cls`` its own ``sample`` and ``submit`` whose docstring ends with the options table
    and whose signature lists the options, so ``help(device.sample)`` shows them."""
    import functools
    import inspect

    for meth in ("submit", "sample"):
        func = getattr(cls, meth)
        func = getattr(func, "__kpp_options_of__", func)

        @functools.wraps(func)
        def method(self, *args, __func=func, **kwargs):
            return __func(self, *args, **kwargs)

        method.__kpp_options_of__ = func
        table = textwrap.indent(cls.OPTIONS.describe(), "    ")
        title = f"Options of {cls.name or cls.__name__}"
        method.__doc__ = (f"{inspect.cleandoc(func.__doc__ or '')}\n\n{title}\n{'-' * len(title)}"
                          f"\n{table}\n")
        sig = inspect.signature(func)
        params = [p for p in sig.parameters.values() if p.kind is not p.VAR_KEYWORD]
        names = {p.name for p in params}
        params += [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=o.default)
                   for n, o in cls.OPTIONS.items() if n not in names]
        method.__signature__ = sig.replace(parameters=params)
        setattr(cls, meth, method)


class Device(abc.ABC):
    """An Ising machine, real or simulated.

    Subclasses set :attr:`name`, :attr:`OPTIONS` (an :class:`~kpp_sdk.options.OptionSpec`:
    every option's default, type, range, unit and doc in one place), :attr:`DEFAULT_NUM_READS`,
    implement :attr:`properties` and :meth:`_run`, and where they need them the hooks
    :meth:`_check_options` (checks across options) and :meth:`_prepare` (checks that need the
    problem and ``num_reads`` together, and work done once per job at validation).

    Parameters
    ----------
    executor : concurrent.futures.Executor, optional
        Runs this device's jobs. Default: one worker thread per device instance, so jobs run one
        at a time in submission order, as on a real machine.
    limits : kpp_sdk.limits.JobLimits, optional
        The most one job may cost (:meth:`estimate_cost`); default: from the environment and
        the profile (:func:`kpp_sdk.limits.resolve_limits`).
    **defaults
        Default values for any of :attr:`OPTIONS` (and ``num_reads``), validated now.
    """

    name: ClassVar[str] = ""
    OPTIONS: ClassVar[OptionSpec] = OptionSpec()
    DEFAULT_NUM_READS: ClassVar[int] = 100
    #: Options that make a run short (used by the conformance suite over every registered device).
    FAST_OPTIONS: ClassVar[Mapping[str, Any]] = {}
    #: Options that make a run on a small problem take minutes, within the default limits: the
    #: conformance suite cancels such a job while it runs (empty: the test is skipped).
    SLOW_OPTIONS: ClassVar[Mapping[str, Any]] = {}

    def __init_subclass__(cls, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        if "OPTIONS" in cls.__dict__:
            cls.OPTIONS = as_spec(cls.__dict__["OPTIONS"])
        _document_options(cls)

    def __init__(self, *, executor: cf.Executor | None = None, limits: JobLimits | None = None,
                 **defaults: Any):
        self._executor = executor
        self._own_executor: cf.ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        if limits is not None and not isinstance(limits, JobLimits):
            raise InvalidOptionError(f"limits must be a kpp_sdk.limits.JobLimits, got {limits!r}")
        self._limits = limits
        self._default_num_reads = self.check_num_reads(defaults.pop("num_reads",
                                                                    self.DEFAULT_NUM_READS))
        self._defaults = {**self.OPTIONS.defaults(),
                          **self.OPTIONS.validate(defaults, owner=self.name)}

    # --- pickling (process pools, dask) ---------------------------------------------------

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.setdefault("_limits", None)
        state["_executor"] = None
        state["_own_executor"] = None
        state["_lock"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        state.setdefault("_limits", None)
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
        """Do the work, blocking. ``options`` is complete (defaults filled in) and checked;
        ``ctx.prepared`` holds what :meth:`_prepare` returned; ``ctx.cancelled()`` says when to
        stop."""

    def _check_options(self, options: dict, problem: IsingProblem | None) -> dict:
        """Checks across options (each option's own type and range are in :attr:`OPTIONS`);
        ``problem`` is None when options are checked without one. Return the (possibly
        normalised) dict; raise :class:`InvalidOptionError` naming the option and the fix."""
        return options

    def _prepare(self, problem: IsingProblem, num_reads: int, options: dict) -> Any:
        """Checks that need the problem and ``num_reads`` together (e.g. the shape of initial
        states) and work done once per job (e.g. a schedule); the result reaches :meth:`_run`
        as ``ctx.prepared``. Runs in :meth:`validate`, before any job is queued."""
        self._check_run(problem, num_reads, options)
        return None

    def _check_run(self, problem: IsingProblem, num_reads: int, options: dict) -> None:
        """The pre-0.2 name of :meth:`_prepare`'s checks (devices that only check)."""

    def estimate_cost(self, spec: JobSpec) -> JobCost:
        """The compute time and peak memory of the job ``spec`` (checked, not yet prepared),
        from ``n``, the number of couplings, ``num_reads`` and the options alone: it must not
        allocate anything that grows with the job. :meth:`validate` compares it with
        :attr:`limits` before :meth:`_prepare` runs.

        This default knows only the result (:func:`result_bytes`) and cannot say the time
        (``seconds=None``); devices override it with their own model."""
        return JobCost(None, result_bytes(spec.num_reads, spec.problem.n),
                       {"result": result_bytes(spec.num_reads, spec.problem.n)})

    #: What :class:`~kpp_sdk.JobTooLargeError` tells the user to lower.
    COST_HINT: ClassVar[str] = "num_reads"

    @classmethod
    def check_available(cls) -> None:
        """Raise :class:`MissingDependencyError` if an optional dependency is missing."""

    # --- validation: public, one path for every caller --------------------------------------

    @property
    def options(self) -> dict:
        """The known options with this instance's defaults."""
        return dict(self._defaults)

    @property
    def limits(self) -> JobLimits:
        """The most one job may cost (see :mod:`kpp_sdk.limits`); settable."""
        if self._limits is None:
            self._limits = resolve_limits()
        return self._limits

    @limits.setter
    def limits(self, value: JobLimits) -> None:
        if not isinstance(value, JobLimits):
            raise InvalidOptionError(f"limits must be a kpp_sdk.limits.JobLimits, got {value!r}")
        self._limits = value

    @property
    def default_num_reads(self) -> int:
        """``num_reads`` of a job that does not say (the class's ``DEFAULT_NUM_READS`` unless the
        device was built with ``num_reads=``)."""
        return self._default_num_reads

    def check_num_reads(self, num_reads: Any) -> int:
        """``num_reads`` as an int in ``1 .. properties.max_reads`` or :class:`InvalidOptionError`."""
        n = check_int(num_reads, "num_reads", ge=1)
        limit = self.properties.max_reads
        if n > limit:
            raise InvalidOptionError(f"num_reads = {n} exceeds {self.name}'s limit of {limit}; "
                                     "split the work into several jobs")
        return n

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

    def check_options(self, **options: Any) -> dict:
        """The complete options of a job (this device's defaults with ``options`` over them),
        checked without a problem: names (:class:`UnknownOptionError` listing the known ones),
        types, ranges and checks across options."""
        given = self.OPTIONS.validate(options, owner=self.name)
        return self._check_options({**self._defaults, **given}, None)

    def validate(self, problem: IsingProblem, num_reads: int | None = None,
                 **options: Any) -> JobSpec:
        """Everything :meth:`submit` checks, without queueing work: the problem against
        :attr:`properties`, ``num_reads``, every option, the job's cost (:meth:`estimate_cost`)
        against :attr:`limits`, and what needs them together. Returns the checked
        :class:`JobSpec`; raises a :class:`~kpp_sdk.KppError` subclass that names the problem
        and the fix (:class:`~kpp_sdk.JobTooLargeError` for a job beyond the limits). The server
        and the samplers call this too, so a job that passes here is one the device can run."""
        problem = self.check_problem(problem)
        num_reads = self.check_num_reads(self._default_num_reads if num_reads is None
                                         else num_reads)
        given = self.OPTIONS.validate(options, owner=self.name)
        opts = self._check_options({**self._defaults, **given}, problem)
        cost = self.estimate_cost(JobSpec(problem, num_reads, opts))
        self.limits.check(cost, self.name, self.COST_HINT)
        prepared = self._prepare(problem, num_reads, opts)
        return JobSpec(problem, num_reads, opts, prepared, cost)

    # --- the derived API -----------------------------------------------------------------------

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

        Everything is validated here, before any work (:meth:`validate`): the problem against
        :attr:`properties`, unknown options (:class:`UnknownOptionError` naming the known ones),
        option values. ``seed`` (int or numpy Generator) makes the result reproducible; None
        draws a fresh one, recorded in ``result().info["seed"]``.
        """
        spec = self.validate(problem, num_reads, **options)
        seed = resolve_seed(seed)
        ex = self._executor_for(executor)
        job_id = new_job_id()
        submitted_at = time.time()
        # threads share the process: an Event; other executors (processes, dask workers on this
        # machine) see the token's flag file
        token = CancelToken(shared=not isinstance(ex, (cf.ThreadPoolExecutor, InlineExecutor)))
        try:
            fut = ex.submit(_execute, self, spec, seed, job_id, submitted_at, token)
            return Job(fut, job_id, self.name, cancel_event=token, submitted_at=submitted_at)
        except BaseException:
            # Ctrl-C (or an error) after the work was queued and before its Job exists: nobody
            # could cancel that work, and its worker thread would hold the process at exit. It
            # sees the token when it starts and ends at once.
            token.set()
            raise

    def sample_async(self, problem: IsingProblem, **kwargs: Any) -> Job:
        """The same as :meth:`submit` (the name DESIGN and dimod-style code use for it)."""
        return self.submit(problem, **kwargs)

    def sample(self, problem: IsingProblem, *, num_reads: int | None = None, seed: Any = None,
               timeout: float | None = None, **options: Any) -> SampleSet:
        """Blocking :meth:`submit` + :meth:`Job.result`."""
        return self.submit(problem, num_reads=num_reads, seed=seed, **options).result(timeout)

    def sample_ising(self, h: Any, J: Any, offset: float = 0.0, **kwargs: Any) -> SampleSet:
        """Sample dimod's Ising form, ``E(s) = sum_i h_i s_i + sum_{i<j} J_ij s_i s_j + offset``.

        This method carries dimod's name, so it takes dimod's arguments and sign (``h`` a
        sequence or ``{i: h_i}``, ``J`` ``{(i, j): J_ij}`` or a matrix; see
        :meth:`IsingProblem.from_dimod_ising`): ``sample_ising({0: 1.0}, {})`` returns ``s = -1``
        as every dimod sampler does. The result's energies are dimod's energies. Variables are
        ``0..n-1``; for other labels, or a ``dimod.SampleSet`` back, use
        :class:`kpp_sdk.interop.dimod.DimodSampler`. The SDK's own convention
        (``-1/2 s^T J s - h^T s``) is :class:`IsingProblem`'s: ``sample(IsingProblem(J, h))``.
        """
        return self.sample(IsingProblem.from_dimod_ising(h, J, offset), **kwargs)

    def sample_qubo(self, Q: Any, offset: float = 0.0, **kwargs: Any) -> SampleSet:
        """Sample ``E(x) = sum_{(u,v)} Q_uv x_u x_v + offset = x^T Q x + offset`` (dimod's QUBO:
        ``Q`` a matrix or ``{(u, v): Q_uv}`` over ``0..n-1``); the result's energies are the
        QUBO energies and :meth:`SampleSet.binary` gives ``x = (s + 1) / 2``."""
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
