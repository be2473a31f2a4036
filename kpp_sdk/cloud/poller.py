"""Resolves the futures of remote jobs: one background thread per ``cim.cloud`` device.

The thread long-polls ``POST /v1/jobs/poll`` with the statuses it knows; the server answers as
soon as one of them changes (or a new job of this poller's *watcher* id was submitted, so a job
submitted during a long poll is picked up at once). When a job reaches a final state the thread
fetches its result and resolves the job's future.

With ``long_poll=0`` it polls instead, with a backoff: the interval starts at ``interval_min``,
grows by half after every answer without news, up to ``interval_max``, and drops back to
``interval_min`` on news. A long poll that comes back without news well before its ``wait`` (a
server that does not hold long polls) gets the same backoff, so no server can make the poller
spin. Errors that a retry may cure (the server restarting, 5xx, 429) are retried by the HTTP
layer and then by this loop; ``max_outage`` seconds after the first failed poll *started*, no
retry starts any more and the outstanding jobs fail with the last error (so the outage is
``max_outage`` plus at most one request timeout); other errors fail the jobs concerned at once.

A result is read only up to the size its job can produce (:func:`~kpp_sdk.cloud.wire.
max_result_bytes`), and must hold ``num_reads`` samples (fewer only when their occurrences add up
to at least ``num_reads``: a de-duplicated result).
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import (
    InvalidResponseError,
    JobCancelledError,
    JobFailedError,
    KppError,
    NotFoundError,
)
from ..problem import IsingProblem
from ..sampleset import SampleSet
from . import wire
from .client import HttpClient, is_retryable

__all__ = ["JobPoller"]

log = logging.getLogger("kpp_sdk.cloud.poller")

P = wire.API_PREFIX


@dataclass
class _Tracked:
    job_id: str
    future: cf.Future
    problem: IsingProblem
    known: str
    num_reads: int | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    running: bool = False
    fetch_errors: int = 0


def _sample_count_problem(ss: wire.SampleSetPayload, num_reads: int | None) -> str:
    """Why a result cannot be the answer to ``num_reads`` reads ('' when it can)."""
    if num_reads is None:
        return ""
    m = ss.num_samples
    if m > num_reads:
        return f"{m} samples for num_reads = {num_reads}"
    if m < num_reads:
        try:
            total = int(wire.decode_array(ss.num_occurrences, what="num_occurrences",
                                          dtypes=("int64",), ndim=1).sum())
        except KppError:
            return ""  # the decoder names the defect
        if total < num_reads:
            return (f"{m} samples (occurrences adding up to {total}) for num_reads = "
                    f"{num_reads}; a result holds num_reads samples, or fewer distinct ones "
                    "whose occurrences add up to at least num_reads")
    return ""


class JobPoller:
    """See the module docstring. ``finish(result, problem)`` turns a DONE
    :class:`~kpp_sdk.cloud.wire.JobResult` into the job's :class:`SampleSet`."""

    def __init__(self, http: HttpClient,
                 finish: Callable[[wire.JobResult, IsingProblem], SampleSet],
                 *, long_poll: float = 10.0, interval_min: float = 0.05, interval_max: float = 2.0,
                 max_outage: float = 300.0, idle_exit: float = 30.0):
        self.http = http
        self.finish = finish
        self.long_poll = max(float(long_poll), 0.0)
        self.interval_min, self.interval_max = float(interval_min), float(interval_max)
        self.max_outage = float(max_outage)
        self.idle_exit = float(idle_exit)
        #: Sent with submits and polls: a submit wakes this poller's long poll on the server.
        self.watcher = uuid.uuid4().hex
        self._jobs: dict[str, _Tracked] = {}
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._inflight = 0
        self._closed = False

    # --- called by the device ---------------------------------------------------------------

    def begin_submit(self) -> None:
        """A submit is under way: until :meth:`end_submit`, long polls are kept short so the new
        job is watched promptly."""
        with self._cond:
            self._inflight += 1

    def end_submit(self) -> None:
        with self._cond:
            self._inflight -= 1
            self._cond.notify_all()

    def track(self, info: wire.JobInfo, problem: IsingProblem,
              num_reads: int | None = None) -> cf.Future:
        """The future of job ``info.id`` (the same one if the job is tracked already);
        ``num_reads`` is what was asked for (checked against the result)."""
        wire.check_job_id(info.id)
        with self._cond:
            known = self._jobs.get(info.id)
            if known is not None:
                return known.future
        fut: cf.Future = cf.Future()
        t = _Tracked(info.id, fut, problem, info.status,
                     info.num_reads if num_reads is None else int(num_reads))
        if info.status == "RUNNING":
            self._mark_running(t)
        with self._cond:
            if self._closed:
                raise RuntimeError("this cim.cloud device is closed")
            self._jobs[info.id] = t
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="kpp-cloud-poller",
                                                daemon=True)
                self._thread.start()
            self._cond.notify_all()
        return fut

    def mark_running(self, job_id: str) -> bool:
        """Move the local future to running (so it can no longer be cancelled locally); False
        if it was cancelled already."""
        t = self._jobs.get(job_id)
        return True if t is None else self._mark_running(t)

    def future_of(self, job_id: str) -> cf.Future | None:
        with self._cond:
            t = self._jobs.get(job_id)
            return None if t is None else t.future

    def outstanding(self) -> list[cf.Future]:
        with self._cond:
            return [t.future for t in self._jobs.values()]

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    # --- internals ----------------------------------------------------------------------------

    @staticmethod
    def _mark_running(t: _Tracked) -> bool:
        with t.lock:
            if not t.running:
                t.running = True
                return t.future.set_running_or_notify_cancel()
            return not t.future.cancelled()

    def _untrack(self, job_id: str) -> None:
        with self._cond:
            self._jobs.pop(job_id, None)

    def _resolve(self, t: _Tracked, result: SampleSet | None = None,
                 error: BaseException | None = None) -> None:
        with t.lock:
            if not t.future.done():
                if error is not None:
                    t.future.set_exception(error)
                else:
                    t.future.set_result(result)
        self._untrack(t.job_id)

    def _fetch(self, t: _Tracked) -> bool:
        """Fetch and deliver a final job's result; False if it must be tried again."""
        try:
            res = self.http.request("GET", wire.job_path(t.job_id, "/result"),
                                    model=wire.JobResult, what=f"result of job {t.job_id}",
                                    max_bytes=wire.max_result_bytes(t.num_reads or 1,
                                                                    t.problem.n))
        except KppError as exc:
            t.fetch_errors += 1
            if not is_retryable(exc) or t.fetch_errors > 20:
                self._resolve(t, error=exc)
                return True
            return False
        status = res.job.status
        if status == "DONE":
            if res.sampleset is None:
                self._resolve(t, error=JobFailedError(f"job {t.job_id}: DONE without a result"))
                return True
            bad = _sample_count_problem(res.sampleset, t.num_reads)
            if bad:
                self._resolve(t, error=InvalidResponseError(f"result of job {t.job_id}: {bad}"))
                return True
            try:
                ss = self.finish(res, t.problem)
            except KppError as exc:
                self._resolve(t, error=exc)
                return True
            self._resolve(t, result=ss)
        elif status == "CANCELLED":
            self._resolve(t, error=JobCancelledError(f"job {t.job_id} was cancelled on the server"))
        elif status == "FAILED":
            err = res.job.error
            what = f"{err.type}: {err.message}" if err else "no reason given"
            self._resolve(t, error=JobFailedError(f"job {t.job_id} failed on the server: {what}"))
        else:  # the store moved it back (a server restart re-queued it): keep polling
            t.known = status
        return True

    def _sleep(self, seconds: float) -> None:
        with self._cond:
            if not self._closed:
                self._cond.wait(timeout=seconds)

    def _run(self) -> None:
        interval = self.interval_min
        outage_since: float | None = None
        outage_attempt = 0
        while True:
            with self._cond:
                # a submit under way: wait for its job to be tracked, then poll for it too
                self._cond.wait_for(lambda: not self._inflight or self._closed, timeout=0.5)
                while not self._jobs and not self._closed:
                    if not self._cond.wait(timeout=self.idle_exit) and not self._jobs:
                        self._thread = None
                        return
                if self._closed:
                    self._thread = None
                    return
                items = list(self._jobs.values())
                inflight = self._inflight
            for t in items:
                if t.future.cancelled():  # cancelled here; the server was told by the hook
                    self._untrack(t.job_id)
            fetch_failed = 0
            for t in items:
                if (t.known in wire.FINAL_STATUSES and not t.future.done()
                        and not self._fetch(t)):
                    fetch_failed = max(fetch_failed, t.fetch_errors)
            if fetch_failed:
                self._sleep(self.http.backoff(min(fetch_failed, 8)))
            pending = {t.job_id: t.known for t in items
                       if t.known not in wire.FINAL_STATUSES and not t.future.done()}
            if not pending:
                continue
            wait = self.long_poll if not inflight else min(self.long_poll, 0.2)
            started = time.monotonic()
            since = outage_since if outage_since is not None else started
            try:
                resp = self.http.request(
                    "POST", f"{P}/jobs/poll",
                    body={"jobs": pending, "wait": wait, "watcher": self.watcher},
                    model=wire.PollResponse, read_timeout=wait + self.http.read_timeout,
                    what="poll", deadline=since + self.max_outage)
            except KppError as exc:
                now = time.monotonic()
                outage_since = since
                if not is_retryable(exc) or now - outage_since >= self.max_outage:
                    for i in pending:
                        t = self._jobs.get(i)
                        if t is not None:
                            self._resolve(t, error=exc)
                    outage_since, outage_attempt = None, 0
                else:
                    log.warning("polling %d job(s) failed (%s); still trying", len(pending), exc)
                    self._sleep(self.http.backoff(outage_attempt))
                    outage_attempt += 1
                continue
            outage_since, outage_attempt = None, 0
            news = False
            for info in resp.jobs:
                t = self._jobs.get(info.id)
                if t is None:
                    continue
                if info.status != t.known:
                    news = True
                    t.known = info.status
                if info.status == "RUNNING":
                    self._mark_running(t)
            for i in resp.missing:
                t = self._jobs.get(i)
                if t is not None:
                    news = True
                    self._resolve(t, error=NotFoundError(
                        f"the server no longer knows job {i} (was its store replaced?)", 404))
            quick = time.monotonic() - started < 0.5 * wait
            if self.long_poll <= 0 or (quick and not news and not inflight):
                # plain polling, or a long poll answered at once without news: back off
                interval = self.interval_min if news else min(interval * 1.5, self.interval_max)
                self._sleep(interval)
            elif news:
                interval = self.interval_min
