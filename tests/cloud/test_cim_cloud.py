"""cim.cloud against a real ``kpp serve --device sa.cpu`` process on 127.0.0.1: the conformance
suite, equality with the local device, idempotent submits, cancellation, re-attach."""

import os
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest
from kpp_sdk.devices.cim_cloud import CIMCloud

import kpp_sdk
from kpp_sdk import (
    ConfigError,
    DeviceNotFoundError,
    InvalidOptionError,
    IsingProblem,
    JobCancelledError,
    JobStatus,
    NotFoundError,
)
from kpp_sdk.cloud import IdempotencyConflict
from kpp_sdk.testing import DeviceConformance


class TestCIMCloudConformance(DeviceConformance):
    """The suite, with the server's workers paused to keep a job certainly QUEUED."""

    fast_options = {"num_sweeps": 50}
    slow_options = {"num_reads": 64, "num_sweeps": 200_000}  # sa.cpu's SLOW_OPTIONS

    @pytest.fixture(autouse=True)
    def _server(self, server, admin):
        self._srv, self._admin = server, admin
        yield
        admin.resume()  # even if a test failed between pause and release

    def make_device(self):
        return self._srv.client()

    def queued_job(self, device, problem):
        self._admin.pause()
        return device.submit(problem, num_reads=2, seed=0, **self.fast_options)

    def release_queue(self):
        self._admin.resume()


def _wait_for(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


@pytest.fixture(scope="module")
def local():
    return kpp_sdk.get_device("sa.cpu")


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
def test_results_equal_the_local_device_for_the_same_seed(server, local, sparse):
    p = IsingProblem.random_sk(24, seed=3, fields=True)
    p = p.to_sparse() if sparse else p
    runs = [
        (11, {"num_sweeps": 200}),
        (12, {"num_sweeps": 60, "acceptance": "gibbs", "beta_range": (0.1, 3.0)}),
        (13, {"num_sweeps": 30, "mode": "sample", "beta": 0.7,
              "initial_states": np.where(np.arange(24) % 3, 1, -1).astype(np.int8)}),
        (14, {"num_sweeps": 40, "beta_schedule": np.linspace(0.05, 2.0, 40)}),
    ]
    dev = server.client()
    jobs = [dev.submit(p, num_reads=16, seed=seed, **opts) for seed, opts in runs]
    for job, (seed, opts) in zip(jobs, runs):
        remote = job.result(timeout=60)
        ref = local.sample(p, num_reads=16, seed=seed, **opts)
        np.testing.assert_array_equal(remote.spins, ref.spins)
        np.testing.assert_array_equal(remote.energies, ref.energies)
        assert remote.info["remote_device"] == "sa.cpu" and remote.info["seed"] == seed
        assert remote.job_id == job.id


def test_properties_and_options_are_the_served_devices(server, local):
    dev = server.client()
    props = dev.properties
    assert props.is_remote and props.max_spins == local.properties.max_spins
    assert props.extra["remote_device"] == "sa.cpu"
    assert dev.options == local.options
    assert "num_sweeps" in repr(sorted(dev.OPTIONS))


def test_without_a_token_properties_are_nominal_and_submit_names_the_fix(monkeypatch, tmp_path):
    monkeypatch.delenv("KPP_API_TOKEN", raising=False)
    monkeypatch.delenv("KPP_CONFIG_FILE", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    dev = CIMCloud(endpoint="http://127.0.0.1:9")  # nothing listens there: no request is made
    assert dev.properties.extra["source"] == "nominal"
    assert dev.properties.max_spins == 550 and dev.properties.is_remote
    with pytest.raises(ConfigError, match="KPP_API_TOKEN"):
        dev.submit(IsingProblem.random_sk(4, seed=0))


def test_an_unknown_remote_device_is_device_not_found_naming_the_served_ones(server):
    with pytest.raises(DeviceNotFoundError, match="sa.cpu"):
        server.client(device="no.such.device")


def test_bad_option_values_are_rejected_by_the_server_with_the_local_error_class(server):
    dev = server.client("other")
    before = len(dev.list_jobs(limit=10_000))
    with pytest.raises(InvalidOptionError, match="acceptance"):
        dev.submit(IsingProblem.random_sk(6, seed=0), num_reads=2, acceptance="bogus")
    assert len(dev.list_jobs(limit=10_000)) == before, "a rejected submit must not create a job"


def test_a_repeated_submit_with_the_same_key_returns_the_first_job(server):
    dev = server.client("other")
    p = IsingProblem.random_sk(10, seed=4)
    key = "test-" + uuid.uuid4().hex
    a = dev.submit(p, num_reads=4, seed=1, num_sweeps=20, idempotency_key=key)
    b = dev.submit(p, num_reads=4, seed=1, num_sweeps=20, idempotency_key=key)
    assert a.id == b.id
    np.testing.assert_array_equal(a.result(timeout=30).spins, b.result(timeout=30).spins)
    assert [j.idempotency_key for j in dev.list_jobs(limit=10_000)].count(key) == 1
    with pytest.raises(IdempotencyConflict, match="different request"):
        dev.submit(p, num_reads=4, seed=2, num_sweeps=20, idempotency_key=key)


def test_cancel_of_a_running_job_stops_it_on_the_server(server):
    dev = server.client()
    # several seconds of annealing in 8 chunks of reads; a cancel is noticed between chunks
    job = dev.submit(IsingProblem.random_sk(64, seed=1), num_reads=64, seed=0, num_sweeps=15_000)
    _wait_for(lambda: job.status() is JobStatus.RUNNING)
    assert job.cancel() is True
    with pytest.raises(JobCancelledError):
        job.result(timeout=30)
    assert job.status() is JobStatus.CANCELLED
    # had the job run to its end, the server would have recorded DONE
    info = dev.http.request("GET", f"/v1/jobs/{job.id}")
    assert info["status"] == "CANCELLED" and info["cancel_requested"]


def test_the_server_refuses_at_submit_what_the_device_would_refuse(server):
    # the server validates with Device.validate, the same checks as a local submit, so a job it
    # stores is one the device can run (initial_states of the wrong shape used to be stored and
    # then FAILED)
    dev = server.client()
    with pytest.raises(InvalidOptionError, match=r"initial_states must have shape \(4, 8\)"):
        dev.submit(IsingProblem.random_sk(8, seed=0), num_reads=4, seed=0, num_sweeps=10,
                   initial_states=np.ones((3, 8), dtype=np.int8))
    with pytest.raises(InvalidOptionError, match="initial_states must hold only -1 and \\+1"):
        dev.submit(IsingProblem.random_sk(8, seed=0), num_reads=4, seed=0,
                   initial_states=np.zeros((4, 8), dtype=np.int8))


_CHILD = """
import os, sys
import kpp_sdk
dev = kpp_sdk.get_device("cim.cloud", endpoint=sys.argv[1])   # token from KPP_API_TOKEN
job = dev.submit(kpp_sdk.IsingProblem.random_sk(20, seed=7, fields=True), num_reads=12, seed=5,
                 num_sweeps=3000)
print(job.id, flush=True)
os._exit(0)   # dies at once, without waiting for the result
"""


def test_reattach_by_id_after_the_submitting_process_died(server, local):
    env = {**os.environ, "KPP_API_TOKEN": server.tokens["user"].reveal()}
    env.pop("KPP_API_ENDPOINT", None)
    out = subprocess.run([sys.executable, "-c", _CHILD, server.endpoint], env=env,
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    job_id = out.stdout.strip()
    job = server.client("user").job(job_id)
    ss = job.result(timeout=60)
    ref = local.sample(IsingProblem.random_sk(20, seed=7, fields=True), num_reads=12, seed=5,
                       num_sweeps=3000)
    np.testing.assert_array_equal(ss.spins, ref.spins)
    assert job.id == ss.job_id == job_id
    with pytest.raises(NotFoundError):
        server.client("other").job(job_id)  # a token sees only its own jobs


def test_an_unreachable_server_gives_nominal_properties_and_submit_raises(monkeypatch):
    dev = CIMCloud(endpoint="http://127.0.0.1:9", token="t" * 20, max_retries=1,
                   backoff_base=0.01)  # nothing listens on port 9
    assert dev.properties.extra["source"] == "nominal"
    with pytest.raises(kpp_sdk.CloudError, match="no answer"):
        dev.submit(IsingProblem.random_sk(4, seed=0))
