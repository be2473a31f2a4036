"""Every registered device against the peers that install from PyPI, on the same instances.

``kpp bench --suite quick|full --out DIR`` (:mod:`kpp_sdk.bench.cli`) runs :func:`run_suite` and
writes ``DIR/results.md`` (the tables), ``DIR/energy_vs_time.png`` (energy versus wall time per
solver and instance) and ``DIR/results.json`` (every run's energies, to recompute any metric).

How a solver is measured
------------------------
Each solver runs a *ladder* of efforts (sweeps for annealers, round trips for the CIM, steps for
simulated bifurcation), ``num_reads`` reads per rung, one seed per rung derived from the suite
seed. A rung is skipped when the previous rung's time, scaled by the effort ratio, predicts more
than the suite's ``max_rung_s``. Only the solve call is timed, after a warm-up run that compiles
JIT kernels: its wall time and the CPU time of this process (all threads) during it; the
conversion of the problem into the solver's format is not timed. Each solver states the threads
it uses. Energies are always recomputed from the returned spins with :meth:`IsingProblem.energy`.

Metrics (per solver and instance):

* **target**: the ground energy (SK1, MC50), the best known (Gset), or, for random instances,
  the best energy any solver found in this run (said so in the table).
* **P(success)**: the fraction of reads at or below the target, per rung; the table shows the
  largest over the rungs.
* **time to target** (TTS99): ``t_read * ln(0.01) / ln(1 - p)``, the expected wall time to see the
  target once with 99 % confidence, ``t_read`` being the rung's wall time divided by its reads
  (reads run in parallel where the solver does so); the smallest over the rungs; ``inf`` when no
  read reached the target. **CPU TTS99**: the same with the rung's CPU seconds (the cost per
  core: a solver on two threads does not halve it).
* **ratios to sa.cpu**: a solver's TTS99 over ``sa.cpu``'s on the same instance, by wall time and
  by CPU time (per core).
* **throughput**: reads per second at the top rung that ran.
* **E at T**: the best energy of the rungs that finished within the suite's fixed time ``T``.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..config import available_cores
from ..errors import InvalidOptionError, MissingDependencyError
from ..problem import IsingProblem

__all__ = [
    "SUITES",
    "Instance",
    "Outcome",
    "Rung",
    "Solver",
    "Suite",
    "available_solvers",
    "energy_at_time",
    "plot_figure",
    "random_regular_maxcut",
    "run_suite",
    "success_probability",
    "suite_instances",
    "tts99",
    "write_json",
    "write_markdown",
    "write_plot",
]

#: Success tolerance: a read reaches the target when ``E <= target + TOL * max(1, |target|)``.
TOL = 1e-9


# --- instances ----------------------------------------------------------------------------------

@dataclass
class Instance:
    """A benchmark problem and what counts as solving it.

    ``target`` is None when no optimum is known: the best energy found in the run is used.
    ``target_source``: ``"ground"``, ``"best known"`` or ``"best found in this run"``.
    """

    name: str
    problem: IsingProblem
    target: float | None
    target_source: str
    description: str = ""


def random_regular_maxcut(n: int, degree: int = 3, seed: int = 0) -> IsingProblem:
    """MAX-CUT (``J = -W``, unit weights) on a uniformly random simple ``degree``-regular graph
    (pairing model with rejection), as a sparse problem."""
    if (n * degree) % 2 or degree >= n:
        raise InvalidOptionError(f"no simple {degree}-regular graph on {n} vertices")
    rng = np.random.default_rng(seed)
    while True:
        pairs = rng.permutation(np.repeat(np.arange(n), degree)).reshape(-1, 2)
        if np.any(pairs[:, 0] == pairs[:, 1]):
            continue
        edges = np.sort(pairs, axis=1)
        if len(np.unique(edges, axis=0)) == len(edges):
            break
    W = sp.coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n))
    return IsingProblem(-(W + W.T).tocsr())


def _gset(name: str) -> Instance:
    from ..instances import GSET_BEST_CUTS, load_instance

    p = load_instance(name)
    W = -p.sparse_J()
    total = float(W.sum() / 2)
    # E = sum_{i<j} W_ij s_i s_j = total - 2 cut
    return Instance(name, p, total - 2 * GSET_BEST_CUTS[name], "best known",
                    f"Gset {name}: n={p.n}, MAX-CUT, best known cut {GSET_BEST_CUTS[name]}")


def _shipped(family: str, n: int, index: int) -> Instance:
    from ..instances import ground_energy, load_instance

    what = {"SK1": "SK, couplings +-1", "MC50": "MAX-CUT, 50 % density"}[family]
    return Instance(f"{family} n={n} #{index}", load_instance(family, n, index),
                    ground_energy(family, n, index), "ground", f"{what} (Hamerly et al. 2019)")


def suite_instances(suite: str) -> list[Instance]:
    """The instances of ``suite`` (``"smoke"``, ``"quick"`` or ``"full"``)."""
    if suite == "smoke":
        return [_shipped("MC50", 10, 1)]
    sk1000 = Instance("SK n=1000", IsingProblem.random_sk(1000, seed=0), None,
                      "best found in this run", "dense SK, J_ij ~ N(0, 1), seed 0")
    reg3 = Instance("3-regular n=1000", random_regular_maxcut(1000, 3, seed=0), None,
                    "best found in this run", "sparse MAX-CUT, random 3-regular graph, seed 0")
    if suite == "quick":
        return [_shipped("SK1", 100, 0), _shipped("MC50", 100, 1), sk1000, _gset("G1"), reg3]
    if suite == "full":
        reg3_big = Instance("3-regular n=2000", random_regular_maxcut(2000, 3, seed=1), None,
                            "best found in this run",
                            "sparse MAX-CUT, random 3-regular graph, seed 1")
        return [_shipped("SK1", 100, 0), _shipped("SK1", 100, 1), _shipped("MC50", 100, 1),
                _shipped("MC50", 100, 2), sk1000, _gset("G1"), _gset("G2"), _gset("G42"),
                reg3, reg3_big]
    raise InvalidOptionError(f"unknown suite {suite!r}; choose one of {', '.join(SUITES)}")


# --- solvers ------------------------------------------------------------------------------------

@dataclass
class Solver:
    """One solver: a registered device or a peer library.

    ``prepare(problem)`` converts the problem (not timed) and ``run(prepared, effort, num_reads,
    seed)`` returns spins ``(num_reads, n)`` in {-1, +1} (timed). ``efforts``: the ladder, by suite.
    ``max_spins``: larger problems are skipped with a reason; ``dense_only_max``: peers that need
    a dense matrix skip sparse problems above it.
    """

    name: str
    kind: str  # "device" or "peer"
    available: bool
    reason: str = ""
    version: str = ""
    effort_unit: str = ""
    efforts: dict = field(default_factory=dict)
    prepare: Callable[[IsingProblem], Any] | None = None
    run: Callable[[Any, Any, int, int], np.ndarray] | None = None
    max_spins: int | None = None
    max_spins_reason: str = ""
    notes: str = ""
    close: Callable[[], None] | None = None
    device_seconds: bool = False
    threads: int = 1
    warmed: set = field(default_factory=set, repr=False)


def _device_solver(info: Any, threads: int, cloud: dict) -> Solver:
    name = info.name
    if not info.available:
        return Solver(name, "device", False, info.reason)
    from ..registry import get_device

    ladders = {
        "sa.cpu": ("sweeps", "num_sweeps", {"smoke": [20], "quick": [10, 100, 1000],
                                            "full": [10, 100, 1000, 10000]}),
        "sa.gpu": ("sweeps", "num_sweeps", {"smoke": [20], "quick": [10, 100, 1000],
                                            "full": [10, 100, 1000, 10000]}),
        "cim.emulator": ("round trips", "round_trips", {"smoke": [50], "quick": [100, 1000],
                                                        "full": [100, 300, 1000, 3000]}),
        "cim.cloud": ("round trips", "round_trips", {"smoke": [50], "quick": [100, 1000],
                                                     "full": [100, 300, 1000, 3000]}),
    }
    unit, option, efforts = ladders.get(name, ("", None, {}))
    fixed: dict = {}
    notes = ""
    if name == "sa.cpu":
        fixed["num_threads"] = threads
        notes = f"{threads} threads"
    if name == "cim.cloud":
        return _cloud_solver(info, unit, option, efforts, cloud)
    if name == "cim.emulator":
        notes = "output='raw' (one read per run, state at the last round trip)"
    device = get_device(name)

    def run(problem: IsingProblem, effort: Any, num_reads: int, seed: int) -> Any:
        opts = dict(fixed)
        if option is not None and effort is not None:
            opts[option] = effort
        return device.sample(problem, num_reads=num_reads, seed=seed, **opts)

    if not efforts:
        notes = "its default options (no effort ladder known for this device)"
    return Solver(name, "device", True, version=_kpp_version(), effort_unit=unit, efforts=efforts,
                  prepare=lambda p: p, run=run, max_spins=device.properties.max_spins,
                  max_spins_reason=f"{name} takes at most {device.properties.max_spins} spins",
                  notes=notes, close=device.close, device_seconds=True,
                  threads=threads if name == "sa.cpu" else 1)


def _cloud_solver(info: Any, unit: str, option: str, efforts: dict, cloud: dict) -> Solver:
    """``cim.cloud`` against a ``kpp serve`` of ``cim.emulator`` on 127.0.0.1, started on first
    use (the wall time includes HTTP, the server's queue and polling)."""
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        return Solver("cim.cloud", "device", False,
                      "needs a local `kpp serve`, which needs the server extra: "
                      "pip install 'kpp-sdk[server]'")
    state: dict = {}

    def device():
        if "device" not in state:
            from ..cloud import LocalServer

            server = LocalServer("cim.emulator", workers=1)
            server.start()
            state["server"] = server
            state["device"] = server.client(timeout=600)
        return state["device"]

    def run(problem: IsingProblem, effort: Any, num_reads: int, seed: int) -> Any:
        return device().sample(problem, num_reads=num_reads, seed=seed, **{option: effort})

    def close() -> None:
        if "server" in state:
            state["server"].close()

    return Solver("cim.cloud", "device", True, version=_kpp_version(), effort_unit=unit,
                  efforts=efforts, prepare=lambda p: p, run=run,
                  max_spins=info.properties.max_spins,
                  max_spins_reason=f"cim.cloud takes at most {info.properties.max_spins} spins",
                  notes="`kpp serve` of cim.emulator on 127.0.0.1 (HTTP and queue included)",
                  close=close, device_seconds=True)


def _kpp_version() -> str:
    from .. import __version__

    return __version__


def _dist_version(dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return ""


def _to_bqm(problem: IsingProblem):
    """The problem as a dimod SPIN BQM: ``h_d = -h``, ``J_d[i, j] = -J[i, j]`` for i < j."""
    import dimod

    T = sp.triu(problem.sparse_J(), k=1).tocoo()
    return dimod.BQM.from_numpy_vectors(-np.asarray(problem.h, dtype=np.float64),
                                        (T.row, T.col, -T.data), 0.0, dimod.SPIN)


def _spins_from_dimod(ss: Any, n: int) -> np.ndarray:
    out = np.empty((len(ss.record), n), dtype=np.int8)
    out[:, np.asarray(list(ss.variables), dtype=np.int64)] = ss.record.sample
    counts = np.asarray(ss.record.num_occurrences)
    return np.repeat(out, counts, axis=0)


_SA_LADDER = {"smoke": [20], "quick": [10, 100, 1000], "full": [10, 100, 1000, 10000]}


def _installed(*modules: str) -> bool:
    """True when every module can be found (without importing it: peers pull in torch, sympy)."""
    from importlib.util import find_spec

    try:
        return all(find_spec(m) is not None for m in modules)
    except (ImportError, ValueError):
        return False


def _peer_dwave() -> Solver:
    if not _installed("dwave.samplers", "dimod"):
        return Solver("dwave-samplers SA", "peer", False,
                      "not installed: pip install dwave-samplers")

    def run(bqm: Any, effort: int, num_reads: int, seed: int) -> np.ndarray:
        from dwave.samplers import SimulatedAnnealingSampler

        ss = SimulatedAnnealingSampler().sample(bqm, num_reads=num_reads, num_sweeps=effort,
                                                seed=seed % 2**32)
        return _spins_from_dimod(ss, bqm.num_variables)

    return Solver("dwave-samplers SA", "peer", True, version=_dist_version("dwave-samplers"),
                  effort_unit="sweeps", efforts=_SA_LADDER, prepare=_to_bqm, run=run,
                  notes="its default beta range; single thread")


def _peer_openjij() -> Solver:
    if not _installed("openjij", "dimod"):
        return Solver("openjij SA", "peer", False, "not installed: pip install openjij")

    def run(bqm: Any, effort: int, num_reads: int, seed: int) -> np.ndarray:
        import openjij

        # Unseeded on purpose: with a seed, openjij 0.12 starts every read from the same random
        # stream and returns num_reads copies of one read (checked in the tests).
        ss = openjij.SASampler().sample(bqm, num_reads=num_reads, num_sweeps=effort)
        return _spins_from_dimod(ss, bqm.num_variables)

    return Solver("openjij SA", "peer", True, version=_dist_version("openjij"),
                  effort_unit="sweeps", efforts=_SA_LADDER, prepare=_to_bqm, run=run,
                  notes="its default schedule; unseeded (a seed makes every read identical), so "
                        "not reproducible")


def _peer_sb(threads: int) -> Solver:
    threads = 1  # torch's OpenMP pool spins: on a busy 2-core machine 2 threads ran 50x slower
    if not _installed("simulated_bifurcation", "torch"):
        return Solver("simulated-bifurcation bSB", "peer", False,
                      "not installed: pip install simulated-bifurcation")

    def prepare(problem: IsingProblem):
        import torch

        # minimise x^T Q x + l^T x with Q = -J / 2, l = -h: the kpp energy without its offset
        return (torch.as_tensor(-0.5 * problem.dense_J(), dtype=torch.float32),
                torch.as_tensor(-problem.h, dtype=torch.float32))

    def run(prepared: Any, effort: int, num_reads: int, seed: int) -> np.ndarray:
        import simulated_bifurcation as sb
        import torch

        Q, l = prepared
        torch.manual_seed(seed)
        with _torch_threads(threads):
            spins, _ = sb.minimize(Q, l, domain="spin", agents=num_reads, max_steps=effort,
                                   best_only=False, mode="ballistic", heated=False,
                                   verbose=False, early_stopping=False)
        return spins.reshape(num_reads, -1).numpy().astype(np.int8)

    return Solver("simulated-bifurcation bSB", "peer", True,
                  version=_dist_version("simulated-bifurcation"), effort_unit="steps",
                  efforts={"smoke": [100], "quick": [100, 1000, 10000],
                           "full": [100, 1000, 10000, 30000]},
                  prepare=prepare, run=run, max_spins=20_000,
                  max_spins_reason="dense float32 matrix; skipped above 20,000 spins",
                  notes="ballistic, no early stopping, torch 1 thread")


def _peer_cim_optimizer(threads: int) -> Solver:
    threads = 1  # as for simulated-bifurcation
    if not _installed("cim_optimizer", "torch"):
        return Solver("cim-optimizer CAC", "peer", False,
                      "not installed: pip install --no-deps cim-optimizer BOHB-HPO")
    if not _installed("bohb"):
        return Solver("cim-optimizer CAC", "peer", False,
                      "cim-optimizer imports bohb at import time: pip install --no-deps BOHB-HPO")

    def prepare(problem: IsingProblem):
        return np.array(problem.dense_J(), dtype=np.float64), np.array(problem.h, dtype=np.float64)

    def run(prepared: Any, effort: int, num_reads: int, seed: int) -> np.ndarray:
        import torch
        from cim_optimizer.solve_Ising import Ising

        J, h = prepared
        np.random.seed(seed % 2**32)  # cim-optimizer draws from the global generators
        torch.manual_seed(seed)
        with _torch_threads(threads), contextlib.redirect_stdout(io.StringIO()):
            out = Ising(J, h).solve(
                num_runs=num_reads, num_parallel_runs=num_reads, num_timesteps_per_run=effort,
                hyperparameters_randomtune=False, hyperparameters_autotune=False,
                return_spin_trajectories_all_runs=False, suppress_statements=True,
                return_lowest_energies_found_spin_configuration=True,
                return_number_of_solutions=num_reads)
        s = np.asarray(out.result["spin_config_all_runs"]).reshape(num_reads, -1)
        return np.where(s >= 0, 1, -1).astype(np.int8)

    return Solver("cim-optimizer CAC", "peer", True, version=_dist_version("cim-optimizer"),
                  effort_unit="round trips",
                  efforts={"smoke": [100], "quick": [100, 1000], "full": [100, 1000, 3000]},
                  prepare=prepare, run=run, max_spins=2000,
                  max_spins_reason="dense torch CAC; skipped above 2,000 spins (hours)",
                  notes="CAC, its default parameters, random tuning off; best state of each "
                        "run; torch 1 thread")


@contextlib.contextmanager
def _torch_threads(threads: int):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def available_solvers(*, threads: int | None = None, only: Sequence[str] | None = None
                      ) -> list[Solver]:
    """Every registered device (available or not, with the reason) and every peer."""
    from ..registry import list_devices

    threads = threads or available_cores()
    cloud: dict = {}
    solvers = [_device_solver(info, threads, cloud) for info in list_devices()]
    solvers += [_peer_dwave(), _peer_openjij(), _peer_sb(threads), _peer_cim_optimizer(threads)]
    if only:
        names = {s.name for s in solvers}
        unknown = [o for o in only if o not in names]
        if unknown:
            raise InvalidOptionError(
                f"unknown solver(s) {', '.join(map(repr, unknown))}; known: "
                f"{', '.join(sorted(names))}")
        solvers = [s for s in solvers if s.name in only]
    return solvers


# --- metrics ------------------------------------------------------------------------------------

def success_probability(energies: np.ndarray, target: float) -> float:
    """Fraction of reads at or below ``target`` (tolerance :data:`TOL`)."""
    e = np.asarray(energies, dtype=np.float64)
    if e.size == 0:
        return 0.0
    return float(np.mean(e <= target + TOL * max(1.0, abs(target))))


def tts99(seconds_per_read: float, p: float) -> float:
    """Expected time to see the target once with 99 % confidence: ``t ln(0.01) / ln(1 - p)``;
    ``t`` when ``p == 1``, ``inf`` when ``p == 0``."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p}")
    if p == 0.0:
        return math.inf
    if p == 1.0:
        return float(seconds_per_read)
    return float(seconds_per_read * math.log(0.01) / math.log1p(-p))


def energy_at_time(rungs: Sequence[Rung], budget_s: float) -> float | None:
    """The lowest energy among the rungs that finished within ``budget_s`` (None: none did)."""
    fit = [r.best for r in rungs if r.seconds <= budget_s]
    return min(fit) if fit else None


@dataclass
class Rung:
    effort: Any
    num_reads: int
    seed: int
    seconds: float
    energies: np.ndarray
    device_seconds: float | None = None
    cpu_seconds: float | None = None  # CPU time of the process during the solve, all threads

    @property
    def best(self) -> float:
        return float(np.min(self.energies))

    @property
    def mean(self) -> float:
        return float(np.mean(self.energies))


@dataclass
class Outcome:
    solver: str
    instance: str
    status: str  # "ok", "skipped", "failed"
    reason: str = ""
    rungs: list = field(default_factory=list)
    skipped_rungs: list = field(default_factory=list)

    def metrics(self, target: float, budget_s: float) -> dict:
        if not self.rungs:
            return {}
        ps = [success_probability(r.energies, target) for r in self.rungs]
        tts = [tts99(r.seconds / r.num_reads, p) for r, p in zip(self.rungs, ps)]
        tts_cpu = [tts99(r.cpu_seconds / r.num_reads, p) if r.cpu_seconds is not None else None
                   for r, p in zip(self.rungs, ps)]
        top = self.rungs[-1]
        return {
            "best": min(r.best for r in self.rungs),
            "top_effort": top.effort,
            "top_mean": top.mean,
            "p_success": max(ps),
            "p_by_rung": ps,
            "tts99_s": min(tts),
            "tts99_cpu_s": (min(t for t in tts_cpu if t is not None)
                            if any(t is not None for t in tts_cpu) else None),
            "throughput": top.num_reads / top.seconds if top.seconds > 0 else math.inf,
            "energy_at_T": energy_at_time(self.rungs, budget_s),
        }


@dataclass
class Suite:
    name: str
    num_reads: int
    max_rung_s: float
    budget_s: float  # the fixed time T of "energy at T"


SUITES = {
    "smoke": Suite("smoke", num_reads=20, max_rung_s=5.0, budget_s=1.0),
    "quick": Suite("quick", num_reads=50, max_rung_s=10.0, budget_s=1.0),
    "full": Suite("full", num_reads=100, max_rung_s=60.0, budget_s=10.0),
}


def _seed(base: int, *parts: Any) -> int:
    import zlib

    key = "/".join(map(str, parts)).encode()
    return int(np.random.SeedSequence([base, zlib.crc32(key)]).generate_state(1, np.uint64)[0]
               % (2**31 - 1))


def _energies(problem: IsingProblem, out: Any) -> tuple[np.ndarray, float | None]:
    from ..sampleset import SampleSet

    if isinstance(out, SampleSet):
        spins = np.repeat(out.spins, out.num_occurrences, axis=0)
        return problem.energy(spins), out.timing.get("device_s")
    return problem.energy(np.asarray(out, dtype=np.int8)), None


def _warm_up(solver: Solver, sparse: bool, effort: Any) -> None:
    """One tiny run per solver and matrix kind, so that JIT compilation is not timed."""
    done = solver.warmed
    if sparse in done:
        return
    tiny = IsingProblem.random_sk(8, seed=0)
    if sparse:
        tiny = tiny.to_sparse()
    solver.run(solver.prepare(tiny), effort, 2, 0)
    done.add(sparse)


def run_solver(solver: Solver, inst: Instance, suite: Suite, seed: int,
               log: Callable[[str], None] = lambda s: None) -> Outcome:
    """The ladder of ``solver`` on ``inst``; a failure becomes a ``"failed"`` outcome."""
    if not solver.available:
        return Outcome(solver.name, inst.name, "skipped", solver.reason)
    if solver.max_spins is not None and inst.problem.n > solver.max_spins:
        return Outcome(solver.name, inst.name, "skipped",
                       f"n={inst.problem.n}: {solver.max_spins_reason}")
    efforts = solver.efforts.get(suite.name, [None]) if solver.efforts else [None]
    out = Outcome(solver.name, inst.name, "ok")
    try:
        _warm_up(solver, inst.problem.is_sparse, efforts[0])
        prepared = solver.prepare(inst.problem)
        prev: tuple[Any, float] | None = None
        for effort in efforts:
            if prev is not None and prev[0] and effort:
                predicted = prev[1] * effort / prev[0]
                if predicted > suite.max_rung_s:
                    out.skipped_rungs.append(effort)
                    continue
            s = _seed(seed, solver.name, inst.name, effort)
            c0, t0 = time.process_time(), time.perf_counter()
            result = solver.run(prepared, effort, suite.num_reads, s)
            dt, cpu = time.perf_counter() - t0, time.process_time() - c0
            energies, dev_s = _energies(inst.problem, result)
            out.rungs.append(Rung(effort, len(energies), s, dt, energies, dev_s, cpu))
            log(f"  {solver.name:<26} {inst.name:<18} effort {effort!s:>6}: {dt:8.3f} s "
                f"(cpu {cpu:7.3f} s)  best {float(energies.min()):.6g}")
            prev = (effort, dt)
    except Exception as exc:  # noqa: BLE001 - one broken solver must not end the run
        return Outcome(solver.name, inst.name, "failed", f"{type(exc).__name__}: {exc}",
                       out.rungs, out.skipped_rungs)
    return out


def run_suite(suite: str = "quick", *, seed: int = 0, threads: int | None = None,
              solvers: Sequence[str] | None = None,
              log: Callable[[str], None] = lambda s: None) -> dict:
    """Run ``suite``; returns a report dict for :func:`write_markdown` / :func:`write_plot`."""
    if suite not in SUITES:
        raise InvalidOptionError(f"unknown suite {suite!r}; choose one of {', '.join(SUITES)}")
    spec = SUITES[suite]
    threads = threads or available_cores()
    chosen = available_solvers(threads=threads, only=solvers)
    instances = suite_instances(suite)
    started = time.perf_counter()
    outcomes: list[Outcome] = []
    try:
        for inst in instances:
            log(f"{inst.name}: {inst.description}")
            for solver in chosen:
                outcomes.append(run_solver(solver, inst, spec, seed, log))
    finally:
        for solver in chosen:
            if solver.close is not None:
                with contextlib.suppress(Exception):
                    solver.close()
    targets = {}
    for inst in instances:
        if inst.target is not None:
            targets[inst.name] = inst.target
        else:
            bests = [r.best for o in outcomes if o.instance == inst.name for r in o.rungs]
            targets[inst.name] = min(bests) if bests else math.nan
    return {
        "suite": spec, "seed": seed, "threads": threads, "instances": instances,
        "solvers": chosen, "outcomes": outcomes, "targets": targets,
        "seconds": time.perf_counter() - started, "environment": _environment(),
    }


def _environment() -> dict:
    import platform

    return {"python": platform.python_version(), "machine": platform.machine(),
            "processor": platform.processor() or platform.machine(),
            "cores": available_cores(), "numpy": np.__version__, "kpp_sdk": _kpp_version()}


# --- reports ------------------------------------------------------------------------------------

def _fmt_s(x: float | None) -> str:
    if x is None:
        return "-"
    if math.isinf(x):
        return "inf"
    if x >= 100:
        return f"{x:.0f} s"
    if x >= 1:
        return f"{x:.2f} s"
    if x >= 1e-3:
        return f"{x * 1e3:.2f} ms"
    return f"{x * 1e6:.1f} µs"


def _fmt_ratio(x: float | None, ref: float | None) -> str:
    """``x / ref`` as ``"2.31x"``; ``"-"`` when either is missing or the reference never reached
    the target; ``"inf"`` when only the reference did."""
    if x is None or ref is None or math.isinf(ref) or ref <= 0:
        return "-"
    if math.isinf(x):
        return "inf"
    return f"{x / ref:.2f}x"


def _fmt_e(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.6g}"


def write_markdown(report: dict, path: str | os.PathLike) -> str:
    """The tables as markdown; returns the text."""
    spec: Suite = report["suite"]
    env = report["environment"]
    lines = [
        f"# kpp bench --suite {spec.name}",
        "",
        (f"Seed {report['seed']}, {spec.num_reads} reads per rung, {report['threads']} threads, "
         f"fixed time T = {spec.budget_s:g} s, rungs predicted above {spec.max_rung_s:g} s "
         f"skipped; total {report['seconds']:.0f} s. Python {env['python']}, numpy "
         f"{env['numpy']}, kpp-sdk {env['kpp_sdk']}, {env['cores']} cores "
         f"({env['processor']})."),
        "",
        ("P(success): fraction of reads at or below the target (best over rungs). "
         "TTS99: wall time to reach the target once with 99 % confidence (best over rungs); "
         "CPU TTS99: the same in CPU seconds of all the solver's threads (the cost per core). "
         "vs sa.cpu: the solver's TTS99 over sa.cpu's on the instance, by wall time and per core "
         "(above 1: sa.cpu is faster). Throughput: reads per second at the top rung. E at T: "
         "best energy of the rungs that finished within T."),
        "",
        "## Solvers",
        "",
        "| solver | kind | version | threads | status | notes |",
        "|---|---|---|---|---|---|",
    ]
    for s in report["solvers"]:
        status = "available" if s.available else f"skipped: {s.reason}"
        threads = s.threads if s.available else "-"
        lines.append(f"| {s.name} | {s.kind} | {s.version or '-'} | {threads} | {status} | "
                     f"{s.notes or ''} |")
    by_inst: dict[str, list[Outcome]] = {}
    for o in report["outcomes"]:
        by_inst.setdefault(o.instance, []).append(o)
    for inst in report["instances"]:
        target = report["targets"][inst.name]
        lines += ["", f"## {inst.name}", "",
                  (f"{inst.description}; n = {inst.problem.n}; target {_fmt_e(target)} "
                   f"({inst.target_source})."), "",
                  ("| solver | top effort | best E | mean E (top) | P(success) | TTS99 "
                   "| CPU TTS99 | vs sa.cpu: wall | vs sa.cpu: per core "
                   "| throughput (reads/s) | E at T | status |"),
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        ref = next((o.metrics(target, spec.budget_s) for o in by_inst.get(inst.name, [])
                    if o.solver == "sa.cpu" and o.rungs), None)
        for o in by_inst.get(inst.name, []):
            solver = next(s for s in report["solvers"] if s.name == o.solver)
            if not o.rungs:
                lines.append(f"| {o.solver} | - | - | - | - | - | - | - | - | - | - | "
                             f"{o.status}: {o.reason} |")
                continue
            m = o.metrics(target, spec.budget_s)
            effort = (f"{m['top_effort']} {solver.effort_unit}".strip()
                      if m["top_effort"] is not None else "default")
            status = o.status if o.status != "ok" else "ok"
            if o.reason:
                status += f": {o.reason}"
            if o.skipped_rungs:
                status += f" (skipped rungs {', '.join(map(str, o.skipped_rungs))}: predicted " \
                          f"> {spec.max_rung_s:g} s)"
            lines.append(
                f"| {o.solver} | {effort} | {_fmt_e(m['best'])} | {_fmt_e(m['top_mean'])} | "
                f"{m['p_success']:.2f} | {_fmt_s(m['tts99_s'])} | {_fmt_s(m['tts99_cpu_s'])} | "
                f"{_fmt_ratio(m['tts99_s'], ref and ref['tts99_s'])} | "
                f"{_fmt_ratio(m['tts99_cpu_s'], ref and ref['tts99_cpu_s'])} | "
                f"{m['throughput']:.3g} | {_fmt_e(m['energy_at_T'])} | {status} |")
    text = "\n".join(lines) + "\n"
    Path(path).write_text(text, encoding="utf-8")
    return text


#: Relative gaps below this are drawn on a linear scale (the plot's y axis is symlog).
_GAP_LINEAR = 1e-4


def write_plot(report: dict, path: str | os.PathLike) -> None:
    """Save :func:`plot_figure` of ``report`` as a PNG."""
    import matplotlib.pyplot as plt

    fig = plot_figure(report)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_figure(report: dict):
    """Relative gap to the target versus wall time, one panel per instance, one colour per
    solver: the mean energy of a rung's reads (solid line, dots) and its best read (dashed,
    crosses), ``(E - target) / |target|`` on a symmetric-log axis (0 = the target), so every
    rung is on the panel whatever its distance from the target; the x axis spans whole decades
    with labels on the decades only. Returns the matplotlib figure."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.lines import Line2D
        from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
    except ImportError:
        raise MissingDependencyError(
            "the benchmark plot needs matplotlib: pip install matplotlib") from None
    instances = report["instances"]
    cols = min(3, len(instances))
    rows = -(-len(instances) // cols)
    legend_in = 0.55  # inches under the panels for the legend
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.9 * rows + legend_in),
                             squeeze=False)
    names = [s.name for s in report["solvers"] if s.available]
    colors = {n: plt.cm.tab10(k % 10) for k, n in enumerate(names)}
    drawn: dict = {}
    for ax, inst in zip(axes.flat, instances):
        target = report["targets"][inst.name]
        scale = max(abs(target), 1e-12) if not math.isnan(target) else math.nan
        times: list = []
        top = _GAP_LINEAR
        for o in report["outcomes"]:
            if o.instance != inst.name or not o.rungs or math.isnan(scale):
                continue
            t = [r.seconds for r in o.rungs]
            mean = [max((r.mean - target) / scale, 0.0) for r in o.rungs]
            best = [max((r.best - target) / scale, 0.0) for r in o.rungs]
            ax.plot(t, mean, "o-", color=colors[o.solver], ms=4, lw=1.4)
            ax.plot(t, best, "x--", color=colors[o.solver], ms=5, lw=1.0, alpha=0.7)
            drawn[o.solver] = colors[o.solver]
            times += t
            top = max(top, *mean, *best)
        ax.axhline(0.0, color="k", ls=":", lw=1)
        ax.set_yscale("symlog", linthresh=_GAP_LINEAR, linscale=0.5)
        ax.set_ylim(-0.2 * _GAP_LINEAR, 10 ** math.ceil(math.log10(top * 1.01)))
        ax.yaxis.set_major_formatter(FuncFormatter(_percent))
        if times:
            lo = 10.0 ** math.floor(math.log10(min(times)))
            hi = 10.0 ** math.ceil(math.log10(max(times)))
            ax.set_xscale("log")
            ax.set_xlim(lo, hi if hi > lo else lo * 10)
            ax.xaxis.set_major_locator(LogLocator(base=10.0, numticks=12))
            ax.xaxis.set_minor_locator(LogLocator(base=10.0, subs=range(2, 10), numticks=12))
            ax.xaxis.set_minor_formatter(NullFormatter())  # no crowded labels between decades
        ax.set_title(f"{inst.name}: target {target:.6g} ({inst.target_source})", fontsize=9)
        ax.set_xlabel("wall time of the rung [s]", fontsize=8)
        ax.set_ylabel("(E - target) / |target|", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(True, which="major", alpha=0.3)
    for ax in list(axes.flat)[len(instances):]:
        ax.axis("off")
    handles = [Line2D([], [], color=c, lw=2, label=n) for n, c in drawn.items()]
    handles += [Line2D([], [], color="grey", marker="o", ls="-", label="mean of the reads"),
                Line2D([], [], color="grey", marker="x", ls="--", label="best read"),
                Line2D([], [], color="k", ls=":", label="target")]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=8,
               frameon=False)
    fig.tight_layout(rect=(0, legend_in / (3.9 * rows + legend_in), 1, 1))
    return fig


def _percent(y: float, _pos: Any = None) -> str:
    if y == 0:
        return "0"
    v = 100 * y
    return f"{v:.0f} %" if abs(v) >= 1 else f"{v:.2g} %"


def write_json(report: dict, path: str | os.PathLike) -> None:
    """Every rung's energies, seconds and seeds, for recomputing any metric."""
    spec: Suite = report["suite"]
    data = {
        "suite": spec.__dict__, "seed": report["seed"], "threads": report["threads"],
        "environment": report["environment"], "seconds": report["seconds"],
        "targets": report["targets"],
        "instances": [{"name": i.name, "n": i.problem.n, "target": i.target,
                       "target_source": i.target_source, "description": i.description}
                      for i in report["instances"]],
        "solvers": [{"name": s.name, "kind": s.kind, "available": s.available,
                     "reason": s.reason, "version": s.version, "effort_unit": s.effort_unit,
                     "threads": s.threads, "notes": s.notes} for s in report["solvers"]],
        "outcomes": [{"solver": o.solver, "instance": o.instance, "status": o.status,
                      "reason": o.reason, "skipped_rungs": o.skipped_rungs,
                      "rungs": [{"effort": r.effort, "num_reads": r.num_reads, "seed": r.seed,
                                 "seconds": r.seconds, "cpu_seconds": r.cpu_seconds,
                                 "device_seconds": r.device_seconds,
                                 "energies": r.energies.tolist()} for r in o.rungs]}
                     for o in report["outcomes"]],
    }
    Path(path).write_text(json.dumps(data, indent=1), encoding="utf-8")
