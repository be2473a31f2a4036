"""Jobs: the non-blocking handle every :meth:`Device.submit` returns.

A local job is a real :class:`concurrent.futures.Future` run by any
:class:`concurrent.futures.Executor` (a thread pool by default, a process pool or a
dask.distributed ``client.get_executor()`` when one machine is not enough). ``result()`` either
returns a :class:`SampleSet` or raises: it never returns None.
"""

from __future__ import annotations

import concurrent.futures as cf
import enum
import os
import tempfile
import threading
import time
import uuid
import weakref
from typing import Any, Callable, Iterable, Iterator

from .errors import JobCancelledError, JobError, JobFailedError, JobTimeoutError

__all__ = ["Job", "JobStatus", "InlineExecutor", "CancelToken", "wait", "as_completed",
           "active_jobs", "cancel_active_jobs", "FIRST_COMPLETED", "ALL_COMPLETED"]

FIRST_COMPLETED = cf.FIRST_COMPLETED
ALL_COMPLETED = cf.ALL_COMPLETED
FIRST_EXCEPTION = cf.FIRST_EXCEPTION


class JobStatus(str, enum.Enum):
    """Where a job is. ``DONE``, ``FAILED`` and ``CANCELLED`` are final (:attr:`FINAL`)."""

    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    DONE = "DONE"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def is_final(self) -> bool:
        return self in _FINAL


_FINAL = frozenset({JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED})
JobStatus.FINAL = _FINAL  # type: ignore[attr-defined]


class InlineExecutor(cf.Executor):
    """Runs each submitted call at once in the caller's thread and returns a finished future.

    A caller that waits for every job at once (a training loop, a batch selector) gains nothing
    from a worker thread but the hand-offs; pass ``executor=InlineExecutor()`` to
    :meth:`Device.submit`. :class:`~kpp_sdk.models.samplers.BoltzmannSampler` and
    :func:`~kpp_sdk.selection.solve_selection` do so for local devices.

    An exception of the work is delivered through the future; a ``KeyboardInterrupt`` (Ctrl-C)
    or ``SystemExit`` is not work failing: the future ends cancelled and the interrupt goes on
    up the caller's stack."""

    def submit(self, fn, /, *args, **kwargs):
        fut: cf.Future = cf.Future()
        fut.set_running_or_notify_cancel()
        try:
            fut.set_result(fn(*args, **kwargs))
        except Exception as exc:  # noqa: BLE001 - delivered through the future
            fut.set_exception(exc)
        except BaseException:
            fut.set_exception(JobCancelledError("the job was interrupted"))
            raise
        return fut


class CancelToken:
    """The flag :meth:`Job.cancel` sets and a running job polls (``is_set()``), picklable.

    In one process it is a ``threading.Event``. With ``shared=True`` (jobs run by a process pool
    or another executor outside this process, on this machine) :meth:`set` also creates a flag
    file in the temporary folder that :meth:`is_set` looks for (one ``stat``), so the copy
    unpickled in the worker sees the cancellation too. :meth:`discard` removes the file."""

    __slots__ = ("_event", "_path")

    def __init__(self, shared: bool = False):
        self._event = threading.Event()
        self._path = (os.path.join(tempfile.gettempdir(), f"kpp-cancel-{uuid.uuid4().hex}")
                      if shared else None)

    def set(self) -> None:
        self._event.set()
        if self._path is not None:
            try:
                with open(self._path, "a"):
                    pass
            except OSError:  # pragma: no cover - an unwritable temp folder: in-process only
                pass

    def is_set(self) -> bool:
        if self._event.is_set():
            return True
        if self._path is not None and os.path.exists(self._path):
            self._event.set()
            return True
        return False

    def discard(self) -> None:
        """Remove the flag file (the job is over)."""
        if self._path is not None:
            try:
                os.unlink(self._path)
            except FileNotFoundError:
                pass

    def __getstate__(self) -> tuple:
        return (self._path, self._event.is_set())

    def __setstate__(self, state: tuple) -> None:
        self._path, was_set = state
        self._event = threading.Event()
        if was_set:
            self._event.set()


#: Jobs of this process that are not finished yet (see :func:`cancel_active_jobs`).
_ACTIVE: "weakref.WeakSet[Job]" = weakref.WeakSet()
_ACTIVE_LOCK = threading.Lock()


def active_jobs() -> list["Job"]:
    """The unfinished jobs submitted from this process (that something still refers to)."""
    with _ACTIVE_LOCK:
        return [j for j in list(_ACTIVE) if not j.done()]


def cancel_active_jobs(timeout: float = 2.0) -> tuple[int, int]:
    """Cancel every unfinished job of this process and wait up to ``timeout`` seconds in all for
    them to end (what ``kpp`` does on Ctrl-C). Cancels run in helper threads, so a remote job
    whose server does not answer cannot hold the caller. Returns ``(cancelled, still_running)``."""
    jobs = active_jobs()
    if not jobs:
        return 0, 0
    deadline = time.monotonic() + timeout

    def cancel(j: "Job") -> None:
        try:
            j.cancel()
        except Exception:  # noqa: BLE001 - e.g. the server of a remote job is unreachable
            pass

    threads = [threading.Thread(target=cancel, args=(j,), daemon=True) for j in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    cf.wait([j.future for j in jobs], timeout=max(0.0, deadline - time.monotonic()))
    return len(jobs), sum(1 for j in jobs if not j.done())


def new_job_id() -> str:
    return uuid.uuid4().hex


class Job:
    """A submitted sampling job.

    Parameters
    ----------
    future : concurrent.futures.Future
        Resolves to a :class:`~kpp_sdk.SampleSet`. A cancellation inside the running work is
        signalled by raising :class:`JobCancelledError` (or ``InterruptedError``).
    job_id : str, optional
    device : str
        Name of the device that runs it.
    cancel_event : CancelToken or threading.Event, optional
        Set by :meth:`cancel` so that cooperative work that is already running can stop early.
    cancel_hook : callable, optional
        Called by :meth:`cancel` (remote devices use it to cancel on the server); returns True if
        the cancellation was accepted.
    """

    def __init__(
        self,
        future: cf.Future,
        job_id: str | None = None,
        device: str = "",
        *,
        cancel_event: threading.Event | None = None,
        cancel_hook: Callable[[], bool] | None = None,
        submitted_at: float | None = None,
    ):
        self._future = future
        self.id = job_id or new_job_id()
        self.device = device
        self._cancel_event = cancel_event
        self._cancel_hook = cancel_hook
        self.submitted_at = time.time() if submitted_at is None else submitted_at
        self.finished_at: float | None = None
        with _ACTIVE_LOCK:
            _ACTIVE.add(self)
        future.add_done_callback(self._mark_finished)

    def _mark_finished(self, _f: cf.Future) -> None:
        self.finished_at = time.time()
        discard = getattr(self._cancel_event, "discard", None)
        if discard is not None:
            discard()

    def __repr__(self) -> str:
        return f"Job(id={self.id!r}, device={self.device!r}, status={self.status().value})"

    # --- state ----------------------------------------------------------------------------

    def status(self) -> JobStatus:
        f = self._future
        if f.cancelled():
            return JobStatus.CANCELLED
        if f.done():
            exc = f.exception()
            if exc is None:
                return JobStatus.DONE
            return JobStatus.CANCELLED if _is_cancellation(exc) else JobStatus.FAILED
        if f.running():
            return JobStatus.RUNNING
        return JobStatus.QUEUED

    def done(self) -> bool:
        """True once the job is in a final state."""
        return self._future.done()

    def running(self) -> bool:
        return self.status() is JobStatus.RUNNING

    def cancelled(self) -> bool:
        return self.status() is JobStatus.CANCELLED

    def cancel(self) -> bool:
        """Cancel the job; True if it will not produce a result.

        A queued job is removed from its executor. A running local job is asked to stop at its
        next check point (every device checks at least every ~100 ms of work); it then ends
        CANCELLED. A remote job is cancelled on its server. A finished job cannot be cancelled
        (False).
        """
        if self._future.done():
            return self.status() is JobStatus.CANCELLED
        accepted = False
        if self._cancel_hook is not None:
            accepted = bool(self._cancel_hook())
        if self._future.cancel():
            return True
        if self._cancel_event is not None:
            self._cancel_event.set()
            accepted = True
            if self._future.done():  # finished meanwhile: its callback may have run already
                discard = getattr(self._cancel_event, "discard", None)
                if discard is not None:
                    discard()
        return accepted

    # --- results --------------------------------------------------------------------------

    def result(self, timeout: float | None = None):
        """The :class:`SampleSet`; blocks up to ``timeout`` seconds (None: forever).

        Raises
        ------
        JobTimeoutError
            The timeout passed; the job keeps going, call ``result`` again later.
        JobCancelledError
            The job was cancelled.
        JobFailedError
            The work raised; the original exception is chained (``__cause__``).
        """
        try:
            ss = self._future.result(timeout=timeout)
        except (KeyboardInterrupt, SystemExit, GeneratorExit):
            raise  # the caller was interrupted (Ctrl-C): not the job's failure
        except cf.CancelledError:
            raise JobCancelledError(f"job {self.id} was cancelled") from None
        except cf.TimeoutError:
            raise JobTimeoutError(
                f"job {self.id} on {self.device or 'the device'} did not finish within "
                f"{timeout} s (status {self.status().value}); it keeps running"
            ) from None
        except Exception as exc:  # noqa: BLE001 - re-raised with a uniform class
            if _is_cancellation(exc):
                raise JobCancelledError(f"job {self.id} was cancelled while running") from None
            if isinstance(exc, JobError):
                raise
            raise JobFailedError(f"job {self.id} on {self.device} failed: {exc!r}") from exc
        if ss is None:  # pragma: no cover - a device bug; never hand None to the user
            raise JobFailedError(f"job {self.id}: the device returned no result")
        end = self.finished_at or time.time()
        ss.timing["wall_s"] = max(end - self.submitted_at, 0.0)
        ss.job_id = self.id
        return ss

    def exception(self, timeout: float | None = None) -> BaseException | None:
        try:
            self.result(timeout)
        except JobTimeoutError:
            raise
        except JobError as exc:
            return exc
        return None

    def add_done_callback(self, fn: Callable[["Job"], Any]) -> None:
        """Call ``fn(job)`` when the job reaches a final state (at once if it already has)."""
        self._future.add_done_callback(lambda _f: fn(self))

    @property
    def future(self) -> cf.Future:
        return self._future


def _is_cancellation(exc: BaseException) -> bool:
    return isinstance(exc, (JobCancelledError, InterruptedError, cf.CancelledError))


def wait(jobs: Iterable[Job], timeout: float | None = None, return_when: str = ALL_COMPLETED):
    """Like :func:`concurrent.futures.wait`: returns ``(done, not_done)`` sets of jobs."""
    jobs = list(jobs)
    by_future = {j._future: j for j in jobs}
    done, not_done = cf.wait(by_future, timeout=timeout, return_when=return_when)
    return {by_future[f] for f in done}, {by_future[f] for f in not_done}


def as_completed(jobs: Iterable[Job], timeout: float | None = None) -> Iterator[Job]:
    """Yield jobs as they finish; raises :class:`JobTimeoutError` if ``timeout`` passes first."""
    jobs = list(jobs)
    by_future = {j._future: j for j in jobs}
    try:
        for f in cf.as_completed(by_future, timeout=timeout):
            yield by_future[f]
    except cf.TimeoutError:
        pending = sum(1 for f in by_future if not f.done())
        raise JobTimeoutError(f"{pending} of {len(jobs)} jobs unfinished after {timeout} s") from None
