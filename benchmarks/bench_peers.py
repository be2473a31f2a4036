"""Every registered device against the peers from PyPI, under pytest-benchmark.

Run:  pytest benchmarks/bench_peers.py --benchmark-only -s

The same solvers and instances as ``kpp bench`` (:mod:`kpp_sdk.bench.suite`), one effort per
solver (the middle rung of the quick ladder: 100 sweeps for the annealers, 1000 round trips for
the CIMs, 1000 steps for simulated bifurcation), 50 reads, seed 0. ``benchmark.extra_info``
records the mean and best energy, the success probability per read, the time to target (TTS99)
and the wall-time ratio to ``sa.cpu`` on the same instance, measured in this process. Solvers that
are not available are skipped with the reason (the table of ``kpp bench`` lists them too).

Only correctness is asserted: energies are recomputed from the returned spins, and no solver may
go below a proven ground energy (that would be a conversion bug). Speed is recorded, not asserted.

For the markdown table and the energy-versus-time plot, run ``kpp bench --suite quick``.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from kpp_sdk.bench import suite as bm

NUM_READS = 50
SEED = 0
INSTANCES = {i.name: i for i in bm.suite_instances("quick")}
SOLVERS = {s.name: s for s in bm.available_solvers()}
_REFERENCE_S: dict[str, float] = {}


def _effort(solver: bm.Solver):
    ladder = solver.efforts.get("quick") if solver.efforts else None
    if not ladder:
        return None
    return ladder[min(1, len(ladder) - 1)]


def _seconds(solver: bm.Solver, inst: bm.Instance, prepared, effort) -> float:
    t0 = time.perf_counter()
    solver.run(prepared, effort, NUM_READS, SEED)
    return time.perf_counter() - t0


def _reference_s(inst: bm.Instance) -> float:
    """sa.cpu's wall time on ``inst`` at its middle rung, measured once in this process."""
    if inst.name not in _REFERENCE_S:
        ref = SOLVERS["sa.cpu"]
        bm._warm_up(ref, inst.problem.is_sparse, _effort(ref))
        prepared = ref.prepare(inst.problem)
        _REFERENCE_S[inst.name] = min(_seconds(ref, inst, prepared, _effort(ref))
                                      for _ in range(3))
    return _REFERENCE_S[inst.name]


@pytest.fixture(scope="module", autouse=True)
def _close_solvers():
    yield
    for s in SOLVERS.values():
        if s.close is not None:
            s.close()


@pytest.mark.parametrize("instance", list(INSTANCES))
@pytest.mark.parametrize("solver", list(SOLVERS))
def test_solver_on_instance(benchmark, solver, instance):
    s, inst = SOLVERS[solver], INSTANCES[instance]
    if not s.available:
        pytest.skip(s.reason)
    if s.max_spins is not None and inst.problem.n > s.max_spins:
        pytest.skip(f"n={inst.problem.n}: {s.max_spins_reason}")
    effort = _effort(s)
    bm._warm_up(s, inst.problem.is_sparse, effort)
    prepared = s.prepare(inst.problem)
    out = benchmark.pedantic(s.run, args=(prepared, effort, NUM_READS, SEED), rounds=2,
                             iterations=1)
    energies, _ = bm._energies(inst.problem, out)
    assert len(energies) == NUM_READS
    seconds = benchmark.stats.stats.min
    ref = _reference_s(inst)
    target = inst.target if inst.target is not None else float(energies.min())
    p = bm.success_probability(energies, target)
    benchmark.extra_info.update(
        instance=inst.name, n=inst.problem.n, effort=effort, unit=s.effort_unit,
        mean_energy=float(energies.mean()), best_energy=float(energies.min()),
        target=target, target_source=inst.target_source, p_success=p,
        tts99_s=bm.tts99(seconds / NUM_READS, p), reads_per_s=NUM_READS / seconds,
        time_ratio_to_sa_cpu=seconds / ref)
    print(f"\n{solver:<26} {inst.name:<18} {effort!s:>6} {s.effort_unit:<11} "
          f"{seconds:8.3f} s ({seconds / ref:6.1f} x sa.cpu)  mean {energies.mean():.6g}  "
          f"best {energies.min():.6g}  target {target:.6g}  P {p:.2f}")
    if inst.target_source == "ground":
        assert energies.min() >= inst.target - 1e-9 * max(1.0, abs(inst.target))
    assert np.all(np.isfinite(energies))
