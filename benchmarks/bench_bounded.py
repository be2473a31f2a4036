"""Bounded work (issue 17): how fast a cancel reaches a running job, and how much memory small
hostile requests cost a real ``kpp serve`` process.

    python benchmarks/bench_bounded.py cancel     # cancel latency, every local device + kpp serve
    python benchmarks/bench_bounded.py rss        # server RSS growth per request (Linux only)

``cancel``: each device gets a job that would run for minutes, ``cancel()`` is called ``--after``
seconds (default 2) after it is RUNNING, and the time until ``result()`` raises
JobCancelledError is recorded; median and max of ``--repeat`` runs (default 5). ``sa.cpu``'s
kernels check for cancellation every sweep, ``cim.emulator`` every round trip. A cancel that
arrives while a device still prepares (``cim.emulator``: the eigenvalues of J, the int8
couplings, and in a new process loading the compiled kernels) takes effect at the first round
trip.

``rss``: a ``kpp serve`` child process (default limits) gets each request of the issue's
reproductions once, and the largest jobs the default limits accept; before each one the peak RSS
of the server is reset (``/proc/PID/clear_refs``) and afterwards the growth of the peak over the
RSS before is read (``VmHWM - VmRSS``), with the answer's status and the time it took.
``/v1/health`` latency is sampled while 12 bodies of 57 MB without a token, then 6 submits of a
dense 2500-spin problem (33 MB each, refused by the memory limit once parsed) arrive at once.
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import sys
import threading
import time
import uuid
import zlib

import numpy as np
import requests

import kpp_sdk
from kpp_sdk import IsingProblem, JobCancelledError, JobStatus

# --- cancel latency ----------------------------------------------------------------------------


class _SlowOptimizer:
    """A Kaiwu-style optimizer whose solve blocks (a remote call) for ``seconds``."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def solve(self, matrix):
        time.sleep(self.seconds)
        n = matrix.shape[0]
        return np.ones((1, n), dtype=np.int8)


AFTER_S = 2.0


def _cancel_once(device, problem, **options) -> float:
    job = device.submit(problem, seed=1, **options)
    deadline = time.monotonic() + 120
    while job.status() is not JobStatus.RUNNING:
        if time.monotonic() > deadline or job.done():
            raise RuntimeError(f"{device.name}: the job did not start ({job.status()})")
        time.sleep(0.005)
    time.sleep(AFTER_S)
    t0 = time.perf_counter()
    job.cancel()
    try:
        job.result(timeout=600)
    except JobCancelledError:
        return time.perf_counter() - t0
    raise RuntimeError(f"{device.name}: the job finished instead of being cancelled")


def bench_cancel(repeat: int) -> None:
    from kpp_sdk.devices.cim_kaiwu import KaiwuCIM
    from kpp_sdk.devices.sa_gpu import SimulatedAnnealingGPU

    from kpp_sdk.interop.kaiwu import KaiwuOptimizerDevice

    dense = IsingProblem.random_sk(200, seed=0)
    cases = [
        # a job of ~16 s of one core; the kernels check every sweep
        ("sa.cpu (4000 reads x 1000 sweeps)", kpp_sdk.get_device("sa.cpu"), dense,
         dict(num_reads=4000, num_sweeps=1000)),
        ("sa.gpu backend=numpy", SimulatedAnnealingGPU(backend="numpy"), dense,
         dict(num_reads=1000, num_sweeps=10_000)),
        ("cim.emulator qboson-550, 2000 runs", kpp_sdk.get_device("cim.emulator"),
         IsingProblem.random_sk(550, seed=0),
         dict(num_reads=100, output="topk", runs=2000, round_trips=100_000)),
        ("cim.emulator ideal n=200", kpp_sdk.get_device("cim.emulator", profile="ideal"), dense,
         dict(num_reads=100, round_trips=10**7)),
        ("cim.kaiwu (solve blocks 600 s)", KaiwuCIM(optimizer=_SlowOptimizer(600)),
         IsingProblem.random_sk(20, seed=0), dict(num_reads=10)),
        ("kaiwu.optimizer (solve blocks 600 s)", KaiwuOptimizerDevice(_SlowOptimizer(600)),
         IsingProblem.random_sk(20, seed=0), dict(num_reads=10)),
    ]
    print(f"{'device':42s} {'median s':>9s} {'max s':>8s}  ({repeat} runs)")
    for label, dev, p, opts in cases:
        lat = [_cancel_once(dev, p, **opts) for _ in range(repeat)]
        print(f"{label:42s} {statistics.median(lat):9.3f} {max(lat):8.3f}", flush=True)
    from kpp_sdk.cloud import LocalServer

    with LocalServer(["cim.emulator", "sa.cpu"], workers=1) as srv:
        dev = srv.client()
        lat = [_cancel_once(dev, IsingProblem.random_sk(16, seed=0), num_reads=1,
                            round_trips=10**7) for _ in range(repeat)]
        print(f"{'kpp serve cim.emulator via cim.cloud':42s} {statistics.median(lat):9.3f} "
              f"{max(lat):8.3f}", flush=True)


# --- server memory -----------------------------------------------------------------------------


def _status(pid: int) -> dict:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0]) * 1024
    return out


def _reset_peak(pid: int) -> None:
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


def _enc(a: np.ndarray, compress: bool = False) -> dict:
    raw = np.ascontiguousarray(a).tobytes()
    comp = "none"
    if compress:
        raw, comp = zlib.compress(raw, 9), "zlib"
    return {"dtype": a.dtype.name, "shape": list(a.shape), "compression": comp,
            "data": base64.b64encode(raw).decode()}


def _submit_body(problem: dict, num_reads: int, options: dict, device: str | None = None) -> bytes:
    return json.dumps({"wire_version": 1, "device": device, "problem": problem,
                       "num_reads": num_reads, "seed": 1, "options": options,
                       "idempotency_key": uuid.uuid4().hex}).encode()


def _requests() -> list[tuple[str, bytes, bool]]:
    """(label, body, with token) of each reproduction."""
    from kpp_sdk.cloud.wire import encode_problem

    n10 = encode_problem(IsingProblem.random_sk(10, seed=0))
    n16 = encode_problem(IsingProblem.random_sk(16, seed=0))
    empty = np.zeros(0, dtype=np.int32)
    sparse_1m = {"num_spins": 1_000_000, "couplings": {
        "format": "coo-upper", "row": _enc(empty), "col": _enc(empty),
        "value": _enc(np.zeros(0))}, "fields": None, "offset": 0.0}
    n = 5792  # dense zeros compress ~1000-fold: a < 1 MB body that decodes to 268 MB
    dense_big = {"num_spins": n, "couplings": {"format": "dense-upper", "upper": _enc(
        np.zeros(n * (n - 1) // 2), compress=True)}, "fields": None, "offset": 0.0}
    bad_init = {"initial_states": {"kpp_array": _enc(np.ones((3, 7), dtype=np.int8))}}
    sparse_100k = {"num_spins": 100_000, "couplings": {
        "format": "coo-upper", "row": _enc(empty), "col": _enc(empty),
        "value": _enc(np.zeros(0))}, "fields": None, "offset": 0.0}
    m = 1700  # decoding peaks at ~44 n^2 bytes = 127 MB: just under the default 128 MiB
    dense_ok = {"num_spins": m, "couplings": {"format": "dense-upper", "upper": _enc(
        np.zeros(m * (m - 1) // 2), compress=True)}, "fields": None, "offset": 0.0}
    return [
        ("n=10, num_sweeps=3e8 (issue 2)", _submit_body(n10, 1, {"num_sweeps": 300_000_000}),
         True),
        ("n=10, num_sweeps=1e9 (issue 2)", _submit_body(n10, 1, {"num_sweeps": 10**9}), True),
        ("sparse n=1e6, num_reads=2000 (issue 2)", _submit_body(sparse_1m, 2000, {}), True),
        ("dense n=5792 zlib zeros (<1 MB)", _submit_body(dense_big, 1, {"num_sweeps": 10}), True),
        ("cim.emulator round_trips=1e12 (issue 1)",
         _submit_body(n16, 1, {"round_trips": 10**12}, "cim.emulator"), True),
        ("initial_states of the wrong shape (issue 4)", _submit_body(n10, 2, bad_init), True),
        ("57 MB body without a token (issue 3)", b"{" + b" " * (57 * 2**20) + b"}", False),
        ("near the limit: sparse n=1e5, 400 reads", _submit_body(sparse_100k, 400,
                                                                 {"num_sweeps": 10}), True),
        ("near the limit: sparse n=1e5, 450 reads", _submit_body(sparse_100k, 450,
                                                                 {"num_sweeps": 10}), True),
        ("near the limit: dense n=1700 zlib zeros", _submit_body(dense_ok, 10,
                                                                 {"num_sweeps": 10}), True),
    ]


def bench_rss() -> None:
    from kpp_sdk.cloud import LocalServer
    from kpp_sdk.cloud.wire import encode_problem

    with LocalServer(["sa.cpu", "cim.emulator"], workers=1,
                     max_request_bytes=64 * 2**20) as srv:
        pid, url = srv.pid, srv.endpoint + "/v1/jobs"
        auth = {"Authorization": "Bearer " + srv.token.reveal(),
                "Content-Type": "application/json"}
        requests.get(srv.endpoint + "/v1/devices", headers=auth, timeout=30)
        print(f"{'request':44s} {'body':>9s} {'status':>6s} {'s':>6s} {'peak growth MB':>15s}")
        for label, body, with_token in _requests():
            time.sleep(0.5)
            _reset_peak(pid)
            before = _status(pid)["VmRSS"]
            t0 = time.perf_counter()
            r = requests.post(url, data=body, headers=auth if with_token else
                              {"Content-Type": "application/json"}, timeout=120)
            dt = time.perf_counter() - t0
            if r.status_code == 201:  # wait for the accepted job to finish
                jid = r.json()["id"]
                for _ in range(600):
                    st = requests.get(f"{url}/{jid}", headers=auth, timeout=30).json()["status"]
                    if st in ("DONE", "FAILED", "CANCELLED"):
                        break
                    time.sleep(0.1)
                label += f" -> {st}"
            time.sleep(0.5)
            grow = (_status(pid)["VmHWM"] - before) / 1e6
            print(f"{label:44s} {len(body) / 1e6:8.3f}M {r.status_code:6d} {dt:6.2f} "
                  f"{grow:15.1f}", flush=True)
            if r.status_code >= 400:
                print(f"    {r.json()['error']['message'][:150]}")
        # 12 unauthenticated 57 MB bodies at once, then 6 authenticated 33 MB submits at once
        # (a dense problem of 2500 spins: parsed, then refused by the memory limit); /v1/health
        # latency meanwhile
        junk = b"{" + b" " * (57 * 2**20) + b"}"
        n = 2500
        dense = encode_problem(IsingProblem.random_sk(n, seed=1))
        big = [_submit_body(dense, 1, {"num_sweeps": 10}) for _ in range(6)]
        for label, bodies, headers in (
                ("12 x 57 MB without a token", [junk] * 12, {}),
                (f"6 x {len(big[0]) / 1e6:.0f} MB submits with a token", big, auth)):
            lat: list[float] = []
            stop = threading.Event()
            codes: list[int] = []

            def probe() -> None:
                while not stop.is_set():
                    t = time.perf_counter()
                    requests.get(srv.endpoint + "/v1/health", timeout=60)
                    lat.append(time.perf_counter() - t)
                    time.sleep(0.02)

            def send(body: bytes) -> None:
                try:
                    codes.append(requests.post(url, data=body, headers=headers,
                                               timeout=300).status_code)
                except requests.RequestException as exc:
                    codes.append(type(exc).__name__)

            time.sleep(0.5)
            _reset_peak(pid)
            before = _status(pid)["VmRSS"]
            th = threading.Thread(target=probe)
            th.start()
            senders = [threading.Thread(target=send, args=(b,)) for b in bodies]
            t0 = time.perf_counter()
            for t in senders:
                t.start()
            for t in senders:
                t.join()
            took = time.perf_counter() - t0
            stop.set()
            th.join()
            grow = (_status(pid)["VmHWM"] - before) / 1e6
            print(f"{label}: answers {sorted(set(map(str, codes)))} in {took:.1f} s, peak growth "
                  f"{grow:.1f} MB, /v1/health max {max(lat):.3f} s, median "
                  f"{statistics.median(lat):.3f} s over {len(lat)}", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["cancel", "rss", "all"])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--after", type=float, default=AFTER_S,
                    help="seconds between RUNNING and cancel() [2]")
    args = ap.parse_args(argv)
    globals()["AFTER_S"] = args.after
    if args.what in ("cancel", "all"):
        bench_cancel(args.repeat)
    if args.what in ("rss", "all"):
        bench_rss()
    return 0


if __name__ == "__main__":
    sys.exit(main())
