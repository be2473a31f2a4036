"""Throughput of ``sa.gpu`` against ``sa.cpu`` on the same machine.

Run:  pytest benchmarks/bench_sa_gpu.py --benchmark-only -s

* ``test_gpu_fused_vs_sa_cpu`` (needs CuPy and a CUDA GPU; skipped otherwise, saying why): dense
  Sherrington-Kirkpatrick n = 1000, 1,024 reads x 1,000 sweeps, default geometric schedule, both
  devices through the Device API. Two coupling sets: Gaussian ``J_ij ~ N(0, 1)`` (the kernel reads J
  as float64) and ``J_ij = +-1`` (float32 holds it exactly, so the kernel reads float32). The goal
  of the GPU device is >= 50x the throughput of ``sa.cpu`` on all cores of the same machine.
* ``test_numpy_reference_vs_sa_cpu`` (runs anywhere): the same n = 1000 problem on the NumPy
  backend (the array reference that CI runs) against ``sa.cpu``, 256 reads x 20 sweeps. The
  reference is written for clarity and portability, not CPU speed: expect it to be slower than the
  numba kernel of ``sa.cpu``; the ratio is reported as measured.

Throughput is spin updates per second, ``reads * sweeps * n / run_s``, where ``run_s`` is the time
inside the device's ``_run`` (schedule, upload, annealing, download; not the client-side energy
evaluation). Each device's compile step (numba, NVRTC) runs once before the timing. Both devices
anneal the same problem with different random streams, so the mean energies must agree within
statistical error: that is asserted (it is correctness). Speed ratios are printed and recorded in
``benchmark.extra_info``, never asserted.
"""

from __future__ import annotations

import numpy as np
import pytest
from kpp_sdk.devices.sa_gpu import SimulatedAnnealingGPU, require_cuda

import kpp_sdk
from kpp_sdk import IsingProblem, MissingDependencyError

N = 1000
GPU_READS, GPU_SWEEPS = 1024, 1000
NUMPY_READS, NUMPY_SWEEPS = 256, 20


def sk_problem(couplings: str, n: int = N) -> IsingProblem:
    rng = np.random.default_rng(0)
    A = rng.standard_normal((n, n)) if couplings == "gaussian" else rng.choice([-1.0, 1.0], (n, n))
    J = np.triu(A, 1)
    return IsingProblem(J + J.T)


def run_s_and_energies(device, problem, *, num_reads, num_sweeps, seed):
    ss = device.sample(problem, num_reads=num_reads, num_sweeps=num_sweeps, seed=seed)
    return ss.timing["run_s"], ss.energies, ss.info


def energies_agree(a: np.ndarray, b: np.ndarray, sigmas: float = 5.0) -> tuple[float, float]:
    """(difference of means, its standard error)."""
    return float(a.mean() - b.mean()), float(np.hypot(a.std(ddof=1) / np.sqrt(a.size),
                                                      b.std(ddof=1) / np.sqrt(b.size)))


def compare(benchmark, label, device, problem, *, num_reads, num_sweeps):
    cpu = kpp_sdk.get_device("sa.cpu")
    updates = num_reads * num_sweeps * problem.n
    # compile (numba cache / NVRTC) outside the timing
    cpu.sample(problem, num_reads=2, num_sweeps=2, seed=0)
    device.sample(problem, num_reads=2, num_sweeps=2, seed=0)

    cpu_s, cpu_E, _ = run_s_and_energies(cpu, problem, num_reads=num_reads, num_sweeps=num_sweeps,
                                         seed=1)
    dev_s, dev_E, info = benchmark.pedantic(
        run_s_and_energies, args=(device, problem),
        kwargs={"num_reads": num_reads, "num_sweeps": num_sweeps, "seed": 2},
        rounds=1, iterations=1)
    ratio = cpu_s / dev_s
    diff, se = energies_agree(dev_E, cpu_E)
    benchmark.extra_info.update({
        "label": label, "n": problem.n, "num_reads": num_reads, "num_sweeps": num_sweeps,
        "backend": info["backend"], "kernel": info["kernel"],
        "coupling_dtype": info.get("coupling_dtype"), "gpu": info.get("gpu"),
        "device_run_s": dev_s, "sa_cpu_run_s": cpu_s,
        "device_spin_updates_per_s": updates / dev_s, "sa_cpu_spin_updates_per_s": updates / cpu_s,
        "throughput_ratio_device_over_sa_cpu": ratio,
        "device_mean_energy": float(dev_E.mean()), "sa_cpu_mean_energy": float(cpu_E.mean()),
        "mean_energy_diff": diff, "mean_energy_diff_stderr": se,
    })
    print(f"\n[{label}] n={problem.n}, {num_reads} reads x {num_sweeps} sweeps"
          f" ({info['backend']}/{info['kernel']}"
          + (f", J as {info['coupling_dtype']}, {info['gpu']}" if info["backend"] == "cupy" else "")
          + ")")
    for who, secs, E in (("sa.gpu", dev_s, dev_E), ("sa.cpu", cpu_s, cpu_E)):
        print(f"  {who}: {secs:8.3f} s  {updates / secs:.3e} spin updates/s  mean E {E.mean():.3f}")
    print(f"  throughput sa.gpu / sa.cpu = {ratio:.3g}x; mean energy diff {diff:.3f} +- {se:.3f}")
    assert abs(diff) < 5 * se + 1e-9, f"mean energies differ by {diff} (standard error {se})"
    return ratio


@pytest.fixture(scope="module")
def gpu_device():
    try:
        require_cuda()
    except MissingDependencyError as exc:
        pytest.skip(f"no CUDA GPU here, so no GPU throughput to measure: {exc}")
    return kpp_sdk.get_device("sa.gpu")


@pytest.mark.parametrize("couplings", ["gaussian", "pm1"])
def test_gpu_fused_vs_sa_cpu(benchmark, gpu_device, couplings):
    compare(benchmark, f"dense SK {couplings}, fused kernel", gpu_device, sk_problem(couplings),
            num_reads=GPU_READS, num_sweeps=GPU_SWEEPS)


def test_numpy_reference_vs_sa_cpu(benchmark):
    compare(benchmark, "dense SK gaussian, NumPy reference", SimulatedAnnealingGPU(backend="numpy"),
            sk_problem("gaussian"), num_reads=NUMPY_READS, num_sweeps=NUMPY_SWEEPS)
