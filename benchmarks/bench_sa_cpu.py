"""Speed (per core and wall) and quality of ``sa.cpu`` against dwave-samplers' and openjij's SA.

Run:  pytest benchmarks/bench_sa_cpu.py --benchmark-only -s
      (``KPP_BENCH_ROUNDS=N`` sets the rounds, default 3; ``-k sk`` one problem)

Problems, 100 reads x 1000 sweeps, a geometric schedule over the same ``(beta_hot, beta_cold)``
for every solver (the kpp default, :func:`~kpp_sdk.devices.annealing.default_beta_range`):

* dense Sherrington-Kirkpatrick, n = 1000, J_ij ~ N(0, 1), no fields;
* MAX-CUT on a random 3-regular graph, n = 2000 (pairing model, seed 0), J = -W, given sparse;
* the same graph given as a dense array (``sa.cpu`` runs mostly-zero arrays on a sparse kernel).

Each round runs, one after the other: ``sa.cpu`` with ``num_threads=1``, dwave-samplers (single
threaded), openjij (single threaded), ``sa.cpu`` with its default threads (all cores). The rounds
are interleaved so that a change in the machine's load hits every solver alike; each solver's
figure is the median over the rounds. Recorded per call: CPU seconds of this process
(``time.process_time``, all threads) and wall seconds. Ratios:

* **per core**: the peer's CPU seconds over ``sa.cpu``'s with one thread;
* **wall**: the peer's wall seconds over ``sa.cpu``'s with all cores (what a user waits).

openjij converts the dimod model inside ``sample``; its time with 1 read x 1 sweep is recorded as
its set-up and subtracted (``openjij net``), which favours openjij. dwave's ``sample`` gets a
prebuilt BQM (building it from dicts is not annealing work).

``test_time_to_sa_mean_energy_sk_1000``: the CPU time each solver needs, with its own defaults,
to reach the mean energy of dwave-samplers' 100 reads x 1000 sweeps (its default schedule) on
the SK problem: ``sa.cpu`` (default schedule, one thread) and simulated-bifurcation (ballistic,
one torch thread) climb a ladder of sweeps / steps until their mean energy over 100 reads is at
or below that target.

Each round uses a new seed (the same for every seeded solver), so the mean energies are over
``ROUNDS x 100`` reads, with their standard errors. Only their agreement is asserted (correctness:
the same schedule must give the same mean within 0.5 %); the difference in standard errors is
printed. Speed is printed and recorded in ``benchmark.extra_info``, never asserted. The load
average of the machine is recorded before and after.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import scipy.sparse as sp

dimod = pytest.importorskip("dimod", reason="the comparison needs dimod (pip install kpp-sdk[bench])")
dwave_samplers = pytest.importorskip(
    "dwave.samplers", reason="the comparison needs dwave-samplers (pip install kpp-sdk[bench])"
)

from kpp_sdk.devices.annealing import default_beta_range

import kpp_sdk
from kpp_sdk import IsingProblem
from kpp_sdk.bench.suite import random_regular_maxcut

NUM_READS = 100
NUM_SWEEPS = 1000
ROUNDS = int(os.environ.get("KPP_BENCH_ROUNDS", "3"))
ENERGY_RTOL = 0.005


def sk_problem(n: int = 1000) -> IsingProblem:
    rng = np.random.default_rng(0)
    J = np.triu(rng.standard_normal((n, n)), 1)
    return IsingProblem(J + J.T)


def to_bqm(problem: IsingProblem):
    """The problem as a dimod SPIN BQM: h_d = -h, J_d[i, j] = -J[i, j] for i < j (built from
    arrays: equivalent to ``dimod.BQM.from_ising`` with dicts, much faster to build)."""
    T = sp.triu(problem.sparse_J(), k=1).tocoo()
    return dimod.BQM.from_numpy_vectors(-np.asarray(problem.h, dtype=np.float64),
                                        (T.row, T.col, -T.data), 0.0, dimod.SPIN)


def _measure(fn):
    c0, t0 = time.process_time(), time.perf_counter()
    energies = fn()
    return time.process_time() - c0, time.perf_counter() - t0, energies


def _solvers(problem: IsingProblem, b0: float, b1: float) -> dict:
    """name -> callable(seed) returning the energies of NUM_READS reads (all timed work inside)."""
    device = kpp_sdk.get_device("sa.cpu")
    opts = {"num_sweeps": NUM_SWEEPS, "beta_range": (b0, b1), "beta_schedule": "geometric"}
    bqm = to_bqm(problem)
    solvers = {
        "sa.cpu 1 thread": lambda seed: device.sample(problem, num_reads=NUM_READS, seed=seed,
                                                      num_threads=1, **opts).energies,
        "dwave-samplers": lambda seed: dwave_samplers.SimulatedAnnealingSampler().sample(
            bqm, num_reads=NUM_READS, num_sweeps=NUM_SWEEPS, beta_range=(b0, b1),
            beta_schedule_type="geometric", seed=seed).record.energy,
    }
    try:
        import openjij
    except ImportError:
        openjij = None
    if openjij is not None:
        def oj(reads: int, sweeps: int) -> np.ndarray:
            # unseeded: with a seed openjij 0.12 gives every read the same stream
            rec = openjij.SASampler().sample(bqm, num_reads=reads, num_sweeps=sweeps,
                                             beta_min=b0, beta_max=b1).record
            return np.repeat(rec.energy, rec.num_occurrences)

        solvers["openjij"] = lambda seed: oj(NUM_READS, NUM_SWEEPS)
        solvers["openjij set-up"] = lambda seed: oj(1, 1)
    solvers["sa.cpu all cores"] = lambda seed: device.sample(problem, num_reads=NUM_READS,
                                                             seed=seed, **opts).energies
    return solvers


def compare(benchmark, problem: IsingProblem, label: str) -> None:
    b0, b1 = default_beta_range(problem)
    solvers = _solvers(problem, b0, b1)
    kpp_sdk.get_device("sa.cpu").sample(problem, num_reads=2, seed=0, num_sweeps=2)  # compile
    cpu: dict = {k: [] for k in solvers}
    wall: dict = {k: [] for k in solvers}
    energy: dict = {k: [] for k in solvers}
    load_before = os.getloadavg()

    def one_round():
        seed = len(cpu["sa.cpu 1 thread"])  # a new seed each round (the same for every solver)
        for name, fn in solvers.items():
            c, w, e = _measure(lambda: fn(seed))  # noqa: B023 - called at once
            cpu[name].append(c)
            wall[name].append(w)
            energy[name].append(np.asarray(e, dtype=np.float64))

    benchmark.pedantic(one_round, rounds=ROUNDS, iterations=1)
    med_c = {k: float(np.median(v)) for k, v in cpu.items()}
    med_w = {k: float(np.median(v)) for k, v in wall.items()}
    if "openjij" in solvers:
        med_c["openjij net"] = med_c["openjij"] - med_c["openjij set-up"]
        med_w["openjij net"] = med_w["openjij"] - med_w["openjij set-up"]
    ours_c, ours_w = med_c["sa.cpu 1 thread"], med_w["sa.cpu all cores"]
    peers = [k for k in med_c if not k.startswith("sa.cpu") and k != "openjij set-up"]
    info = {
        "n": problem.n, "nnz": int(problem.sparse_J().nnz), "num_reads": NUM_READS,
        "num_sweeps": NUM_SWEEPS, "beta_range": (b0, b1), "rounds": ROUNDS,
        "threads": kpp_sdk.config.available_cores(), "load_average_before": load_before,
        "load_average_after": os.getloadavg(), "cpu_s": cpu, "wall_s": wall,
        "median_cpu_s": med_c, "median_wall_s": med_w,
        "per_core_ratio": {p: med_c[p] / ours_c for p in peers},
        "wall_ratio": {p: med_w[p] / ours_w for p in peers},
        "mean_energy": {k: float(np.mean(e)) for k, e in energy.items()
                        if e[0].size == NUM_READS},
        "mean_energy_se": {k: float(np.std(np.concatenate(e)) / np.sqrt(NUM_READS * len(e)))
                           for k, e in energy.items() if e[0].size == NUM_READS},
    }
    benchmark.extra_info.update(info)

    print(f"\n[{label}] n={problem.n}, {NUM_READS} reads x {NUM_SWEEPS} sweeps, beta {b0:.4g} -> "
          f"{b1:.4g}, median of {ROUNDS} interleaved rounds, load average "
          f"{load_before[0]:.1f} -> {info['load_average_after'][0]:.1f}")
    for k, c in med_c.items():
        e = info["mean_energy"].get(k)
        print(f"  {k:<18} cpu {c:8.3f} s  wall {med_w[k]:8.3f} s"
              + (f"  mean E {e:.2f} +- {info['mean_energy_se'][k]:.2f}" if e is not None else ""))
    for p in peers:
        print(f"  {p:<18} / sa.cpu: per core {info['per_core_ratio'][p]:5.2f}x, "
              f"wall {info['wall_ratio'][p]:5.2f}x")

    ref = info["mean_energy"]["dwave-samplers"]
    for k, e in info["mean_energy"].items():
        assert abs(e - ref) / abs(ref) < ENERGY_RTOL, f"{k}: mean energy {e} vs dwave {ref}"
    # equal within statistics: the same schedule is the same algorithm
    e, se = info["mean_energy"], info["mean_energy_se"]
    z = (e["sa.cpu 1 thread"] - ref) / np.hypot(se["sa.cpu 1 thread"], se["dwave-samplers"])
    benchmark.extra_info["mean_energy_z_vs_dwave"] = float(z)
    print(f"  mean energy sa.cpu - dwave: {z:+.2f} standard errors")


def test_dense_sk_1000(benchmark):
    compare(benchmark, sk_problem(1000), "dense SK")


def test_maxcut_3regular_2000_sparse(benchmark):
    compare(benchmark, random_regular_maxcut(2000, 3, seed=0), "3-regular MAX-CUT, sparse")


def test_maxcut_3regular_2000_as_dense_array(benchmark):
    p = random_regular_maxcut(2000, 3, seed=0)
    compare(benchmark, IsingProblem(p.dense_J()), "3-regular MAX-CUT, dense array")


SA_LADDER = (50, 100, 150, 200, 300, 400, 600, 800, 1000, 1500, 2000)
SB_LADDER = (100, 200, 300, 500, 700, 1000, 1500, 2000, 3000, 5000, 10000)


def test_time_to_sa_mean_energy_sk_1000(benchmark):
    sb = pytest.importorskip("simulated_bifurcation")
    import torch

    problem = sk_problem(1000)
    bqm = to_bqm(problem)
    ss = dwave_samplers.SimulatedAnnealingSampler().sample(bqm, num_reads=NUM_READS,
                                                           num_sweeps=NUM_SWEEPS, seed=0)
    target = float(np.mean(ss.record.energy))
    device = kpp_sdk.get_device("sa.cpu")
    device.sample(problem, num_reads=2, seed=0, num_sweeps=2)
    Q = torch.as_tensor(-0.5 * problem.dense_J(), dtype=torch.float32)

    def ours(sweeps):
        return device.sample(problem, num_reads=NUM_READS, seed=sweeps, num_sweeps=sweeps,
                             num_threads=1).energies

    def bifurcation(steps):
        torch.manual_seed(steps)
        spins, _ = sb.minimize(Q, domain="spin", agents=NUM_READS, max_steps=steps,
                               best_only=False, mode="ballistic", heated=False, verbose=False,
                               early_stopping=False)
        return problem.energy(spins.numpy().astype(np.int8))

    def climb(fn, ladder):
        for effort in ladder:
            c, w, e = _measure(lambda: fn(effort))  # noqa: B023 - called at once
            if float(np.mean(e)) <= target:
                return {"effort": effort, "cpu_s": c, "wall_s": w, "mean_energy": float(np.mean(e))}
        return {"effort": None, "cpu_s": float("inf"), "wall_s": float("inf"),
                "mean_energy": float(np.mean(e))}

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    results: dict = {"sa.cpu 1 thread": [], "simulated-bifurcation": []}

    def one_round():
        results["sa.cpu 1 thread"].append(climb(ours, SA_LADDER))
        results["simulated-bifurcation"].append(climb(bifurcation, SB_LADDER))

    try:
        benchmark.pedantic(one_round, rounds=ROUNDS, iterations=1)
    finally:
        torch.set_num_threads(before)
    med = {k: float(np.median([r["cpu_s"] for r in v])) for k, v in results.items()}
    ratio = med["simulated-bifurcation"] / med["sa.cpu 1 thread"]
    benchmark.extra_info.update(target=target, results=results, median_cpu_s=med,
                                sb_over_sa_cpu=ratio, load_average=os.getloadavg())
    print(f"\n[time to SA's mean energy {target:.1f}, SK n=1000, {NUM_READS} reads, one core]")
    for k, v in results.items():
        print(f"  {k:<22} median cpu {med[k]:.3f} s; rounds: "
              + ", ".join(f"{r['effort']} ({r['cpu_s']:.2f} s, E {r['mean_energy']:.0f})"
                          for r in v))
    print(f"  simulated-bifurcation / sa.cpu = {ratio:.2f}x")
