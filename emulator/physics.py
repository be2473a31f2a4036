"""The round-trip map of a measurement-feedback CIM (docs/cim-physics.md section 3), batched
over runs.

One round trip k, for every run r and pulse i (state arrays are (runs, N)):

1. pump   p_k = p0 + (p1 - p0) min(1, k/K_ramp) + sigma_pump N(0,1)
2. gain   x <- x exp(dtau (p_k - x^2 - y^2)),  y <- y exp(dtau (-p_k - x^2 - y^2))
3. loss   x <- sqrt(T) x + sqrt(1-T) v,  v ~ N(0, g^2/4)  (same for y);  T = exp(-2 dtau)
          (+ sigma_add N(0,1) of additive excess noise, 0 by default)
4. homodyne  x~ = x + g sqrt((1 - eta R_m)/(4 eta R_m)) N(0,1) + sigma_el N(0,1)
5. FPGA   code = clip(round(x~/lsb_adc));  acc = sum_j J_int,ij code_j[k-L]  (exact integers);
          f = s_J lsb_adc acc;  u = xi_k (e_i) f;  u <- DAC(u)
6. inject x <- x + dtau u (1 + sigma_inj N(0,1));  error variables e updated (AHC/CAC/CFC)
7. readout s = sign(x) at the last round trip (and, optionally, the best-energy spins seen
   along the trajectory), with the ancilla gauge fix for external fields.

The coupling of all runs is ONE matrix product per round trip, ``codes @ J_int`` (J symmetric).
The CPU engine multiplies int16 ADC codes by the int16 (int8-valued) couplings with exact int32
accumulation in a fused kernel (``_fast.igemm``, ``vpmaddwd`` on x86), as the FPGA does; the
array-module engine (and the sparse path) splits it into column chunks that are each exact in
float32 (see :func:`kpp_sdk.emulator.coupling.accumulation_plan`) and adds them in float64.
Both are exact, so they give the same sums bit for bit.

Two engines share this driver:

* ``"xp"``: the reference, written against one array module (NumPy, or CuPy unchanged);
  noise from ``numpy.random.Generator`` / ``cupy.random.Generator``.
* ``"numba"``: fused float32 CPU kernels with a counter-based generator (same statistics,
  different numbers); ``"auto"`` picks it on the CPU when numba is installed. Large batches
  are split into one block of runs per core, each block run by its own thread with
  single-threaded BLAS (the kernels release the GIL), so there is no barrier per round trip;
  the counter-based noise makes the result independent of the split.

Speed: ``benchmarks/bench_emulator.py`` (real-time factor at 550 spins, 2000 runs x 1000
round trips, qboson-550). Per round trip and 1000 runs on one core (AMD EPYC, min of repeats):
the int16 product ~5.5 ms (the chunked float32 BLAS product it replaced: ~8.5 ms), the
gain/noise/ADC kernel ~2.2-2.3 ms, the DAC/injection kernel (with its noise) ~1.0 ms.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field

import numpy as np

from ._backend import (
    SMALL_GEMM_MACS,
    blas_threads,
    get_xp,
    is_cupy,
    make_rng,
    seed_to_int,
    to_numpy,
)
from .coupling import PreparedProblem, ising_energy, prepare_problem
from .errors import ParameterError
from .profiles import CIMParameters, HardwareProfile, check_problem

__all__ = ["CIMResult", "coupled_threshold", "lose_shots", "numba_available", "sample", "simulate"]


#: numba's parallel kernels must not be launched from several Python threads at once with some
#: threading layers (workqueue aborts); runs on the CPU engine take this lock (concurrent
#: simulate() calls from a thread pool then run one after the other).
_PARALLEL_LOCK = threading.Lock()


def numba_available() -> bool:
    """True when the fused CPU engine can be used."""
    try:
        from . import _fast  # noqa: F401
    except Exception:  # noqa: BLE001  # pragma: no cover - numba missing or broken
        return False
    return True


def coupled_threshold(params: CIMParameters, lambda_max: float, xi: float) -> tuple[float, float]:
    """Pump at which the mode of eigenvalue ``lambda_max`` starts to oscillate.

    Returns ``(p_th_map, p_th_continuum)``: the exact threshold of the discrete map,
    exp(dtau (p - 1)) (1 + dtau xi lambda) = 1  ->  p = 1 - ln(1 + dtau xi lambda)/dtau, and the
    continuum value 1 - xi lambda (they agree to O(dtau (xi lambda)^2 / 2))."""
    c = params.dtau * xi * lambda_max
    p_cont = 1.0 - xi * lambda_max
    p_map = 1.0 - math.log1p(c) / params.dtau if c > -1 else float("inf")
    return p_map, p_cont


@dataclass
class CIMResult:
    """Output of :func:`simulate` (host NumPy arrays).

    spins: (runs, N) int8 in {-1, +1}, sign of x at the last round trip, gauge-fixed.
    energies: (runs,) float64, E = -1/2 s^T J s - h^T s of ``spins`` (original float J, h).
    best_spins / best_energies: per-run lowest-energy spins seen along the trajectory
        ("cim-optimizer mode"), when ``track_best``; else None.
    final_amplitudes: (runs, N) final x (gauge-fixed like the spins) when asked; else None.
    final_quadratures: (runs, N) final squeezed quadrature y, with ``return_amplitudes`` and
        ``params.track_quadrature``; else None.
    trajectories: (n_records, n_recorded_runs, N_total) amplitudes x, raw (not gauge-fixed;
        the last column is the ancilla when there is a field), when ``record_runs``; else None.
    error_trajectories: the error variables e of the recorded runs at the same records, with
        amplitude control (``feedback`` not "none"); else None.
    trajectory_runs: indices of the recorded runs. trajectory_round_trips: round-trip count of
        each record (0 = initial state).
    info: dict with xi, spectral radius, eigenvalue bounds, coupling scale and quantisation
        error, threshold estimates, engine, chunks, wall time (s).
    """

    spins: np.ndarray
    energies: np.ndarray
    params: CIMParameters
    best_spins: np.ndarray | None = None
    best_energies: np.ndarray | None = None
    final_amplitudes: np.ndarray | None = None
    final_quadratures: np.ndarray | None = None
    trajectories: np.ndarray | None = None
    error_trajectories: np.ndarray | None = None
    trajectory_runs: np.ndarray | None = None
    trajectory_round_trips: np.ndarray | None = None
    info: dict = field(default_factory=dict)


def _resolve_engine(
    engine: str, xp, params: CIMParameters, runs: int, n_total: int, gemm_dtype: str = "float32"
) -> str:
    if engine not in ("auto", "xp", "numba"):
        raise ParameterError("engine", engine, "'auto', 'xp' or 'numba'")
    fits = runs * n_total < 2**32
    if engine == "numba" and params.integrator != "map":
        raise ParameterError(
            "engine",
            engine,
            "'xp' or 'auto' for integrator='euler' (the numba engine runs the map)",
        )
    leleu = params.feedback == "cac" and params.cac_variant == "leleu"
    if engine == "numba" and leleu:
        raise ParameterError(
            "engine",
            engine,
            "'xp' or 'auto' for cac_variant='leleu' (the numba engine runs the FPGA's CAC)",
        )
    if engine == "numba":
        if xp is not np:
            raise ParameterError("engine", engine, "'numba' runs on the CPU only (xp=numpy)")
        if params.dtype != "float32":
            raise ParameterError(
                "engine", engine, "'numba' is float32 only; use engine='xp' for float64"
            )
        if not fits:
            raise ParameterError("engine", engine, "runs*N < 2**32 for 'numba'")
        if not numba_available():  # pragma: no cover
            raise ParameterError("engine", engine, "numba must be installed for 'numba'")
        return "numba"
    if engine == "xp":
        return "xp"
    if (
        xp is np
        and params.integrator == "map"
        and not leleu
        and params.dtype == "float32"
        and gemm_dtype == "float32"
        and fits
        and numba_available()
    ):
        return "numba"
    return "xp"


def _record_indices(record_runs, runs: int) -> np.ndarray | None:
    if record_runs is None or record_runs is False:
        return None
    if isinstance(record_runs, (int, np.integer)) and not isinstance(record_runs, bool):
        n = int(record_runs)
        if n < 0:
            raise ParameterError("record_runs", record_runs, ">= 0 or a sequence of run indices")
        return np.arange(min(n, runs)) if n > 0 else None
    if record_runs is True:
        return np.arange(runs)
    idx = np.asarray(record_runs, dtype=np.int64).reshape(-1)
    if idx.size == 0:
        return None
    if idx.min() < 0 or idx.max() >= runs:
        raise ParameterError("record_runs", record_runs, f"run indices in 0..{runs - 1}")
    return idx


class _IntGemm:
    """The FPGA matrix product of the CPU engine in integers, as the FPGA does it: int16 ADC
    codes times int16 (int8-valued) couplings, accumulated exactly in int32 by one fused kernel
    (:func:`kpp_sdk.emulator._fast.igemm`). The same sums as the chunked float32 product, bit
    for bit (both are exact), at about twice the speed. ``codes`` buffers are (runs, P) int16
    with P = N_total padded to a multiple of 16 (zero columns)."""

    code_dtype = np.int16

    def __init__(self, prob: PreparedProblem, runs: int, m16=None):
        from . import _fast

        self._igemm = _fast.igemm
        self.M = _int16_couplings(prob) if m16 is None else m16
        self.acc = np.empty((1, runs, prob.n_total), dtype=np.int32)

    def __call__(self, codes):
        self._igemm(codes, self.M, self.acc[0])
        return self.acc


def _padded_width(n: int) -> int:
    from ._fast import IGEMM_PAD

    return -(-n // IGEMM_PAD) * IGEMM_PAD


def _int16_couplings(prob: PreparedProblem) -> np.ndarray:
    """The integer couplings as (N_total, P) int16 rows, zero-padded to P columns."""
    n = prob.n_total
    M16 = np.zeros((n, _padded_width(n)), dtype=np.int16)
    M16[:, :n] = prob.M_fpga
    return M16


def _use_int_gemm(eng: str, prob: PreparedProblem, params: CIMParameters, integer_acc: bool):
    """The exact int16 x int16 -> int32 product applies to the CPU engine with quantised,
    dense couplings and ADC codes that fit int16, when the accumulation plan guarantees row
    sums < 2**31 (gemm_dtype float32; see coupling.accumulation_plan)."""
    return (
        eng == "numba"
        and integer_acc
        and not prob.sparse
        and params.adc_bits is not None
        and params.adc_bits <= 16
        and params.coef_bits is not None
        and params.coef_bits <= 16
    )


class _Gemm:
    """The FPGA matrix product for all runs: acc[c] = codes[:, chunk_c] @ M[chunk_c, :]."""

    code_dtype = None

    def __init__(self, prob: PreparedProblem, xp, runs: int):
        self.xp = xp
        self.chunks = prob.chunks
        dt = prob.gemm_dtype
        self.dtype = dt
        if prob.sparse:
            if is_cupy(xp):  # pragma: no cover - GPU only
                import cupyx.scipy.sparse as csp

                self.M = csp.csr_matrix(prob.M_fpga)
            else:
                self.M = prob.M_fpga
            self.blocks = None
        else:
            M = xp.asarray(prob.M_fpga)
            self.M = M
            self.blocks = [M[a:b, :] for a, b in self.chunks]
        self.acc = xp.empty((len(self.chunks), runs, prob.n_total), dtype=dt)

    def __call__(self, codes):
        xp = self.xp
        if self.blocks is None:
            c = codes if codes.dtype == self.dtype else codes.astype(self.dtype)
            self.acc[0] = (self.M @ c.T).T  # M symmetric: (M c^T)^T = c M
            return self.acc
        if len(self.blocks) == 1:
            c = codes if codes.dtype == self.dtype else codes.astype(self.dtype)
            xp.matmul(c, self.blocks[0], out=self.acc[0])
            return self.acc
        for j, ((a, b), blk) in enumerate(zip(self.chunks, self.blocks)):
            xp.matmul(codes[:, a:b], blk, out=self.acc[j])
        return self.acc


@dataclass(frozen=True)
class _MapConstants:
    dtau: float
    sqrt_t: float
    g: float
    vac_std: float
    meas_std: float
    adc_lsb: float
    adc_lo: float
    adc_hi: float
    dac_lsb: float
    dac_lo: float
    dac_hi: float
    gain_scale: float
    xi: float
    mode: int
    coupled: bool
    K_ramp: int
    integer_acc: bool
    e_cap: float
    self_feedback: float = 0.0


_PARALLEL_MIN_ELEMENTS = 1 << 15  # below this many state elements one thread does all runs


def _cpu_count() -> int:
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _numba_gain_loss_measure(F, x, y, code_out, p_k, params, c, keys, run_offset):
    run_std = np.float32(params.sigma_pump if not params.pump_noise_per_pulse else 0.0)
    pp_std = np.float32(params.sigma_pump if params.pump_noise_per_pulse else 0.0)
    common = (
        np.float32(c.dtau),
        np.float32(c.sqrt_t),
        np.float32(c.vac_std),
        np.float32(c.meas_std),
        pp_std,
        params.adc_bits is not None,
        np.float32(1.0 / c.adc_lsb),
        np.float32(c.adc_lo),
        np.float32(c.adc_hi),
        code_out,
        keys,
        run_offset,
    )
    if params.track_quadrature:
        F.gain_loss_measure_xy(x, y, np.float32(p_k), run_std, *common)
    else:
        F.gain_loss_measure(x, np.float32(p_k), run_std, *common)


def _numba_inject(F, x, acc, code_del, e, xi_k, params, c, a_row, beta_row, keys, run_offset):
    F.inject(
        x,
        acc,
        c.integer_acc,
        code_del,
        e,
        c.mode,
        np.float32(c.gain_scale),
        np.float32(xi_k),
        params.dac_bits is not None,
        np.float32(c.dac_lsb),
        np.float32(1.0 / c.dac_lsb),
        np.float32(c.dac_lo),
        np.float32(c.dac_hi),
        np.float32(c.dtau),
        np.float32(params.sigma_inj),
        np.float32(c.adc_lsb),
        a_row,
        beta_row,
        np.float32(params.e_min),
        np.float32(c.e_cap),
        keys,
        run_offset,
    )


def _sign(xp, x, dtype):
    return xp.where(x >= 0, 1, -1).astype(dtype)


def simulate(
    J,
    h=None,
    params: CIMParameters | None = None,
    *,
    runs: int = 100,
    seed=None,
    xp=None,
    engine: str = "auto",
    x0=None,
    record_runs: int | Sequence[int] | bool = 0,
    record_every: int = 1,
    track_best: bool = False,
    best_every: int = 1,
    return_amplitudes: bool = False,
    cancel_check=None,
) -> CIMResult:
    """Run ``runs`` independent CIM runs of ``params.round_trips`` round trips on (J, h).

    J: (N, N) symmetric float array or scipy.sparse matrix with zero diagonal; h: (N,) or None.
    Energy E = -1/2 s^T J s - h^T s. A non-zero h is carried by an ancilla pulse (N+1 pulses).
    params: :class:`CIMParameters` (default: the qboson-550 defaults).
    runs: number of runs (samples). seed: int, numpy Generator or None; the same seed gives
        the same output for the same engine and array module.
    xp: array module (numpy default, or cupy). engine: "auto" | "xp" | "numba".
    x0: optional initial in-phase amplitudes, shape (N_total,) or (runs, N_total).
    record_runs: number of runs (the first ones) or explicit run indices whose amplitudes are
        stored every ``record_every`` round trips; 0 (default) stores none, True all.
    track_best: also return the lowest-energy spins of each run over the trajectory,
        evaluated every ``best_every`` round trips and at the end (one extra matrix product
        per evaluation).
    return_amplitudes: also return the final amplitudes.
    cancel_check: optional callable, called before every round trip (of every batch of runs);
        when it returns True the simulation stops and ``InterruptedError`` is raised.
    """
    t_start = time.perf_counter()
    if params is None:
        params = CIMParameters()
    n_guess = int((getattr(J, "shape", None) or np.shape(J) or (0,))[0]) + (
        1 if h is not None else 0
    )
    small = isinstance(runs, (int, np.integer)) and runs * n_guess * n_guess < SMALL_GEMM_MACS
    lock = _PARALLEL_LOCK if (get_xp(xp) is np and engine != "xp") else None
    with blas_threads(1 if (small and get_xp(xp) is np) else None), (lock or nullcontext()):
        return _simulate(
            J,
            h,
            params,
            runs=runs,
            seed=seed,
            xp=xp,
            engine=engine,
            x0=x0,
            record_runs=record_runs,
            record_every=record_every,
            track_best=track_best,
            best_every=best_every,
            return_amplitudes=return_amplitudes,
            t_start=t_start,
            cancel_check=cancel_check,
        )


def _simulate(
    J,
    h,
    params,
    *,
    runs,
    seed,
    xp,
    engine,
    x0,
    record_runs,
    record_every,
    track_best,
    best_every,
    return_amplitudes,
    t_start,
    cancel_check=None,
):
    params, runs = _checked_arguments(params, runs, record_every, best_every)
    sim = _Simulation(J, h, params, runs=runs, seed=seed, xp=get_xp(xp), engine=engine, x0=x0,
                      record_runs=record_runs, record_every=record_every,
                      track_best=track_best, best_every=best_every, cancel_check=cancel_check)
    bounds, results = sim.run_batches()
    return sim.readout(bounds, results, return_amplitudes=return_amplitudes, t_start=t_start)


def _checked_arguments(params, runs, record_every, best_every):
    if params is None:
        params = CIMParameters()
    if not isinstance(params, CIMParameters):
        raise ParameterError("params", type(params).__name__, "a CIMParameters instance")
    if not isinstance(runs, (int, np.integer)) or isinstance(runs, bool) or runs < 1:
        raise ParameterError("runs", runs, "an integer >= 1")
    if not isinstance(record_every, (int, np.integer)) or record_every < 1:
        raise ParameterError("record_every", record_every, "an integer >= 1")
    if not isinstance(best_every, (int, np.integer)) or best_every < 1:
        raise ParameterError("best_every", best_every, "an integer >= 1")
    return params, int(runs)


def _map_constants(params: CIMParameters, prob: PreparedProblem) -> _MapConstants:
    """The constants of the round-trip map for ``params`` on ``prob`` (steps 2-6)."""
    # vacuum noise of the loss (step 3) plus any additive excess noise
    vac_std = math.sqrt((1.0 - params.transmission) * params.g2 / 4.0 + params.sigma_add**2)
    if params.adc_bits is not None:
        adc_lsb = 2.0 * params.adc_full_scale / 2**params.adc_bits
        adc_lo, adc_hi = -(2 ** (params.adc_bits - 1)), 2 ** (params.adc_bits - 1) - 1
    else:
        adc_lsb, adc_lo, adc_hi = 1.0, 0.0, 0.0
    if params.dac_bits is not None:
        dac_lsb = 2.0 * params.dac_full_scale / 2**params.dac_bits
        dac_lo, dac_hi = -(2 ** (params.dac_bits - 1)), 2 ** (params.dac_bits - 1) - 1
    else:
        dac_lsb, dac_lo, dac_hi = 1.0, 0.0, 0.0
    xi = prob.xi
    # CAC's "leleu" variant: mode 3 (error variables from the amplitude after the step), and
    # e clipped at e_max only (no stability cap)
    leleu = params.feedback == "cac" and params.cac_variant == "leleu"
    return _MapConstants(
        dtau=params.dtau,
        sqrt_t=math.exp(-params.dtau),
        g=math.sqrt(params.g2),
        vac_std=vac_std,
        meas_std=params.measurement_noise_std,
        adc_lsb=adc_lsb,
        adc_lo=adc_lo,
        adc_hi=adc_hi,
        dac_lsb=dac_lsb,
        dac_lo=dac_lo,
        dac_hi=dac_hi,
        gain_scale=prob.coupling_scale * adc_lsb,
        xi=xi,
        mode=3 if leleu else {"none": 0, "ahc": 1, "cac": 1, "cfc": 2}[params.feedback],
        coupled=xi > 0 and params.xi0 > 0,
        K_ramp=params.ramp_round_trips,
        integer_acc=(
            params.coef_bits is not None
            and params.adc_bits is not None
            and prob.gemm_dtype == "float32"
        ),
        e_cap=params.e_max if leleu else prob.e_cap,
        self_feedback=prob.self_feedback if xi > 0 else 0.0,
    )


class _Simulation:
    """What every batch of runs shares: the prepared problem, the engine, the map's constants,
    the FPGA's integer couplings, the initial state and what is recorded."""

    def __init__(self, J, h, params, *, runs, seed, xp, engine, x0, record_runs, record_every,
                 track_best, best_every, cancel_check):
        self.params, self.xp = params, xp
        self.prob = prob = prepare_problem(J, h, params)
        self.R, self.Nt = runs, prob.n_total
        self.eng = _resolve_engine(engine, xp, params, runs, self.Nt, prob.gemm_dtype)
        self.dt = np.float32 if params.dtype == "float32" else np.float64
        self.c = c = _map_constants(params, prob)
        self.record_every, self.best_every = record_every, best_every
        self.track_best, self.cancel_check = track_best, cancel_check
        self.rec_idx = _record_indices(record_runs, runs)
        self.base = seed_to_int(seed)
        if self.eng == "numba" and c.coupled and prob.gemm_dtype != "float32":
            raise ParameterError(
                "adc_bits",
                params.adc_bits,
                "a range whose accumulation plan fits float32 chunks "
                "for engine='numba' (use engine='xp')",
            )
        self.int_gemm = c.coupled and _use_int_gemm(self.eng, prob, params, c.integer_acc)
        self.m16 = _int16_couplings(prob) if self.int_gemm else None
        self.x0 = None
        if x0 is not None:
            x0a = np.asarray(x0, dtype=self.dt)
            if x0a.shape not in ((self.Nt,), (runs, self.Nt)):
                raise ParameterError(
                    "x0", x0a.shape,
                    f"shape ({self.Nt},) or ({runs}, {self.Nt}) (N_total incl. ancilla)"
                )
            self.x0 = np.broadcast_to(x0a, (runs, self.Nt))
        self.need_energy = track_best or params.feedback == "cac"
        if self.need_energy:
            M_en = prob.M.astype(self.dt) if prob.sparse else xp.asarray(prob.M, dtype=self.dt)
            if prob.sparse and is_cupy(xp):  # pragma: no cover
                import cupyx.scipy.sparse as csp

                M_en = csp.csr_matrix(M_en)
            self.M_en = M_en

    def energies_of(self, S):
        SM = (self.M_en @ S.T).T if self.prob.sparse else S @ self.M_en
        return -0.5 * self.xp.sum(S * SM, axis=1)

    def run_batches(self):
        """All runs: the CPU engine splits them over threads (the kernels release the GIL and
        each thread does its own single-threaded BLAS products: no barrier per round trip)."""
        R, eng = self.R, self.eng
        n_workers = 1
        if eng == "numba" and R >= 2 and R * self.Nt >= _PARALLEL_MIN_ELEMENTS:
            n_workers = min(_cpu_count(), R)
        if n_workers == 1:
            rng = None if eng == "numba" else make_rng(self.xp, self.base)
            return [(0, R)], [_Batch(self, 0, R, rng).run()]
        from concurrent.futures import ThreadPoolExecutor

        edges = np.linspace(0, R, n_workers + 1).astype(int)
        bounds = [(int(edges[i]), int(edges[i + 1])) for i in range(n_workers)]
        with blas_threads(1), ThreadPoolExecutor(max_workers=n_workers) as pool:
            futs = [pool.submit(lambda a, b: _Batch(self, a, b, None).run(), a0, b0)
                    for a0, b0 in bounds]
            return bounds, [f.result() for f in futs]

    def readout(self, bounds, results, *, return_amplitudes, t_start) -> CIMResult:
        """Step 7: the signs of the final amplitudes (and the best spins seen), the ancilla
        gauge fix, the energies, the recorded trajectories and the run's info."""
        params, prob, xp, track_best = self.params, self.prob, self.xp, self.track_best
        if len(results) == 1:
            x, y, best_S, _, _ = results[0]
        else:
            x = np.concatenate([r_[0] for r_ in results])
            y = np.concatenate([r_[1] for r_ in results])
            best_S = np.concatenate([r_[2] for r_ in results]) if track_best else None
        S = to_numpy(_sign(xp, x, np.int8)).astype(np.int8)
        n = prob.n
        amps = to_numpy(x) if return_amplitudes else None
        yq = to_numpy(y)[:, :n] if (return_amplitudes and params.track_quadrature) else None
        best_spins = None
        if prob.has_field:
            anc = S[:, -1:].copy()
            S = (S[:, :n] * anc).astype(np.int8)
            if amps is not None:
                amps = amps[:, :n] * anc
            if track_best:
                bS = to_numpy(best_S)
                best_spins = (bS[:, :n] * bS[:, -1:]).astype(np.int8)
        elif track_best:
            best_spins = to_numpy(best_S).astype(np.int8)
        energies = ising_energy(prob.J, prob.h, S)
        best_energies = None
        if track_best:
            best_energies = ising_energy(prob.J, prob.h, best_spins)
            # the float32 ranking along the trajectory can differ from the exact one by
            # rounding; the final spins are always a candidate.
            use_final = energies < best_energies
            best_spins[use_final] = S[use_final]
            best_energies = np.where(use_final, energies, best_energies)
        res = CIMResult(
            spins=S,
            energies=energies,
            params=params,
            best_spins=best_spins,
            best_energies=best_energies,
            final_amplitudes=amps,
            final_quadratures=yq,
            info=self._info(t_start),
        )
        if self.rec_idx is not None:
            K = params.round_trips
            traj_k = [0] + [k + 1 for k in range(K)
                            if (k + 1) % self.record_every == 0 or k == K - 1]
            full = np.empty((len(traj_k), self.rec_idx.size, self.Nt), dtype=self.dt)
            # the error variables of the same records, with amplitude control
            full_e = np.empty_like(full) if params.feedback != "none" else None
            for (a0, b0), res_ in zip(bounds, results):
                sel = np.nonzero((self.rec_idx >= a0) & (self.rec_idx < b0))[0]
                if sel.size:
                    full[:, sel, :] = np.stack([to_numpy(t_) for t_ in res_[3]])
                    if full_e is not None:
                        full_e[:, sel, :] = np.stack([to_numpy(t_) for t_ in res_[4]])
            res.trajectories = full
            res.error_trajectories = full_e
            res.trajectory_runs = self.rec_idx
            res.trajectory_round_trips = np.asarray(traj_k)
        return res

    def _info(self, t_start) -> dict:
        params, prob, xi = self.params, self.prob, self.c.xi
        p_map, p_cont = coupled_threshold(params, prob.lambda_max, xi) if xi > 0 else (1.0, 1.0)
        return {
            "engine": self.eng,
            "array_module": self.xp.__name__,
            "n_spins": prob.n,
            "n_pulses": self.Nt,
            "runs": self.R,
            "round_trips": params.round_trips,
            "xi": xi,
            "spectral_radius": prob.spectral_radius,
            "lambda_min": prob.lambda_min,
            "lambda_max": prob.lambda_max,
            "coupling_scale": prob.coupling_scale,
            "coupling_quantization_error": prob.quant_error,
            "accumulation": {"dtype": prob.gemm_dtype, "chunks": list(prob.chunks)},
            "fpga_product": "int16x16->int32" if self.int_gemm else f"{prob.gemm_dtype} chunks",
            "p_threshold_map": p_map,
            "p_threshold_continuum": p_cont,
            "self_feedback": prob.self_feedback,
            "error_cap": self.c.e_cap,
            "stability_margin": params.dtau * xi * abs(prob.lambda_min + prob.self_feedback),
            "wall_time_s": time.perf_counter() - t_start,
        }


class _Batch:
    """Runs r0..r1-1 of a simulation: their pulses, the ADC codes of the last L+1 round trips
    (the FPGA's delay line), the error variables, and the round-trip loop. The counter-based
    noise of the CPU engine uses global run indices, so the split into batches does not change
    the result."""

    def __init__(self, sim: _Simulation, r0: int, r1: int, rng):
        self.sim, self.r0, self.rng = sim, r0, rng
        xp, dt, params, c, Nt = sim.xp, sim.dt, sim.params, sim.c, sim.Nt
        L = params.latency
        Rb = r1 - r0
        self.x = x = xp.empty((Rb, Nt), dtype=dt)
        self.y = y = xp.zeros((Rb, Nt), dtype=dt)
        self.F = None
        if sim.eng == "numba":
            from . import _fast

            self.F = _fast
            if sim.x0 is None:
                _fast.init_state(
                    x,
                    y,
                    _fast.step_keys(sim.base, -1),
                    np.float32(c.g / 2.0),
                    np.float32(params.init_amplitude or 0.0),
                    params.init_amplitude is not None,
                    r0,
                )
        elif sim.x0 is None:
            if params.init_amplitude is not None:
                x[...] = rng.uniform(-params.init_amplitude, params.init_amplitude, (Rb, Nt), dt)
            else:
                x[...] = (c.g / 2.0) * rng.normal((Rb, Nt), dt)
                y[...] = (c.g / 2.0) * rng.normal((Rb, Nt), dt)
        if sim.x0 is not None:
            x[...] = xp.asarray(np.ascontiguousarray(sim.x0[r0:r1]))
        if sim.int_gemm:
            self.codes = np.zeros((L + 1, Rb, _padded_width(Nt)), dtype=np.int16)
            self.gemm = _IntGemm(sim.prob, Rb, sim.m16) if c.coupled else None
        else:
            self.codes = xp.zeros((L + 1, Rb, Nt), dtype=dt)
            self.gemm = _Gemm(sim.prob, xp, Rb) if c.coupled else None
        full_e = c.mode or sim.eng == "numba"
        self.e = xp.ones((Rb, Nt), dtype=dt) if full_e else xp.ones((1, 1), dtype=dt)
        self.a_row = xp.zeros(Rb, dtype=dt)
        self.beta_row = xp.zeros(Rb, dtype=dt)
        if params.feedback == "ahc":
            self.a_row[...], self.beta_row[...] = params.ahc_target, params.ahc_beta
        elif params.feedback == "cfc":
            self.a_row[...], self.beta_row[...] = params.cfc_alpha, params.cfc_beta
        elif params.feedback == "cac":
            self.a_row[...], self.beta_row[...] = params.cac_alpha, params.cac_beta0
        self.best_E = self.best_S = None
        if sim.need_energy:
            self.best_E = xp.full(Rb, xp.inf, dtype=xp.float64)
            self.best_S = xp.ones((Rb, Nt), dtype=xp.int8) if sim.track_best else None
            if params.feedback == "cac":
                self.cac_best = xp.full(Rb, xp.inf, dtype=xp.float64)
                self.cac_last = xp.zeros(Rb, dtype=xp.int64)
                if c.mode == 3:
                    # "leleu": the energy of the state before the next step, and H_best over
                    # the states before it, both starting at x0's energy
                    self.cac_prev = sim.energies_of(_sign(xp, x, dt)).astype(xp.float64)
                    self.cac_best[...] = self.cac_prev
        self.loc_rec = None
        self.traj = []
        self.etraj = [] if params.feedback != "none" else None
        if sim.rec_idx is not None:
            sel = (sim.rec_idx >= r0) & (sim.rec_idx < r1)
            if np.any(sel):
                self.loc_rec = xp.asarray(sim.rec_idx[sel] - r0)
                self._record()

    def run(self):
        sim = self.sim
        params = sim.params
        K, L = params.round_trips, params.latency
        for k in range(K):
            if sim.cancel_check is not None and sim.cancel_check():
                raise InterruptedError("CIM simulation cancelled")
            p_k, xi_k = self._pump_and_gain(k)
            keys_k = self.F.step_keys(sim.base, k, 8) if self.F is not None else None
            self._measure(self.codes[k % (L + 1)], p_k, keys_k)  # steps 1-4 and the ADC
            if sim.c.coupled and k >= L:  # 5-6: FPGA and injection, measured L round trips ago
                self._inject(self.codes[(k - L) % (L + 1)], xi_k, keys_k)
            last = k == K - 1
            if sim.need_energy and (params.feedback == "cac" or last
                                    or (k + 1) % sim.best_every == 0):
                self._track_energy(k)
            if self.loc_rec is not None and ((k + 1) % sim.record_every == 0 or last):
                self._record()
        return self.x, self.y, self.best_S, self.traj, self.etraj

    def _record(self):
        """The amplitudes (and, with amplitude control, the error variables) of the recorded
        runs."""
        self.traj.append(self.x[self.loc_rec].copy())
        if self.etraj is not None:
            self.etraj.append(self.e[self.loc_rec].copy())

    def _pump_and_gain(self, k):
        """Step 1: the pump and the feedback gain of round trip k along the ramp."""
        params, c = self.sim.params, self.sim.c
        K_ramp = c.K_ramp
        ramp = 1.0 if K_ramp <= 0 else min(1.0, k / K_ramp)
        p_k = params.p0 + (params.p1 - params.p0) * ramp if K_ramp > 0 else params.p1
        xi_k = c.xi * (params.xi_start_fraction + (1.0 - params.xi_start_fraction) * ramp)
        # the self-feedback's extra gain xi_k*delta (plain mode only) is taken off the pump
        # at the start of the ramp and not at its end: the ramp starts below the coupled
        # threshold for every problem, and the final amplitudes keep the extra gain, as a
        # higher pump would (coupling.feedback_gain)
        if c.self_feedback:
            p_k = p_k - (1.0 - ramp) * xi_k * c.self_feedback
        return p_k, xi_k

    def _measure(self, code_out, p_k, keys_k):
        """Steps 2-4: gain, loss, homodyne measurement, ADC codes into ``code_out``."""
        sim = self.sim
        if self.F is not None:
            _numba_gain_loss_measure(self.F, self.x, self.y, code_out, p_k, sim.params, sim.c,
                                     keys_k, self.r0)
        else:
            _xp_gain_loss_measure(sim.xp, self.rng, self.x, self.y, code_out, p_k, sim.params,
                                  sim.dt, sim.c)

    def _inject(self, code_del, xi_k, keys_k):
        """Steps 5-6: the FPGA's product of the delayed codes, DAC, injection, error variables."""
        sim = self.sim
        acc = self.gemm(code_del)
        if self.F is not None:
            _numba_inject(self.F, self.x, acc, code_del, self.e, xi_k, sim.params, sim.c,
                          self.a_row, self.beta_row, keys_k, self.r0)
        else:
            _xp_inject(sim.xp, self.rng, self.x, acc, code_del, self.e, xi_k, sim.params,
                       sim.dt, sim.c, self.a_row, self.beta_row)

    def _track_energy(self, k):
        """The best spins seen so far, and CAC's per-run bookkeeping of the energy."""
        sim, xp, dt, params = self.sim, self.sim.xp, self.sim.dt, self.sim.params
        S = _sign(xp, self.x, dt)
        E = sim.energies_of(S).astype(xp.float64)
        if sim.track_best:
            better = E < self.best_E
            self.best_S[better] = S[better].astype(xp.int8)
            self.best_E[...] = xp.where(better, E, self.best_E)
        if params.feedback == "cac" and sim.c.mode == 3:
            self._cac_leleu(k, E)
        elif params.feedback == "cac":
            improved = E < self.cac_best
            self.cac_best[...] = xp.where(improved, E, self.cac_best)
            self._cac_rate_and_target(k, E, improved)

    def _cac_rate_and_target(self, k, H, improved):
        """CAC's per-run bookkeeping, shared by both variants: the rate grows by gamma per unit
        tau, or resets to beta0 when H_best has not improved (``improved``) for cac_tau round
        trips; the target a is set from the energy H against the current H_best."""
        sim, xp, dt, params = self.sim, self.sim.xp, self.sim.dt, self.sim.params
        self.cac_last[...] = xp.where(improved, k, self.cac_last)
        stale = (k - self.cac_last) >= params.cac_tau
        self.beta_row[...] = xp.where(
            stale, params.cac_beta0, self.beta_row + params.cac_gamma * params.dtau
        ).astype(dt)
        self.cac_last[...] = xp.where(stale, k, self.cac_last)
        dH = (H - self.cac_best) / max(sim.prob.spectral_radius, 1e-300)
        self.a_row[...] = (
            params.cac_alpha + params.cac_rho * xp.tanh(params.cac_delta * dH)
        ).astype(dt)

    def _cac_leleu(self, k, E):
        """cac_variant="leleu" after round trip k (E: energy of the signs after it): the rate
        grows (or resets), then the target of the next update is set from the energy of the
        signs *before* this step against the best of the steps before that, as cim-optimizer's
        CIM_CAC_GPU does; then that energy joins H_best."""
        H = self.cac_prev
        self._cac_rate_and_target(k, H, H < self.cac_best)
        self.cac_best[...] = self.sim.xp.minimum(self.cac_best, H)
        self.cac_prev = E


def _xp_gain_loss_measure(xp, rng, x, y, code_out, p_k, params, dt, c: _MapConstants):
    R, N = x.shape
    dtau = c.dtau
    if params.sigma_pump > 0:
        shape = (R, N) if params.pump_noise_per_pulse else (R, 1)
        p = p_k + params.sigma_pump * rng.normal(shape, dt)
    else:
        p = dt(p_k)
    if params.integrator == "euler":
        _xp_euler_drift_measure(xp, rng, x, y, code_out, p, params, dt, c)
        return
    if params.track_quadrature:
        s2 = x * x + y * y
        y *= xp.exp(dtau * (-p - s2))
        y *= c.sqrt_t
        if c.vac_std > 0:
            y += c.vac_std * rng.normal((R, N), dt)
    else:
        s2 = x * x
    x *= xp.exp(dtau * (p - s2)).astype(dt, copy=False)
    x *= dt(c.sqrt_t)
    if c.vac_std > 0:
        x += dt(c.vac_std) * rng.normal((R, N), dt)
    _xp_adc(xp, rng, x, code_out, params, dt, c)


def _xp_adc(xp, rng, x, code_out, params, dt, c: _MapConstants):
    """Step 4 and the ADC: homodyne noise on x, then the codes (or the analogue values)."""
    R, N = x.shape
    xm = x + dt(c.meas_std) * rng.normal((R, N), dt) if c.meas_std > 0 else x
    if params.adc_bits is not None:
        code_out[...] = xp.clip(xp.floor(xm * dt(1.0 / c.adc_lsb) + dt(0.5)), c.adc_lo, c.adc_hi)
    else:
        code_out[...] = xm


def _xp_euler_drift_measure(xp, rng, x, y, code_out, p, params, dt, c: _MapConstants):
    """integrator="euler": measure x at the start of the step, then one forward-Euler step of
    the gain/loss drift, x <- x + dtau (p - 1 - x^2 - y^2) x (the coupling follows in the
    injection step), plus the map's vacuum noise."""
    R, N = x.shape
    dtau, vac_std = c.dtau, c.vac_std
    _xp_adc(xp, rng, x, code_out, params, dt, c)
    s2 = x * x + y * y if params.track_quadrature else x * x
    if params.track_quadrature:
        y += dt(dtau) * (-p - 1 - s2) * y
        if vac_std > 0:
            y += dt(vac_std) * rng.normal((R, N), dt)
    x += (dt(dtau) * (p - 1 - s2) * x).astype(dt, copy=False)
    if vac_std > 0:
        x += dt(vac_std) * rng.normal((R, N), dt)


def _xp_inject(xp, rng, x, acc, code_del, e, xi_k, params, dt, c: _MapConstants, a_row,
               beta_row):
    if acc.shape[0] == 1:
        f = acc[0].astype(xp.float64) if acc.dtype != xp.float64 else acc[0]
    else:
        f = acc.sum(axis=0, dtype=xp.float64)
    f = (f * c.gain_scale).astype(dt)
    u = dt(xi_k) * f if c.mode == 0 else dt(xi_k) * e * f
    if params.dac_bits is not None:
        uq = xp.clip(xp.floor(u * dt(1.0 / c.dac_lsb) + dt(0.5)), c.dac_lo, c.dac_hi)
        uq = uq * dt(c.dac_lsb)
    else:
        uq = u
    if params.sigma_inj > 0:
        uq = uq * (1 + dt(params.sigma_inj) * rng.normal(x.shape, dt))
    x += dt(c.dtau) * uq.astype(dt, copy=False)
    if c.mode in (1, 3):
        xq = x if c.mode == 3 else code_del * dt(c.adc_lsb)
        e *= 1 - dt(c.dtau) * beta_row[:, None] * (xq * xq - a_row[:, None])
        xp.clip(e, params.e_min, c.e_cap, out=e)
    elif c.mode == 2:
        e *= 1 - dt(c.dtau) * beta_row[:, None] * (u * u - a_row[:, None])
        xp.clip(e, params.e_min, c.e_cap, out=e)


def sample(
    profile: HardwareProfile,
    J,
    h=None,
    *,
    runs: int | None = None,
    seed=None,
    xp=None,
    engine: str = "auto",
    track_best: bool = False,
    record_runs=0,
    **overrides,
) -> CIMResult:
    """Run a problem on a hardware profile: spin-limit check, the profile's parameters (with
    ``overrides``), and the device time of the task in ``info["device_time_s"]``.

    runs defaults to ``profile.default_runs`` (2000)."""
    from .timing import device_time

    prof = profile.replace(**overrides) if overrides else profile
    n = J.shape[0]
    has_field = h is not None and bool(np.any(np.asarray(h) != 0))
    check_problem(prof, n, has_field)
    runs = prof.default_runs if runs is None else runs
    # one integer seed for the simulation and the shot losses (an int passes through unchanged)
    base = int(seed) if isinstance(seed, (int, np.integer)) else seed_to_int(seed)
    res = simulate(
        J,
        h,
        prof.cim,
        runs=runs,
        seed=base,
        xp=xp,
        engine=engine,
        track_best=track_best,
        record_runs=record_runs,
    )
    res = lose_shots(prof, res, J, h, seed=base)
    res.info["profile"] = prof.name
    res.info["device_time_s"] = device_time(
        prof, n, runs, prof.cim.round_trips, has_field=has_field
    )
    return res


def lose_shots(profile: HardwareProfile, res: CIMResult, J, h=None, *, seed) -> CIMResult:
    """Apply ``profile.shot_loss`` to a result of :func:`simulate` on that profile (in place).

    The runs go ``copies_per_shot`` at a time (one run per shot without ``parallel_copies``),
    in order. Each shot is lost with probability ``shot_loss``, drawn from a stream of ``seed``
    separate from the simulation's: its feedback never reached the pulses, so they bifurcated
    uncoupled, each to a sign set by its own vacuum fluctuation, and every run in it reads
    independent uniform spins (with a field too: the ancilla is a pulse like the others).
    ``spins``, ``energies`` and the best-so-far (an uncoupled run has nothing better to
    remember than where its pulses froze) of those runs are replaced; recorded trajectories
    and amplitudes stay those of the coupled runs. ``info["lost_runs"]`` lists the runs.
    """
    from .timing import copies_per_shot

    q = float(profile.shot_loss)
    if q <= 0.0:
        return res
    R, n = res.spins.shape
    has_field = h is not None and bool(np.any(np.asarray(h) != 0))
    c = copies_per_shot(profile, n, has_field)
    rng = np.random.default_rng([seed_to_int(seed), 0x5_407_1055])
    lost_shot = rng.random(-(-R // c)) < q
    lost = np.flatnonzero(np.repeat(lost_shot, c)[:R])
    if lost.size:
        s = np.where(rng.random((lost.size, n)) < 0.5, -1, 1).astype(res.spins.dtype)
        e = ising_energy(J, h, s)
        res.spins[lost], res.energies[lost] = s, e
        if res.best_spins is not None:
            res.best_spins[lost], res.best_energies[lost] = s, e
    res.info["lost_runs"] = lost
    res.info["shot_loss"] = q
    return res
