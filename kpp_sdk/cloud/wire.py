"""The kpp cloud wire format, version 1: pydantic models and the compact array encoding.

Both sides speak it: ``kpp serve`` (:mod:`kpp_sdk.cloud.server`) parses requests with these models
and the ``cim.cloud`` device (:mod:`kpp_sdk.devices.cim_cloud`) builds them. ``docs/wire-format.md``
describes it in prose and ``docs/openapi.json`` is generated from these models.

Arrays never travel as nested JSON lists: an :class:`EncodedArray` is the raw little-endian bytes
of a C-ordered numpy array in base64, optionally zlib-compressed, with its dtype and shape. Spins
travel bit-packed (1 bit per spin). Couplings travel as their upper triangle only: dense problems
as the row-major upper triangle, sparse ones as COO triplets ``(row < col)``.

Everything is exact: a problem decoded on the server is bit-for-bit the client's problem, so a
seeded run on the server gives the same samples as the same run on the local device.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import zlib
from collections.abc import Mapping
from typing import Annotated, Any, Literal
from urllib.parse import quote

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field, JsonValue

from ..errors import (
    InvalidOptionError,
    InvalidResponseError,
    ProblemFormatError,
    RequestTooLargeError,
)
from ..problem import IsingProblem
from ..sampleset import SampleSet

__all__ = [
    "WIRE_VERSION", "API_PREFIX", "ARRAY_KEY", "JobStatusName", "FINAL_STATUSES",
    "EncodedArray", "DenseCouplings", "SparseCouplings", "ProblemPayload", "SubmitRequest",
    "ErrorInfo", "ErrorResponse", "JobInfo", "JobList", "PollRequest", "PollResponse",
    "SampleSetPayload", "JobResult", "DevicePropertiesModel", "DeviceDescription", "DeviceList",
    "WorkerState", "Health",
    "encode_array", "decode_array", "encode_problem", "decode_problem", "encode_options",
    "decode_options", "encode_sampleset", "decode_sampleset", "problem_memory",
    "encoded_result_bytes", "max_result_bytes", "check_job_id", "job_path",
]

#: Version of this wire format; a request names it and a server refuses versions it does not speak.
WIRE_VERSION = 1
#: Every endpoint lives under this prefix (the version of the HTTP API, bumped with WIRE_VERSION).
API_PREFIX = "/v1"
#: An option value that is an array travels as ``{"kpp_array": <EncodedArray>}``.
ARRAY_KEY = "kpp_array"

#: Arrays larger than this (bytes) are zlib-compressed when that makes them smaller.
COMPRESS_ABOVE = 4096
#: dtypes an EncodedArray may carry (always little-endian on the wire).
DTYPES = ("int8", "uint8", "int32", "int64", "float32", "float64")

JobStatusName = Literal["QUEUED", "RUNNING", "DONE", "FAILED", "CANCELLED"]
FINAL_STATUSES = frozenset({"DONE", "FAILED", "CANCELLED"})

_IDEMPOTENCY_PATTERN = r"^[A-Za-z0-9._:-]{8,128}$"
_JOB_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_MAX_SEED = 2**63 - 1


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- arrays ----------------------------------------------------------------------------------


class EncodedArray(_Model):
    """A numpy array: C-order, little-endian bytes in standard base64 (``data``)."""

    dtype: Literal["int8", "uint8", "int32", "int64", "float32", "float64"]
    shape: list[Annotated[int, Field(ge=0)]] = Field(max_length=2)
    compression: Literal["none", "zlib"] = "none"
    data: str = Field(description="base64 of the (possibly zlib-compressed) little-endian bytes")


def encode_array(a: Any, *, compress: bool | None = None) -> dict:
    """An :class:`EncodedArray` as a plain dict (ready for ``json.dumps``).

    ``compress=None`` compresses arrays over :data:`COMPRESS_ABOVE` bytes when that helps.
    """
    arr = np.asarray(a)
    name = arr.dtype.name
    if name == "bool":
        arr, name = arr.astype(np.uint8), "uint8"
    if name not in DTYPES:
        raise ProblemFormatError(f"arrays of dtype {arr.dtype} cannot travel; use one of {DTYPES}")
    if arr.ndim > 2:
        raise ProblemFormatError(f"arrays travel with at most 2 dimensions, got shape {arr.shape}")
    raw = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()
    compression = "none"
    if compress or (compress is None and len(raw) > COMPRESS_ABOVE):
        packed = zlib.compress(raw, 1)
        if compress or len(packed) < 0.9 * len(raw):
            raw, compression = packed, "zlib"
    return {"dtype": name, "shape": [int(s) for s in arr.shape], "compression": compression,
            "data": base64.b64encode(raw).decode("ascii")}


def decode_array(enc: EncodedArray | Mapping[str, Any], *, what: str, max_bytes: int | None = None,
                 dtypes: tuple[str, ...] | None = None, ndim: int | None = None) -> np.ndarray:
    """The numpy array of an :class:`EncodedArray`; raises :class:`ProblemFormatError` naming
    ``what`` when it is malformed, :class:`RequestTooLargeError` when its decoded size exceeds
    ``max_bytes`` (checked *before* decompressing, so a zlib bomb costs nothing)."""
    if not isinstance(enc, EncodedArray):
        try:
            enc = EncodedArray.model_validate(enc)
        except Exception as exc:  # noqa: BLE001 - any schema problem is a format error
            raise ProblemFormatError(
                f"{what}: not an encoded array ({exc.__class__.__name__})") from None
    if dtypes is not None and enc.dtype not in dtypes:
        raise ProblemFormatError(
            f"{what}: dtype {enc.dtype} not allowed here; expected one of {dtypes}")
    if ndim is not None and len(enc.shape) != ndim:
        raise ProblemFormatError(f"{what}: expected {ndim} dimension(s), got shape {enc.shape}")
    dt = np.dtype(enc.dtype).newbyteorder("<")
    count = math.prod(enc.shape)
    nbytes = count * dt.itemsize
    if max_bytes is not None and nbytes > max_bytes:
        raise RequestTooLargeError(
            f"{what} decodes to {nbytes:,} bytes, over this server's limit of {max_bytes:,}", 413
        )
    try:
        raw = base64.b64decode(enc.data, validate=True)
    except (binascii.Error, ValueError):
        raise ProblemFormatError(f"{what}: data is not valid base64") from None
    if enc.compression == "zlib":
        d = zlib.decompressobj()
        try:
            raw = d.decompress(raw, nbytes + 1)
        except zlib.error:
            raise ProblemFormatError(f"{what}: data is not valid zlib") from None
        if not d.eof and len(raw) <= nbytes:
            raise ProblemFormatError(f"{what}: zlib stream is truncated")
    if len(raw) != nbytes:
        raise ProblemFormatError(
            f"{what}: {len(raw)} bytes of data but shape {enc.shape} of {enc.dtype} needs {nbytes}"
        )
    out = np.frombuffer(raw, dtype=dt).reshape(enc.shape)
    return out.astype(dt.newbyteorder("="), copy=True)


# --- problems --------------------------------------------------------------------------------


class DenseCouplings(_Model):
    """Dense J: the ``n(n-1)/2`` entries ``J[i, j], i < j`` in row-major order (float64)."""

    format: Literal["dense-upper"] = "dense-upper"
    upper: EncodedArray


class SparseCouplings(_Model):
    """Sparse J: one triplet per coupled pair with ``row < col`` (each pair once)."""

    format: Literal["coo-upper"] = "coo-upper"
    row: EncodedArray
    col: EncodedArray
    value: EncodedArray


class ProblemPayload(_Model):
    """``E(s) = -1/2 s^T J s - h^T s + offset`` (the kpp convention, see IsingProblem)."""

    num_spins: Annotated[int, Field(ge=1)]
    couplings: Annotated[DenseCouplings | SparseCouplings, Field(discriminator="format")]
    fields: EncodedArray | None = Field(None, description="h (float64, n); absent means zeros")
    offset: float = 0.0


def _upper_mask(n: int) -> np.ndarray:
    return np.triu(np.ones((n, n), dtype=bool), 1)


def encode_problem(problem: IsingProblem) -> dict:
    """A :class:`ProblemPayload` as a dict; exact (float64, no rounding)."""
    n = problem.n
    if problem.is_sparse:
        coo = sp.triu(problem.J, k=1).tocoo()
        itype = np.int32 if n < 2**31 else np.int64
        couplings = {"format": "coo-upper", "row": encode_array(coo.row.astype(itype)),
                     "col": encode_array(coo.col.astype(itype)),
                     "value": encode_array(coo.data.astype(np.float64))}
    else:
        couplings = {"format": "dense-upper", "upper": encode_array(problem.J[_upper_mask(n)])}
    return {"num_spins": n, "couplings": couplings,
            "fields": encode_array(problem.h) if problem.has_fields else None,
            "offset": problem.offset}


def problem_memory(payload: ProblemPayload) -> tuple[int, int]:
    """``(peak, resident)`` bytes of decoding ``payload`` into an :class:`IsingProblem`, from its
    sizes alone (before any array is decoded): ``peak`` while decoding and validating (the
    upper triangle, the symmetric matrix, the validated copy and the temporaries of its symmetry
    check), ``resident`` what the problem keeps."""
    n = payload.num_spins
    fields = 3 * 8 * n if payload.fields is not None else 8 * n
    c = payload.couplings
    if isinstance(c, DenseCouplings):
        return 5 * 8 * n * n + 4 * n * n + fields, 8 * n * n + 8 * n
    nnz = int(c.row.shape[0]) if c.row.shape else 0
    # decoded triplets, both halves of the COO, the CSR, its validated copy and J - J^T
    return 200 * nnz + 48 * n + fields, 24 * nnz + 16 * n


def encoded_result_bytes(num_reads: int, n: int) -> int:
    """Peak bytes of encoding a result of ``num_reads`` samples for the wire: the packed spins,
    their base64, the JSON document and its copy in the store, with occurrences and energies."""
    return 4 * num_reads * ((n + 7) // 8) + 6 * 16 * num_reads


def max_result_bytes(num_reads: int, n: int) -> int:
    """The largest ``GET /v1/jobs/{id}/result`` answer a job of ``num_reads`` samples of ``n``
    spins can have: the base64 of the packed spins, occurrences and energies, and 1 MiB for the
    job's state, timing and info."""
    per_sample = (n + 7) // 8 + 16
    return 4 * (num_reads * per_sample) // 3 + 64 + 2**20


def check_job_id(job_id: Any) -> str:
    """``job_id`` if it can be a job id (1-128 of ``A-Za-z0-9._:-``, not ``.`` or ``..``);
    :class:`~kpp_sdk.errors.InvalidOptionError` otherwise, so no id can reach another path."""
    if not isinstance(job_id, str) or not _JOB_ID.match(job_id) or job_id in (".", ".."):
        raise InvalidOptionError(
            f"{job_id!r} is not a job id (1-128 characters of A-Z a-z 0-9 . _ : -, as the "
            "server returned it in Job.id)")
    return job_id


def job_path(job_id: str, suffix: str = "") -> str:
    """``/v1/jobs/<id><suffix>`` with the id checked and escaped."""
    return f"{API_PREFIX}/jobs/{quote(check_job_id(job_id), safe='')}{suffix}"


def decode_problem(payload: ProblemPayload, *, max_bytes: int | None = None,
                   max_spins: int | None = None) -> IsingProblem:
    """The :class:`IsingProblem` of a payload. Validation errors are the usual ``ProblemError``
    subclasses; ``max_spins`` is checked before a dense matrix is allocated."""
    n = payload.num_spins
    if max_spins is not None and n > max_spins:
        from ..errors import ProblemTooLargeError

        raise ProblemTooLargeError(
            f"the problem has {n} spins but this device takes at most {max_spins}")
    c = payload.couplings
    if isinstance(c, DenseCouplings):
        if max_bytes is not None and n * n * 8 > max_bytes:
            raise RequestTooLargeError(
                f"a dense {n}x{n} problem needs {n * n * 8:,} bytes, over this server's limit of "
                f"{max_bytes:,}; send it sparse", 413)
        upper = decode_array(c.upper, what="couplings.upper", max_bytes=max_bytes,
                             dtypes=("float64",), ndim=1)
        if upper.size != n * (n - 1) // 2:
            raise ProblemFormatError(
                f"couplings.upper has {upper.size} entries; n = {n} needs {n * (n - 1) // 2}")
        J = np.zeros((n, n))
        J[_upper_mask(n)] = upper
        J += J.T
    else:
        kw = dict(max_bytes=max_bytes, ndim=1)
        row = decode_array(c.row, what="couplings.row", dtypes=("int32", "int64"), **kw)
        col = decode_array(c.col, what="couplings.col", dtypes=("int32", "int64"), **kw)
        val = decode_array(c.value, what="couplings.value", dtypes=("float64",), **kw)
        if not (row.shape == col.shape == val.shape):
            raise ProblemFormatError("couplings.row, .col and .value must have the same length")
        if row.size and (min(row.min(), col.min()) < 0 or max(row.max(), col.max()) >= n):
            raise ProblemFormatError(f"a coupling index is outside 0..{n - 1}")
        if np.any(row >= col):
            k = int(np.flatnonzero(row >= col)[0])
            raise ProblemFormatError(
                f"coupling ({row[k]}, {col[k]}) is not in the upper triangle; send each pair once "
                "with row < col")
        J = sp.coo_matrix((np.r_[val, val], (np.r_[row, col], np.r_[col, row])),
                          shape=(n, n)).tocsr()
    h = None
    if payload.fields is not None:
        h = decode_array(payload.fields, what="fields", max_bytes=max_bytes, dtypes=("float64",),
                         ndim=1)
        if h.size != n:
            raise ProblemFormatError(f"fields has {h.size} entries; num_spins is {n}")
    return IsingProblem(J, h, payload.offset)


# --- options -----------------------------------------------------------------------------------


def _encode_value(name: str, v: Any) -> Any:
    if isinstance(v, np.ndarray):
        try:
            return {ARRAY_KEY: encode_array(v)}
        except ProblemFormatError as exc:
            raise InvalidOptionError(f"option {name!r}: {exc}") from None
    if isinstance(v, np.generic):
        v = v.item()
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        if not math.isfinite(v):
            raise InvalidOptionError(
                f"option {name!r} = {v} is not finite and cannot travel as JSON")
        return v
    if isinstance(v, (list, tuple)):
        return [_encode_value(name, x) for x in v]
    if isinstance(v, Mapping):
        return {str(k): _encode_value(name, x) for k, x in v.items()}
    raise InvalidOptionError(
        f"option {name!r} has a value of type {type(v).__name__}, which cannot travel to a remote "
        "device; use numbers, strings, lists or numpy arrays")


def encode_options(options: Mapping[str, Any]) -> dict:
    """Options as JSON values; numpy arrays become ``{"kpp_array": EncodedArray}``, tuples lists."""
    return {str(k): _encode_value(str(k), v) for k, v in options.items()}


def _decode_value(name: str, v: Any, max_bytes: int | None) -> Any:
    if isinstance(v, dict):
        if set(v) == {ARRAY_KEY}:
            return decode_array(v[ARRAY_KEY], what=f"option {name!r}", max_bytes=max_bytes)
        return {k: _decode_value(name, x, max_bytes) for k, x in v.items()}
    if isinstance(v, list):
        return [_decode_value(name, x, max_bytes) for x in v]
    return v


def decode_options(options: Mapping[str, Any], *, max_bytes: int | None = None) -> dict:
    """Inverse of :func:`encode_options` (tuples come back as lists)."""
    return {k: _decode_value(k, v, max_bytes) for k, v in options.items()}


# --- requests and answers ------------------------------------------------------------------------


class SubmitRequest(_Model):
    """``POST /v1/jobs``. ``idempotency_key`` is chosen by the client; re-sending the same request
    with the same key (by the same token) returns the existing job and never creates a second."""

    wire_version: Literal[1] = WIRE_VERSION
    device: str | None = Field(None, description="a served device; absent: the server's default")
    problem: ProblemPayload
    num_reads: Annotated[int, Field(ge=1)]
    seed: Annotated[int, Field(ge=0, le=_MAX_SEED)]
    options: dict[str, JsonValue] = Field(
        default_factory=dict,
        description='device options; an array value travels as {"kpp_array": EncodedArray}')
    idempotency_key: str = Field(pattern=_IDEMPOTENCY_PATTERN)
    watcher: str | None = Field(
        None, pattern=_IDEMPOTENCY_PATTERN,
        description="wakes the long poll that names the same watcher (not part of the job)")


class ErrorInfo(_Model):
    type: str = Field(description="the kpp_sdk exception class name, e.g. InvalidOptionError")
    message: str


class ErrorResponse(_Model):
    """The body of every 4xx/5xx answer."""

    error: ErrorInfo
    status: int


class JobInfo(_Model):
    """A job's state (no problem, no result). Times are Unix seconds (server clock)."""

    id: str
    device: str
    status: JobStatusName
    num_spins: int
    num_reads: int
    seed: int
    idempotency_key: str
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    attempts: int = Field(0, description="times a worker started the job (2+ after a server crash)")
    cancel_requested: bool = False
    error: ErrorInfo | None = None


class JobList(_Model):
    jobs: list[JobInfo]


class PollRequest(_Model):
    """``POST /v1/jobs/poll``: the statuses the client knows; the answer comes as soon as one of
    them differs (or a job is unknown, or a job is submitted with the same ``watcher``), at the
    latest after ``wait`` seconds (a long poll)."""

    jobs: dict[str, JobStatusName] = Field(max_length=10_000)
    wait: Annotated[float, Field(ge=0, le=60)] = 0.0
    watcher: str | None = Field(
        None, pattern=_IDEMPOTENCY_PATTERN,
        description="also answer when a job is submitted with this watcher id")


class PollResponse(_Model):
    jobs: list[JobInfo]
    missing: list[str] = Field(default_factory=list, description="ids this token does not own")


class SampleSetPayload(_Model):
    """Samples: ``spins_packed`` is ``numpy.packbits(spins > 0, axis=1)`` (uint8, shape
    ``(num_samples, ceil(num_spins / 8))``, most significant bit first)."""

    num_spins: int
    num_samples: int
    spins_packed: EncodedArray
    num_occurrences: EncodedArray
    energies: EncodedArray = Field(
        description="the server's energies; the client recomputes and checks")
    timing: dict[str, float]
    info: dict[str, JsonValue]


class JobResult(_Model):
    """``GET /v1/jobs/{id}/result`` of a finished job; ``sampleset`` is present iff DONE."""

    job: JobInfo
    sampleset: SampleSetPayload | None = None


class DevicePropertiesModel(_Model):
    """:class:`kpp_sdk.DeviceProperties` of a served device."""

    max_spins: int
    coefficient_bits: int | None = None
    supports_fields: bool = True
    is_remote: bool = False
    device_time_per_sample: float | None = None
    max_reads: int = 1_000_000
    supports_sparse: bool = True
    extra: dict[str, JsonValue] = Field(default_factory=dict)


class DeviceDescription(_Model):
    name: str
    properties: DevicePropertiesModel
    options: dict[str, JsonValue] = Field(description="known options and their defaults")
    default_num_reads: int
    max_request_bytes: int = Field(description="the largest request body this server accepts")


class DeviceList(_Model):
    devices: list[DeviceDescription]
    default: str


class WorkerState(_Model):
    paused: bool
    workers: int
    queued: int
    running: int


class Health(_Model):
    status: Literal["ok"] = "ok"
    wire_version: int = WIRE_VERSION
    server: str


# --- sample sets ---------------------------------------------------------------------------------


def encode_sampleset(ss: SampleSet) -> dict:
    """A :class:`SampleSetPayload` as a dict."""
    from ..io import jsonable

    return {
        "num_spins": ss.num_spins,
        "num_samples": len(ss),
        "spins_packed": encode_array(np.packbits(ss.spins > 0, axis=1)),
        "num_occurrences": encode_array(ss.num_occurrences.astype(np.int64)),
        "energies": encode_array(ss.energies.astype(np.float64)),
        "timing": {k: float(v) for k, v in ss.timing.items()},
        "info": jsonable(ss.info),
    }


def decode_sampleset(payload: SampleSetPayload, problem: IsingProblem) -> SampleSet:
    """The :class:`SampleSet` for ``problem``; energies are recomputed here and must agree with
    the server's (:class:`InvalidResponseError` otherwise: a corrupted answer or the wrong
    problem)."""
    n, m = payload.num_spins, payload.num_samples
    try:
        if n != problem.n:
            raise ProblemFormatError(f"the result has {n} spins but the problem has {problem.n}")
        width = (n + 7) // 8
        packed = decode_array(payload.spins_packed, what="spins_packed", dtypes=("uint8",), ndim=2)
        if packed.shape != (m, width):
            raise ProblemFormatError(
                f"spins_packed has shape {packed.shape}; expected {(m, width)}")
        bits = np.unpackbits(packed, axis=1, count=n)
        spins = (2 * bits.astype(np.int8) - 1).astype(np.int8)
        occ = decode_array(payload.num_occurrences, what="num_occurrences", dtypes=("int64",),
                           ndim=1)
        energies = decode_array(payload.energies, what="energies", dtypes=("float64",), ndim=1)
        ss = SampleSet(problem, spins, occ, timing=payload.timing, info=payload.info)
    except (ProblemFormatError, ValueError) as exc:
        raise InvalidResponseError(f"malformed sample set from the server: {exc}") from None
    if energies.shape != ss.energies.shape or not np.allclose(energies, ss.energies, rtol=1e-9,
                                                              atol=1e-6):
        raise InvalidResponseError(
            "the server's energies differ from the energies recomputed here: the answer is "
            "corrupted or belongs to another problem")
    return ss
