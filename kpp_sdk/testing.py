"""The conformance suite every Device passes: ours and third parties'.

Use it from pytest by subclassing :class:`DeviceConformance` in a class whose name starts with
``Test``::

    from kpp_sdk.testing import DeviceConformance

    class TestMyDevice(DeviceConformance):
        def make_device(self):
            return MyDevice()
        fast_options = {"num_sweeps": 50}   # whatever makes your device quick

Each test names the property it checks. Remote devices override :meth:`queued_job` (a job that
is guaranteed to still be queued) and :meth:`release_queue`.
"""

from __future__ import annotations

import concurrent.futures as cf
import pickle
import threading
from typing import Any

import numpy as np
import scipy.sparse as sp

from .device import Device
from .errors import (
    InvalidOptionError,
    JobCancelledError,
    JobTimeoutError,
    ProblemError,
    ProblemTooLargeError,
    UnknownOptionError,
)
from .job import Job, JobStatus, as_completed, wait
from .problem import IsingProblem

__all__ = ["DeviceConformance", "CountingExecutor", "conformance_for"]


class CountingExecutor(cf.ThreadPoolExecutor):
    """A thread pool that counts submissions: proves validation happened before any work."""

    def __init__(self, max_workers: int = 1):
        super().__init__(max_workers=max_workers)
        self.count = 0

    def submit(self, fn, /, *args, **kwargs):
        self.count += 1
        return super().submit(fn, *args, **kwargs)


class DeviceConformance:
    """Mix-in of pytest tests; see the module docstring."""

    #: Options passed to every sampling call (keep the suite fast).
    fast_options: dict = {}
    #: Options that make a job run for minutes (None: the device class's ``SLOW_OPTIONS``); the
    #: suite cancels such a job while it runs.
    slow_options: dict | None = None
    #: Spins of the random test problem (must fit the device).
    n_spins: int = 12

    def make_device(self) -> Device:  # pragma: no cover - provided by the subclass
        raise NotImplementedError

    # --- hooks for remote devices --------------------------------------------------------

    def queued_job(self, device: Device, problem: IsingProblem) -> Job:
        """A job that is certain to be QUEUED until :meth:`release_queue`."""
        self._gate = threading.Event()
        self._blocker = cf.ThreadPoolExecutor(max_workers=1)
        self._blocker.submit(self._gate.wait, 30)
        return device.submit(problem, num_reads=2, seed=0, executor=self._blocker, **self.fast_options)

    def release_queue(self) -> None:
        self._gate.set()
        self._blocker.shutdown(wait=True)

    # --- helpers ---------------------------------------------------------------------------

    def problem(self, seed: int = 0) -> IsingProblem:
        return IsingProblem.random_sk(self.n_spins, seed=seed, fields=True)

    def free_problem(self, n: int = 32) -> IsingProblem:
        """No couplings, no fields: every configuration is equally likely."""
        return IsingProblem(sp.csr_matrix((n, n)))

    def sample(self, device: Device, problem: IsingProblem, **kw: Any):
        opts = {"num_reads": 8, "seed": 1, **self.fast_options, **kw}
        return device.sample(problem, timeout=300, **opts)

    # --- the suite -------------------------------------------------------------------------

    def test_result_has_requested_shape_and_int8_spins(self):
        dev, p = self.make_device(), self.problem()
        ss = self.sample(dev, p, num_reads=8)
        assert ss.spins.dtype == np.int8
        assert ss.spins.ndim == 2 and ss.spins.shape[1] == p.n
        assert ss.num_reads == 8, "occurrences must add up to num_reads"
        assert set(np.unique(ss.spins)) <= {-1, 1}

    def test_energies_equal_recomputed_energies(self):
        dev, p = self.make_device(), self.problem()
        ss = self.sample(dev, p)
        np.testing.assert_allclose(ss.energies, p.energy(ss.spins), rtol=1e-12, atol=1e-9)
        assert ss.truncate(1).energies[0] == ss.energies.min()
        assert ss.first.energy == ss.energies.min()

    def test_timing_and_info_are_reported(self):
        dev, p = self.make_device(), self.problem()
        ss = self.sample(dev, p)
        for key in ("wall_s", "queue_s", "device_s"):
            assert key in ss.timing and ss.timing[key] >= 0
        assert ss.timing["wall_s"] > 0
        assert ss.info["device"] == dev.name
        assert ss.info["seed"] == 1

    def test_same_seed_gives_identical_samples(self):
        dev, p = self.make_device(), self.free_problem()
        a = self.sample(dev, p, seed=123)
        b = self.sample(dev, p, seed=123)
        np.testing.assert_array_equal(a.spins, b.spins)

    def test_different_seeds_and_reads_differ(self):
        dev, p = self.make_device(), self.free_problem()
        a = self.sample(dev, p, seed=1)
        b = self.sample(dev, p, seed=2)
        assert not np.array_equal(a.spins, b.spins), "different seeds gave identical samples"
        assert len(a.unique()) == len(a), "reads of one job share a random stream"

    def test_status_moves_to_done_and_callbacks_fire(self):
        dev, p = self.make_device(), self.problem()
        seen: list[Job] = []
        job = dev.submit(p, num_reads=4, seed=0, **self.fast_options)
        assert isinstance(job.id, str) and job.id
        assert job.status() in (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.DONE)
        job.add_done_callback(seen.append)
        ss = job.result(timeout=300)
        assert job.status() is JobStatus.DONE and job.done()
        assert ss.job_id == job.id
        for _ in range(100):
            if seen:
                break
            threading.Event().wait(0.01)
        assert seen == [job]

    def test_cancel_of_a_queued_job(self):
        dev, p = self.make_device(), self.problem()
        job = self.queued_job(dev, p)
        try:
            assert job.status() is JobStatus.QUEUED
            assert job.cancel() is True
            assert job.status() is JobStatus.CANCELLED
            try:
                job.result(timeout=30)
            except JobCancelledError:
                pass
            else:
                raise AssertionError("result() of a cancelled job must raise JobCancelledError")
        finally:
            self.release_queue()

    def test_cancel_reaches_a_running_job(self):
        """A job that would run for minutes ends CANCELLED (not DONE, not still RUNNING) once
        cancel() is called while it runs: the device checks for cancellation as it works."""
        dev, p = self.make_device(), self.problem()
        opts = dict(type(dev).SLOW_OPTIONS) if self.slow_options is None else self.slow_options
        if not opts:
            import pytest

            pytest.skip(f"{dev.name} declares no SLOW_OPTIONS")
        job = dev.submit(p, seed=0, **opts)
        for _ in range(6000):
            if job.status() is not JobStatus.QUEUED:
                break
            threading.Event().wait(0.01)
        assert job.status() is JobStatus.RUNNING, f"the job did not start: {job.status()}"
        assert job.cancel() is True
        try:
            job.result(timeout=120)
        except JobCancelledError:
            pass
        else:
            raise AssertionError("the job ran to the end: cancel() did not reach it")
        assert job.status() is JobStatus.CANCELLED

    def test_result_timeout_raises_and_job_survives(self):
        dev, p = self.make_device(), self.problem()
        job = self.queued_job(dev, p)
        try:
            try:
                job.result(timeout=0.05)
            except JobTimeoutError as exc:
                assert isinstance(exc, TimeoutError)
            else:
                raise AssertionError("result(timeout) on an unfinished job must raise")
        finally:
            self.release_queue()
        assert job.result(timeout=300).num_reads == 2

    def test_too_large_problem_rejected_before_any_work(self):
        dev = self.make_device()
        n = dev.properties.max_spins + 1
        big = IsingProblem(sp.csr_matrix((n, n)))
        ex = CountingExecutor()
        try:
            dev.submit(big, num_reads=1, executor=ex, **self.fast_options)
        except ProblemTooLargeError as exc:
            assert str(dev.properties.max_spins) in str(exc)
        else:
            raise AssertionError("a problem over max_spins must raise ProblemTooLargeError")
        finally:
            ex.shutdown()
        assert ex.count == 0, "work was queued before the size check"

    def test_unknown_option_rejected_naming_known_ones(self):
        dev, p = self.make_device(), self.problem()
        try:
            dev.submit(p, num_reads=1, definitely_not_an_option=3)
        except UnknownOptionError as exc:
            assert "definitely_not_an_option" in str(exc) and "num_reads" in str(exc)
        else:
            raise AssertionError("an unknown option must raise UnknownOptionError")

    def test_bad_num_reads_and_bad_problem_rejected(self):
        dev, p = self.make_device(), self.problem()
        for bad in (0, -3, 2.5, True):
            try:
                dev.submit(p, num_reads=bad)
            except InvalidOptionError:
                pass
            else:
                raise AssertionError(f"num_reads={bad!r} must raise InvalidOptionError")
        try:
            dev.submit(np.eye(3))
        except ProblemError:
            pass
        else:
            raise AssertionError("a non-IsingProblem must raise ProblemError")

    def test_wait_and_as_completed_return_every_job(self):
        dev, p = self.make_device(), self.problem()
        jobs = [dev.submit(p, num_reads=2, seed=s, **self.fast_options) for s in range(3)]
        done, not_done = wait(jobs, timeout=300)
        assert done == set(jobs) and not not_done
        assert set(as_completed(jobs, timeout=300)) == set(jobs)

    def test_sample_qubo_energies_are_qubo_energies(self):
        dev = self.make_device()
        rng = np.random.default_rng(5)
        Q = rng.normal(size=(self.n_spins, self.n_spins))
        ss = dev.sample_qubo(Q, offset=1.5, num_reads=4, seed=0, **self.fast_options)
        x = ss.binary().astype(float)
        np.testing.assert_allclose(ss.energies, np.einsum("ki,ij,kj->k", x, Q, x) + 1.5, atol=1e-9)

    def test_device_survives_pickling(self):
        dev, p = self.make_device(), self.problem()
        clone = pickle.loads(pickle.dumps(dev))
        a = self.sample(dev, p, seed=9)
        b = self.sample(clone, p, seed=9)
        np.testing.assert_array_equal(a.spins, b.spins)


def conformance_for(name: str, **device_options: Any) -> type:
    """A ``Test...`` class running the suite on the registered device ``name`` with its
    :attr:`Device.FAST_OPTIONS` (and :attr:`Device.SLOW_OPTIONS` for the cancellation test)."""
    from .registry import device_class, get_device

    cls = device_class(name)

    class _Suite(DeviceConformance):
        fast_options = dict(cls.FAST_OPTIONS)

        def make_device(self) -> Device:
            return get_device(name, **device_options)

    _Suite.__name__ = _Suite.__qualname__ = "TestConformance_" + name.replace(".", "_")
    return _Suite
