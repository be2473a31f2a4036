"""The cim.cloud client against misbehaving servers (issue 17, item 10): a head that trickles in, an
answer larger than the request can produce, a server that answers long polls at once, an outage
clock that starts with the first failed poll, and results with the wrong number of samples."""

import concurrent.futures as cf
import socket
import threading
import time

import numpy as np
import pytest

from kpp_sdk import IsingProblem
from kpp_sdk.cloud import wire
from kpp_sdk.cloud.client import HttpClient
from kpp_sdk.cloud.errors import CloudConnectionError, ResponseTooLargeError
from kpp_sdk.cloud.poller import JobPoller, _sample_count_problem
from kpp_sdk.config import Secret
from kpp_sdk.errors import InvalidResponseError, ServerError


class _Scripted:
    """A TCP server on 127.0.0.1 that answers every connection with ``handler(conn)``."""

    def __init__(self, handler):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = False
        self.handler = handler
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn):
        try:
            conn.recv(65536)
            self.handler(conn)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self):
        self._stop = True
        self.sock.close()

    @property
    def endpoint(self):
        return f"http://127.0.0.1:{self.port}"


def _trickle(conn):
    conn.sendall(b"HTTP/1.1 200 OK\r\n")
    for _ in range(600):  # one header byte every 0.1 s: each read is quick, the head never ends
        conn.sendall(b"X")
        time.sleep(0.1)


def test_a_server_that_trickles_its_head_cannot_hold_the_client():
    srv = _Scripted(_trickle)
    try:
        http = HttpClient(srv.endpoint, Secret("t" * 20), connect_timeout=0.5, read_timeout=1.0,
                          max_retries=0)
        with pytest.raises(CloudConnectionError, match="header-read timeout"):
            http.request("GET", "/v1/devices")
    finally:
        srv.close()


def _huge(conn):
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 5000000000\r\n\r\n" + b"[" * 1000)


def _huge_chunked(conn):
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n")
    for _ in range(100):
        conn.sendall(b"10000\r\n" + b"[" * 0x10000 + b"\r\n")


@pytest.mark.parametrize("handler", [_huge, _huge_chunked], ids=["declared", "chunked"])
def test_an_answer_larger_than_expected_is_refused_and_not_retried(handler):
    srv = _Scripted(handler)
    try:
        http = HttpClient(srv.endpoint, Secret("t" * 20), read_timeout=5.0, max_retries=3,
                          backoff_base=0.01)
        with pytest.raises(ResponseTooLargeError, match="more than"):
            http.request("GET", "/v1/jobs/abc/result", max_bytes=1_000_000)
        assert srv.connections == 1
    finally:
        srv.close()


def _closes(conn):
    pass  # read the request, close without answering


def test_no_retry_starts_after_the_deadline():
    srv = _Scripted(_closes)
    try:
        http = HttpClient(srv.endpoint, None, read_timeout=2.0, max_retries=8, backoff_base=0.05,
                          backoff_cap=0.05)
        with pytest.raises(CloudConnectionError):
            http.request("GET", "/v1/devices", deadline=time.monotonic() + 0.12)
        # 0.05 s backoffs: at most a few attempts fit before the deadline, never all nine
        assert 1 <= srv.connections <= 4, srv.connections
        before = srv.connections
        with pytest.raises(CloudConnectionError):
            http.request("GET", "/v1/devices", deadline=time.monotonic() - 1)
        assert srv.connections == before + 1
    finally:
        srv.close()


# --- the poller, with a scripted HTTP layer ----------------------------------------------------


def _info(job_id, status="RUNNING", num_reads=2, n=3):
    return wire.JobInfo(id=job_id, device="sa.cpu", status=status, num_spins=n,
                        num_reads=num_reads, seed=1, idempotency_key="k" * 8,
                        created_at=time.time())


class _FakeHttp:
    read_timeout = 1.0

    def __init__(self, poll):
        self.poll = poll
        self.calls = []

    def backoff(self, attempt):
        return 0.01

    def request(self, method, path, **kw):
        self.calls.append((time.monotonic(), path, kw))
        return self.poll(path, kw)


def test_a_server_that_answers_long_polls_at_once_is_polled_with_backoff():
    """Issue 10: the client looped at ~23 req/s forever; now the wait grows to poll_interval_max."""
    http = _FakeHttp(lambda path, kw: wire.PollResponse(jobs=[_info("j1")]))
    poller = JobPoller(http, lambda res, p: None, long_poll=10.0, interval_min=0.05,
                       interval_max=0.5)
    fut = poller.track(_info("j1"), IsingProblem.random_sk(3, seed=0), 2)
    time.sleep(3.0)
    poller.close()
    polls = [c for c in http.calls if c[1].endswith("/poll")]
    # without backoff: thousands; with it: 0.05, 0.075, ... up to 0.5 s between polls
    assert 4 <= len(polls) <= 20, len(polls)
    assert not fut.done()


def test_the_outage_clock_starts_when_the_first_failed_poll_starts():
    """Issue 10: max_outage counted from the end of the first failed retry cycle gave 24.6 s for
    5 s. The HTTP layer is told to start no retry after start + max_outage, and the jobs fail
    when the first poll that runs past it fails."""
    def poll(path, kw):
        time.sleep(0.3)  # a whole retry cycle of the HTTP layer
        raise ServerError("HTTP 503: restarting", 503)

    http = _FakeHttp(poll)
    poller = JobPoller(http, lambda res, p: None, long_poll=1.0, max_outage=0.5)
    fut = poller.track(_info("j2"), IsingProblem.random_sk(3, seed=0), 2)
    with pytest.raises(ServerError):
        fut.result(timeout=30)
    poller.close()
    polls = [c for c in http.calls if c[1].endswith("/poll")]
    first_start = polls[0][0]
    assert all(abs(kw["deadline"] - (first_start + 0.5)) < 0.05 for _, _, kw in polls)
    assert len(polls) == 2, "the second failed poll ends the outage (0.6 s > 0.5 s)"


def _sampleset(m, occurrences, n=3):
    return wire.SampleSetPayload(
        num_spins=n, num_samples=m,
        spins_packed=wire.EncodedArray(**wire.encode_array(np.zeros((m, 1), dtype=np.uint8))),
        num_occurrences=wire.EncodedArray(**wire.encode_array(np.asarray(occurrences,
                                                                         dtype=np.int64))),
        energies=wire.EncodedArray(**wire.encode_array(np.zeros(m))), timing={}, info={})


def test_results_with_the_wrong_number_of_samples_are_refused():
    assert _sample_count_problem(_sampleset(5, [1] * 5), 5) == ""
    assert _sample_count_problem(_sampleset(2, [3, 2]), 5) == ""  # de-duplicated (top-k)
    assert "3 samples" in _sample_count_problem(_sampleset(3, [1, 1, 1]), 5)
    assert "7 samples" in _sample_count_problem(_sampleset(7, [1] * 7), 5)

    def poll(path, kw):
        if path.endswith("/poll"):
            return wire.PollResponse(jobs=[_info("j3", "DONE", num_reads=5)])
        return wire.JobResult(job=_info("j3", "DONE", num_reads=5),
                              sampleset=_sampleset(3, [1, 1, 1]))

    poller = JobPoller(_FakeHttp(poll), lambda res, p: pytest.fail("a short result was used"),
                       long_poll=1.0)
    fut = poller.track(_info("j3"), IsingProblem.random_sk(3, seed=0), 5)
    with pytest.raises(InvalidResponseError, match="3 samples"):
        fut.result(timeout=30)
    poller.close()


def test_the_result_request_is_bounded_by_what_the_job_can_produce():
    seen = []

    def poll(path, kw):
        if path.endswith("/poll"):
            return wire.PollResponse(jobs=[_info("j4", "DONE", num_reads=100, n=40)])
        seen.append(kw["max_bytes"])
        raise ResponseTooLargeError("too large", None)

    poller = JobPoller(_FakeHttp(poll), lambda res, p: None, long_poll=1.0)
    fut = poller.track(_info("j4", num_reads=100, n=40), IsingProblem.random_sk(40, seed=0), 100)
    with pytest.raises(ResponseTooLargeError):
        fut.result(timeout=30)
    poller.close()
    assert seen == [wire.max_result_bytes(100, 40)]
    assert wire.max_result_bytes(100, 40) < 2 * 2**20
    assert isinstance(fut, cf.Future)
