"""The exception hierarchy of kpp-sdk.

Everything raised on purpose by the SDK derives from :class:`KppError`, so ``except KppError``
catches all of it. Input problems are also ``ValueError`` (or ``TypeError``) so generic code that
guards with the built-in classes keeps working. Messages say what is wrong, where, and how to fix it.
"""

from __future__ import annotations


class KppError(Exception):
    """Root of every error kpp-sdk raises on purpose."""


# --- problems -------------------------------------------------------------------------------


class ProblemError(KppError, ValueError):
    """An Ising/QUBO problem (or a file holding one) is malformed."""


class EmptyProblemError(ProblemError):
    """The problem has no variables."""


class NotSquareError(ProblemError):
    """The coupling matrix is not square."""


class AsymmetricCouplingError(ProblemError):
    """The coupling matrix is not symmetric."""


class DiagonalCouplingError(ProblemError):
    """The coupling matrix has a nonzero diagonal (s_i^2 = 1 makes it a constant)."""


class NonFiniteError(ProblemError):
    """A coefficient is NaN or infinite."""


class SizeMismatchError(ProblemError):
    """Two arrays that must agree in size do not."""


class InvalidSpinsError(ProblemError):
    """Spin configurations are not in {-1, +1} or have the wrong shape."""


class SampleSetError(KppError, ValueError):
    """A sample set is inconsistent with itself or with its problem (counts below 1, stored
    energies that the problem does not reproduce, sets of different problems joined)."""


class ProblemFormatError(ProblemError):
    """A problem file cannot be parsed."""


class ProblemTooLargeError(ProblemError):
    """The problem exceeds what the device (or its hardware profile) can take."""


class JobTooLargeError(KppError, ValueError):
    """A job would need more compute time or memory than the configured limits allow
    (:class:`kpp_sdk.limits.JobLimits`); raised before any work. ``limit`` names the limit
    (``"max_job_seconds"`` or ``"max_job_memory"``), ``needed`` and ``allowed`` its values."""

    def __init__(self, message: str, *, limit: str | None = None, needed: float | None = None,
                 allowed: float | None = None):
        super().__init__(message)
        self.limit, self.needed, self.allowed = limit, needed, allowed


# --- devices, options, dependencies ---------------------------------------------------------


class DeviceNotFoundError(KppError, LookupError):
    """No device is registered under the requested name."""


class UnknownOptionError(KppError, TypeError):
    """An option was passed that the device does not know."""


class InvalidOptionError(KppError, ValueError):
    """A known option has a value outside its allowed range."""


class InvalidOptionTypeError(InvalidOptionError, TypeError):
    """A known option has a value of the wrong type (``num_reads=3.5``, ``seed="7"``).

    A ``TypeError`` as dimod's samplers raise for it, and still an :class:`InvalidOptionError`
    (so a ``ValueError``) for code written against that."""


class MissingDependencyError(KppError, ImportError):
    """An optional dependency is not installed.

    The message names the package and the pip command (usually an extra) that installs it.
    """

    def __init__(self, package: str, extra: str | None = None, feature: str | None = None):
        self.package = package
        self.extra = extra
        what = f"{feature} needs {package!r}" if feature else f"{package!r} is required"
        fix = f"pip install 'kpp-sdk[{extra}]'" if extra else f"pip install {package}"
        super().__init__(f"{what}, which is not installed; install it with: {fix}")


class ConfigError(KppError, ValueError):
    """The configuration (arguments, environment or profile file) is invalid."""


# --- jobs -----------------------------------------------------------------------------------


class JobError(KppError):
    """A job did not produce a result."""


class JobFailedError(JobError):
    """The job raised while running; the original exception is chained as ``__cause__``."""


class JobCancelledError(JobError):
    """The job was cancelled before it produced a result."""


class JobTimeoutError(JobError, TimeoutError):
    """Waiting for a job's result took longer than the given timeout (the job keeps running)."""


# --- cloud ----------------------------------------------------------------------------------


class CloudError(KppError):
    """An error talking to a remote device. ``status_code`` is the HTTP status when there was one."""

    def __init__(self, message: str, status_code: int | None = None):
        super().__init__(message)
        self.status_code = status_code


class AuthenticationError(CloudError):
    """The server rejected the credentials (HTTP 401/403). Never retried."""


class RateLimitError(CloudError):
    """Too many requests (HTTP 429). ``retry_after`` is the server's hint in seconds, if any."""

    def __init__(self, message: str, status_code: int | None = 429, retry_after: float | None = None):
        super().__init__(message, status_code)
        self.retry_after = retry_after


class RequestTooLargeError(CloudError):
    """The request body exceeds the server's limit (HTTP 413)."""


class NotFoundError(CloudError):
    """The server does not know the requested job or device (HTTP 404)."""


class ResultExpiredError(CloudError, JobError):
    """The server has deleted the job's request and result under its retention policy
    (HTTP 410); submit the job again."""


class ServerError(CloudError):
    """The server failed (HTTP 5xx); retried with backoff."""


class InvalidResponseError(CloudError):
    """The server's answer could not be parsed (truncated body, wrong schema)."""
