"""A real ``kpp serve`` under hostile and heavy requests (issue 17): the token is checked before the
body is read, slow heads and bodies are cut off, jobs beyond the limits are refused at submit with
the device's own checks, results expire with a 410, a job that ignores its cancel cannot hold a
SIGTERMed server, and a plugin device's failure reaches the client as JobFailedError."""

import asyncio
import json
import socket
import sqlite3
import time
import uuid

import numpy as np
import pytest
import requests

from kpp_sdk import IsingProblem, JobFailedError
from kpp_sdk.cloud import LocalServer
from kpp_sdk.cloud.wire import encode_problem
from kpp_sdk.errors import InvalidOptionError, JobTooLargeError, ResultExpiredError

PLUGIN = '''
import time

import numpy as np

from kpp_sdk.device import Device, DeviceProperties, RunResult
from kpp_sdk.options import Option, OptionSpec


class FailingDevice(Device):
    """Fails at run time, after the server accepted the job."""

    name = "test.failing"
    OPTIONS = OptionSpec(fail=Option(True, "fail", type=bool))
    FAST_OPTIONS = {"fail": False}

    @property
    def properties(self):
        return DeviceProperties(max_spins=64)

    def _run(self, problem, *, num_reads, seed, options, ctx):
        if options["fail"]:
            raise RuntimeError("the plugin device failed on purpose")
        return RunResult(np.ones((num_reads, problem.n), dtype=np.int8))


class StubbornDevice(Device):
    """Ignores cancellation for ``stall`` seconds (a device that never checks)."""

    name = "test.stubborn"
    OPTIONS = OptionSpec(stall=Option(0.0, "seconds", type=float, ge=0, le=3600))

    @property
    def properties(self):
        return DeviceProperties(max_spins=64)

    def _run(self, problem, *, num_reads, seed, options, ctx):
        end = time.monotonic() + options["stall"]
        while time.monotonic() < end:
            time.sleep(0.05)
        return RunResult(np.ones((num_reads, problem.n), dtype=np.int8))
'''


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory):
    """A plugin registered the way third parties register: an entry point in a dist-info."""
    root = tmp_path_factory.mktemp("plugin")
    (root / "kpp_test_plugin.py").write_text(PLUGIN)
    info = root / "kpp_test_plugin-0.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: kpp-test-plugin\nVersion: 0.0\n")
    (info / "entry_points.txt").write_text(
        "[kpp_sdk.devices]\ntest.failing = kpp_test_plugin:FailingDevice\n"
        "test.stubborn = kpp_test_plugin:StubbornDevice\n")
    return str(root)


@pytest.fixture(scope="module")
def bounded(server_extra, plugin_path):
    srv = LocalServer(["sa.cpu", "test.failing"], workers=1, max_request_bytes=512 * 1024,
                      args=["--max-job-memory", "32MiB", "--header-timeout", "1",
                            "--body-timeout", "1"], env={"PYTHONPATH": plugin_path})
    srv.start()
    yield srv
    srv.close()


def _raw(port: int, data: bytes, timeout: float = 10.0) -> tuple[bytes, bool]:
    """Send ``data`` and read until the server closes or answers; returns (answer, closed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        try:
            while True:
                c = s.recv(65536)
                if not c:
                    return b"".join(chunks), True
                chunks.append(c)
                got = b"".join(chunks)
                if b"\r\n\r\n" in got and b"content-length" in got.lower():
                    head, _, body = got.partition(b"\r\n\r\n")
                    length = int([ln.split(b":")[1] for ln in head.split(b"\r\n")
                                  if ln.lower().startswith(b"content-length")][0])
                    if len(body) >= length:
                        return b"".join(chunks), False
        except socket.timeout:
            return b"".join(chunks), False


def test_no_token_is_refused_before_the_body_is_read(bounded):
    """Issue 3: a 50 MB body is announced, 10 bytes are sent; the 401 comes at once (the server
    never waited for the rest), and the connection is closed."""
    head = (b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 50000000\r\n\r\n")
    answer, _ = _raw(bounded.port, head + b"{" * 10, timeout=5)
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    assert b"AuthenticationError" in answer and b"connection: close" in answer.lower()


def test_a_head_that_trickles_in_is_cut_off(bounded):
    with socket.create_connection(("127.0.0.1", bounded.port), timeout=10) as s:
        s.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n")
        closed = False
        for _ in range(40):  # 40 x 0.25 s of trickling: far beyond the 1 s head timeout
            try:
                s.sendall(b"X-Slow: 1\r\n")
                time.sleep(0.25)
                s.settimeout(0.01)
                if s.recv(1) == b"":
                    closed = True
                    break
            except socket.timeout:
                continue
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
        assert closed, "the server kept a connection whose head never completed"


def test_a_stalled_body_gets_408(bounded):
    token = bounded.tokens["user"].reveal().encode()
    head = (b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + token + b"\r\nContent-Length: 1000\r\n\r\n")
    answer, _ = _raw(bounded.port, head + b"{" * 10, timeout=20)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]


def _post(srv, body: dict, name: str = "user") -> requests.Response:
    return requests.post(srv.endpoint + "/v1/jobs", data=json.dumps(body), timeout=60,
                         headers={"Authorization": "Bearer " + srv.tokens[name].reveal(),
                                  "Content-Type": "application/json"})


def _body(problem: IsingProblem, num_reads: int, options: dict, device=None) -> dict:
    return {"wire_version": 1, "device": device, "problem": encode_problem(problem),
            "num_reads": num_reads, "seed": 1, "options": options,
            "idempotency_key": uuid.uuid4().hex}


def test_jobs_beyond_the_limits_are_refused_at_submit_and_not_stored(bounded):
    """Issue 2: the answer is 422 JobTooLargeError naming the limit and the flag; the client
    raises the same class; nothing is stored."""
    dev = bounded.client()
    before = len(dev.list_jobs(limit=10_000))
    p = IsingProblem.random_sk(10, seed=0)
    with pytest.raises(JobTooLargeError, match="max_job_memory") as info:
        dev.submit(p, num_reads=1, num_sweeps=300_000_000)
    assert "kpp serve --max-job-memory" in str(info.value)
    big = IsingProblem(__import__("scipy.sparse", fromlist=["x"]).csr_matrix((100_000, 100_000)))
    with pytest.raises(JobTooLargeError, match="spins"):
        dev.submit(big, num_reads=2000)
    r = _post(bounded, _body(IsingProblem.random_sk(10, seed=0), 1, {"num_sweeps": 10**9}))
    assert r.status_code == 422 and r.json()["error"]["type"] == "JobTooLargeError"
    assert len(dev.list_jobs(limit=10_000)) == before


def test_a_dense_problem_that_decodes_too_large_is_refused_before_decoding(bounded):
    import base64
    import zlib

    n = 2000  # 173 KB of zlib zeros that would decode to 32 MB (and ~180 MB while checking)
    upper = zlib.compress(np.zeros(n * (n - 1) // 2).tobytes(), 9)
    body = _body(IsingProblem.random_sk(2, seed=0), 1, {})
    body["problem"] = {"num_spins": n, "couplings": {"format": "dense-upper", "upper": {
        "dtype": "float64", "shape": [n * (n - 1) // 2], "compression": "zlib",
        "data": base64.b64encode(upper).decode()}}, "fields": None, "offset": 0.0}
    r = _post(bounded, body)
    assert r.status_code == 422, r.text
    assert "decoding the problem" in r.json()["error"]["message"]


def test_submit_validation_is_the_devices_own(bounded):
    """Issue 4: what the device would refuse at run time is refused at submit (422)."""
    dev = bounded.client()
    p = IsingProblem.random_sk(10, seed=0)
    with pytest.raises(InvalidOptionError, match="shape"):
        dev.submit(p, num_reads=2, initial_states=np.ones((3, 7), dtype=np.int8))
    with pytest.raises(InvalidOptionError, match="-1 and \\+1"):
        dev.submit(p, num_reads=2, initial_states=np.zeros((2, 10), dtype=np.int8))
    with pytest.raises(InvalidOptionError, match="seed"):
        dev.submit(p, num_reads=2, seed=2**63)


def test_a_job_failing_at_run_time_raises_job_failed_error(bounded):
    dev = bounded.client(device="test.failing")
    job = dev.submit(IsingProblem.random_sk(5, seed=0), num_reads=2)
    with pytest.raises(JobFailedError, match="failed on purpose"):
        job.result(timeout=60)
    assert dev.sample(IsingProblem.random_sk(5, seed=0), num_reads=2, fail=False,
                      timeout=60).num_reads == 2


def test_list_offsets_out_of_range_are_422_not_500(bounded):
    auth = {"Authorization": "Bearer " + bounded.tokens["user"].reveal()}
    for q in ("offset=9223372036854775808", "offset=-1", "limit=0", "limit=100000"):
        r = requests.get(f"{bounded.endpoint}/v1/jobs?{q}", headers=auth, timeout=30)
        assert r.status_code == 422, (q, r.status_code, r.text)


def test_job_ids_are_checked_and_escaped_by_the_client(bounded):
    dev = bounded.client()
    for bad in ("../admin/workers", "..", "a/b", "", "x" * 200):
        with pytest.raises(InvalidOptionError, match="not a job id"):
            dev.job(bad)


# --- a large-body slot and the body timeout, in-process ---------------------------------------


def test_large_bodies_wait_for_a_slot_and_get_503_after_the_wait(server_extra):
    from kpp_sdk.cloud.server import BodyLimit

    seen = []

    async def app(scope, receive, send):
        msg = await receive()
        seen.append(len(msg["body"]))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    limit = BodyLimit(app, 10_000, max_large=1, body_timeout_s=5, large_bytes=100,
                      large_wait_s=0.2)

    def scope(n):
        return {"type": "http", "method": "POST", "headers": [(b"content-length", str(n).encode())]}

    async def run():
        gate = asyncio.Event()
        statuses = []

        async def slow_receive():
            await gate.wait()
            return {"type": "http.request", "body": b"x" * 500, "more_body": False}

        async def fast_receive():
            return {"type": "http.request", "body": b"y" * 500, "more_body": False}

        async def send_to(out):
            async def send(msg):
                if msg["type"] == "http.response.start":
                    out.append(msg["status"])
            return send

        first = asyncio.create_task(limit(scope(500), slow_receive, await send_to(statuses)))
        await asyncio.sleep(0.05)  # the first holds the only large-body slot
        second = []
        await limit(scope(500), fast_receive, await send_to(second))
        small = []
        await limit(scope(50), lambda: fast_receive(), await send_to(small))
        gate.set()
        await first
        return statuses, second, small

    statuses, second, small = asyncio.run(run())
    assert second == [503], "a second large body must wait, then be refused"
    assert statuses == [200] and seen[-1] == 500
    assert small == [200], "small bodies never wait for a large-body slot"


# --- retention -----------------------------------------------------------------------------


def test_results_expire_with_410_under_the_retention_policy(server_extra, tmp_path):
    with LocalServer("sa.cpu", args=["--retention", "2s", "--no-warm-up"]) as srv:
        dev = srv.client()
        p = IsingProblem.random_sk(6, seed=0)
        job = dev.submit(p, num_reads=2, num_sweeps=10)
        assert job.result(timeout=60).num_reads == 2
        auth = {"Authorization": "Bearer " + srv.token.reveal()}
        deadline = time.monotonic() + 60
        while True:
            r = requests.get(f"{srv.endpoint}/v1/jobs/{job.id}/result", headers=auth, timeout=30)
            if r.status_code != 200 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert r.status_code == 410, r.text
        assert r.json()["error"]["type"] == "ResultExpiredError"
        assert "retention" in r.json()["error"]["message"]
        assert requests.get(f"{srv.endpoint}/v1/jobs/{job.id}/problem", headers=auth,
                            timeout=30).status_code == 410
        # the state is still there; re-attaching says why the result is gone
        assert requests.get(f"{srv.endpoint}/v1/jobs/{job.id}", headers=auth,
                            timeout=30).json()["status"] == "DONE"
        with pytest.raises(ResultExpiredError, match="submit it again"):
            srv.client().job(job.id)


def test_kpp_serve_compact_applies_the_policy_and_shrinks_the_store(tmp_path, capsys):
    from kpp_sdk.cli import main
    from kpp_sdk.cloud.store import JobStore

    path = tmp_path / "jobs.sqlite3"
    store = JobStore(path)
    for k in range(6):
        row, _ = store.insert(owner="a", idempotency_key=f"key-{k:06d}", request_hash="h",
                              device="sa.cpu", num_spins=4, num_reads=1, seed=0,
                              request=b"x" * 2_000_000)
        store.claim_next()
        store.finish(row.id, 1, "DONE", result=b"r" * 1000)
    store.close()
    con = sqlite3.connect(path)
    with con:
        con.execute("UPDATE jobs SET finished_at = finished_at - 10 * 86400")
    con.close()
    size = path.stat().st_size
    assert main(["serve", "--store", str(path), "--compact", "--retention", "7d"]) == 0
    out = capsys.readouterr().out
    assert "6 job(s) expired by age" in out
    assert path.stat().st_size < size / 10
    store = JobStore(path)
    assert all(r.expired_at is not None for r in store.list("a"))
    store.close()


# --- shutdown --------------------------------------------------------------------------------


def test_sigterm_requeues_a_job_that_ignores_its_cancel_and_exits(server_extra, plugin_path):
    from kpp_sdk.cloud.server import CANCEL_WAIT_S
    from kpp_sdk.cloud.store import JobStore

    srv = LocalServer("test.stubborn", env={"PYTHONPATH": plugin_path})
    srv.start()
    try:
        dev = srv.client()
        job = dev.submit(IsingProblem.random_sk(4, seed=0), num_reads=1, stall=600.0)
        deadline = time.monotonic() + 60
        while job.status().value != "RUNNING":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        t0 = time.monotonic()
        srv.stop(timeout=60)  # SIGTERM; SIGKILL only if it has not exited after 60 s
        took = time.monotonic() - t0
        assert srv._proc.returncode != -9, "the server had to be killed"
        assert took < 2 + CANCEL_WAIT_S + 30, took  # grace + cancel wait, with slack for load
        store = JobStore(srv.store)
        row = store.get(job.id)
        store.close()
        assert row.status == "QUEUED" and row.attempts == 0, row
        assert "job.abandoned" in srv.log_text()
    finally:
        srv.close()
