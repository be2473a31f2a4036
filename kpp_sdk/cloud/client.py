"""The HTTP layer of the ``cim.cloud`` device: ``requests`` sessions, timeouts, retries.

Every request of the kpp API is safe to repeat (reads, cancels, and submits, which carry an
idempotency key), so every request is retried on what is worth retrying:

* connection errors, connect and read timeouts, bodies cut short (a truncated or unparsable
  answer is :class:`~kpp_sdk.errors.InvalidResponseError`);
* HTTP 408, 429, 500, 502, 503, 504 (:data:`kpp_sdk.cloud.errors.RETRYABLE_STATUSES`).

Waits grow exponentially with "equal jitter" (half fixed, half random) from ``backoff_base`` up
to ``backoff_cap`` seconds; a 429 waits at least its ``Retry-After``; no retry starts after the
caller's ``deadline``. Everything else (401/403, 404, 409, 410, 413, 422) raises at once. The
token goes into the ``Authorization`` header of each request and nowhere else: not in the
session, a log line, a repr or an exception.

Every answer is bounded in time and size: the status line and headers must arrive within
``connect_timeout + read_timeout`` seconds in all (a watchdog closes the socket otherwise, so a
server that trickles bytes cannot hold the client), the body within ``read_timeout`` plus its
size at :data:`MIN_TRANSFER_RATE`, and a body over ``max_bytes`` (default
:data:`DEFAULT_MAX_RESPONSE_BYTES`) is refused as :class:`~kpp_sdk.errors.InvalidResponseError`
without being read further.
"""

from __future__ import annotations

import json
import logging
import random
import socket
import threading
import time
from collections.abc import Mapping
from typing import Any, TypeVar

import requests
from pydantic import BaseModel, ValidationError
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from .. import __version__
from ..config import Secret, mask
from ..errors import CloudError, ConfigError, InvalidResponseError, KppError, RateLimitError
from .errors import (
    RETRYABLE_STATUSES,
    CloudConnectionError,
    ResponseTooLargeError,
    error_from_response,
)

__all__ = ["HttpClient", "is_retryable", "DEFAULT_MAX_RESPONSE_BYTES", "MIN_TRANSFER_RATE"]

log = logging.getLogger("kpp_sdk.cloud.client")

M = TypeVar("M", bound=BaseModel)

#: Largest answer read when the caller states no bound (a job list of 10,000 jobs is ~5 MB).
DEFAULT_MAX_RESPONSE_BYTES = 64 * 2**20
#: Bytes per second a body must at least arrive at (on top of ``read_timeout``).
MIN_TRANSFER_RATE = 256 * 1024


class _Watchdog:
    """Closes the socket of the request in flight when its time is up (see the module
    docstring). One per request; the connection registers itself when it sends."""

    def __init__(self) -> None:
        self.conn: Any = None
        self.fired = False
        self._timer: threading.Timer | None = None

    def arm(self, seconds: float) -> None:
        self.disarm()
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fire(self) -> None:
        self.fired = True
        sock = getattr(self.conn, "sock", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


_watch = threading.local()


class _WatchedMixin:
    def request(self, *args: Any, **kwargs: Any) -> Any:
        w = getattr(_watch, "current", None)
        if w is not None:
            w.conn = self
        return super().request(*args, **kwargs)  # type: ignore[misc]


class _WatchedHTTPConnection(_WatchedMixin, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_WatchedMixin, HTTPSConnection):
    pass


class _WatchedPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class _WatchedAdapter(HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _WatchedPool,
                                                   "https": _WatchedHTTPSPool}


def is_retryable(exc: BaseException) -> bool:
    """True for errors a retry can cure (see the module docstring)."""
    if isinstance(exc, ResponseTooLargeError):
        return False
    if isinstance(exc, (CloudConnectionError, InvalidResponseError)):
        return True
    return isinstance(exc, CloudError) and exc.status_code in RETRYABLE_STATUSES


class HttpClient:
    """Talks to one kpp server.

    Parameters
    ----------
    endpoint : str
        Base URL, e.g. ``http://127.0.0.1:8000`` (the API lives under ``/v1``).
    token : Secret or None
        Bearer token. None sends no ``Authorization`` (the server answers 401).
    connect_timeout, read_timeout : float
        Seconds to establish a connection and to wait for each answer.
    max_retries : int
        Retries after the first attempt (so ``max_retries + 1`` attempts in all).
    backoff_base, backoff_cap : float
        First retry waits about ``backoff_base`` s, doubling up to ``backoff_cap`` s.
    max_retry_after : float
        A ``Retry-After`` longer than this is not waited for: the RateLimitError is raised.
    """

    def __init__(self, endpoint: str, token: Secret | None, *, connect_timeout: float = 5.0,
                 read_timeout: float = 30.0, max_retries: int = 5, backoff_base: float = 0.1,
                 backoff_cap: float = 10.0, max_retry_after: float = 120.0,
                 rng: random.Random | None = None):
        if max_retries < 0:
            raise ConfigError(f"max_retries must be >= 0, got {max_retries}")
        if not (connect_timeout > 0 and read_timeout > 0):
            raise ConfigError("timeouts must be positive numbers of seconds")
        self.endpoint = endpoint.rstrip("/")
        self._token = token
        self.connect_timeout, self.read_timeout = float(connect_timeout), float(read_timeout)
        self.max_retries = int(max_retries)
        self.backoff_base, self.backoff_cap = float(backoff_base), float(backoff_cap)
        self.max_retry_after = float(max_retry_after)
        self._rng = rng or random.Random()
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._sessions_lock = threading.Lock()

    def __repr__(self) -> str:
        tok = mask(self._token.reveal()) if self._token else "<none>"
        return f"HttpClient(endpoint={self.endpoint!r}, token={tok})"

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        for k in ("_local", "_sessions", "_sessions_lock"):
            state.pop(k)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._local = threading.local()
        self._sessions = []
        self._sessions_lock = threading.Lock()

    @property
    def session(self) -> requests.Session:
        """One session per thread (connection reuse without sharing a session across threads)."""
        s = getattr(self._local, "session", None)
        if s is None:
            s = requests.Session()
            s.headers["User-Agent"] = f"kpp-sdk/{__version__}"
            s.trust_env = False  # no .netrc credentials or proxies from the environment
            s.mount("http://", _WatchedAdapter())
            s.mount("https://", _WatchedAdapter())
            self._local.session = s
            with self._sessions_lock:
                self._sessions.append(s)
        return s

    def close(self) -> None:
        with self._sessions_lock:
            for s in self._sessions:
                s.close()
            self._sessions.clear()
        self._local = threading.local()

    def backoff(self, attempt: int) -> float:
        """Seconds before retry number ``attempt + 1`` (equal jitter)."""
        b = min(self.backoff_cap, self.backoff_base * 2.0 ** attempt)
        return b / 2 + self._rng.uniform(0, b / 2)

    def _headers(self, has_body: bool) -> dict:
        h = {"Accept": "application/json"}
        if has_body:
            h["Content-Type"] = "application/json"
        if self._token:
            h["Authorization"] = "Bearer " + self._token.reveal()
        return h

    def _once(self, method: str, path: str, body: bytes | None, params: Mapping | None,
              read_timeout: float, what: str,
              max_bytes: int) -> tuple[int, bytes, Mapping[str, str]]:
        url = self.endpoint + path
        watch = _Watchdog()
        _watch.current = watch
        head_s = self.connect_timeout + read_timeout
        watch.arm(head_s)
        try:
            r = self.session.request(method, url, data=body, params=params,
                                     headers=self._headers(body is not None),
                                     timeout=(self.connect_timeout, read_timeout), stream=True)
            try:
                watch.arm(read_timeout + max_bytes / MIN_TRANSFER_RATE)
                content = self._read_body(r, max_bytes, what)
            finally:
                r.close()
            if watch.fired:  # the socket was shut mid-answer: whatever was parsed is partial
                raise requests.exceptions.ReadTimeout("watchdog")
        except requests.exceptions.RequestException as exc:
            # the message names the endpoint and the kind of failure; requests' own text may
            # hold the URL, never a header
            if watch.fired:
                raise CloudConnectionError(
                    f"{what}: {self.endpoint} did not answer within {head_s:g} s "
                    f"(header-read timeout) or sent its body too slowly") from None
            raise CloudConnectionError(f"{what}: no answer from {self.endpoint} "
                                       f"({type(exc).__name__})") from None
        finally:
            watch.disarm()
            _watch.current = None
        return r.status_code, content, r.headers

    @staticmethod
    def _read_body(r: requests.Response, max_bytes: int, what: str) -> bytes:
        declared = r.headers.get("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > max_bytes:
            raise ResponseTooLargeError(
                f"{what}: the answer is {int(declared):,} bytes, more than the {max_bytes:,} "
                "expected; refusing to read it (a wrong or misbehaving server?)")
        chunks, size = [], 0
        for chunk in r.iter_content(64 * 1024):
            size += len(chunk)
            if size > max_bytes:
                raise ResponseTooLargeError(
                    f"{what}: the answer is over {max_bytes:,} bytes, more than expected; "
                    "stopped reading it (a wrong or misbehaving server?)")
            chunks.append(chunk)
        return b"".join(chunks)

    def request(self, method: str, path: str, *, body: Any = None, params: Mapping | None = None,
                model: type[M] | None = None, read_timeout: float | None = None,
                what: str = "", retries: int | None = None, max_bytes: int | None = None,
                deadline: float | None = None) -> M | Any:
        """One API call with retries; returns ``model`` parsed from the answer (or the JSON).

        ``body`` is bytes (sent as is, so every retry sends the same bytes) or a JSON-able object.
        ``max_bytes`` bounds the answer (default :data:`DEFAULT_MAX_RESPONSE_BYTES`);
        ``deadline`` (a ``time.monotonic()`` value) is when retrying stops: the last error is
        raised instead of a retry that would start after it.
        """
        what = what or f"{method} {path}"
        if body is not None and not isinstance(body, (bytes, bytearray)):
            body = json.dumps(body, separators=(",", ":")).encode()
        rt = self.read_timeout if read_timeout is None else read_timeout
        retries = self.max_retries if retries is None else retries
        limit = DEFAULT_MAX_RESPONSE_BYTES if max_bytes is None else int(max_bytes)
        for attempt in range(retries + 1):
            t0 = time.perf_counter()
            try:
                status, content, headers = self._once(method, path, body, params, rt, what,
                                                      limit)
                if status >= 400:
                    raise error_from_response(status, content, headers, what=what)
                try:
                    out = (model.model_validate_json(content) if model is not None
                           else json.loads(content))
                except (ValidationError, ValueError, RecursionError) as exc:
                    raise InvalidResponseError(
                        f"{what}: the answer ({len(content)} bytes) is not a valid "
                        f"{model.__name__ if model else 'JSON document'} "
                        f"({type(exc).__name__}); truncated or from another server?") from None
                log.debug("%s -> %s in %.1f ms (attempt %d)", what, status,
                          1000 * (time.perf_counter() - t0), attempt + 1)
                return out
            except KppError as exc:
                if not is_retryable(exc) or attempt == retries:
                    if attempt and is_retryable(exc):
                        raise type(exc)(f"{exc} (gave up after {attempt + 1} attempts)",
                                        *_extra_args(exc)) from None
                    raise
                delay = self.backoff(attempt)
                if isinstance(exc, RateLimitError) and exc.retry_after is not None:
                    if exc.retry_after > self.max_retry_after:
                        raise
                    delay = max(delay, exc.retry_after + self._rng.uniform(0, 0.1))
                if deadline is not None and time.monotonic() + delay > deadline:
                    raise
                log.warning("%s; retry %d of %d in %.2f s", exc, attempt + 1, retries, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover


def _extra_args(exc: BaseException) -> tuple:
    if isinstance(exc, RateLimitError):
        return (exc.status_code, exc.retry_after)
    if isinstance(exc, CloudError):
        return (exc.status_code,)
    return ()
