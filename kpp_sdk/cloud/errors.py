"""One table between HTTP statuses and kpp_sdk exceptions, used by the server and the client.

The server answers every error with an :class:`~kpp_sdk.cloud.wire.ErrorResponse` body
``{"error": {"type": ..., "message": ...}, "status": ...}``. The client turns a status into the
class of :data:`STATUS_ERRORS`; errors that the user fixes in the request (a malformed problem, an
unknown option, an unknown device) keep their own class (:data:`PASS_THROUGH`), so code that
catches ``InvalidOptionError`` works the same against a local and a remote device.
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Mapping

from .. import errors as E

__all__ = ["STATUS_ERRORS", "RETRYABLE_STATUSES", "PASS_THROUGH", "error_class_for_status",
           "status_for_exception", "error_from_response", "parse_retry_after",
           "IdempotencyConflict",
           "CloudConnectionError", "ResponseTooLargeError"]


class IdempotencyConflict(E.CloudError):
    """An idempotency key was reused for a different request (HTTP 409)."""


class CloudConnectionError(E.CloudError):
    """No usable answer: the connection failed, timed out or was cut off. Retried."""


class ResponseTooLargeError(E.InvalidResponseError):
    """The server's answer is larger than the request can produce. Not retried."""


#: HTTP status -> the exception the client raises. Statuses not listed map by class: 5xx to
#: ServerError, other 4xx to CloudError.
STATUS_ERRORS: Mapping[int, type[E.CloudError]] = {
    400: E.CloudError,
    401: E.AuthenticationError,
    403: E.AuthenticationError,
    404: E.NotFoundError,
    408: E.ServerError,
    409: IdempotencyConflict,
    410: E.ResultExpiredError,
    413: E.RequestTooLargeError,
    422: E.CloudError,
    429: E.RateLimitError,
    500: E.ServerError,
    502: E.ServerError,
    503: E.ServerError,
    504: E.ServerError,
}

#: Answers worth retrying (with backoff; 429 after its Retry-After). Everything else is final.
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})

#: Error types the client re-raises as themselves (request problems the user fixes).
PASS_THROUGH: Mapping[str, type[E.KppError]] = {
    cls.__name__: cls
    for cls in (
        E.ProblemError, E.EmptyProblemError, E.NotSquareError, E.AsymmetricCouplingError,
        E.DiagonalCouplingError, E.NonFiniteError, E.SizeMismatchError, E.InvalidSpinsError,
        E.SampleSetError, E.ProblemFormatError, E.ProblemTooLargeError, E.UnknownOptionError,
        E.InvalidOptionError, E.InvalidOptionTypeError, E.DeviceNotFoundError, E.JobTooLargeError,
    )
}

# The server side of the table: exception class -> status (first match in this order).
_EXCEPTION_STATUS: tuple[tuple[type[BaseException], int], ...] = (
    (E.RequestTooLargeError, 413),
    (IdempotencyConflict, 409),
    (E.ResultExpiredError, 410),
    (E.RateLimitError, 429),
    (E.AuthenticationError, 401),
    (E.NotFoundError, 404),
    (E.DeviceNotFoundError, 404),
    (E.ProblemError, 422),
    (E.SampleSetError, 422),
    (E.UnknownOptionError, 422),
    (E.InvalidOptionError, 422),
    (E.JobTooLargeError, 422),
)


def error_class_for_status(status: int) -> type[E.CloudError]:
    if status in STATUS_ERRORS:
        return STATUS_ERRORS[status]
    return E.ServerError if status >= 500 else E.CloudError


def status_for_exception(exc: BaseException) -> int:
    """The HTTP status the server answers ``exc`` with (500 for anything unexpected)."""
    for cls, status in _EXCEPTION_STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delay-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
    return max(when - (time.time() if now is None else now), 0.0)


def error_from_response(status: int, body: bytes, headers: Mapping[str, str], *,
                        what: str = "") -> E.KppError:
    """The exception for an error answer. The message is the server's (which never holds a
    credential), prefixed with what was being done."""
    etype, message = "", ""
    try:
        doc = json.loads(body)
        etype = str(doc["error"]["type"])
        message = str(doc["error"]["message"])
    except (ValueError, KeyError, TypeError):
        message = body[:200].decode("utf-8", "replace").strip() or "(no message)"
    prefix = f"{what}: " if what else ""
    if status in (404, 422) and etype in PASS_THROUGH:
        return PASS_THROUGH[etype](f"{prefix}{message}")
    cls = error_class_for_status(status)
    text = f"{prefix}HTTP {status}: {message}"
    if cls is E.RateLimitError:
        return E.RateLimitError(text, status,
                                retry_after=parse_retry_after(headers.get("Retry-After")))
    if cls is E.AuthenticationError:
        text += " (check the API token: KPP_API_TOKEN, the token= argument or your profile)"
    return cls(text, status)
