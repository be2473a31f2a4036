"""Numba kernels of ``sa.cpu``: single-spin-flip simulated annealing over many independent reads.

Conventions: spins are int8 in {-1, +1}; ``E(s) = -1/2 s^T J s - h^T s`` with ``J`` symmetric and
zero on the diagonal. Each read keeps the local fields ``f = J s + h``; flipping spin ``i`` costs
``dE_i = 2 s_i f_i`` and, once ``s_i`` holds its new value, every field moves by
``f_j += 2 s_i J_ji`` (a contiguous row of dense ``J``, or one CSR row).

Randomness: read ``r`` uses only ``seed_streams[r]``: a splitmix64 expansion of it seeds a
xoshiro256++ generator that draws the initial spins (when ``initial_states`` is None) and every
uniform of that read. Results therefore do not depend on the number of threads or on how the reads
are chunked, and repeated calls are bit-identical.

Precision: float32 ``J``/fields make the dense row update about 1.6x faster (half the memory
traffic, twice the SIMD width; measured on SK n = 1000), but for general couplings they round
``J`` and let the fields drift by ~1e-7 relative per flip, so acceptance decisions near
``dE = 0`` (and the detailed balance of sampling runs) would no longer be those of the problem
given. So the fields are float64, except that the dense kernel switches to float32 when that is
provably exact: ``J`` and ``h`` integers (up to a power-of-two scale) with every field below
``2**24`` in magnitude (:func:`_dense_operands`); it then makes exactly the float64 decisions. The
sparse kernel (latency-bound, not bandwidth-bound) is always float64. The only float operations on
the fields are ``f_j + (+-2 J_ij)`` (multiplying by 2 is exact), and the initial fields are summed
in the same order (``j`` ascending) in both kernels, so the dense and the sparse kernel give
bit-identical reads for the same ``J`` and seeds.

Parallelism: kernels are compiled ``nogil=True`` and the reads are split into chunks run on a
``concurrent.futures.ThreadPoolExecutor`` (not ``parallel=True``: numba's workqueue threading layer
aborts when two Python threads enter parallel kernels at once, and jobs run in thread pools).
"""

from __future__ import annotations

import itertools
import math
import os
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

import numba as nb
import numpy as np
import scipy.sparse as sp

__all__ = ["ACCEPTANCES", "anneal"]

ACCEPTANCES = ("metropolis", "gibbs")

# A uniform is ``u = ((x >> 12) + 0.5) * 2**-52`` (exact), in [2**-53, 1 - 2**-53]: never 0 nor 1.
# exp(-38) is about 3.1e-17 < 2**-53 (1.1e-16), so for ``beta*dE > 38`` the Metropolis test
# ``u < exp(-beta dE)`` and the heat-bath test ``u < 1/(1 + exp(beta dE))`` are certainly false,
# and for ``beta*dE < -38`` the heat-bath probability rounds to 1.0 so its test is certainly true:
# skipping the draw there changes no decision.
_CUTOFF = 38.0

_U12 = np.uint64(12)
_U17 = np.uint64(17)
_U45 = np.uint64(45)
_U19 = np.uint64(19)  # 64 - 45
_U23 = np.uint64(23)
_U41 = np.uint64(41)  # 64 - 23
_U30 = np.uint64(30)
_U27 = np.uint64(27)
_U31 = np.uint64(31)
_U1 = np.uint64(1)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_TO_UNIT = 1.0 / 4503599627370496.0  # 2**-52


@nb.njit(inline="always")
def _splitmix64(x):
    """One splitmix64 step: returns (new state, output)."""
    x = x + _GOLDEN
    z = x
    z = (z ^ (z >> _U30)) * _MIX1
    z = (z ^ (z >> _U27)) * _MIX2
    return x, z ^ (z >> _U31)


@nb.njit(inline="always")
def _seed_state(seed):
    x = np.uint64(seed)
    x, a = _splitmix64(x)
    x, b = _splitmix64(x)
    x, c = _splitmix64(x)
    x, d = _splitmix64(x)
    return a, b, c, d


@nb.njit(inline="always")
def _xoshiro(s0, s1, s2, s3):
    """One xoshiro256++ step: returns (s0, s1, s2, s3, 64-bit output)."""
    out = s0 + s3
    out = ((out << _U23) | (out >> _U41)) + s0
    t = s1 << _U17
    s2 = s2 ^ s0
    s3 = s3 ^ s1
    s1 = s1 ^ s2
    s0 = s0 ^ s3
    s2 = s2 ^ t
    s3 = (s3 << _U45) | (s3 >> _U19)
    return s0, s1, s2, s3, out


@nb.njit(inline="always")
def _unit(x):
    """The top 52 bits of ``x`` as a double in (0, 1): ((x >> 12) + 0.5) * 2**-52, exactly."""
    return (np.float64(np.int64(x >> _U12)) + 0.5) * _TO_UNIT


@nb.njit(inline="always")
def _start_read(seed, init, has_init, r, s):
    """Seed read ``r``'s generator and write its initial spins into ``s``."""
    s0, s1, s2, s3 = _seed_state(seed)
    n = s.shape[0]
    if has_init:
        for i in range(n):
            s[i] = init[r, i]
    else:
        bits = np.uint64(0)
        for i in range(n):
            if i % 64 == 0:
                s0, s1, s2, s3, bits = _xoshiro(s0, s1, s2, s3)
            s[i] = 1 if (bits & _U1) else -1
            bits = bits >> _U1
    return s0, s1, s2, s3


_SLOTS = 64  # size of the per-read cache of acceptance probabilities (a power of two)
_BIG = 1e15  # |dE| beyond which the cache slot is 0 (keeps the float -> int conversion defined)


@nb.njit(inline="always")
def _accept(de, beta, gibbs, s0, s1, s2, s3, cache_x, cache_p):
    """Decide whether a spin whose flip costs ``de`` flips at inverse temperature ``beta``.

    Returns (flip, s0, s1, s2, s3). One uniform ``u`` is drawn unless the answer is certain
    without it (``beta*dE > 38``, and for the heat bath also ``beta*dE < -38``): Metropolis flips
    when ``u < exp(-beta max(dE, 0))``, the heat bath when ``u < 1/(1 + exp(beta dE))``. Drawing
    ``u`` for downhill Metropolis moves too (where it cannot change the answer, as u < 1) spares
    an unpredictable branch and is faster.

    ``cache_x``/``cache_p`` is a small direct-mapped cache ``x = beta*dE -> probability`` with
    slots picked by ``int(dE)``: problems with few distinct energy changes (integer couplings) call
    ``exp`` a handful of times per sweep instead of once per update. A hit needs the very same
    ``x``, so the cache never changes a decision.
    """
    x = beta * de
    if x > _CUTOFF:
        return False, s0, s1, s2, s3
    if gibbs:
        if x < -_CUTOFF:
            return True, s0, s1, s2, s3
    else:
        # downhill (x <= 0): p = exp(-0) = 1, all in slot 0
        de = max(de, 0.0)
        x = beta * de
    s0, s1, s2, s3, rnd = _xoshiro(s0, s1, s2, s3)
    slot = (np.int64(de) & (_SLOTS - 1)) if (de < _BIG and de > -_BIG) else 0
    # (read p on a hit, compute it on a miss: re-loading cache_p[slot] after a possible store
    # to it measured ~1.8x slower on the 3-regular MAX-CUT benchmark)
    if cache_x[slot] == x:
        p = cache_p[slot]
    else:
        p = 1.0 / (1.0 + math.exp(x)) if gibbs else math.exp(-x)
        cache_x[slot] = x
        cache_p[slot] = p
    return _unit(rnd) < p, s0, s1, s2, s3


@nb.njit(nogil=True, cache=True)
def _anneal_dense(J, h, two, unscale, betas, seeds, init, has_init, gibbs, out):
    """Anneal ``seeds.shape[0]`` reads into ``out`` (int8, (reads, n)) with dense ``J``.

    ``J``, ``h`` and ``two`` (= 2) share one float type, that of the fields. The energy change of
    a flip is ``2 s_i f_i * unscale`` (``unscale`` a power of two undoing an exact scaling of
    ``J`` and ``h``, see :func:`_dense_operands`).
    """
    n = J.shape[0]
    two_u = 2.0 * unscale
    f = np.empty_like(h)
    cache_x = np.full(_SLOTS, np.nan)  # NaN never equals anything: all slots start empty
    cache_p = np.zeros(_SLOTS)
    for r in range(seeds.shape[0]):
        s = out[r]
        s0, s1, s2, s3 = _start_read(seeds[r], init, has_init, r, s)
        # f = h + sum_j s_j J[j, :] (J symmetric), j ascending: the sparse kernel's order
        for i in range(n):
            f[i] = h[i]
        for j in range(n):
            row = J[j]
            if s[j] > 0:
                for i in range(n):
                    f[i] += row[i]
            else:
                for i in range(n):
                    f[i] -= row[i]
        for t in range(betas.shape[0]):
            beta = betas[t]
            for i in range(n):
                si = s[i]
                fi = f[i]
                de = two_u * fi if si > 0 else -two_u * fi
                flip, s0, s1, s2, s3 = _accept(de, beta, gibbs, s0, s1, s2, s3, cache_x, cache_p)
                if not flip:
                    continue
                # flip i; f_j += 2 s_i' J_ij  with s_i' = -si: one contiguous (SIMD) row update
                # (a select, not a branch on the sign: that branch would be unpredictable)
                c = -two if si > 0 else two
                s[i] = -si
                row = J[i]
                for j in range(n):
                    f[j] += c * row[j]


@nb.njit(nogil=True, cache=True)
def _anneal_sparse(indptr, indices, data, h, betas, seeds, init, has_init, gibbs, out):
    """Anneal ``seeds.shape[0]`` reads into ``out`` with CSR ``J`` (sorted column indices)."""
    n = h.shape[0]
    f = np.empty_like(h)
    cache_x = np.full(_SLOTS, np.nan)  # NaN never equals anything: all slots start empty
    cache_p = np.zeros(_SLOTS)
    for r in range(seeds.shape[0]):
        s = out[r]
        s0, s1, s2, s3 = _start_read(seeds[r], init, has_init, r, s)
        for i in range(n):
            f[i] = h[i]
        for j in range(n):
            if s[j] > 0:
                for k in range(indptr[j], indptr[j + 1]):
                    f[indices[k]] += data[k]
            else:
                for k in range(indptr[j], indptr[j + 1]):
                    f[indices[k]] -= data[k]
        for t in range(betas.shape[0]):
            beta = betas[t]
            for i in range(n):
                si = s[i]
                fi = f[i]
                de = 2.0 * fi if si > 0 else -2.0 * fi
                flip, s0, s1, s2, s3 = _accept(de, beta, gibbs, s0, s1, s2, s3, cache_x, cache_p)
                if not flip:
                    continue
                c = -2.0 if si > 0 else 2.0
                s[i] = -si
                for k in range(indptr[i], indptr[i + 1]):
                    f[indices[k]] += c * data[k]


_F32_INT_LIMIT = float(1 << 24)  # integers up to this magnitude are exact in float32
_MAX_SCALE_BITS = 8  # J, h that are integer multiples of 2**-k, k <= 8, qualify for float32
_ROW_BLOCK = 256


@nb.njit(cache=True, nogil=True)
def dense_abs_stats(J, h):  # pragma: no cover - compiled
    """``(max_i |h_i| + sum_j |J_ij|, min of the nonzero |J_ij|)`` (inf when J is all zero) in
    one pass over a dense ``J``, without the temporaries of ``abs(J)`` and its mask (a 256-spin
    job's schedule and operand checks cost ~0.15 ms of NumPy reductions before)."""
    n = J.shape[0]
    top, nz = 0.0, np.inf
    for i in range(n):
        row = J[i]
        s = 0.0
        for j in range(n):
            a = abs(row[j])
            s += a
            if a > 0.0 and a < nz:
                nz = a
        top = max(top, s + abs(h[i]))
    return top, nz


def _dense_operands(J: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, np.ndarray, object, float]:
    """The dense kernel's ``(J, h, two, unscale)``: float32 when that is exact, float64 otherwise.

    float32 halves the memory traffic of the row updates and doubles their SIMD width (about 1.6x
    faster on SK n = 1000), but in general it rounds couplings and fields, changing acceptance
    decisions. It is used only when every float32 operation of the kernel is exact: when, for some
    ``k <= 8``, ``2**k J`` and ``2**k h`` are integers and ``2**k max_i (|h_i| + sum_j |J_ij|) <=
    2**24``. Then every field (and every partial sum of one) is an integer below ``2**24``, so the
    float32 kernel makes bit-for-bit the decisions of the float64 one (``unscale = 2**-k`` is
    exact too). Otherwise (e.g. Gaussian couplings) ``J`` and the fields stay float64.
    """
    n = J.shape[0]
    # the fields decide first (n values): general float fields never touch J here
    scaled = [(sc, hs) for sc in (float(2 ** k) for k in range(_MAX_SCALE_BITS + 1))
              if np.array_equal(hs := h * sc, np.rint(hs))]
    if not scaled:
        return J, h, 2.0, 1.0
    bound = float(dense_abs_stats(J, h)[0])
    for sc, hs in scaled:
        if not np.isfinite(bound) or bound * sc > _F32_INT_LIMIT:
            break
        ok = True
        for a in range(0, n, _ROW_BLOCK):
            blk = J[a:a + _ROW_BLOCK] * sc
            if not np.array_equal(blk, np.rint(blk)):
                ok = False
                break
        if ok:
            return ((J * sc).astype(np.float32), hs.astype(np.float32), np.float32(2.0),
                    1.0 / sc)
    return J, h, 2.0, 1.0


def anneal(J, h, betas, *, num_reads: int, seed_streams, acceptance: str = "metropolis",
           initial_states=None, num_threads: int | None = None,
           cancel_check: Callable[[], bool] | None = None) -> np.ndarray:
    """Run ``num_reads`` independent annealing reads; returns their final spins, (num_reads, n) int8.

    Parameters
    ----------
    J : (n, n) float64 ndarray or scipy.sparse matrix
        Symmetric couplings with zero diagonal (symmetry is the caller's promise: it is not
        checked). Sparse input is used as CSR with sorted indices.
    h : (n,) float64
    betas : (num_sweeps,) float64
        One sweep (all spins in index order) per beta.
    num_reads : int
    seed_streams : (num_reads,) uint64
        One seed per read; read ``r`` depends on ``seed_streams[r]`` only.
    acceptance : ``"metropolis"`` or ``"gibbs"``
    initial_states : (num_reads, n) array of +-1, optional
        Starting spins (default: uniformly random from each read's stream).
    num_threads : int, optional
        Worker threads (default ``os.cpu_count()``). Never changes the result.
    cancel_check : callable, optional
        Called between chunks of reads; when it returns True the run stops and
        ``InterruptedError`` is raised.
    """
    if acceptance not in ACCEPTANCES:
        raise ValueError(f"acceptance must be one of {ACCEPTANCES}, got {acceptance!r}")
    gibbs = acceptance == "gibbs"
    num_reads = int(num_reads)
    if num_reads < 0:
        raise ValueError(f"num_reads must be >= 0, got {num_reads}")

    sparse = sp.issparse(J)
    if sparse:
        Jc = sp.csr_matrix(J, dtype=np.float64)
        if not Jc.has_canonical_format:
            Jc = Jc.copy()
            Jc.sum_duplicates()  # also sorts the indices
        n = Jc.shape[0]
        if Jc.shape != (n, n):
            raise ValueError(f"J must be square, got shape {Jc.shape}")
        indptr = Jc.indptr
        if indptr.dtype not in (np.int32, np.int64):
            indptr = indptr.astype(np.int64)
        indices = Jc.indices.astype(np.int32, copy=False)
        data = np.ascontiguousarray(Jc.data, dtype=np.float64)
        if np.any(Jc.diagonal() != 0):
            raise ValueError("J must have a zero diagonal")
    else:
        Jd = np.ascontiguousarray(J, dtype=np.float64)
        if Jd.ndim != 2 or Jd.shape[0] != Jd.shape[1]:
            raise ValueError(f"J must be a square matrix, got shape {Jd.shape}")
        n = Jd.shape[0]
        if np.any(np.diagonal(Jd) != 0):
            raise ValueError("J must have a zero diagonal")

    hv = np.ascontiguousarray(h, dtype=np.float64)
    if hv.shape != (n,):
        raise ValueError(f"h must have shape ({n},), got {hv.shape}")
    if not sparse:
        Jk, hk, two, unscale = _dense_operands(Jd, hv)
    bv = np.ascontiguousarray(betas, dtype=np.float64)
    if bv.ndim != 1:
        raise ValueError("betas must be a 1-D array")
    seeds = np.ascontiguousarray(seed_streams, dtype=np.uint64)
    if seeds.shape != (num_reads,):
        raise ValueError(f"seed_streams must have shape ({num_reads},), got {seeds.shape}")
    if initial_states is None:
        has_init = False
        init = np.zeros((1, 1), dtype=np.int8)
    else:
        has_init = True
        init = np.ascontiguousarray(initial_states, dtype=np.int8)
        if init.shape != (num_reads, n):
            raise ValueError(f"initial_states must have shape ({num_reads}, {n}), got {init.shape}")
        if np.any((init != 1) & (init != -1)):
            raise ValueError("initial_states must hold only -1 and +1")

    out = np.empty((num_reads, n), dtype=np.int8)
    if num_reads == 0 or n == 0:
        return out

    def run_chunk(lo: int, hi: int) -> None:
        ini = init[lo:hi] if has_init else init
        if sparse:
            _anneal_sparse(indptr, indices, data, hv, bv, seeds[lo:hi], ini, has_init, gibbs,
                           out[lo:hi])
        else:
            _anneal_dense(Jk, hk, two, unscale, bv, seeds[lo:hi], ini, has_init, gibbs, out[lo:hi])

    threads = (os.cpu_count() or 1) if num_threads is None else int(num_threads)
    if threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    threads = min(threads, num_reads)
    # >= 4 chunks per thread (when there are enough reads) for load balance and so that a
    # cancellation is noticed within a fraction of the run
    nchunks = min(num_reads, 4 * threads) if (threads > 1 or cancel_check is not None) else 1
    bounds = np.linspace(0, num_reads, nchunks + 1).round().astype(int)
    chunks = [(int(a), int(b)) for a, b in itertools.pairwise(bounds) if b > a]

    def cancelled() -> bool:
        return cancel_check is not None and bool(cancel_check())

    if threads == 1:
        for lo, hi in chunks:
            if cancelled():
                raise InterruptedError("annealing cancelled")
            run_chunk(lo, hi)
        return out

    if cancelled():
        raise InterruptedError("annealing cancelled")
    stop = threading.Event()

    def task(lo: int, hi: int) -> None:
        if not stop.is_set():
            run_chunk(lo, hi)

    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="kpp-sa") as pool:
        pending = {pool.submit(task, lo, hi) for lo, hi in chunks}
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    fut.result()  # re-raise a kernel error
                if pending and cancelled():
                    raise InterruptedError("annealing cancelled")
        except BaseException:
            stop.set()
            for fut in pending:
                fut.cancel()
            raise
    return out
