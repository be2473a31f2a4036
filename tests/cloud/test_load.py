"""32 concurrent clients x 10 jobs each against one server: every result arrives and equals the
local device's result for its seed. (Throughput and latency are measured in
benchmarks/bench_cloud.py, not asserted here.)"""

import threading

import numpy as np

import kpp_sdk
from kpp_sdk import IsingProblem
from kpp_sdk.cloud import LocalServer

CLIENTS, JOBS = 32, 10
OPTS = {"num_reads": 8, "num_sweeps": 100}


def test_32_clients_x_10_jobs_all_results_arrive_equal_to_local(server_extra):
    problems = [IsingProblem.random_sk(n, seed=n, fields=True) for n in (12, 16, 20, 24)]
    work = {(c, k): (problems[(c + k) % 4], 1000 * c + k)
            for c in range(CLIENTS) for k in range(JOBS)}
    local = kpp_sdk.get_device("sa.cpu")
    expected = {key: local.sample(p, seed=seed, **OPTS).spins for key, (p, seed) in work.items()}

    results: dict = {}
    errors: list = []
    with LocalServer("sa.cpu", clients={f"c{i}": "" for i in range(CLIENTS)}, workers=2) as srv:
        start = threading.Barrier(CLIENTS)

        def client(c: int) -> None:
            try:
                dev = srv.client(f"c{c}")
                start.wait()
                jobs = {k: dev.submit(work[c, k][0], seed=work[c, k][1], **OPTS)
                        for k in range(JOBS)}
                for k, job in jobs.items():
                    results[c, k] = job.result(timeout=300)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append((c, exc))

        threads = [threading.Thread(target=client, args=(c,)) for c in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(600)
        ids = {ss.job_id for ss in results.values()}
    assert not errors, errors[:3]
    assert len(results) == CLIENTS * JOBS and len(ids) == CLIENTS * JOBS
    for key, ss in results.items():
        np.testing.assert_array_equal(ss.spins, expected[key], err_msg=f"client/job {key}")
