"""The wire format without a server: exact round trips, compactness, malformed input, the HTTP
status table, backoff."""

import base64
import email.utils
import json
import random
import zlib

import numpy as np
import pytest
import scipy.sparse as sp

from kpp_sdk import (
    AuthenticationError,
    CloudError,
    InvalidOptionError,
    InvalidResponseError,
    IsingProblem,
    NotFoundError,
    ProblemFormatError,
    RateLimitError,
    RequestTooLargeError,
    SampleSet,
    ServerError,
    UnknownOptionError,
)
from kpp_sdk.cloud import wire
from kpp_sdk.cloud.client import HttpClient, is_retryable
from kpp_sdk.cloud.errors import (
    STATUS_ERRORS,
    CloudConnectionError,
    IdempotencyConflict,
    error_from_response,
    parse_retry_after,
    status_for_exception,
)


@pytest.mark.parametrize("dtype", wire.DTYPES)
@pytest.mark.parametrize("compress", [False, True])
def test_arrays_round_trip_exactly_for_every_dtype(dtype, compress):
    rng = np.random.default_rng(0)
    a = (rng.standard_normal((7, 5)) * 100).astype(dtype)
    back = wire.decode_array(wire.encode_array(a, compress=compress), what="a")
    assert back.dtype == a.dtype and back.shape == a.shape
    np.testing.assert_array_equal(back, a)
    assert back.flags.writeable


def _dense(n=30, seed=0):
    p = IsingProblem.random_sk(n, seed=seed, fields=True)
    return IsingProblem(p.J, p.h, offset=-1.25)


@pytest.mark.parametrize("make", [
    lambda: _dense(),
    lambda: _dense().to_sparse(),
    lambda: IsingProblem(sp.triu(sp.random(200, 200, density=0.02, random_state=1), 1)
                         + sp.triu(sp.random(200, 200, density=0.02, random_state=1), 1).T),
    lambda: IsingProblem(np.zeros((1, 1))),
    lambda: IsingProblem(sp.csr_matrix((5000, 5000))),
], ids=["dense", "sparse", "random-sparse-no-fields", "one-spin", "empty-sparse"])
def test_problems_round_trip_bit_for_bit(make):
    p = make()
    payload = wire.ProblemPayload.model_validate(json.loads(json.dumps(wire.encode_problem(p))))
    q = wire.decode_problem(payload)
    assert q.is_sparse == p.is_sparse
    assert q == p  # exact equality of J, h and offset: no rounding on the way
    assert q.offset == p.offset


def test_couplings_travel_as_the_upper_triangle_in_binary_not_json_lists():
    p = IsingProblem.random_sk(200, seed=1)
    text = json.dumps(wire.encode_problem(p))
    upper_bytes = 8 * 200 * 199 // 2
    assert len(text) < 1.4 * upper_bytes  # base64 of the upper triangle, ~4/3 of the raw bytes
    assert len(json.dumps(p.dense_J().tolist())) > 2 * len(text)
    q = IsingProblem(np.round(p.J * 10), None)  # small integers compress
    assert len(json.dumps(wire.encode_problem(q))) < 0.5 * len(text)


def _payload(**couplings):
    base = {"num_spins": 3, "couplings": {"format": "coo-upper",
                                          "row": wire.encode_array(np.array([0], np.int32)),
                                          "col": wire.encode_array(np.array([1], np.int32)),
                                          "value": wire.encode_array(np.array([1.0]))}}
    base["couplings"].update(couplings)
    return wire.ProblemPayload.model_validate(base)


@pytest.mark.parametrize("change,match", [
    ({"row": wire.encode_array(np.array([1], np.int32)),
      "col": wire.encode_array(np.array([0], np.int32))}, "upper triangle"),
    ({"col": wire.encode_array(np.array([3], np.int32))}, "outside"),
    ({"value": wire.encode_array(np.array([1.0, 2.0]))}, "same length"),
    ({"value": wire.encode_array(np.array([1], np.int64))}, "dtype"),
    ({"value": {"dtype": "float64", "shape": [1], "data": "@@@"}}, "base64"),
    ({"value": {"dtype": "float64", "shape": [2], "data": base64.b64encode(b"x" * 8).decode()}},
     "needs 16"),
    ({"value": {"dtype": "float64", "shape": [1], "compression": "zlib",
                "data": base64.b64encode(b"not zlib").decode()}}, "zlib"),
])
def test_malformed_payloads_raise_problem_format_errors_naming_the_field(change, match):
    with pytest.raises(ProblemFormatError, match=match):
        wire.decode_problem(_payload(**change))


def test_a_zlib_bomb_is_refused_before_it_is_decompressed():
    c = zlib.compressobj(1)
    chunk = bytes(1 << 20)
    bomb = b"".join(c.compress(chunk) for _ in range(40)) + c.flush()  # 40 MB of zeros, ~200 kB
    enc = {"dtype": "float64", "shape": [5 * 2**20], "compression": "zlib",
           "data": base64.b64encode(bomb).decode()}
    with pytest.raises(RequestTooLargeError, match="41,943,040 bytes"):
        wire.decode_array(enc, what="fields", max_bytes=1_000_000)
    # the size comes from dtype and shape alone: even junk data is refused for its size
    junk = {"dtype": "float64", "shape": [10**9], "compression": "zlib", "data": "AAAA"}
    with pytest.raises(RequestTooLargeError):
        wire.decode_array(junk, what="fields", max_bytes=1_000_000)
    assert wire.decode_array(enc, what="fields", max_bytes=50 * 2**20).sum() == 0
    dense = wire.ProblemPayload.model_validate(
        {"num_spins": 100_000, "couplings": {"format": "dense-upper",
                                             "upper": wire.encode_array(np.zeros(1))}})
    with pytest.raises(RequestTooLargeError, match="send it sparse"):
        wire.decode_problem(dense, max_bytes=10_000_000)


def test_options_round_trip_with_arrays_tuples_and_numpy_scalars():
    opts = {"num_sweeps": np.int64(7), "beta_range": (0.5, np.float32(2.0)), "mode": "anneal",
            "initial_states": np.array([[1, -1], [-1, 1]], np.int8), "beta": None,
            "nested": {"a": [1, np.arange(3)]}}
    back = wire.decode_options(json.loads(json.dumps(wire.encode_options(opts))))
    assert back["num_sweeps"] == 7 and back["beta_range"] == [0.5, 2.0] and back["beta"] is None
    np.testing.assert_array_equal(back["initial_states"], opts["initial_states"])
    assert back["initial_states"].dtype == np.int8
    np.testing.assert_array_equal(back["nested"]["a"][1], np.arange(3))
    with pytest.raises(InvalidOptionError, match="not finite"):
        wire.encode_options({"beta": float("nan")})
    with pytest.raises(InvalidOptionError, match="cannot travel"):
        wire.encode_options({"callback": print})


def test_sample_sets_round_trip_and_tampering_is_detected():
    p = _dense(20)
    rng = np.random.default_rng(3)
    spins = rng.choice(np.array([-1, 1], np.int8), size=(9, 20))
    ss = SampleSet(p, spins, np.arange(1, 10), timing={"run_s": 0.5}, info={"seed": 3})
    doc = json.loads(json.dumps(wire.encode_sampleset(ss)))
    back = wire.decode_sampleset(wire.SampleSetPayload.model_validate(doc), p)
    np.testing.assert_array_equal(back.spins, ss.spins)
    np.testing.assert_array_equal(back.num_occurrences, ss.num_occurrences)
    np.testing.assert_array_equal(back.energies, ss.energies)
    assert back.timing["run_s"] == 0.5 and back.info["seed"] == 3

    doc["energies"] = wire.encode_array(ss.energies + 1.0)
    with pytest.raises(InvalidResponseError, match="differ"):
        wire.decode_sampleset(wire.SampleSetPayload.model_validate(doc), p)
    with pytest.raises(InvalidResponseError, match="spins"):
        wire.decode_sampleset(wire.SampleSetPayload.model_validate(doc), _dense(21))


def _err(status, etype="X", message="m"):
    return json.dumps({"error": {"type": etype, "message": message}, "status": status}).encode()


def test_each_http_status_maps_to_one_cloud_error_class():
    expected = {401: AuthenticationError, 403: AuthenticationError, 404: NotFoundError,
                409: IdempotencyConflict, 413: RequestTooLargeError, 429: RateLimitError,
                500: ServerError, 502: ServerError, 503: ServerError, 504: ServerError,
                400: CloudError, 422: CloudError}
    for status, cls in expected.items():
        exc = error_from_response(status, _err(status), {})
        assert type(exc) is cls and exc.status_code == status and STATUS_ERRORS[status] is cls
    assert type(error_from_response(599, b"oops", {})) is ServerError
    # the server uses the same table the other way round
    for exc in (RequestTooLargeError("x", 413), IdempotencyConflict("x", 409), NotFoundError("x")):
        assert status_for_exception(exc) in STATUS_ERRORS
        assert STATUS_ERRORS[status_for_exception(exc)] is type(exc)


def test_request_errors_keep_their_local_class_and_429_carries_retry_after():
    exc = error_from_response(422, _err(422, "UnknownOptionError", "no option 'x'"), {})
    assert type(exc) is UnknownOptionError and "no option 'x'" in str(exc)
    exc = error_from_response(422, _err(422, "SomethingElse"), {})
    assert type(exc) is CloudError  # not on the pass-through list: no arbitrary class names
    exc = error_from_response(429, _err(429), {"Retry-After": "3"})
    assert isinstance(exc, RateLimitError) and exc.retry_after == 3.0
    date = email.utils.formatdate(1_000_030.0, usegmt=True)
    assert parse_retry_after(date, now=1_000_000.0) == pytest.approx(30.0)
    assert parse_retry_after("soon") is None


def test_only_transient_errors_are_retryable():
    assert is_retryable(CloudConnectionError("x"))
    assert is_retryable(InvalidResponseError("x"))
    assert is_retryable(ServerError("x", 503)) and is_retryable(RateLimitError("x"))
    for exc in (AuthenticationError("x", 401), NotFoundError("x", 404),
                RequestTooLargeError("x", 413), IdempotencyConflict("x", 409),
                CloudError("x", 422), UnknownOptionError("x")):
        assert not is_retryable(exc)


def test_backoff_doubles_with_jitter_and_is_capped():
    http = HttpClient("http://127.0.0.1:9", None, backoff_base=0.1, backoff_cap=2.0,
                      rng=random.Random(0))
    for attempt in range(10):
        b = min(2.0, 0.1 * 2 ** attempt)
        waits = [http.backoff(attempt) for _ in range(200)]
        assert b / 2 <= min(waits) and max(waits) <= b
        assert max(waits) - min(waits) > 0.3 * b / 2  # jittered, not constant
