"""kpp-sdk: Ising machines from Python and PyTorch.

>>> import kpp_sdk
>>> problem = kpp_sdk.IsingProblem.random_sk(16, seed=0)
>>> device = kpp_sdk.get_device("sa.cpu")
>>> result = device.sample(problem, num_reads=10, seed=1)
>>> result.spins.shape
(10, 16)
"""

from .device import Device, DeviceProperties, RunContext, RunResult
from .errors import (
    AsymmetricCouplingError,
    AuthenticationError,
    CloudError,
    ConfigError,
    DeviceNotFoundError,
    DiagonalCouplingError,
    EmptyProblemError,
    InvalidOptionError,
    InvalidOptionTypeError,
    InvalidResponseError,
    InvalidSpinsError,
    JobCancelledError,
    JobError,
    JobFailedError,
    JobTimeoutError,
    JobTooLargeError,
    KppError,
    MissingDependencyError,
    NonFiniteError,
    NotFoundError,
    NotSquareError,
    ProblemError,
    ProblemFormatError,
    ProblemTooLargeError,
    RateLimitError,
    RequestTooLargeError,
    ResultExpiredError,
    ServerError,
    SampleSetError,
    SizeMismatchError,
    UnknownOptionError,
)
from .job import Job, JobStatus, as_completed, wait
from .problem import IsingProblem, QuantizedProblem, quantize
from .registry import DeviceInfo, device_class, get_device, list_devices
from .sampleset import SampleSet

__version__ = "0.1.0"

from . import _moved

_moved.install()  # old module paths of the layout pass (one release)

__all__ = [
    "Device", "DeviceProperties", "RunContext", "RunResult",
    "Job", "JobStatus", "wait", "as_completed",
    "IsingProblem", "QuantizedProblem", "quantize", "SampleSet",
    "get_device", "list_devices", "device_class", "DeviceInfo",
    "KppError", "ProblemError", "EmptyProblemError", "NotSquareError", "AsymmetricCouplingError",
    "DiagonalCouplingError", "NonFiniteError", "SizeMismatchError", "SampleSetError", "InvalidSpinsError",
    "ProblemFormatError", "ProblemTooLargeError", "DeviceNotFoundError", "UnknownOptionError",
    "InvalidOptionError", "InvalidOptionTypeError", "MissingDependencyError", "ConfigError",
    "JobError", "JobFailedError", "JobCancelledError", "JobTimeoutError", "JobTooLargeError",
    "CloudError", "AuthenticationError", "RateLimitError",
    "RequestTooLargeError", "NotFoundError", "ServerError", "InvalidResponseError",
    "ResultExpiredError",
]
