"""The cloud path against the local device, on the same machine.

* ``test_cloud_throughput_32_clients_x_10_jobs``: 32 concurrent cim.cloud clients (own tokens,
  threads of this process) submit 10 small sa.cpu jobs each to one ``kpp serve`` (2 workers);
  reports jobs/s and the per-job latency (submit to result) next to the same 320 jobs on the
  local device.
* ``test_cloud_latency_overhead_unloaded``: one client, jobs one after the other; reports the
  p50/p99 of (remote latency - local latency) per job: what HTTP, the job store, the queue and
  polling add to one job.

Run: ``pytest benchmarks/bench_cloud.py --benchmark-only -s``. Client, server and annealer share
the machine's cores, so the numbers are a floor for what a separate server achieves.
"""

import threading
import time

import numpy as np
import pytest

import kpp_sdk
from kpp_sdk import IsingProblem

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from kpp_sdk.cloud import LocalServer

CLIENTS, JOBS = 32, 10
OPTS = {"num_reads": 8, "num_sweeps": 100}
PROBLEMS = [IsingProblem.random_sk(n, seed=n, fields=True) for n in (12, 16, 20, 24)]


@pytest.fixture(scope="module")
def server():
    with LocalServer("sa.cpu", clients={f"c{i}": "" for i in range(CLIENTS)}, workers=2) as srv:
        srv.client("c0").sample(PROBLEMS[0], seed=0, **OPTS)  # warm-up (numba cache, imports)
        yield srv


@pytest.fixture(scope="module")
def local():
    dev = kpp_sdk.get_device("sa.cpu")
    dev.sample(PROBLEMS[0], seed=0, **OPTS)
    return dev


def _pct(x, q):
    return float(np.percentile(np.asarray(x), q))


def test_cloud_throughput_32_clients_x_10_jobs(benchmark, server, local):
    work = {(c, k): (PROBLEMS[(c + k) % 4], 1000 * c + k)
            for c in range(CLIENTS) for k in range(JOBS)}

    t0 = time.perf_counter()
    local_jobs = {key: (time.perf_counter(), local.submit(p, seed=s, **OPTS))
                  for key, (p, s) in work.items()}
    local_lat, local_spins = [], {}
    for key, (t_sub, job) in local_jobs.items():
        local_spins[key] = job.result().spins
        local_lat.append(job.finished_at - job.submitted_at)
    local_s = time.perf_counter() - t0

    def run():
        lat: list[float] = []
        equal: list[bool] = []
        barrier = threading.Barrier(CLIENTS + 1)

        def client(c):
            dev = server.client(f"c{c}")
            barrier.wait()
            jobs = [(k, time.time(), dev.submit(work[c, k][0], seed=work[c, k][1], **OPTS))
                    for k in range(JOBS)]
            for k, t_sub, job in jobs:
                ss = job.result(timeout=600)
                lat.append(job.finished_at - t_sub)
                equal.append(np.array_equal(ss.spins, local_spins[c, k]))

        threads = [threading.Thread(target=client, args=(c,)) for c in range(CLIENTS)]
        for t in threads:
            t.start()
        barrier.wait()
        t1 = time.perf_counter()
        for t in threads:
            t.join()
        return time.perf_counter() - t1, lat, equal

    wall, lat, equal = benchmark.pedantic(run, rounds=1, iterations=1)
    assert len(equal) == CLIENTS * JOBS and all(equal)
    n = CLIENTS * JOBS
    info = {
        "jobs": n,
        "cloud_jobs_per_s": n / wall,
        "local_jobs_per_s": n / local_s,
        "cloud_over_local_throughput": (n / wall) / (n / local_s),
        "cloud_latency_p50_s": _pct(lat, 50), "cloud_latency_p99_s": _pct(lat, 99),
        "local_latency_p50_s": _pct(local_lat, 50), "local_latency_p99_s": _pct(local_lat, 99),
    }
    benchmark.extra_info.update(info)
    print("\n" + "\n".join(f"  {k}: {v:.4g}" for k, v in info.items()))


def test_cloud_latency_overhead_unloaded(benchmark, server, local):
    dev = server.client("c1")
    runs = [(PROBLEMS[k % 4], 5000 + k) for k in range(60)]

    def run():
        over, remote_lat, local_lat = [], [], []
        for p, seed in runs:
            t = time.perf_counter()
            local.sample(p, seed=seed, **OPTS)
            lo = time.perf_counter() - t
            t = time.perf_counter()
            dev.sample(p, seed=seed, **OPTS)
            re = time.perf_counter() - t
            over.append(re - lo)
            remote_lat.append(re)
            local_lat.append(lo)
        return over, remote_lat, local_lat

    over, remote_lat, local_lat = benchmark.pedantic(run, rounds=1, iterations=1)
    info = {"jobs": len(over),
            "overhead_p50_s": _pct(over, 50), "overhead_p99_s": _pct(over, 99),
            "remote_latency_p50_s": _pct(remote_lat, 50),
            "local_latency_p50_s": _pct(local_lat, 50)}
    benchmark.extra_info.update(info)
    print("\n" + "\n".join(f"  {k}: {v:.4g}" for k, v in info.items()))
