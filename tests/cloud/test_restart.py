"""A server stopped while jobs are queued and running, restarted on the same store: every job
completes exactly once, with the result the local device gives. SIGKILL (a crash) and SIGTERM (a
graceful stop) on one server process, each test with its own client token."""

import threading
import time

import numpy as np
import pytest

import kpp_sdk
from kpp_sdk import IsingProblem, JobStatus
from kpp_sdk.cloud import LocalServer

SMALL = IsingProblem.random_sk(16, seed=1, fields=True)
SLOW = IsingProblem.random_sk(64, seed=2)


def _wait_for(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


@pytest.fixture(scope="module")
def srv(server_extra, tmp_path_factory):
    # --shutdown-grace 0: on SIGTERM running jobs are stopped and re-queued at once
    s = LocalServer("sa.cpu", workdir=tmp_path_factory.mktemp("restart"), workers=1,
                    clients={"crash": "", "graceful": ""}, args=["--shutdown-grace", "0"])
    s.start()
    yield s
    s.close()


@pytest.fixture(scope="module")
def local():
    return kpp_sdk.get_device("sa.cpu")


def _client(srv, name):
    return srv.client(name, timeout=5.0, backoff_cap=1.0, max_retries=12, long_poll=2.0)


def _check(dev, local, jobs, runs):
    for job, (p, reads, seed, sweeps) in zip(jobs, runs):
        ss = job.result(timeout=120)
        ref = local.sample(p, num_reads=reads, seed=seed, num_sweeps=sweeps)
        np.testing.assert_array_equal(ss.spins, ref.spins)
    on_server = {j.id: j for j in dev.list_jobs(limit=1000)}
    assert sorted(on_server) == sorted(j.id for j in jobs), "a job was lost or duplicated"
    assert all(j.status == "DONE" for j in on_server.values())
    return on_server


def test_sigkill_with_jobs_queued_and_running_then_restart_loses_and_duplicates_nothing(srv, local):
    dev = _client(srv, "crash")
    before = dev.submit(SMALL, num_reads=8, seed=100, num_sweeps=200)
    before.result(timeout=60)  # finished before the crash
    runs = [(SLOW, 64, 0, 4000)] + [(SMALL, 8, s, 200) for s in range(1, 6)]
    jobs = [dev.submit(p, num_reads=r, seed=s, num_sweeps=w) for p, r, s, w in runs]
    _wait_for(lambda: jobs[0].status() is JobStatus.RUNNING)
    assert [j.status() for j in jobs[1:]] == [JobStatus.QUEUED] * 5

    srv.kill()
    late: list = []  # a submit while the server is down is retried until it is back
    t = threading.Thread(target=lambda: late.append(
        dev.submit(SMALL, num_reads=8, seed=99, num_sweeps=200)))
    t.start()
    time.sleep(0.3)
    srv.start()  # same port, same store
    t.join(60)
    assert len(late) == 1

    on_server = _check(dev, local, [before] + jobs + late,
                       [(SMALL, 8, 100, 200)] + runs + [(SMALL, 8, 99, 200)])
    assert on_server[jobs[0].id].attempts == 2, "the running job is run again"
    assert all(j.attempts == 1 for i, j in on_server.items() if i != jobs[0].id)
    recovered = [line for line in srv.log_text().splitlines() if '"job.recovered"' in line]
    assert len(recovered) == 1 and jobs[0].id in recovered[0]


def test_sigterm_puts_running_jobs_back_in_the_queue(srv, local):
    dev = _client(srv, "graceful")
    runs = [(SLOW, 64, 7, 4000), (SMALL, 8, 8, 200)]
    jobs = [dev.submit(p, num_reads=r, seed=s, num_sweeps=w) for p, r, s, w in runs]
    _wait_for(lambda: jobs[0].status() is JobStatus.RUNNING)
    srv.stop()
    log = srv.log_text()
    lines = log[log.rindex('"server.started"'):].splitlines()
    assert any('"server.stopped"' in ln for ln in lines), "a graceful shutdown, not a kill"
    requeued = [ln for ln in lines if '"job.finished"' in ln and jobs[0].id in ln]
    assert requeued and '"status": "QUEUED"' in requeued[-1]
    srv.start()
    on_server = _check(dev, local, jobs, runs)
    assert on_server[jobs[0].id].attempts == 1, "a graceful re-queue is not a failed attempt"
