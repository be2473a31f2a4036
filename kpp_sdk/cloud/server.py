"""``kpp serve``: any registered Device behind the kpp wire format (FastAPI + uvicorn).

Pieces, outermost first:

* The HTTP protocol (:func:`header_timeout_protocol`): a connection that has not sent a complete
  request head within ``header_timeout_s`` is closed (slow or idle clients cannot hold sockets).
* :class:`AccessLog` (ASGI): one JSON log line per request (method, path, status, duration, the
  client's *name*). Headers are never logged, so neither is a token.
* :class:`Authenticate` (ASGI): the bearer token is checked from the headers, before any of the
  body is read; every route except ``/v1/health`` answers 401 without one.
* :class:`BodyLimit` (ASGI): a request body over ``max_request_bytes`` gets 413 before it is
  read (what was sent is read and dropped, up to :data:`DRAIN_LIMIT_FACTOR` times the limit, so
  that the client, still uploading, reads the 413 instead of a reset connection). Bodies over
  :data:`LARGE_BODY_BYTES` are read at most ``max_large_bodies`` at a time (the others wait, then
  get 503 + Retry-After); every chunk must arrive within ``body_timeout_s`` (else 408).
* The routes (see ``docs/openapi.json``): every authenticated request takes one unit of that
  token's rate limit (429 + Retry-After). A submit is checked as the device checks it
  (:meth:`Device.validate <kpp_sdk.Device.validate>`), and its cost against the server's job
  limits (``max_job_seconds``, ``max_job_memory``: the decoded problem, the device's working
  memory and the encoded result) before anything is stored; the memory of decoding is taken from
  a budget shared by concurrent submits.
* :class:`Dispatcher`: claims QUEUED jobs from the :class:`~kpp_sdk.cloud.store.JobStore` in
  submission order and runs up to ``workers`` of them at once with ``device.submit`` on a thread
  pool; results go back to the store. A cancel of a running job reaches the device's
  cooperative cancellation.
* :class:`ChangeNotifier`: wakes long polls (``POST /v1/jobs/poll``) when one of their jobs
  changes state, so a client learns of a finished job within milliseconds without busy polling.
* :class:`Janitor`: applies the store's retention policy (:class:`~kpp_sdk.cloud.store.
  RetentionPolicy`) every :data:`PURGE_INTERVAL_S`; the result of an expired job is 410.

On SIGTERM the server stops claiming jobs, gives running ones ``shutdown_grace_s`` seconds, then
cancels them (every device stops within about a second) and puts them back in the queue; a job
that still has not stopped :data:`CANCEL_WAIT_S` later is re-queued all the same and the process
exits without waiting for it.
"""

# No `from __future__ import annotations`: FastAPI reads the route signatures at run time and the
# fastapi names are imported inside create_app (so importing this module does not need them).

import asyncio
import concurrent.futures as cf
import contextlib
import hashlib
import json
import logging
import math
import os
import sys
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .. import __version__
from ..device import Device
from ..errors import (
    ConfigError,
    DeviceNotFoundError,
    InvalidOptionError,
    JobCancelledError,
    JobFailedError,
    KppError,
)
from ..limits import JobCost, JobLimits, format_bytes
from . import wire
from .auth import Principal, RateLimiter, TokenRegistry
from .errors import status_for_exception
from .store import JobRow, JobStore, RetentionPolicy

__all__ = ["ServerConfig", "ServerState", "create_app", "build_state", "load_tokens", "serve",
           "openapi_document", "Dispatcher", "ChangeNotifier", "Janitor", "MemoryBudget",
           "configure_logging", "header_timeout_protocol", "compact_store"]

log = logging.getLogger("kpp_sdk.cloud.server")

DEFAULT_MAX_REQUEST_BYTES = 64 * 2**20
#: A rejected body is read and dropped up to this multiple of the limit; past it the connection
#: is closed (the client may then see a reset instead of the 413).
DRAIN_LIMIT_FACTOR = 4
#: Decoded arrays of one request may take at most this multiple of ``max_request_bytes``.
DECODED_LIMIT_FACTOR = 4
LONG_POLL_MAX_S = 30.0
#: Seconds open requests get to finish after SIGTERM before they are cut off.
HTTP_DRAIN_S = 2.0
#: Default of ``--max-job-memory``: small enough that no request can make the server grow by
#: much more (the decoded problem, the device's working memory and the encoded result count).
DEFAULT_MAX_JOB_MEMORY = 128 * 2**20
#: Default of ``--max-job-seconds`` (estimated compute seconds of one core).
DEFAULT_MAX_JOB_SECONDS = 600.0
#: Request bodies over this many bytes are "large": at most ``max_large_bodies`` at once.
LARGE_BODY_BYTES = 2**20
#: A large body waits this long for its turn before the server answers 503.
LARGE_BODY_WAIT_S = 30.0
#: A submit waits this long for decoding memory (the budget shared by concurrent submits).
DECODE_WAIT_S = 30.0
#: After a cancel at shutdown, running jobs get this long to stop before the server exits anyway.
CANCEL_WAIT_S = 5.0
#: The retention policy runs this often (seconds).
PURGE_INTERVAL_S = 60.0
#: An unauthenticated body is read and dropped up to this many bytes (so the client sees the
#: 401), then the connection is closed.
UNAUTHENTICATED_DRAIN_BYTES = 2**20
#: Paths that need no token.
PUBLIC_PATHS = frozenset({"/v1/health"})


@dataclass
class ServerConfig:
    """Settings of one ``kpp serve`` process (the CLI flags of the same names)."""

    devices: list[str] = field(default_factory=lambda: ["sa.cpu"])
    device_options: dict = field(default_factory=dict)
    host: str = "127.0.0.1"
    port: int = 8000
    tokens_file: str | None = None
    no_auth: bool = False
    store: str = "kpp-jobs.sqlite3"
    workers: int = 1
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    rate_limit: float = 50.0
    burst: float | None = None
    max_attempts: int = 3
    paused: bool = False
    shutdown_grace_s: float = 10.0
    log_level: str = "info"
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    max_job_seconds: float | None = DEFAULT_MAX_JOB_SECONDS
    max_job_memory: int | None = DEFAULT_MAX_JOB_MEMORY
    retention_s: float | None = 7 * 86_400.0
    max_store_bytes: int | None = 2**30
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    max_large_bodies: int = 2
    max_connections: int = 1000
    warm_up: bool = True

    @property
    def limits(self) -> JobLimits:
        """The job limits every served device applies."""
        return JobLimits(self.max_job_seconds, self.max_job_memory, "kpp serve limits")

    @property
    def retention(self) -> RetentionPolicy:
        return RetentionPolicy(self.retention_s, self.max_store_bytes)


# --- logging ---------------------------------------------------------------------------------


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``event`` and the record's
    ``kpp`` extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        doc.update(getattr(record, "kpp", {}) or {})
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def configure_logging(level: str = "info", stream: Any = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level.upper())


def _event(level: int, event: str, **fields: Any) -> None:
    log.log(level, event, extra={"kpp": fields})


# --- errors ------------------------------------------------------------------------------------


class ApiError(Exception):
    def __init__(self, status: int, etype: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.etype, self.message, self.headers = status, etype, message, headers or {}


def _error_body(status: int, etype: str, message: str) -> bytes:
    return json.dumps({"error": {"type": etype, "message": message}, "status": status}).encode()


# --- ASGI middleware -----------------------------------------------------------------------------


def _content_length(scope: Any) -> int | None:
    for k, v in scope["headers"]:
        if k == b"content-length":
            try:
                return int(v)
            except ValueError:
                return None
    return None


async def _send_error(send: Any, status: int, etype: str, message: str,
                      headers: list | None = None, close: bool = False) -> None:
    body = _error_body(status, etype, message)
    head = [(b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()), *(headers or [])]
    if close:
        head.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


async def _drain(receive: Any, cap: int, timeout: float | None = None) -> None:
    """Read and drop the request body, up to ``cap`` bytes."""
    seen = 0
    while seen <= cap:
        try:
            msg = await asyncio.wait_for(receive(), timeout)
        except asyncio.TimeoutError:
            return
        if msg["type"] != "http.request":
            return
        seen += len(msg.get("body", b""))
        if not msg.get("more_body"):
            return


class Authenticate:
    """401 before any of the body is read (see the module docstring). The principal goes to
    ``scope["state"]["kpp_principal"]`` for the routes; ``tokens`` None accepts everyone as the
    admin ``local`` (``--no-auth``)."""

    def __init__(self, app: Any, tokens: TokenRegistry | None):
        self.app, self.tokens = app, tokens

    def identify(self, scope: Any) -> Principal | None:
        if self.tokens is None:
            return Principal("local", role="admin")
        for k, v in scope["headers"]:
            if k == b"authorization":
                scheme, _, cred = v.decode("latin-1").partition(" ")
                if scheme.lower() == "bearer" and cred.strip():
                    return self.tokens.identify(cred.strip())
                return None
        return None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS \
                or not scope["path"].startswith(wire.API_PREFIX + "/"):
            return await self.app(scope, receive, send)
        who = self.identify(scope)
        if who is None:
            length = _content_length(scope)
            pending = length is None or length > 0
            if pending and (length or 0) <= UNAUTHENTICATED_DRAIN_BYTES:
                await _drain(receive, UNAUTHENTICATED_DRAIN_BYTES, timeout=5.0)
            await _send_error(
                send, 401, "AuthenticationError",
                "missing or invalid bearer token; send 'Authorization: Bearer <token>' with a "
                "token this server knows", [(b"www-authenticate", b'Bearer realm="kpp"')],
                close=pending)
            return
        scope.setdefault("state", {})["kpp_principal"] = who
        scope["state"]["client"] = who.name
        return await self.app(scope, receive, send)


class BodyLimit:
    """413 for request bodies over ``max_bytes``, one large body at a time per slot, and a
    per-chunk read timeout (see the module docstring). The body is read here and handed to the
    app in one piece."""

    def __init__(self, app: Any, max_bytes: int, *, max_large: int = 2,
                 body_timeout_s: float = 30.0, large_bytes: int = LARGE_BODY_BYTES,
                 large_wait_s: float = LARGE_BODY_WAIT_S):
        self.app, self.max_bytes = app, int(max_bytes)
        self.large_bytes = int(large_bytes)
        self.large_wait_s = float(large_wait_s)
        self.body_timeout_s = float(body_timeout_s)
        self._large = asyncio.Semaphore(max(1, int(max_large)))

    async def _reject(self, send: Any, size: str) -> None:
        await _send_error(send, 413, "RequestTooLargeError",
                          f"the request body is {size}; this server accepts at most "
                          f"{self.max_bytes:,} bytes (kpp serve --max-request-bytes). Send a "
                          "smaller problem, or a sparse one", close=True)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = _content_length(scope)
        if length is not None and length > self.max_bytes:
            await _drain(receive, DRAIN_LIMIT_FACTOR * self.max_bytes, self.body_timeout_s)
            return await self._reject(send, f"{length:,} bytes")
        if length == 0 or (length is None and scope["method"] in ("GET", "HEAD", "DELETE")):
            return await self.app(scope, receive, send)
        if length is None or length > self.large_bytes:
            try:
                await asyncio.wait_for(self._large.acquire(), self.large_wait_s)
            except asyncio.TimeoutError:
                return await _send_error(
                    send, 503, "ServerError", "the server is busy reading other large requests; "
                    "retry later", [(b"retry-after", b"5")], close=True)
            try:
                return await self._read_and_call(scope, receive, send, length)
            finally:
                self._large.release()
        return await self._read_and_call(scope, receive, send, length)

    async def _read_and_call(self, scope: Any, receive: Any, send: Any,
                             length: int | None) -> None:
        chunks, size = [], 0
        while True:
            try:
                msg = await asyncio.wait_for(receive(), self.body_timeout_s)
            except asyncio.TimeoutError:
                return await _send_error(
                    send, 408, "ServerError", f"the request body did not arrive within "
                    f"{self.body_timeout_s:g} s per chunk (kpp serve --body-timeout)", close=True)
            if msg["type"] != "http.request":
                return  # the client went away
            chunks.append(msg.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                await _drain(receive, DRAIN_LIMIT_FACTOR * self.max_bytes, self.body_timeout_s)
                return await self._reject(send, f"over {self.max_bytes:,} bytes")
            if not msg.get("more_body"):
                break
        body = b"".join(chunks)
        del chunks
        sent = False

        async def replay() -> dict:
            nonlocal sent, body
            if not sent:
                sent = True
                msg = {"type": "http.request", "body": body, "more_body": False}
                body = b""  # the app owns it now: no second reference for the request's life
                return msg
            return await receive()

        return await self.app(scope, replay, send)


def header_timeout_protocol(seconds: float) -> type:
    """uvicorn's h11 protocol with a deadline for the request head: a connection that has not
    sent a complete request line and headers ``seconds`` after it opened (or after its previous
    response) is closed."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderTimeoutProtocol(H11Protocol):
        header_timeout_s = float(seconds)
        _head_timer: Any = None

        def _arm(self) -> None:
            self._disarm()
            self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_expired)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_expired(self) -> None:
            self._head_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                _event(logging.INFO, "connection.head_timeout", timeout_s=self.header_timeout_s)
                self.transport.close()

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def connection_lost(self, exc: Any) -> None:
            self._disarm()
            super().connection_lost(exc)

        def handle_events(self) -> None:
            super().handle_events()
            if self.conn.their_state is not h11.IDLE:
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
                self._arm()

    return HeaderTimeoutProtocol


class AccessLog:
    """One log line per request; adds ``X-Request-Id`` to every answer."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        rid = uuid.uuid4().hex[:12]
        state = scope.setdefault("state", {})
        state["request_id"] = rid
        status = [500]

        async def send_wrapper(msg: dict) -> None:
            if msg["type"] == "http.response.start":
                status[0] = msg["status"]
                msg = dict(msg)
                msg["headers"] = [*msg.get("headers", []), (b"x-request-id", rid.encode())]
            await send(msg)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            _event(logging.INFO, "request", method=scope["method"], path=scope["path"],
                   status=status[0], ms=round(1000 * (time.perf_counter() - t0), 2),
                   client=state.get("client", "-"), request_id=rid)


# --- change notification -------------------------------------------------------------------------


class ChangeNotifier:
    """Wakes the long polls waiting on a job; :meth:`notify` may be called from any thread."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: dict[str, set[asyncio.Event]] = {}
        #: Set when the server is shutting down: long polls answer at once.
        self.closing = False

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def notify(self, job_id: str) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop is shutting down
            loop.call_soon_threadsafe(self._wake, job_id)

    def _wake(self, job_id: str) -> None:
        for ev in self._waiters.pop(job_id, ()):
            ev.set()

    def wake_all(self) -> None:
        """Answer every open long poll now (the server is shutting down)."""
        self.closing = True
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._wake_everyone)

    def _wake_everyone(self) -> None:
        for key in list(self._waiters):
            self._wake(key)

    @contextlib.contextmanager
    def watch(self, ids: Iterable[str]):
        """An event set when any of ``ids`` changes (call in the event loop)."""
        ev = asyncio.Event()
        ids = list(ids)
        for i in ids:
            self._waiters.setdefault(i, set()).add(ev)
        try:
            yield ev
        finally:
            for i in ids:
                s = self._waiters.get(i)
                if s is not None:
                    s.discard(ev)
                    if not s:
                        del self._waiters[i]


# --- workers -------------------------------------------------------------------------------------


class Dispatcher:
    """Runs stored jobs on the devices: at most ``workers`` at once, oldest first."""

    def __init__(self, store: JobStore, devices: dict[str, Device], workers: int,
                 notifier: ChangeNotifier, *, paused: bool = False,
                 decoded_limit: int | None = None):
        if workers < 1:
            raise ConfigError(f"workers must be >= 1, got {workers}")
        self.store, self.devices, self.workers, self.notifier = store, devices, workers, notifier
        self.decoded_limit = decoded_limit
        self._pool = cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kpp-worker")
        self._slots = threading.Semaphore(workers)
        self._cond = threading.Condition()
        # claim + register vs cancel; re-entrant because a job that is already over runs its
        # done-callback (which takes this lock) inside add_done_callback
        self._lock = threading.RLock()
        self._running: dict[str, Any] = {}
        self._rows: dict[str, JobRow] = {}
        self._user_cancelled: set[str] = set()
        #: Jobs that did not stop after the cancel at shutdown (see :meth:`stop`).
        self.abandoned = 0
        self._paused = paused
        self._stopping = False
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    # control
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="kpp-dispatch", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def pause(self) -> None:
        with self._cond:
            self._paused = True
        _event(logging.INFO, "workers.paused")

    def resume(self) -> None:
        with self._cond:
            self._paused = False
            self._cond.notify_all()
        _event(logging.INFO, "workers.resumed")

    @property
    def paused(self) -> bool:
        return self._paused

    def running_count(self) -> int:
        with self._lock:
            return len(self._running)

    def stop(self, grace_s: float) -> bool:
        """Stop claiming; give running jobs ``grace_s`` seconds, then cancel them and put them
        back in the queue (they run again at the next start). A job that has not stopped
        :data:`CANCEL_WAIT_S` after its cancel is re-queued all the same and abandoned; returns
        False when that happened (the process should then exit without waiting for it). Later
        calls wait for the first."""
        with self._cond:
            first = not self._stopping
            self._stopping = True
            self._cond.notify_all()
        if not first:
            self._stopped.wait()
            return not self.abandoned
        try:
            self._stop(grace_s)
        finally:
            self._stopped.set()
        return not self.abandoned

    def _stop(self, grace_s: float) -> None:
        # no new claims from here on: the loop checks _stopping under _lock before claiming
        deadline = time.monotonic() + grace_s
        while self.running_count() and time.monotonic() < deadline:
            time.sleep(0.05)
        with self._lock:
            left = list(self._running.values())
        for job in left:
            job.cancel()
        deadline = time.monotonic() + CANCEL_WAIT_S
        while self.running_count() and time.monotonic() < deadline:
            time.sleep(0.02)
        with self._lock:
            stuck = [(self._rows[i], j) for i, j in self._running.items()]
        for row, _job in stuck:
            # the worker may still finish later: finish() is fenced by the attempt, so its
            # late result is dropped once the row is QUEUED again
            self._record(row, "QUEUED")
            _event(logging.WARNING, "job.abandoned", job_id=row.id, client=row.owner,
                   wait_s=CANCEL_WAIT_S)
        self.abandoned = len(stuck)
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._pool.shutdown(wait=not stuck, cancel_futures=True)

    def cancel(self, job_id: str, owner: str) -> JobRow | None:
        with self._lock:
            row = self.store.cancel(job_id, owner)
            if row is not None and row.status == "RUNNING":
                self._user_cancelled.add(job_id)
                job = self._running.get(job_id)
                if job is not None:
                    job.cancel()
        if row is not None:
            self.notifier.notify(job_id)
        return row

    # the loop
    def _loop(self) -> None:
        while True:
            with self._cond:
                while self._paused and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
            if not self._slots.acquire(timeout=0.5):
                continue
            try:
                with self._lock:
                    row = None if self._paused or self._stopping else self.store.claim_next()
                    if row is not None:
                        self._start(row)
            except Exception:  # the dispatcher must survive a bad row
                log.exception("dispatcher error")
                row = None
                self._slots.release()
                time.sleep(0.1)
                continue
            if row is None:
                self._slots.release()
                with self._cond:
                    if not self._stopping:
                        self._cond.wait(timeout=1.0)

    def _start(self, row: JobRow) -> None:
        """Called with ``self._lock`` held and one slot taken."""
        self.notifier.notify(row.id)
        _event(logging.INFO, "job.started", job_id=row.id, client=row.owner, attempt=row.attempts)
        try:
            req = wire.SubmitRequest.model_validate_json(row.request or b"")
            device = self.devices[row.device]
            problem = wire.decode_problem(req.problem, max_bytes=self.decoded_limit)
            options = wire.decode_options(req.options, max_bytes=self.decoded_limit)
            job = device.submit(problem, num_reads=req.num_reads, seed=req.seed,
                                executor=self._pool, **options)
        except Exception as exc:  # noqa: BLE001 - recorded as the job's failure
            self._record(row, "FAILED", error=(type(exc).__name__, str(exc)))
            self._slots.release()
            return
        self._running[row.id] = job
        self._rows[row.id] = row
        if row.cancel_requested:
            self._user_cancelled.add(row.id)
            job.cancel()
        job.add_done_callback(lambda j, row=row: self._finished(row, j))

    def _finished(self, row: JobRow, job: Any) -> None:
        try:
            try:
                ss = job.result(timeout=0)
            except JobCancelledError:
                with self._lock:
                    by_user = row.id in self._user_cancelled
                if self._stopping and not by_user:
                    self._record(row, "QUEUED")
                else:
                    self._record(row, "CANCELLED")
            except JobFailedError as exc:
                cause = exc.__cause__ or exc
                self._record(row, "FAILED", error=(type(cause).__name__, str(cause)))
            else:
                payload = json.dumps(wire.encode_sampleset(ss), separators=(",", ":")).encode()
                self._record(row, "DONE", result=payload)
        except Exception as exc:  # e.g. the result could not be encoded
            log.exception("could not record job %s", row.id)
            self._record(row, "FAILED", error=(type(exc).__name__, str(exc)))
        finally:
            with self._lock:
                self._running.pop(row.id, None)
                self._rows.pop(row.id, None)
                self._user_cancelled.discard(row.id)
            self._slots.release()
            self.wake()

    def _record(self, row: JobRow, status: str, *, result: bytes | None = None,
                error: tuple[str, str] | None = None) -> None:
        ok = self.store.finish(row.id, row.attempts, status, result=result, error=error)
        fields: dict[str, Any] = {"job_id": row.id, "client": row.owner, "status": status,
                                  "attempt": row.attempts}
        if error:
            fields["error"] = f"{error[0]}: {error[1]}"[:500]
        if not ok:
            fields["stale"] = True
        _event(logging.INFO if status in ("DONE", "QUEUED") else logging.WARNING, "job.finished",
               **fields)
        self.notifier.notify(row.id)


class Janitor:
    """Applies the store's retention policy at start-up and every ``interval_s`` seconds
    (default: :data:`PURGE_INTERVAL_S`, or a quarter of a shorter retention age)."""

    def __init__(self, store: JobStore, policy: RetentionPolicy,
                 interval_s: float | None = None):
        if interval_s is None:
            interval_s = min(PURGE_INTERVAL_S, (policy.max_age_s or PURGE_INTERVAL_S) / 4)
        self.store, self.policy, self.interval_s = store, policy, float(interval_s)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> None:
        try:
            rep = self.store.purge(self.policy)
        except Exception:  # noqa: BLE001 - retention must never take the server down
            log.exception("retention purge failed")
            return
        if rep.expired_by_age or rep.expired_by_size or rep.tombstones_deleted:
            _event(logging.INFO, "store.purged", expired_by_age=rep.expired_by_age,
                   expired_by_size=rep.expired_by_size, tombstones=rep.tombstones_deleted,
                   bytes_before=rep.bytes_before, bytes_after=rep.bytes_after)

    def start(self) -> None:
        def loop() -> None:
            while not self._stop.wait(self.interval_s):
                self.run_once()

        self.run_once()
        self._thread = threading.Thread(target=loop, name="kpp-retention", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


class MemoryBudget:
    """Bytes shared by concurrent submits while they decode and check their problem: a
    submit takes its estimate and gives it back when done; one that cannot have it within
    ``wait_s`` seconds gets 503 + Retry-After."""

    def __init__(self, total: int | None, wait_s: float = DECODE_WAIT_S):
        self.total, self.wait_s = total, float(wait_s)
        self._used = 0
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def reserve(self, nbytes: int):
        if self.total is None:
            yield
            return
        nbytes = min(int(nbytes), self.total)
        with self._cond:
            if not self._cond.wait_for(lambda: self._used + nbytes <= self.total, self.wait_s):
                raise ApiError(503, "ServerError",
                               "the server is busy checking other large submits; retry later",
                               {"Retry-After": "5"})
            self._used += nbytes
        try:
            yield
        finally:
            with self._cond:
                self._used -= nbytes
                self._cond.notify_all()


# --- the application ---------------------------------------------------------------------------


@dataclass
class ServerState:
    config: ServerConfig
    store: JobStore
    devices: dict[str, Device]
    descriptions: dict[str, dict]
    tokens: TokenRegistry | None
    limiter: RateLimiter
    notifier: ChangeNotifier
    dispatcher: Dispatcher
    janitor: Janitor | None = None
    budget: MemoryBudget | None = None

    @property
    def default_device(self) -> str:
        return self.config.devices[0]

    @property
    def decoded_limit(self) -> int:
        return DECODED_LIMIT_FACTOR * self.config.max_request_bytes


def describe_device(name: str, device: Device, max_request_bytes: int,
                    limits: JobLimits | None = None) -> dict:
    """The device's :class:`~kpp_sdk.cloud.wire.DeviceDescription`; the server's job limits
    go into ``properties.extra`` (``max_job_seconds``, ``max_job_memory``)."""
    props = device.properties.to_dict()
    props["extra"] = dict(props.get("extra") or {})
    if limits is not None:
        props["extra"]["max_job_seconds"] = limits.max_seconds
        props["extra"]["max_job_memory"] = limits.max_memory_bytes
    return wire.DeviceDescription(
        name=name,
        properties=wire.DevicePropertiesModel(**props),
        options=wire.encode_options(device.options),
        default_num_reads=device.default_num_reads,
        max_request_bytes=max_request_bytes,
    ).model_dump(mode="json")


def load_tokens(config: ServerConfig, environ: dict | None = None) -> TokenRegistry | None:
    """The accepted tokens (None: ``--no-auth``); raises ConfigError for an unusable setup."""
    tokens = TokenRegistry.load(config.tokens_file, environ)
    if len(tokens) == 0 and not config.no_auth:
        raise ConfigError(
            "no API tokens: pass --tokens-file FILE or set KPP_SERVER_TOKENS "
            "(see docs/cloud.md), or --no-auth for a loopback-only test server")
    if config.no_auth:
        if len(tokens):
            raise ConfigError("--no-auth cannot be combined with tokens")
        if config.host not in ("127.0.0.1", "localhost", "::1"):
            raise ConfigError("--no-auth is only allowed on a loopback --host (127.0.0.1)")
        return None
    return tokens


def build_state(config: ServerConfig, tokens: TokenRegistry | None = None,
                environ: dict | None = None) -> ServerState:
    """Open the store (recovering jobs of a server that died), load tokens and devices."""
    from ..registry import get_device

    if not config.devices:
        raise ConfigError("kpp serve needs at least one --device")
    if len(set(config.devices)) != len(config.devices):
        raise ConfigError(f"a device is named twice in --device {config.devices}")
    if tokens is None and not config.no_auth:
        tokens = load_tokens(config, environ)
    if config.tokens_file and not TokenRegistry.file_is_private(config.tokens_file):
        _event(logging.WARNING, "tokens file is readable by other users; chmod 600 it",
               path=str(config.tokens_file))
    if config.max_request_bytes < 1024:
        raise ConfigError(
            f"--max-request-bytes must be at least 1024, got {config.max_request_bytes}")
    limits = config.limits
    retention = config.retention
    devices = {name: get_device(name, **config.device_options) for name in config.devices}
    for d in devices.values():
        d.limits = limits
    if config.warm_up:
        warm_up(devices)
    store = JobStore(config.store, max_attempts=config.max_attempts)
    store.lock()
    for row in store.recover():
        _event(logging.WARNING, "job.recovered", job_id=row.id, client=row.owner,
               status=row.status, attempts=row.attempts)
    notifier = ChangeNotifier()
    state = ServerState(
        config=config, store=store, devices=devices,
        descriptions={n: describe_device(n, d, config.max_request_bytes, limits)
                      for n, d in devices.items()},
        tokens=tokens, limiter=RateLimiter(config.rate_limit, config.burst), notifier=notifier,
        dispatcher=Dispatcher(store, devices, config.workers, notifier, paused=config.paused,
                              decoded_limit=DECODED_LIMIT_FACTOR * config.max_request_bytes),
        janitor=Janitor(store, retention),
        budget=MemoryBudget(limits.max_memory_bytes),
    )
    return state


def warm_up(devices: dict[str, Device]) -> None:
    """Run one tiny job per device (dense, sparse, with fields) before serving: compiled
    kernels load now, not inside the first client's request (numba and its compiled code are
    ~100 MB), and a device that cannot run shows at start-up."""
    from ..problem import IsingProblem

    p = IsingProblem.random_sk(4, seed=0, fields=True)
    for name, d in devices.items():
        t0 = time.perf_counter()
        try:
            for q in (p, p.to_sparse()):
                d.sample(q, num_reads=1, seed=0, **dict(d.FAST_OPTIONS))
        except Exception as exc:  # noqa: BLE001 - reported; the device may still serve others
            _event(logging.WARNING, "device.warm_up_failed", device=name,
                   error=f"{type(exc).__name__}: {exc}"[:300])
            continue
        _event(logging.INFO, "device.warmed_up", device=name,
               ms=round(1000 * (time.perf_counter() - t0), 1))


def tune_malloc() -> None:
    """glibc only: arrays over 1 MiB get their own mapping, given back to the system when freed.
    By default glibc raises that threshold after the first large free, so a server's arenas keep
    the peak of every thread's largest request for good."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD (fixed: no dynamic raise)
        libc.mallopt(-1, 8 << 20)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        pass


def compact_store(config: ServerConfig) -> Any:
    """``kpp serve --compact``: apply the retention policy to the store and shrink its file,
    then return (the store must not be in use by a running server)."""
    store = JobStore(config.store, max_attempts=config.max_attempts)
    try:
        store.lock()
        size = os.path.getsize(config.store)
        report = store.compact(config.retention)
        return report, size, os.path.getsize(config.store)
    finally:
        store.close()


def _watcher_key(watcher: str) -> str:
    return "watcher:" + watcher


def _iso(t: float | None) -> str:
    if t is None:
        return "?"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _check_job(st: "ServerState", device: Device, req: wire.SubmitRequest) -> None:
    """Everything the device checks (:meth:`Device.validate`), and the job's whole cost on this
    server against its limits: the decoded problem, the device's working memory and the encoded
    result. The memory of decoding comes from the budget shared by concurrent submits."""
    limits = st.config.limits
    props = device.properties
    n = req.problem.num_spins
    if n > props.max_spins:
        from ..errors import ProblemTooLargeError

        raise ProblemTooLargeError(
            f"the problem has {n} spins but {device.name} takes at most {props.max_spins}")
    peak, resident = wire.problem_memory(req.problem)
    limits.check(JobCost(None, peak, {"decoding the problem": peak}), device.name,
                 "the problem size (send it sparse)")
    budget = st.budget or MemoryBudget(None)
    with budget.reserve(peak):
        problem = wire.decode_problem(req.problem, max_bytes=st.decoded_limit,
                                      max_spins=props.max_spins)
        options = wire.decode_options(req.options, max_bytes=st.decoded_limit)
        spec = device.validate(problem, req.num_reads, **options)
    cost = spec.cost or JobCost(None, 0)
    packed = spec.num_reads * ((problem.n + 7) // 8)
    if packed > st.decoded_limit:  # holds even with the memory limit switched off
        raise InvalidOptionError(
            f"num_reads = {spec.num_reads} x {problem.n} spins would make a result of "
            f"{packed:,} bytes, over this server's limit of {st.decoded_limit:,}; split the job")
    encoded = wire.encoded_result_bytes(spec.num_reads, problem.n)
    limits.check(JobCost(cost.seconds, cost.memory_bytes + resident + encoded,
                         {**cost.parts, "problem": resident, "encoded result": encoded}),
                 device.name, getattr(device, "COST_HINT", "num_reads"))


def _check_store_room(st: "ServerState") -> None:
    limit = st.config.max_store_bytes
    if limit is not None and st.store.stored_bytes("QUEUED") > limit:
        raise ApiError(503, "ServerError",
                       f"the job queue holds over {format_bytes(limit)} of requests (kpp serve "
                       "--max-store-bytes); retry when it has drained", {"Retry-After": "30"})


_ERRORS = {code: {"model": wire.ErrorResponse} for code in (401, 404, 408, 413, 422, 429, 500)}


def create_app(state: ServerState | None):
    """The FastAPI application. ``state`` None builds the routes only (for the OpenAPI document).

    Its parts: the lifespan (dispatcher and janitor), the middleware (access log, authentication,
    body limit), the error handlers, the authentication dependencies, and the routes of
    devices, jobs and administration."""
    from fastapi import FastAPI
    from starlette.concurrency import run_in_threadpool

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        if state is not None:
            state.notifier.bind(asyncio.get_running_loop())
            state.dispatcher.start()
            if state.janitor is not None:
                state.janitor.start()
            _event(logging.INFO, "server.started", devices=list(state.devices),
                   workers=state.config.workers, store=str(state.config.store),
                   paused=state.dispatcher.paused)
        yield
        if state is not None:
            if state.janitor is not None:
                state.janitor.stop()
            await run_in_threadpool(state.dispatcher.stop, state.config.shutdown_grace_s)
            state.store.close()
            _event(logging.INFO, "server.stopped", abandoned_jobs=state.dispatcher.abandoned)

    app = FastAPI(
        title="kpp-sdk cloud API",
        version=__version__,
        summary="Ising machines over HTTP: the wire format of `kpp serve` and the cim.cloud device",
        description=("Wire format version 1; see docs/wire-format.md. Every endpoint except "
                     "/v1/health needs `Authorization: Bearer <token>`."),
        lifespan=lifespan,
    )
    if state is not None:  # the last added is the outermost
        app.add_middleware(BodyLimit, max_bytes=state.config.max_request_bytes,
                           max_large=state.config.max_large_bodies,
                           body_timeout_s=state.config.body_timeout_s)
        app.add_middleware(Authenticate, tokens=state.tokens)
        app.add_middleware(AccessLog)

    def _st() -> ServerState:
        if state is None:  # pragma: no cover - the OpenAPI-only app serves nothing
            raise ApiError(503, "ServerError", "this application has no server state")
        return state

    _add_error_handlers(app)
    principal, admin = _auth_dependencies(_st)
    _add_device_routes(app, _st, principal)
    _add_job_routes(app, _st, principal)
    _add_admin_routes(app, _st, admin)
    return app


def _add_error_handlers(app) -> None:
    """Every error answers with the wire format's error body (docs/wire-format.md)."""
    from fastapi import Request, Response
    from fastapi.exceptions import RequestValidationError
    from pydantic import ValidationError
    from starlette.exceptions import HTTPException as StarletteHTTPException

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return Response(_error_body(exc.status, exc.etype, exc.message), exc.status,
                        headers=exc.headers, media_type="application/json")

    @app.exception_handler(KppError)
    async def _kpp_error(request: Request, exc: KppError):
        status = status_for_exception(exc)
        if status == 500:
            log.error("unexpected error", exc_info=exc)
        return Response(_error_body(status, type(exc).__name__, str(exc)), status,
                        media_type="application/json")

    def _validation_response(errors: list) -> Any:
        parts = []
        for err in errors[:5]:
            loc = ".".join(str(x) for x in err.get("loc", ()) if x != "body")
            parts.append(f"{loc}: {err.get('msg')}")
        msg = "the request does not follow wire format v1: " + "; ".join(parts)
        return Response(_error_body(422, "ValidationError", msg), 422,
                        media_type="application/json")

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        return _validation_response(exc.errors())

    @app.exception_handler(ValidationError)
    async def _body_validation_error(request: Request, exc: ValidationError):
        return _validation_response(exc.errors())

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        etype = "NotFoundError" if exc.status_code == 404 else "CloudError"
        return Response(_error_body(exc.status_code, etype, str(exc.detail)), exc.status_code,
                        headers=getattr(exc, "headers", None), media_type="application/json")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.error("unexpected error", exc_info=exc)
        rid = request.scope.get("state", {}).get("request_id", "?")
        return Response(_error_body(500, "ServerError", f"internal error (request {rid})"), 500,
                        media_type="application/json")


def _auth_dependencies(_st):
    """The FastAPI dependencies ``principal`` (the client a bearer token names, rate-limited)
    and ``admin`` (a principal with the admin role)."""
    from fastapi import Depends, Request
    from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

    bearer = HTTPBearer(auto_error=False, description="an API token from the server's tokens file")

    async def principal(request: Request,
                        creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Principal:
        st = _st()
        who = request.scope.get("state", {}).get("kpp_principal")  # set by Authenticate
        if who is None and st.tokens is None:
            who = Principal("local", role="admin")
        elif who is None:
            who = st.tokens.identify(creds.credentials) if creds is not None else None
            if who is None:
                raise ApiError(401, "AuthenticationError",
                               "missing or invalid bearer token; send 'Authorization: Bearer "
                               "<token>' with a token this server knows",
                               {"WWW-Authenticate": 'Bearer realm="kpp"'})
        request.state.client = who.name
        wait = st.limiter.check(who)
        if wait > 0:
            secs = max(1, math.ceil(wait))
            raise ApiError(429, "RateLimitError",
                           f"rate limit exceeded for client {who.name!r}; retry after {secs} s",
                           {"Retry-After": str(secs)})
        return who

    async def admin(who: Principal = Depends(principal)) -> Principal:
        if not who.is_admin:
            raise ApiError(403, "AuthenticationError", f"client {who.name!r} is not an admin")
        return who
    return principal, admin


def _add_device_routes(app, _st, principal) -> None:
    from fastapi import Depends

    P = wire.API_PREFIX

    @app.get(f"{P}/health", response_model=wire.Health, tags=["server"])
    async def health():
        """Liveness; needs no token."""
        return {"status": "ok", "wire_version": wire.WIRE_VERSION,
                "server": f"kpp-sdk {__version__}"}

    @app.get(f"{P}/devices", response_model=wire.DeviceList, responses=_ERRORS, tags=["devices"])
    async def list_devices(who: Principal = Depends(principal)):
        st = _st()
        return {"devices": list(st.descriptions.values()), "default": st.default_device}

    @app.get(f"{P}/devices/{{name}}", response_model=wire.DeviceDescription, responses=_ERRORS,
             tags=["devices"])
    async def get_device_description(name: str, who: Principal = Depends(principal)):
        st = _st()
        if name not in st.descriptions:
            raise DeviceNotFoundError(
                f"this server does not serve {name!r}; it serves {sorted(st.descriptions)}")
        return st.descriptions[name]


def _add_job_routes(app, _st, principal) -> None:
    from fastapi import Depends, Query, Request, Response
    from starlette.concurrency import run_in_threadpool

    P = wire.API_PREFIX

    submit_body = {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/SubmitRequest"}}}}}

    @app.post(f"{P}/jobs", response_model=wire.JobInfo, status_code=201,
              responses={200: {"description": "the job already submitted with this idempotency "
                                              "key (header Idempotent-Replayed: true)",
                               "model": wire.JobInfo},
                         409: {"model": wire.ErrorResponse},
                         503: {"model": wire.ErrorResponse}, **_ERRORS},
              tags=["jobs"], openapi_extra=submit_body)
    async def submit_job(request: Request, response: Response,
                         who: Principal = Depends(principal)):
        """Queue a job (body: a SubmitRequest). Validation happens here, before queueing: the
        problem, num_reads and every option as the device checks them, and the job's cost
        against the server's limits (422 JobTooLargeError naming the limit)."""
        # request.stream(), not request.body(): the request would keep a cached copy
        body = b"".join([chunk async for chunk in request.stream()])
        # parsing a large body takes a while: not on the event loop
        req = await run_in_threadpool(wire.SubmitRequest.model_validate_json, body)
        del body
        return await run_in_threadpool(_submit, req, response, who)

    def _submit(req: wire.SubmitRequest, response: Response, who: Principal) -> dict:
        st = _st()
        name = req.device or st.default_device
        if name not in st.devices:
            raise DeviceNotFoundError(
                f"this server does not serve {name!r}; it serves {sorted(st.devices)}")
        existing = st.store.list_by_key(who.name, req.idempotency_key)
        if existing is None:
            _check_job(st, st.devices[name], req)
            _check_store_room(st)
        # after the checks: a refused request costs no copy of its body
        request_hash = hashlib.sha256(
            req.model_dump_json(exclude={"idempotency_key", "watcher"}).encode()).hexdigest()
        row, created = st.store.insert(
            owner=who.name, idempotency_key=req.idempotency_key, request_hash=request_hash,
            device=name, num_spins=req.problem.num_spins, num_reads=req.num_reads, seed=req.seed,
            request=req.model_dump_json(exclude={"watcher"}).encode())
        if req.watcher:
            st.notifier.notify(_watcher_key(req.watcher))
        if created:
            _event(logging.INFO, "job.queued", job_id=row.id, client=who.name, device=name,
                   num_spins=row.num_spins, num_reads=row.num_reads)
            st.dispatcher.wake()
        else:
            response.status_code = 200
            response.headers["Idempotent-Replayed"] = "true"
        return row.to_info()

    @app.get(f"{P}/jobs", response_model=wire.JobList, responses=_ERRORS, tags=["jobs"])
    def list_jobs(status: wire.JobStatusName | None = None,
                  limit: int = Query(100, ge=1, le=10_000),
                  offset: int = Query(0, ge=0, le=2**62),
                  who: Principal = Depends(principal)):
        """This token's jobs, oldest first."""
        rows = _st().store.list(who.name, status=status, limit=limit, offset=offset)
        return {"jobs": [r.to_info() for r in rows]}

    @app.post(f"{P}/jobs/poll", response_model=wire.PollResponse, responses=_ERRORS, tags=["jobs"])
    async def poll_jobs(req: wire.PollRequest, who: Principal = Depends(principal)):
        """Answers as soon as a job's status differs from the one given (a long poll)."""
        st = _st()
        wait = 0.0 if st.notifier.closing else min(req.wait, LONG_POLL_MAX_S)
        ids = list(req.jobs)
        keys = ids + ([_watcher_key(req.watcher)] if req.watcher else [])

        def answer(rows: dict) -> dict:
            return {"jobs": [rows[i].to_info() for i in ids if i in rows],
                    "missing": [i for i in ids if i not in rows]}

        with st.notifier.watch(keys) as changed:
            rows = await run_in_threadpool(st.store.get_many, ids, who.name)
            if wait <= 0 or len(rows) < len(ids) or any(
                    r.status != req.jobs[i] for i, r in rows.items()):
                return answer(rows)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(changed.wait(), timeout=wait)
        return answer(await run_in_threadpool(st.store.get_many, ids, who.name))

    def _owned(job_id: str, who: Principal) -> JobRow:
        row = _st().store.get(job_id, who.name)
        if row is None:
            raise ApiError(404, "NotFoundError", f"no job {job_id!r} for client {who.name!r}")
        return row

    def _not_expired(row: JobRow) -> JobRow:
        if row.expired_at is not None:
            policy = _st().config.retention
            why = []
            if policy.max_age_s is not None:
                why.append(f"results are kept {policy.max_age_s / 86_400:g} days")
            if policy.max_bytes is not None:
                why.append(f"the store keeps at most {format_bytes(policy.max_bytes)}")
            raise ApiError(410, "ResultExpiredError",
                           f"job {row.id} finished at {_iso(row.finished_at)} and its request "
                           f"and result were deleted at {_iso(row.expired_at)} under this "
                           f"server's retention policy ({'; '.join(why)}); submit it again")
        return row

    @app.get(f"{P}/jobs/{{job_id}}", response_model=wire.JobInfo, responses=_ERRORS, tags=["jobs"])
    def get_job(job_id: str, watcher: str | None = None, who: Principal = Depends(principal)):
        """A job's state; ``watcher`` wakes that watcher's long poll (a client re-attaching)."""
        row = _owned(job_id, who)
        if watcher:
            _st().notifier.notify(_watcher_key(watcher))
        return row.to_info()

    @app.get(f"{P}/jobs/{{job_id}}/problem", response_model=wire.SubmitRequest,
             responses={410: {"model": wire.ErrorResponse}, **_ERRORS}, tags=["jobs"])
    def get_job_request(job_id: str, who: Principal = Depends(principal)):
        """The submitted request (to re-attach to a job from another process); 410 once the
        retention policy has deleted it."""
        _not_expired(_owned(job_id, who))
        body = _st().store.request_of(job_id, who.name)
        if body is None:
            raise ApiError(404, "NotFoundError", f"no job {job_id!r} for client {who.name!r}")
        return Response(body, media_type="application/json")

    @app.get(f"{P}/jobs/{{job_id}}/result", response_model=wire.JobResult,
             responses={410: {"model": wire.ErrorResponse}, **_ERRORS}, tags=["jobs"])
    def get_job_result(job_id: str, who: Principal = Depends(principal)):
        """The result; ``sampleset`` is null until the job is DONE (and for FAILED/CANCELLED);
        410 once the retention policy has deleted it."""
        st = _st()
        row = _not_expired(_owned(job_id, who))
        stored = st.store.result_of(job_id, who.name) if row.status == "DONE" else None
        info = json.dumps(row.to_info(), separators=(",", ":")).encode()
        body = b'{"job":' + info + b',"sampleset":' + (stored or b"null") + b"}"
        return Response(body, media_type="application/json")

    @app.delete(f"{P}/jobs/{{job_id}}", response_model=wire.JobInfo, responses=_ERRORS,
                tags=["jobs"])
    def cancel_job(job_id: str, who: Principal = Depends(principal)):
        """Cancel: a queued job ends CANCELLED at once; a running one is asked to stop
        (``cancel_requested``); a finished one is unchanged."""
        row = _st().dispatcher.cancel(job_id, who.name)
        if row is None:
            raise ApiError(404, "NotFoundError", f"no job {job_id!r} for client {who.name!r}")
        _event(logging.INFO, "job.cancel", job_id=job_id, client=who.name, status=row.status)
        return row.to_info()


def _add_admin_routes(app, _st, admin) -> None:
    from fastapi import Depends

    P = wire.API_PREFIX

    def _workers() -> dict:
        st = _st()
        counts = st.store.counts()
        return {"paused": st.dispatcher.paused, "workers": st.config.workers,
                "queued": counts.get("QUEUED", 0), "running": counts.get("RUNNING", 0)}

    @app.get(f"{P}/admin/workers", response_model=wire.WorkerState, responses=_ERRORS,
             tags=["admin"])
    def workers_state(who: Principal = Depends(admin)):
        return _workers()

    @app.post(f"{P}/admin/workers/pause", response_model=wire.WorkerState, responses=_ERRORS,
              tags=["admin"])
    def pause_workers(who: Principal = Depends(admin)):
        """Stop starting queued jobs (running ones finish); for maintenance and tests."""
        _st().dispatcher.pause()
        return _workers()

    @app.post(f"{P}/admin/workers/resume", response_model=wire.WorkerState, responses=_ERRORS,
              tags=["admin"])
    def resume_workers(who: Principal = Depends(admin)):
        _st().dispatcher.resume()
        return _workers()


def openapi_document() -> dict:
    """The OpenAPI document of the wire format (what ``docs/openapi.json`` holds)."""
    return create_app(None).openapi()


def serve(config: ServerConfig) -> None:
    """Run the server until SIGINT/SIGTERM (blocking)."""
    try:
        import uvicorn
    except ImportError:
        from ..errors import MissingDependencyError

        raise MissingDependencyError("uvicorn", extra="server", feature="kpp serve") from None
    tokens = load_tokens(config)  # configuration errors before the logging is taken over
    configure_logging(config.log_level)
    tune_malloc()
    state = build_state(config, tokens)
    app = create_app(state)

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            # before uvicorn drains connections: stop taking jobs, start re-queueing running
            # ones, answer the open long polls
            if not self.should_exit:
                _event(logging.INFO, "server.stopping", signal=int(sig))
                threading.Thread(target=state.dispatcher.stop, args=(config.shutdown_grace_s,),
                                 name="kpp-stop", daemon=True).start()
                state.notifier.wake_all()
            super().handle_exit(sig, frame)

    if config.host not in ("127.0.0.1", "localhost", "::1") and not config.ssl_certfile:
        _event(logging.WARNING, "serving plain HTTP on a non-loopback address: tokens cross the "
               "network unencrypted; use --ssl-certfile/--ssl-keyfile or a TLS proxy",
               host=config.host)
    Server(uvicorn.Config(app, host=config.host, port=config.port, log_config=None,
                          access_log=False, log_level=config.log_level,
                          ssl_certfile=config.ssl_certfile, ssl_keyfile=config.ssl_keyfile,
                          http=header_timeout_protocol(config.header_timeout_s),
                          limit_concurrency=config.max_connections,
                          # requests still open after SIGTERM get this long; the clients retry
                          # what is cut off, and every request is safe to repeat
                          timeout_graceful_shutdown=HTTP_DRAIN_S)).run()
    if state.dispatcher.abandoned:
        # a job ignored its cancel: it is back in the queue; do not wait for its thread
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
