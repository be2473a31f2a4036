"""Numba kernels of ``sa.cpu``: single-spin-flip simulated annealing over many independent reads.

Conventions: spins are int8 in {-1, +1}; ``E(s) = -1/2 s^T J s - h^T s`` with ``J`` symmetric and
zero on the diagonal. Each read keeps the local fields ``f = J s + h``; flipping spin ``i`` costs
``dE_i = 2 s_i f_i`` and, once ``s_i`` holds its new value, every field moves by
``f_j += 2 s_i J_ji`` (a contiguous row of dense ``J``, or one CSR row).

Randomness: read ``r`` uses only ``seed_streams[r]``: a splitmix64 expansion of it seeds a
xoshiro256++ generator that draws the initial spins (when ``initial_states`` is None) and every
uniform of that read. Results therefore do not depend on the number of threads, on how the reads
are chunked or grouped, or on which kernel runs them, and repeated calls are bit-identical.

Acceptance: a uniform is ``u = (k + 1/2) 2**-52`` with ``k`` the top 52 bits of one 64-bit draw,
and a spin flips when ``u < p`` (``p = exp(-beta max(dE, 0))`` for Metropolis, ``1/(1 +
exp(beta dE))`` for the heat bath). That is the integer test ``k < T(p)`` with ``T(p) =
ceil(p 2**52 - 1/2)`` (exact in float64 for p in [0, 1]), so every kernel compares integers and a
threshold can be computed once and reused (:func:`_threshold`). No uniform is drawn when the answer
is certain without it (``beta dE > 38``: exp(-38) < 2**-53, never; heat bath with
``beta dE < -38``: always). The float kernels spare most ``exp`` calls with a cache and a quick
rejection (:func:`_accept`); neither changes a decision or a draw.

Kernels (chosen by :func:`anneal`, all making bit-identical decisions for the same problem and
seeds, which the tests check):

* dense (:func:`_anneal_dense`): ``J`` as an ``(n, n)`` array, one contiguous SIMD row update per
  flip. Memory-bound, so ``J`` and the fields are float32 when that is provably exact (``J`` and
  ``h`` integers up to a power-of-two scale with every field below ``2**24``,
  :func:`_dense_operands`), float64 otherwise. Float32 fields for general couplings would round
  ``J`` and drift by ~1e-7 relative per flip, changing decisions near ``dE = 0`` and the detailed
  balance of sampling runs.
* sparse (:func:`_anneal_sparse`): CSR rows, float64 fields, a small cache ``beta dE -> T`` that
  spares most ``exp`` calls when few distinct energy changes occur.
* sparse integer (:func:`_anneal_sparse_int`): CSR with integer couplings and fields (up to a
  power-of-two scale): int32 fields, and a table of the thresholds of every possible ``s_i f_i``,
  built once per sweep for a group of reads, replaces the float arithmetic, the ``exp`` and the
  cache of the float kernel (about 1.5x faster on 3-regular MAX-CUT).

A dense array that is mostly zeros runs on a sparse kernel (:data:`SPARSE_DENSITY`).

The only float operations on the fields are ``f_j + (+-2 J_ij)`` (multiplying by 2 is exact), and
the initial fields are summed in the same order (``j`` ascending) in every kernel; with integer
data every partial sum is exact. Hence the kernels' identical decisions.

Parallelism: kernels are compiled ``nogil=True`` and the reads are split into chunks run on a
``concurrent.futures.ThreadPoolExecutor`` (not ``parallel=True``: numba's workqueue threading layer
aborts when two Python threads enter parallel kernels at once, and jobs run in thread pools).

Cancellation: every kernel reads a one-byte ``stop`` flag once per sweep and returns when it is
set; while kernels run, :func:`anneal` polls ``cancel_check`` every :data:`POLL_S` seconds and sets
the flag. A running job therefore stops within ``POLL_S`` plus one sweep of ``cancel()``; a sweep
of dense n = 10,000 with every spin flipping is ~25 ms, sparse sweeps take microseconds per
thousand spins.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

import numba as nb
import numpy as np
import scipy.sparse as sp

__all__ = ["ACCEPTANCES", "POLL_S", "SPARSE_DENSITY", "anneal", "kernel_for", "row_stats"]

ACCEPTANCES = ("metropolis", "gibbs")

#: A dense ``J`` with at most this fraction of nonzero entries runs on a sparse kernel: a flip
#: then updates its nonzero neighbours only. Measured crossovers (n = 1000, one core, random
#: graphs): ~15 % for float64 rows (Gaussian couplings), ~9 % for exact float32 rows (+-1), which
#: stream twice as fast; at 2 % density the sparse kernels are 3x faster.
SPARSE_DENSITY = {np.dtype(np.float64): 0.15, np.dtype(np.float32): 0.08}

#: Seconds between two polls of ``cancel_check`` while kernels run.
POLL_S = 0.02

# Work below this many estimated seconds runs inline (no polling thread) when single-threaded.
_INLINE_S = 0.02

_CUTOFF = 38.0  # exp(-38) ~ 3.1e-17 < 2**-53: beyond it the answer is certain (see module doc)
_TWO52 = 4503599627370496.0  # 2**52
_CERTAIN = np.int64(1 << 62)  # threshold meaning "flip without drawing"
_NEVER = np.int64(-1)  # threshold meaning "keep without drawing"

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


@nb.njit(inline="always")
def _threshold(x, gibbs):
    """The integer threshold of a move with ``x = beta dE``: :data:`_NEVER` (keep, no draw),
    :data:`_CERTAIN` (flip, no draw), or ``T`` in [0, 2**52]: draw, flip iff ``(draw >> 12) < T``.

    ``T = ceil(p 2**52 - 1/2)`` makes the integer test equal to ``u < p`` for the uniform
    ``u = ((draw >> 12) + 1/2) 2**-52``: ``p 2**52`` is exact, and so is subtracting 1/2 for
    ``p 2**52 >= 1/2`` (below, the sign of the result, all that ``ceil`` needs, is exact).
    Metropolis draws for downhill moves too (T = 2**52, certain): it spares a branch that the
    CPU cannot predict and is faster.
    """
    if x > _CUTOFF:
        return _NEVER
    if gibbs:
        if x < -_CUTOFF:
            return _CERTAIN
        p = 1.0 / (1.0 + math.exp(x))
    else:
        p = math.exp(-max(x, 0.0))
    return np.int64(math.ceil(p * _TWO52 - 0.5))


@nb.njit(inline="always")
def _decide(T, s0, s1, s2, s3):
    """Apply a threshold: returns (flip, s0, s1, s2, s3), drawing only when ``T`` needs it."""
    if T < 0:
        return False, s0, s1, s2, s3
    if T > np.int64(1 << 52):
        return True, s0, s1, s2, s3
    s0, s1, s2, s3, rnd = _xoshiro(s0, s1, s2, s3)
    return np.int64(rnd >> _U12) < T, s0, s1, s2, s3


_TO_UNIT = 1.0 / _TWO52
_SLOTS = 64  # size of the per-read cache of thresholds (a power of two)
_BIG = 1e15  # |dE| beyond which the cache slot is 0 (keeps the float -> int conversion defined)


_QUICK = 1.0  # beta dE above which a draw is first compared with a cheap bound of p
_MARGIN = 1.0 + 1e-12  # covers the rounding of the bound (a few ulps) with room to spare


@nb.njit(inline="always")
def _accept(de, beta, gibbs, s0, s1, s2, s3, cache_x, cache_t):
    """Decide whether a spin whose flip costs ``de`` flips: returns (flip, s0, s1, s2, s3).

    The decision is that of :func:`_threshold` and :func:`_decide`, made with fewer ``exp``:

    * a small direct-mapped cache ``x = beta dE -> T`` with slots picked by ``int(dE)`` serves
      problems with few distinct energy changes (integer couplings) from a handful of ``exp``
      calls per sweep; a hit needs the very same ``x``, so it never changes a decision;
    * for ``x > 1`` the draw is first compared with ``1 / (1 + x + x**2/2 + x**3/6)``, an upper
      bound of ``exp(-x)`` (and of the heat bath's ``1 / (1 + exp(x))``): a uniform above it is
      a rejection without any ``exp`` (97 % of them at ``x = 5``). Continuous couplings miss the
      cache, so this is what spares their ``exp`` calls.
    """
    if not gibbs:
        de = max(de, 0.0)  # downhill: x = 0, p = 1, all in slot 0
    x = beta * de
    if x > _CUTOFF:
        return False, s0, s1, s2, s3
    slot = (np.int64(de) & (_SLOTS - 1)) if (de < _BIG and de > -_BIG) else 0
    # (read T on a hit, compute it on a miss: re-loading cache_t[slot] after a possible store
    # to it measured ~1.8x slower on the 3-regular MAX-CUT benchmark)
    if cache_x[slot] == x:
        return _decide(cache_t[slot], s0, s1, s2, s3)
    if x > _QUICK:
        s0, s1, s2, s3, rnd = _xoshiro(s0, s1, s2, s3)
        k = np.int64(rnd >> _U12)
        bound = 1.0 / (1.0 + x * (1.0 + x * (0.5 + x * (1.0 / 6.0))))
        if (np.float64(k) + 0.5) * _TO_UNIT >= bound * _MARGIN:
            return False, s0, s1, s2, s3
        T = _threshold(x, gibbs)
        cache_x[slot] = x
        cache_t[slot] = T
        return k < T, s0, s1, s2, s3
    T = _threshold(x, gibbs)
    cache_x[slot] = x
    cache_t[slot] = T
    return _decide(T, s0, s1, s2, s3)


@nb.njit(nogil=True, cache=True)
def _anneal_dense(J, h, two, unscale, betas, seeds, init, has_init, gibbs, out, stop):
    """Anneal ``seeds.shape[0]`` reads into ``out`` (int8, (reads, n)) with dense ``J``.

    ``J``, ``h`` and ``two`` (= 2) share one float type, that of the fields. The energy change of
    a flip is ``2 s_i f_i * unscale`` (``unscale`` a power of two undoing an exact scaling of
    ``J`` and ``h``, see :func:`_dense_operands`). Returns early when ``stop[0]`` is set.
    """
    n = J.shape[0]
    two_u = 2.0 * unscale
    f = np.empty_like(h)
    cache_x = np.full(_SLOTS, np.nan)  # NaN never equals anything: all slots start empty
    cache_t = np.zeros(_SLOTS, dtype=np.int64)
    for r in range(seeds.shape[0]):
        s = out[r]
        s0, s1, s2, s3 = _start_read(seeds[r], init, has_init, r, s)
        # f = h + sum_j s_j J[j, :] (J symmetric), j ascending: the sparse kernels' order
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
            if stop[0]:
                return
            beta = betas[t]
            for i in range(n):
                si = s[i]
                fi = f[i]
                de = two_u * fi if si > 0 else -two_u * fi
                flip, s0, s1, s2, s3 = _accept(de, beta, gibbs, s0, s1, s2, s3, cache_x, cache_t)
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
def _anneal_sparse(indptr, indices, data, h, betas, seeds, init, has_init, gibbs, out, stop):
    """Anneal ``seeds.shape[0]`` reads into ``out`` with CSR ``J`` (sorted column indices),
    float64 fields. Returns early when ``stop[0]`` is set."""
    n = h.shape[0]
    f = np.empty_like(h)
    cache_x = np.full(_SLOTS, np.nan)
    cache_t = np.zeros(_SLOTS, dtype=np.int64)
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
            if stop[0]:
                return
            beta = betas[t]
            for i in range(n):
                si = s[i]
                fi = f[i]
                de = 2.0 * fi if si > 0 else -2.0 * fi
                flip, s0, s1, s2, s3 = _accept(de, beta, gibbs, s0, s1, s2, s3, cache_x, cache_t)
                if not flip:
                    continue
                c = -2.0 if si > 0 else 2.0
                s[i] = -si
                for k in range(indptr[i], indptr[i + 1]):
                    f[indices[k]] += c * data[k]


#: Reads that share one threshold table per sweep in :func:`_anneal_sparse_int`.
_GROUP = 8


@nb.njit(nogil=True, cache=True)
def _anneal_sparse_int(indptr, indices, data, h, K, two_u, betas, seeds, init, has_init, gibbs,
                       out, stop):
    """Anneal with CSR ``J`` whose ``data`` and ``h`` are int32 (the problem scaled by an exact
    power of two; ``two_u`` = 2 / scale turns ``s_i f_i`` into ``dE``). ``K`` bounds ``|f_i|``.

    Per sweep, the thresholds of every ``v = s_i f_i`` in ``[-K, K]`` are computed once for a
    group of :data:`_GROUP` reads (only those with ``beta dE <= 38`` call ``exp``); an update is
    then one table look-up and, when needed, one draw. Returns early when ``stop[0]`` is set.
    """
    n = h.shape[0]
    R = seeds.shape[0]
    thr = np.empty(2 * K + 1, dtype=np.int64)
    F = np.empty((_GROUP, n), dtype=np.int32)
    st = np.empty((_GROUP, 4), dtype=np.uint64)
    for g0 in range(0, R, _GROUP):
        g1 = min(g0 + _GROUP, R)
        for r in range(g0, g1):
            s = out[r]
            q = r - g0
            st[q, 0], st[q, 1], st[q, 2], st[q, 3] = _start_read(seeds[r], init, has_init, r, s)
            f = F[q]
            for i in range(n):
                f[i] = h[i]
            for j in range(n):
                sj = np.int32(s[j])
                for k in range(indptr[j], indptr[j + 1]):
                    f[indices[k]] += sj * data[k]
        for t in range(betas.shape[0]):
            if stop[0]:
                return
            beta = betas[t]
            for v in range(-K, K + 1):
                thr[v + K] = _threshold(beta * (two_u * v), gibbs)
            for r in range(g0, g1):
                q = r - g0
                s = out[r]
                f = F[q]
                s0, s1, s2, s3 = st[q, 0], st[q, 1], st[q, 2], st[q, 3]
                for i in range(n):
                    si = s[i]
                    flip, s0, s1, s2, s3 = _decide(thr[si * f[i] + K], s0, s1, s2, s3)
                    if not flip:
                        continue
                    c = np.int32(-2 * si)
                    s[i] = -si
                    for k in range(indptr[i], indptr[i + 1]):
                        f[indices[k]] += c * data[k]
                st[q, 0], st[q, 1], st[q, 2], st[q, 3] = s0, s1, s2, s3


_F32_INT_LIMIT = float(1 << 24)  # integers up to this magnitude are exact in float32
_INT_LIMIT = float(1 << 29)  # int32 fields and 2 J_ij stay far from overflow
_MAX_SCALE_BITS = 8  # J, h that are integer multiples of 2**-k, k <= 8, count as integer
_ROW_BLOCK = 256


@nb.njit(cache=True, nogil=True)
def _dense_row_stats(J, h):  # pragma: no cover - compiled
    """Per row of a dense ``J``: ``sum_j |J_ij| + |h_i|``, ``h_i**2 + sum_j J_ij**2``, the
    smallest nonzero ``|J_ij|`` or ``|h_i|`` (inf when none), and the number of nonzero ``J_ij``,
    in one pass without ``n x n`` temporaries (this runs on every submit)."""
    n = J.shape[0]
    abs_sum = np.empty(n)
    sq_sum = np.empty(n)
    nz_min = np.empty(n)
    nnz = 0
    for i in range(n):
        row = J[i]
        a = abs(h[i])
        q = h[i] * h[i]
        m = a if a > 0.0 else np.inf
        for j in range(n):
            x = row[j]
            b = abs(x)
            a += b
            q += x * x
            if b > 0.0:
                nnz += 1
                m = min(m, b)
        abs_sum[i] = a
        sq_sum[i] = q
        nz_min[i] = m
    return abs_sum, sq_sum, nz_min, nnz


def row_stats(J, h: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Per spin ``i``: ``|h_i| + sum_j |J_ij|`` (the largest possible ``|f_i|``), ``h_i**2 +
    sum_j J_ij**2`` (the mean square of ``f_i`` over uniformly random spins), the smallest nonzero
    coefficient ``|J_ij|`` or ``|h_i|`` (inf when none); and the number of nonzero ``J_ij``.
    Dense or sparse ``J``; used by the default schedule and the kernel choice."""
    h = np.ascontiguousarray(h, dtype=np.float64)
    if not sp.issparse(J):
        return _dense_row_stats(np.ascontiguousarray(J, dtype=np.float64), h)
    Jc = sp.csr_matrix(J)
    if not Jc.has_canonical_format:
        Jc = Jc.copy()
        Jc.sum_duplicates()
    a = np.abs(Jc.data)
    n = Jc.shape[0]
    rows = np.repeat(np.arange(n), np.diff(Jc.indptr))
    abs_sum = np.bincount(rows, weights=a, minlength=n) + np.abs(h)
    sq_sum = np.bincount(rows, weights=a * a, minlength=n) + h * h
    nz_min = np.full(n, np.inf)
    nz = a > 0
    np.minimum.at(nz_min, rows[nz], a[nz])
    hz = h != 0
    nz_min[hz] = np.minimum(nz_min[hz], np.abs(h[hz]))
    return abs_sum, sq_sum, nz_min, int(np.count_nonzero(a))


def _integer_scale(values: list[np.ndarray], bound: float, limit: float) -> float | None:
    """The smallest ``2**k`` (k <= 8) making every array in ``values`` integral with ``bound *
    2**k <= limit``; None when there is none. The cheap arrays go first in ``values``."""
    if not np.isfinite(bound):
        return None
    for k in range(_MAX_SCALE_BITS + 1):
        sc = float(2 ** k)
        if bound * sc > limit:
            return None
        if all(_is_integral(v, sc) for v in values):
            return sc
    return None


def _is_integral(v: np.ndarray, sc: float) -> bool:
    """Whether ``v * sc`` is integral, by blocks of rows (no n x n temporaries at once)."""
    for a in range(0, max(v.shape[0], 1), _ROW_BLOCK):
        w = v[a:a + _ROW_BLOCK] * sc
        if not np.array_equal(w, np.rint(w)):
            return False
    return True


def _dense_operands(J: np.ndarray, h: np.ndarray, bound: float | None = None
                    ) -> tuple[np.ndarray, np.ndarray, object, float]:
    """The dense kernel's ``(J, h, two, unscale)``: float32 when that is exact, float64 otherwise.

    float32 halves the memory traffic of the row updates and doubles their SIMD width (about 1.6x
    faster on SK n = 1000), but in general it rounds couplings and fields, changing acceptance
    decisions. It is used only when every float32 operation of the kernel is exact: when, for some
    ``k <= 8``, ``2**k J`` and ``2**k h`` are integers and ``2**k max_i (|h_i| + sum_j |J_ij|) <=
    2**24``. Then every field (and every partial sum of one) is an integer below ``2**24``, so the
    float32 kernel makes bit-for-bit the decisions of the float64 one (``unscale = 2**-k`` is
    exact too). Otherwise (e.g. Gaussian couplings) ``J`` and the fields stay float64.
    ``bound``: ``max_i (|h_i| + sum_j |J_ij|)`` when the caller has it.
    """
    sc = _float32_scale(J, h, bound)
    if sc is None:
        return J, h, 2.0, 1.0
    return (J * sc).astype(np.float32), (h * sc).astype(np.float32), np.float32(2.0), 1.0 / sc


def _float32_scale(J: np.ndarray, h: np.ndarray, bound: float | None = None) -> float | None:
    """The scale ``2**k`` of :func:`_dense_operands`, or None when float32 is not exact."""
    # the fields decide first (n values): general float fields never touch J here
    if not _is_integral(h, float(2 ** _MAX_SCALE_BITS)):
        return None
    if bound is None:
        bound = float(row_stats(J, h)[0].max(initial=0.0))
    return _integer_scale([h, J], bound, _F32_INT_LIMIT)


def _table_affordable(K: int, scale: float, betas: np.ndarray, n: int, gibbs: bool) -> bool:
    """Whether the per-sweep threshold tables of :func:`_anneal_sparse_int` cost at most half of
    the sweeps' updates. Per sweep and group of reads, the entries with ``beta dE <= 38`` (both
    signs for the heat bath) call ``exp`` (~20 ns), the others only store (~1 ns); an update costs
    ~5 ns."""
    if betas.size == 0:
        return True
    with np.errstate(divide="ignore", over="ignore"):
        reach = np.minimum(K, np.floor(_CUTOFF * scale / (2.0 * np.maximum(betas, 1e-300))))
    exps = float(reach.sum()) * (2 if gibbs else 1)
    table_ns = (20.0 * exps + (2 * K + 1) * betas.size) / _GROUP
    return table_ns <= 2.5 * n * betas.size


def kernel_for(J, h: np.ndarray, betas: np.ndarray | None = None,
               acceptance: str = "metropolis") -> str:
    """Which kernel :func:`anneal` runs for these operands: ``"dense"``, ``"dense-float32"``,
    ``"sparse"`` or ``"sparse-int"``."""
    betas = np.zeros(1) if betas is None else np.asarray(betas, dtype=np.float64)
    return _operands(J, np.asarray(h, dtype=np.float64), betas, acceptance == "gibbs")[0]


def _operands(J, h: np.ndarray, betas: np.ndarray, gibbs: bool) -> tuple[str, tuple]:
    """Pick the kernel and build its operands (see the module docstring)."""
    n = h.shape[0]
    if sp.issparse(J):
        Jc = sp.csr_matrix(J, dtype=np.float64)
        if not Jc.has_canonical_format:
            Jc = Jc.copy()
            Jc.sum_duplicates()  # also sorts the indices
        abs_sum = None
    else:
        abs_sum, _, _, nnz = _dense_row_stats(J, h)
        bound = float(abs_sum.max(initial=0.0))
        sc = _float32_scale(J, h, bound)
        if nnz > SPARSE_DENSITY[np.dtype(np.float64 if sc is None else np.float32)] * n * n:
            if sc is None:
                return "dense", (J, h, 2.0, 1.0)
            return "dense-float32", ((J * sc).astype(np.float32), (h * sc).astype(np.float32),
                                     np.float32(2.0), 1.0 / sc)
        Jc = sp.csr_matrix(J)
        Jc.sort_indices()
    if abs_sum is None:
        abs_sum = np.bincount(np.repeat(np.arange(n), np.diff(Jc.indptr)),
                              weights=np.abs(Jc.data), minlength=n) + np.abs(h)
    bound = float(abs_sum.max(initial=0.0))
    indptr = Jc.indptr if Jc.indptr.dtype in (np.int32, np.int64) else Jc.indptr.astype(np.int64)
    indices = Jc.indices.astype(np.int32, copy=False)
    sc = _integer_scale([h, Jc.data], bound, _INT_LIMIT)
    if sc is not None:
        K = int(bound * sc)
        if _table_affordable(K, sc, betas, n, gibbs):
            return "sparse-int", (indptr, indices, (Jc.data * sc).astype(np.int32),
                                  (h * sc).astype(np.int32), K, 2.0 / sc)
    return "sparse", (indptr, indices, np.ascontiguousarray(Jc.data, dtype=np.float64), h)


def _work_seconds(kind: str, args: tuple, n: int, reads: int, sweeps: int) -> float:
    """A rough upper estimate of the kernels' CPU seconds: ~5 ns per update plus, per sweep, one
    update of every coupling (all spins flipping)."""
    if kind.startswith("dense"):
        couplings = n * n / (8 if kind == "dense-float32" else 4)
    else:
        couplings = 2.0 * args[1].shape[0]
    return reads * sweeps * (5e-9 * n + 1e-9 * couplings)


def anneal(J, h, betas, *, num_reads: int, seed_streams, acceptance: str = "metropolis",
           initial_states=None, num_threads: int | None = None,
           cancel_check: Callable[[], bool] | None = None) -> np.ndarray:
    """Run ``num_reads`` independent annealing reads; returns their final spins, (num_reads, n) int8.

    Parameters
    ----------
    J : (n, n) float64 ndarray or scipy.sparse matrix
        Symmetric couplings with zero diagonal (symmetry is the caller's promise: it is not
        checked). A dense array with few nonzeros runs on a sparse kernel.
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
        Polled every :data:`POLL_S` seconds while the kernels run (they stop within one sweep of
        being told); when it returns True the run stops and ``InterruptedError`` is raised.
        Results do not depend on whether it is given.
    """
    if acceptance not in ACCEPTANCES:
        raise ValueError(f"acceptance must be one of {ACCEPTANCES}, got {acceptance!r}")
    gibbs = acceptance == "gibbs"
    num_reads = int(num_reads)
    if num_reads < 0:
        raise ValueError(f"num_reads must be >= 0, got {num_reads}")

    if sp.issparse(J):
        n = J.shape[0]
        if J.shape != (n, n):
            raise ValueError(f"J must be square, got shape {J.shape}")
        if np.any(J.diagonal() != 0):
            raise ValueError("J must have a zero diagonal")
    else:
        J = np.ascontiguousarray(J, dtype=np.float64)
        if J.ndim != 2 or J.shape[0] != J.shape[1]:
            raise ValueError(f"J must be a square matrix, got shape {J.shape}")
        n = J.shape[0]
        if np.any(np.diagonal(J) != 0):
            raise ValueError("J must have a zero diagonal")

    hv = np.ascontiguousarray(h, dtype=np.float64)
    if hv.shape != (n,):
        raise ValueError(f"h must have shape ({n},), got {hv.shape}")
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
    threads = (os.cpu_count() or 1) if num_threads is None else int(num_threads)
    if threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")

    out = np.empty((num_reads, n), dtype=np.int8)
    if num_reads == 0 or n == 0:
        return out

    kind, args = _operands(J, hv, bv, gibbs)
    stop = np.zeros(1, dtype=np.uint8)

    def run_chunk(lo: int, hi: int) -> None:
        ini = init[lo:hi] if has_init else init
        tail = (bv, seeds[lo:hi], ini, has_init, gibbs, out[lo:hi], stop)
        if kind == "sparse-int":
            _anneal_sparse_int(*args, *tail)
        elif kind == "sparse":
            _anneal_sparse(*args, *tail)
        else:
            _anneal_dense(*args, *tail)

    threads = min(threads, num_reads)
    # >= 4 chunks per thread (when there are enough reads) for load balance
    nchunks = min(num_reads, 4 * threads) if threads > 1 else 1
    bounds = np.linspace(0, num_reads, nchunks + 1).round().astype(int)
    chunks = [(int(a), int(b)) for a, b in itertools.pairwise(bounds) if b > a]

    def cancelled() -> bool:
        return cancel_check is not None and bool(cancel_check())

    if cancelled():
        raise InterruptedError("annealing cancelled")
    if threads == 1 and (cancel_check is None or
                         _work_seconds(kind, args, n, num_reads, bv.size) < _INLINE_S):
        run_chunk(0, num_reads)
        return out

    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="kpp-sa") as pool:
        pending = {pool.submit(run_chunk, lo, hi) for lo, hi in chunks}
        try:
            while pending:
                done, pending = wait(pending, timeout=POLL_S if cancel_check else None,
                                     return_when=FIRST_COMPLETED)
                for fut in done:
                    fut.result()  # re-raise a kernel error
                if pending and cancelled():
                    raise InterruptedError("annealing cancelled")
        except BaseException:
            stop[0] = 1  # running kernels return within one sweep
            for fut in pending:
                fut.cancel()
            raise
    return out
