"""Faults between cim.cloud and a real server: injected 429/500/503, slow and cut-off answers,
lost answers, rate limits, oversized bodies, bad tokens, and tokens kept out of every log."""

import json
import logging
import time
import uuid

import numpy as np
import pytest
import requests

import kpp_sdk
from kpp_sdk import AuthenticationError, IsingProblem, RequestTooLargeError
from kpp_sdk.cloud.client import HttpClient
from kpp_sdk.cloud.wire import encode_problem
from kpp_sdk.config import Secret

JOBS = r"/v1/jobs"
POLL = r"/v1/jobs/poll"
RESULT = r"/v1/jobs/[0-9a-f]+/result"


def _via(proxy, server, name="user", **kw):
    """A cim.cloud device talking through the fault proxy, with short timeouts and backoffs."""
    opts = dict(timeout=1.0, backoff_base=0.05, backoff_cap=0.5, max_retries=6, long_poll=0)
    opts.update(kw)
    return kpp_sdk.get_device("cim.cloud", endpoint=proxy.endpoint, token=server.tokens[name],
                              **opts)


@pytest.fixture(scope="module")
def local():
    return kpp_sdk.get_device("sa.cpu")


def _wait_for(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def test_injected_faults_are_retried_and_the_job_completes_once(server, proxy, admin, local):
    proxy.inject("GET", r"/v1/devices", "status", 503)
    for kind, arg in [("status", 500), ("status", 429), ("slow", 1.5), ("garble", None),
                      ("drop", None)]:
        proxy.inject("POST", JOBS, kind, arg)
    proxy.inject("POST", POLL, "status", 503)
    proxy.inject("POST", POLL, "truncate")
    for kind, arg in [("truncate", None), ("garble", None), ("status", 500)]:
        proxy.inject("GET", RESULT, kind, arg)

    dev = _via(proxy, server, "other")
    p = IsingProblem.random_sk(16, seed=21, fields=True)
    key = "faults-" + uuid.uuid4().hex
    admin.pause()  # the job stays QUEUED until the polls have met their faults
    try:
        job = dev.submit(p, num_reads=8, seed=3, num_sweeps=100, idempotency_key=key)
        _wait_for(lambda: not [f for f in proxy.pending() if f[1].pattern == POLL])
    finally:
        admin.resume()
    ss = job.result(timeout=60)

    assert proxy.pending() == [], "every injected fault was met"
    ref = local.sample(p, num_reads=8, seed=3, num_sweeps=100)
    np.testing.assert_array_equal(ss.spins, ref.spins)
    # four of the six submit attempts reached the server (slow, garble, drop, the last one):
    # the idempotency key made them one job
    assert [j.idempotency_key for j in dev.list_jobs(limit=10_000)].count(key) == 1
    submits = [e for e in proxy.events if e[:2] == ("POST", "/v1/jobs")]
    assert [e[2] for e in submits] == ["status", "status", "slow", "garble", "drop", "forwarded"]


def test_a_bad_token_gets_authentication_error_without_retry(server, proxy):
    bad = "not-a-known-token-" + uuid.uuid4().hex
    with pytest.raises(AuthenticationError) as info:
        kpp_sdk.get_device("cim.cloud", endpoint=proxy.endpoint, token=bad, max_retries=6)
    assert info.value.status_code == 401
    assert len(proxy.events) == 1, "an authentication error must not be retried"
    assert bad not in str(info.value)


def test_the_rate_limit_answers_429_with_retry_after_and_the_client_waits(server, local):
    headers = {"Authorization": "Bearer " + server.tokens["slow"].reveal()}
    with requests.Session() as s:
        answers = [s.get(server.endpoint + "/v1/devices", headers=headers) for _ in range(4)]
    limited = [r for r in answers if r.status_code == 429]
    assert limited, "4 requests at once must exceed a burst of 2"
    assert all(int(r.headers["Retry-After"]) >= 1 for r in limited)
    assert limited[0].json()["error"]["type"] == "RateLimitError"

    dev = kpp_sdk.get_device("cim.cloud", endpoint=server.endpoint, token=server.tokens["slow"])
    p = IsingProblem.random_sk(12, seed=5)
    ss = dev.sample(p, num_reads=4, seed=8, num_sweeps=50, timeout=60)
    ref = local.sample(p, num_reads=4, seed=8, num_sweeps=50)
    np.testing.assert_array_equal(ss.spins, ref.spins)


def _submit_body(problem, key):
    return json.dumps({"problem": encode_problem(problem), "num_reads": 1, "seed": 0,
                       "idempotency_key": key}).encode()


def test_an_oversized_body_gets_a_clear_413(server, proxy):
    big = IsingProblem.random_sk(300, seed=0)  # ~470 KB of JSON; the shared server takes 256 KiB
    body = _submit_body(big, "big-" + uuid.uuid4().hex)
    assert len(body) > 256 * 1024
    headers = {"Authorization": "Bearer " + server.tokens["user"].reveal(),
               "Content-Type": "application/json"}
    r = requests.post(server.endpoint + "/v1/jobs", data=body, headers=headers, timeout=30)
    assert r.status_code == 413
    err = r.json()["error"]
    assert err["type"] == "RequestTooLargeError" and "262,144" in err["message"]
    # no Content-Length (a chunked upload) is cut off the same way
    chunks = (body[i:i + 65536] for i in range(0, len(body), 65536))
    r = requests.post(server.endpoint + "/v1/jobs", data=chunks, headers=headers, timeout=30)
    assert r.status_code == 413

    # through the client: one request, no retry, the table's class
    http = HttpClient(proxy.endpoint, server.tokens["user"], max_retries=6)
    with pytest.raises(RequestTooLargeError, match="262,144") as info:
        http.request("POST", "/v1/jobs", body=body)
    assert info.value.status_code == 413 and len(proxy.events) == 1

    # the device knows the server's limit and refuses before sending anything
    dev = server.client()
    with pytest.raises(RequestTooLargeError, match="262,144"):
        dev.submit(big, num_reads=1)


def test_no_token_in_any_log_line_repr_or_exception(server, proxy, caplog):
    caplog.set_level(logging.DEBUG)
    bad = "wrong-token-" + uuid.uuid4().hex
    seen: list[str] = []
    proxy.inject("POST", JOBS, "status", 503)
    proxy.inject("POST", POLL, "truncate")
    dev = _via(proxy, server, "user")
    seen.append(repr(dev))
    seen.append(repr(dev.http))
    job = dev.submit(IsingProblem.random_sk(8, seed=1), num_reads=2, seed=1, num_sweeps=10)
    seen.append(repr(job))
    seen.append(repr(job.result(timeout=30)))
    for attempt in (lambda: kpp_sdk.get_device("cim.cloud", endpoint=server.endpoint, token=bad),
                    lambda: kpp_sdk.get_device("cim.cloud", endpoint="http://127.0.0.1:9",
                                               token=bad, max_retries=1, backoff_base=0.01)
                    .submit(IsingProblem.random_sk(4, seed=0)),
                    lambda: dev.submit(IsingProblem.random_sk(300, seed=0), num_reads=1)):
        with pytest.raises(kpp_sdk.CloudError) as info:
            attempt()
        seen += [str(info.value), repr(info.value)]
    seen.append(repr(Secret(bad)))
    time.sleep(0.2)  # let the server flush its log lines
    logs = caplog.text + server.log_text()
    assert "/v1/jobs" in logs and '"status": 401' in logs, "the logs captured the requests"
    for token in [t.reveal() for t in server.tokens.values()] + [bad]:
        assert token not in logs
        for text in seen:
            assert token not in text
