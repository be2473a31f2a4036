"""The Device/Job contract on a minimal in-test device, so contract bugs show apart from kernels."""

import concurrent.futures as cf
import threading
import time

import numpy as np
import pytest

from kpp_sdk import (
    Device,
    DeviceProperties,
    InvalidOptionError,
    IsingProblem,
    JobCancelledError,
    JobFailedError,
    JobStatus,
    JobTimeoutError,
    RunResult,
    UnknownOptionError,
    as_completed,
    wait,
)
from kpp_sdk.testing import DeviceConformance


class CoinDevice(Device):
    """Uniformly random spins; optionally slow (cooperatively cancellable) or failing."""

    name = "test.coin"
    OPTIONS = {"delay": 0.0, "fail": False}

    @property
    def properties(self):
        return DeviceProperties(max_spins=64, max_reads=1000)

    def _check_options(self, options, problem):
        if options["delay"] < 0:
            raise InvalidOptionError(f"delay must be >= 0, got {options['delay']}")
        return options

    def _run(self, problem, *, num_reads, seed, options, ctx):
        end = time.monotonic() + options["delay"]
        while time.monotonic() < end:
            ctx.raise_if_cancelled()
            time.sleep(0.005)
        if options["fail"]:
            raise RuntimeError("boom")
        rng = np.random.default_rng(seed)
        return RunResult(rng.choice(np.array([-1, 1], dtype=np.int8), size=(num_reads, problem.n)),
                         device_s=0.25)


class TestCoinDeviceConformance(DeviceConformance):
    slow_options = {"delay": 600.0}

    def make_device(self):
        return CoinDevice()


@pytest.fixture
def problem():
    return IsingProblem.random_sk(5, seed=0)


def test_running_job_can_be_cancelled_cooperatively(problem):
    dev = CoinDevice()
    job = dev.submit(problem, delay=10.0)
    for _ in range(200):
        if job.status() is JobStatus.RUNNING:
            break
        time.sleep(0.005)
    assert job.status() is JobStatus.RUNNING
    assert job.cancel() is True
    with pytest.raises(JobCancelledError):
        job.result(timeout=5)
    assert job.status() is JobStatus.CANCELLED


def test_failure_raises_job_failed_with_cause(problem):
    job = CoinDevice().submit(problem, fail=True)
    with pytest.raises(JobFailedError, match="boom") as info:
        job.result(timeout=5)
    assert isinstance(info.value.__cause__, RuntimeError)
    assert job.status() is JobStatus.FAILED
    assert job.cancel() is False  # a finished job cannot be cancelled


def test_timing_records_queue_and_device_time(problem):
    dev = CoinDevice()
    first = dev.submit(problem, delay=0.3)
    second = dev.submit(problem)  # one worker: waits for the first
    ss = second.result(timeout=5)
    first.result()
    assert ss.timing["queue_s"] >= 0.2
    assert ss.timing["wall_s"] >= ss.timing["queue_s"]
    assert ss.timing["device_s"] == 0.25


def test_any_executor_is_accepted_process_pool_included(problem):
    with cf.ProcessPoolExecutor(max_workers=1) as ex:
        a = CoinDevice(executor=ex).sample(problem, num_reads=3, seed=7)
    b = CoinDevice().sample(problem, num_reads=3, seed=7)
    np.testing.assert_array_equal(a.spins, b.spins)


def test_device_defaults_are_validated_at_construction():
    with pytest.raises(UnknownOptionError, match="colour"):
        CoinDevice(colour="red")
    assert CoinDevice(num_reads=5).sample(IsingProblem(np.zeros((2, 2)))).num_reads == 5


def test_option_values_are_checked_before_queueing(problem):
    with pytest.raises(InvalidOptionError, match="delay"):
        CoinDevice().submit(problem, delay=-1)


def test_as_completed_timeout_raises(problem):
    dev = CoinDevice()
    job = dev.submit(problem, delay=2.0)
    with pytest.raises(JobTimeoutError):
        list(as_completed([job], timeout=0.05))
    job.cancel()
    done, _ = wait([job], timeout=5)
    assert done == {job}


def test_seed_from_generator_is_recorded(problem):
    ss = CoinDevice().sample(problem, seed=np.random.default_rng(3))
    again = CoinDevice().sample(problem, seed=ss.info["seed"])
    np.testing.assert_array_equal(ss.spins, again.spins)


def test_callbacks_run_once_even_when_added_after_completion(problem):
    job = CoinDevice().submit(problem)
    job.result(timeout=5)
    hits = []
    ev = threading.Event()
    job.add_done_callback(lambda j: (hits.append(j), ev.set()))
    assert ev.wait(1) and hits == [job]
