"""Scale-out: Device.submit on a dask.distributed cluster gives what the local run gives.

One LocalCluster of 4 worker processes (one thread each) is shared by the module. The recipe of
``docs/scale-out.md`` (its ```py blocks) runs here as well, so the page cannot rot: on the shared
cluster by default (its ``LocalCluster(...)`` call is redirected there, which saves starting two
more clusters), verbatim with its own clusters in the ``slow`` variant.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import time
from pathlib import Path

import numpy as np
import pytest

distributed = pytest.importorskip(
    "distributed", reason="needs dask.distributed: pip install 'dask[distributed]'")

import kpp_sdk
from kpp_sdk import IsingProblem

DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=4, threads_per_worker=1, processes=True,
                           dashboard_address=":0", silence_logs=logging.ERROR)
    c = Client(cluster)
    try:
        yield c
    finally:
        c.close()
        cluster.close()


def _problems(k: int, n: int = 24) -> list[IsingProblem]:
    return [IsingProblem.random_sk(n, seed=i, fields=bool(i % 2)) for i in range(k)]


def _assert_same(a, b):
    np.testing.assert_array_equal(a.spins, b.spins)
    np.testing.assert_array_equal(a.num_occurrences, b.num_occurrences)
    np.testing.assert_array_equal(a.energies, b.energies)
    assert a.info["seed"] == b.info["seed"]


def test_200_jobs_over_4_worker_processes_none_lost_and_equal_to_the_serial_run(client):
    device = kpp_sdk.get_device("sa.cpu", num_threads=1, num_sweeps=50)
    problems = _problems(20)
    work = [(problems[i % 20], 1000 + i) for i in range(200)]
    executor = client.get_executor()
    jobs = [device.submit(p, num_reads=8, seed=s, executor=executor) for p, s in work]
    done = list(kpp_sdk.as_completed(jobs, timeout=120))
    assert len(done) == 200 and len({j.id for j in done}) == 200
    assert all(j.status() is kpp_sdk.JobStatus.DONE for j in jobs)
    # the work really went to the worker processes, not this one
    assert len(client.run(os.getpid)) == 4
    for job, (p, s) in zip(jobs, work):
        remote = job.result()
        local = device.sample(p, num_reads=8, seed=s)
        _assert_same(remote, local)
        np.testing.assert_allclose(remote.energies, p.energy(remote.spins))


def _processing_worker(client, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = [addr for addr, keys in client.processing().items() if keys]
        if busy:
            return busy[0]
        time.sleep(0.02)
    raise AssertionError("no worker picked up a job")


def test_a_worker_killed_mid_batch_loses_no_job(client):
    # jobs of a few tenths of a second, so that the victim is busy when it dies
    device = kpp_sdk.get_device("sa.cpu", num_threads=1, num_sweeps=1500)
    problem = IsingProblem.random_sk(128, seed=7)
    executor = client.get_executor()
    seeds = list(range(24))
    jobs = [device.submit(problem, num_reads=8, seed=s, executor=executor) for s in seeds]
    victim = _processing_worker(client)
    pid = client.run(os.getpid, workers=[victim])[victim]
    os.kill(pid, signal.SIGKILL)  # the nanny restarts it; dask reruns the tasks it held
    finished = list(kpp_sdk.as_completed(jobs, timeout=180))
    assert len(finished) == len(seeds)
    assert victim not in client.scheduler_info()["workers"]  # it really died
    assert sum(1 for j in jobs if not j.done()) == 0
    for job, s in zip(jobs, seeds):
        _assert_same(job.result(), device.sample(problem, num_reads=8, seed=s))


def test_rbm_training_sampled_on_dask_equals_the_local_training(client):
    import torch
    from kpp_sdk.models import RestrictedBoltzmannMachine, fit
    from kpp_sdk.models.datasets import load_bars_and_stripes
    from kpp_sdk.models.samplers import BoltzmannSampler

    data = load_bars_and_stripes(3, 3).train
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors; torch's spinning pool fights the 4 workers for cores

    def train(executor):
        rbm = RestrictedBoltzmannMachine(9, 8, init_std=0.1,
                                         generator=torch.Generator().manual_seed(0))
        sampler = BoltzmannSampler("sa.cpu", num_reads=50, num_sweeps=5, num_threads=1, seed=3,
                                   executor=executor)
        history = fit(rbm, data, sampler, epochs=8, batch_size=7, lr=0.1, seed=0)
        return rbm, history

    try:
        local, h_local = train(None)
        remote, h_remote = train(client.get_executor())
    finally:
        torch.set_num_threads(threads)
    for (name, a), (_, b) in zip(local.state_dict().items(), remote.state_dict().items()):
        assert torch.equal(a, b), name
    assert [h["objective"] for h in h_local] == [h["objective"] for h in h_remote]
    # the weights moved: the comparison is not between two untouched initialisations
    fresh = RestrictedBoltzmannMachine(9, 8, init_std=0.1,
                                       generator=torch.Generator().manual_seed(0))
    assert not torch.equal(fresh.quadratic_coef, local.quadratic_coef)


def _run_recipe():
    blocks = re.findall(r"```py\n(.*?)```", (DOCS / "scale-out.md").read_text(), flags=re.DOTALL)
    assert len(blocks) >= 2, "docs/scale-out.md lost its recipe"
    namespace = {"__name__": "__main__"}
    for k, block in enumerate(blocks):
        exec(compile(block, f"scale-out.md[py block {k}]", "exec"), namespace)  # noqa: S102
    return namespace


def test_the_scale_out_recipe_in_the_docs_runs_on_the_shared_cluster(client, monkeypatch):
    import distributed

    class SharedCluster:
        """Stands in for ``LocalCluster(...)``: the module's cluster, left running on exit."""

        def __init__(self, *args, **kwargs):
            self.started = True

        def __enter__(self):
            return client.cluster

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(distributed, "LocalCluster", SharedCluster)
    ns = _run_recipe()
    assert len(ns["results"]) == len(ns["problems"]) and len(ns["history"]) == 5


@pytest.mark.slow
def test_the_scale_out_recipe_in_the_docs_runs_verbatim_with_its_own_clusters():
    ns = _run_recipe()
    assert len(ns["results"]) == len(ns["problems"])
