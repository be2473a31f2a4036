"""The fused CUDA kernel of ``sa.gpu`` (a ``cupy.RawModule``) and its launcher.

It runs the algorithm of :mod:`kpp_sdk.devices._sa_array` (read that docstring first) with the
same random numbers and the same arithmetic, so on problems with integer couplings it returns the
same spins as the array code, bit for bit; the ``gpu`` tests check exactly that.

Layout: one warp per read; a block holds ``warps_per_block`` reads. Spins are visited in tiles of
32 consecutive indices, lane ``l`` owning spin ``i0 + l`` of the tile:

1. The block stores the tile's 32 x 32 diagonal block of J in shared memory (once for all its
   warps; it was loaded into registers a tile ahead, so its latency is hidden). Each lane loads
   its spin and its field and draws its uniform (Philox4x32-10 with the read's key and counter
   ``(i // 4, sweep, 0, 0)``), turning it into the threshold ``L(u) / (2 beta)``.
2. Sequential part, 32 steps: every lane evaluates ``s f < L(u) / (2 beta)`` on its own field, one
   ``__ballot_sync`` tells the warp whether spin ``k`` flips, and on a flip every lane adds
   ``-2 s_k J[k, l]`` to its own field from the shared block. So a step costs a multiply, a
   compare, a ballot and, on a flip, one fused multiply-add: no memory traffic on the critical path.
3. The tile's flips are applied to all ``n`` fields: ``f_j += -2 s_k J[k, j]`` for each flipped
   ``k``. Dense J: the block works together, reading each flipped row once for all of its reads
   that flipped it (rows are the bulk of the memory traffic, so this shares them between reads
   when flips are frequent); each thread owns a fixed set of columns, so rows need no barrier
   between them. Sparse J: each warp walks the CSR rows of its own flips. Tiles without a flip
   skip this; at low temperature that is most of them.

The fields of a block's reads live in shared memory when ``warps_per_block * n`` doubles fit (n up
to a few thousand), otherwise in global memory. J is read as float32 when float32 holds every
coupling exactly (integer and most quantised problems), which halves the bytes of step 3 and
changes no result; otherwise as float64. Fields are always float64, as in ``sa.cpu``.

Every warp of a block, active or not (the last block may have fewer reads than warps), meets every
``__syncthreads``; warp-level control flow depends only on ballot results and block-wide masks, so
every ``__ballot_sync`` and ``__syncwarp`` is reached by all 32 lanes.

Tuning knobs (``warps_per_block``, ``SA_PRE``, ``SA_UNROLL``) were set from this analysis, not
measured: check them with ``benchmarks/bench_sa_gpu.py`` on the GPU at hand.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import scipy.sparse as sp

from ._sa_array import diagonal_blocks

__all__ = ["KERNEL_NAMES", "SOURCE", "TILE", "FusedAnnealer", "LaunchPlan", "float32_exact",
           "plan_launch"]

TILE = 32  # the warp size: lane l owns spin i0 + l of a tile
DEFAULT_WARPS_PER_BLOCK = 8
#: Shared memory every CUDA device gives a block without opting in.
DEFAULT_SHARED_BYTES = 48 * 1024
#: Spin updates (reads x sweeps x n) per launch; between launches the run can be cancelled.
LAUNCH_WORK = 1 << 31

SOURCE = r"""
// sa.gpu fused annealing kernel; the design is described in kpp_sdk/devices/_sa_cuda.py.
#define SA_TILE 32
#define SA_FULL 0xffffffffu
#define SA_PRE 8     // prefetched values of the next tile block per thread
#define SA_UNROLL 8  // loads in flight per thread in the dense field update

// Philox4x32-10 (Salmon et al., SC'11; Random123's constants and key schedule).
__device__ __forceinline__ uint4 sa_philox(uint4 c, unsigned int k0, unsigned int k1) {
#pragma unroll
    for (int r = 0; r < 10; ++r) {
        if (r) {
            k0 += 0x9E3779B9u;
            k1 += 0xBB67AE85u;
        }
        const unsigned int hi0 = __umulhi(0xD2511F53u, c.x);
        const unsigned int lo0 = 0xD2511F53u * c.x;
        const unsigned int hi1 = __umulhi(0xCD9E8D57u, c.z);
        const unsigned int lo1 = 0xCD9E8D57u * c.z;
        c = make_uint4(hi1 ^ c.y ^ k0, lo1, hi0 ^ c.w ^ k1, lo0);
    }
    return c;
}

__device__ __forceinline__ unsigned int sa_word(const uint4 v, const int j) {
    return j == 0 ? v.x : (j == 1 ? v.y : (j == 2 ? v.z : v.w));
}

// Step 3 of a tile: every flipped spin k of the tile (i = i0 + k) moves the fields of its read by
// f_j += d J[i, j], d = -2 s_i (the spin before the flip). ``flips``/``up`` are the warp's own
// masks; ``s_flips``/``s_up`` hold those of every warp of the block (read after __syncthreads).

// Dense J: the block works together. Each row i flipped by any of its reads is read once and
// applied to every read that flipped it; thread tid owns the columns j = tid (mod blockDim), so
// no two threads touch the same field and no barrier is needed between rows.
template <typename TJ>
struct SaDenseRows {
    const TJ* J;  // (n, n), row-major, symmetric
    __device__ __forceinline__ void add(double* fbase, const unsigned int* s_flips,
                                        const unsigned int* s_up, const int warps,
                                        unsigned int flips, unsigned int up, double* f,
                                        const int i0, const int n) const {
        unsigned int any = 0u;
        for (int w = 0; w < warps; ++w) any |= s_flips[w];
        while (any) {
            const int k = __ffs(any) - 1;
            any &= any - 1u;
            unsigned int who = 0u, neg = 0u;  // reads that flipped spin k; those whose s_k was +1
            for (int w = 0; w < warps; ++w) {
                who |= ((s_flips[w] >> k) & 1u) << w;
                neg |= ((s_up[w] >> k) & 1u) << w;
            }
            const TJ* row = J + (long long)(i0 + k) * (long long)n;
            for (int j0 = threadIdx.x; j0 < n; j0 += SA_UNROLL * blockDim.x) {
                double v[SA_UNROLL];  // SA_UNROLL loads in flight per thread
#pragma unroll
                for (int q = 0; q < SA_UNROLL; ++q) {
                    const int j = j0 + q * blockDim.x;
                    v[q] = j < n ? (double)row[j] : 0.0;
                }
                unsigned int m = who;
                while (m) {
                    const int w = __ffs(m) - 1;
                    m &= m - 1u;
                    const double d = ((neg >> w) & 1u) ? -2.0 : 2.0;
                    double* const fw = fbase + (long long)w * n;
#pragma unroll
                    for (int q = 0; q < SA_UNROLL; ++q) {
                        const int j = j0 + q * blockDim.x;
                        if (j < n) fw[j] += d * v[q];
                    }
                }
            }
        }
    }
};

// CSR J: rows are short, so each warp applies its own flips (lanes over the row's entries).
template <typename TJ>
struct SaCsrRows {
    const long long* indptr;  // CSR with unique column indices per row
    const int* indices;
    const TJ* data;
    __device__ __forceinline__ void add(double* fbase, const unsigned int* s_flips,
                                        const unsigned int* s_up, const int warps,
                                        unsigned int flips, unsigned int up, double* f,
                                        const int i0, const int n) const {
        const int lane = threadIdx.x & 31;
        while (flips) {
            const int k = __ffs(flips) - 1;
            flips &= flips - 1u;
            const double d = ((up >> k) & 1u) ? -2.0 : 2.0;
            const long long end = indptr[i0 + k + 1];
            for (long long e = indptr[i0 + k] + lane; e < end; e += 32)
                f[indices[e]] += d * (double)data[e];
            __syncwarp();  // the next row may update the same fields from other lanes
        }
    }
};

// The next tile's block of J is loaded into registers a whole tile ahead (SA_PRE values per
// thread), so its latency is hidden behind the current tile's work.
__device__ __forceinline__ void sa_prefetch(double* pre, const double* block) {
#pragma unroll
    for (int q = 0; q < SA_PRE; ++q) {
        const int e = threadIdx.x + q * blockDim.x;
        pre[q] = e < SA_TILE * SA_TILE ? block[e] : 0.0;
    }
}

template <class Rows>
__device__ __forceinline__ void sa_sweeps(
        const Rows rows, const double* __restrict__ blocks, const double* __restrict__ betas,
        const unsigned int* __restrict__ keys, signed char* __restrict__ spins,
        double* __restrict__ fields, const int n, const int num_reads, const int t_begin,
        const int t_end, const int gibbs, const int fields_in_shared) {
    // shared memory: [tile block of J: SA_TILE^2 doubles][fields: warps x n doubles, when in
    // shared memory][flip masks: warps uints][up masks: warps uints]
    extern __shared__ double sa_smem[];
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int warps = blockDim.x >> 5;
    double* const jsub = sa_smem;
    unsigned int* const s_flips = (unsigned int*)(
        sa_smem + SA_TILE * SA_TILE + (fields_in_shared ? (long long)warps * n : 0LL));
    unsigned int* const s_up = s_flips + warps;
    const long long first = (long long)blockIdx.x * warps;  // the block's first read
    const long long read = first + warp;
    const bool active = read < num_reads;
    // the fields of the block's reads, warps x n with stride n, in shared or global memory
    double* const fbase = fields_in_shared ? sa_smem + SA_TILE * SA_TILE : fields + first * n;
    double* const f = fbase + (long long)warp * n;
    double* const fg = fields + read * n;
    signed char* const s = spins + read * n;
    const unsigned int k0 = active ? keys[2 * read] : 0u;
    const unsigned int k1 = active ? keys[2 * read + 1] : 0u;
    const int ntiles = (n + SA_TILE - 1) / SA_TILE;

    if (fields_in_shared && active) {
        for (int j = lane; j < n; j += 32) f[j] = fg[j];
    }
    double pre[SA_PRE];
    sa_prefetch(pre, blocks);
    for (int t = t_begin; t < t_end; ++t) {
        const double beta = betas[t];
        for (int tile = 0; tile < ntiles; ++tile) {
            // the previous tile is done everywhere: its block, masks and field updates
            __syncthreads();
#pragma unroll
            for (int q = 0; q < SA_PRE; ++q) {
                const int e = threadIdx.x + q * blockDim.x;
                if (e < SA_TILE * SA_TILE) jsub[e] = pre[q];
            }
            // blocks narrower than SA_TILE^2 / SA_PRE threads load the rest now
            for (int e = threadIdx.x + SA_PRE * blockDim.x; e < SA_TILE * SA_TILE; e += blockDim.x)
                jsub[e] = blocks[(long long)tile * (SA_TILE * SA_TILE) + e];
            __syncthreads();
            sa_prefetch(pre, blocks + (long long)(tile + 1 < ntiles ? tile + 1 : 0) *
                                          (SA_TILE * SA_TILE));

            const int i0 = tile * SA_TILE;
            unsigned int flips = 0u, up = 0u;
            if (active) {
                const int i = i0 + lane;
                const bool valid = i < n;
                double fl = valid ? f[i] : 0.0;
                const int sl = valid ? (int)s[i] : 1;
                const uint4 r4 = sa_philox(
                    make_uint4((unsigned int)i >> 2, (unsigned int)t, 0u, 0u), k0, k1);
                const double u = ((double)sa_word(r4, i & 3) + 0.5) * 2.3283064365386963e-10;
                // flip when s f < L(u) / (2 beta); beta = 0 gives +-inf, as in the array code
                const double thr = (gibbs ? log((1.0 - u) / u) : -log(u)) / (2.0 * beta);
                up = __ballot_sync(SA_FULL, sl > 0);
#pragma unroll
                for (int k = 0; k < SA_TILE; ++k) {
                    const bool want = valid && (double)sl * fl < thr;
                    if ((__ballot_sync(SA_FULL, want) >> k) & 1u) {
                        fl += (((up >> k) & 1u) ? -2.0 : 2.0) * jsub[k * SA_TILE + lane];
                        flips |= 1u << k;
                    }
                }
                if ((flips >> lane) & 1u) s[i] = (signed char)(-sl);
            }
            if (lane == 0) {
                s_flips[warp] = flips;
                s_up[warp] = up;
            }
            __syncthreads();
            rows.add(fbase, s_flips, s_up, warps, flips, up, f, i0, n);
        }
    }
    __syncthreads();
    if (fields_in_shared && active) {
        for (int j = lane; j < n; j += 32) fg[j] = f[j];
    }
}

#define SA_COMMON_PARAMS                                                                      \
    const double* __restrict__ blocks, const double* __restrict__ betas,                      \
    const unsigned int* __restrict__ keys, signed char* __restrict__ spins,                   \
    double* __restrict__ fields, const int n, const int num_reads, const int t_begin,         \
    const int t_end, const int gibbs, const int fields_in_shared
#define SA_COMMON_ARGS \
    blocks, betas, keys, spins, fields, n, num_reads, t_begin, t_end, gibbs, fields_in_shared

extern "C" __global__ void sa_dense_f64(const double* J, SA_COMMON_PARAMS) {
    SaDenseRows<double> rows;
    rows.J = J;
    sa_sweeps(rows, SA_COMMON_ARGS);
}

extern "C" __global__ void sa_dense_f32(const float* J, SA_COMMON_PARAMS) {
    SaDenseRows<float> rows;
    rows.J = J;
    sa_sweeps(rows, SA_COMMON_ARGS);
}

extern "C" __global__ void sa_csr_f64(const long long* indptr, const int* indices,
                                      const double* data, SA_COMMON_PARAMS) {
    SaCsrRows<double> rows;
    rows.indptr = indptr;
    rows.indices = indices;
    rows.data = data;
    sa_sweeps(rows, SA_COMMON_ARGS);
}

extern "C" __global__ void sa_csr_f32(const long long* indptr, const int* indices,
                                      const float* data, SA_COMMON_PARAMS) {
    SaCsrRows<float> rows;
    rows.indptr = indptr;
    rows.indices = indices;
    rows.data = data;
    sa_sweeps(rows, SA_COMMON_ARGS);
}
"""

KERNEL_NAMES = ("sa_dense_f64", "sa_dense_f32", "sa_csr_f64", "sa_csr_f32")


@dataclass(frozen=True)
class LaunchPlan:
    """How one chunk of reads is launched: ``blocks`` x ``32 * warps_per_block`` threads with
    ``shared_bytes`` of dynamic shared memory, ``sweeps_per_launch`` sweeps per launch."""

    warps_per_block: int
    fields_in_shared: bool
    shared_bytes: int
    blocks: int
    sweeps_per_launch: int


def plan_launch(n: int, num_reads: int, num_sweeps: int, *, max_shared_bytes: int,
                warps_per_block: int = DEFAULT_WARPS_PER_BLOCK, num_sms: int = 1) -> LaunchPlan:
    """Reads per block: up to ``warps_per_block``, but few enough that the blocks cover all
    ``num_sms`` multiprocessors. Fields in shared memory when the tile block, the masks and at
    least one read's fields fit in ``max_shared_bytes`` (then as many reads per block as fit)."""
    if min(n, num_reads, num_sweeps, warps_per_block, num_sms) < 1:
        raise ValueError("n, num_reads, num_sweeps, warps_per_block and num_sms must be >= 1")
    fixed = TILE * TILE * 8
    want = max(1, min(warps_per_block, num_reads // num_sms))
    per_read = 8 * n + 8  # fields + two mask words
    if fixed + per_read <= max_shared_bytes:
        w = min(want, (max_shared_bytes - fixed) // per_read)
        in_shared, shared = True, fixed + w * per_read
    else:
        w, in_shared, shared = want, False, fixed + want * 8
    return LaunchPlan(
        warps_per_block=int(w), fields_in_shared=in_shared, shared_bytes=int(shared),
        blocks=math.ceil(num_reads / w),
        sweeps_per_launch=int(max(1, min(num_sweeps, LAUNCH_WORK // (num_reads * n)))),
    )


def float32_exact(J: Any) -> bool:
    """Whether float32 holds every coupling of J exactly (then the kernel reads J as float32)."""
    v = J.data if sp.issparse(J) else np.asarray(J)
    with np.errstate(over="ignore"):
        return bool(np.array_equal(v.astype(np.float32).astype(np.float64), v))


@cache
def _module() -> Any:
    import cupy

    # CuPy compiles on first use of a function and caches the binary per device and on disk
    return cupy.RawModule(code=SOURCE)


class FusedAnnealer:
    """The problem's couplings and the schedule on the GPU, ready to anneal chunks of reads.

    Parameters
    ----------
    J : (n, n) ndarray or scipy.sparse matrix, symmetric, zero diagonal (an IsingProblem's J)
    betas : (num_sweeps,) float64
    gibbs : bool
        Heat-bath acceptance instead of Metropolis.
    warps_per_block : int
        Most reads per CUDA block (one warp each); fewer when there are few reads per
        multiprocessor or shared memory runs out (see :func:`plan_launch`).
    """

    def __init__(self, J: Any, betas: np.ndarray, *, gibbs: bool,
                 warps_per_block: int = DEFAULT_WARPS_PER_BLOCK):
        import cupy as cp

        self._cp = cp
        self.n = int(J.shape[0])
        self.gibbs = bool(gibbs)
        self.warps_per_block = int(warps_per_block)
        self.float32 = float32_exact(J)
        tj = np.float32 if self.float32 else np.float64
        if sp.issparse(J):
            Jc = sp.csr_matrix(J, copy=True)
            Jc.sum_duplicates()
            self._jargs: tuple = (cp.asarray(Jc.indptr, dtype=cp.int64),
                                  cp.asarray(Jc.indices, dtype=cp.int32),
                                  cp.asarray(Jc.data.astype(tj)))
            name = "sa_csr_f32" if self.float32 else "sa_csr_f64"
        else:
            self._jargs = (cp.asarray(np.ascontiguousarray(J, dtype=tj)),)
            name = "sa_dense_f32" if self.float32 else "sa_dense_f64"
        self.kernel_name = name
        self._kernel = _module().get_function(name)
        self._blocks = cp.asarray(diagonal_blocks(J, TILE))
        self._betas = cp.asarray(np.ascontiguousarray(betas, dtype=np.float64))
        self.num_sweeps = int(self._betas.shape[0])
        attrs = cp.cuda.Device().attributes
        self._max_shared = int(attrs.get("MaxSharedMemoryPerBlockOptin", DEFAULT_SHARED_BYTES))
        self._num_sms = int(attrs.get("MultiProcessorCount", 1))

    def run(self, keys: Any, spins: Any, fields: Any,
            cancel_check: Callable[[], bool] | None = None) -> Any:
        """Anneal in place: ``keys`` (reads, 2) uint32, ``spins`` (reads, n) int8 and ``fields``
        (reads, n) float64, all C-contiguous CuPy arrays (from ``_sa_array.initial_state``).
        Returns ``spins``. ``cancel_check`` is called between launches."""
        cp = self._cp
        R = int(spins.shape[0])
        if spins.shape != (R, self.n) or fields.shape != (R, self.n) or keys.shape != (R, 2):
            raise ValueError("keys, spins and fields must have shapes (R, 2), (R, n), (R, n)")
        if not (spins.dtype == cp.int8 and fields.dtype == cp.float64 and keys.dtype == cp.uint32):
            raise ValueError("spins must be int8, fields float64 and keys uint32")
        if not (spins.flags.c_contiguous and fields.flags.c_contiguous and keys.flags.c_contiguous):
            raise ValueError("keys, spins and fields must be C-contiguous")
        plan = plan_launch(self.n, R, self.num_sweeps, max_shared_bytes=self._max_shared,
                           warps_per_block=self.warps_per_block, num_sms=self._num_sms)
        if plan.shared_bytes > DEFAULT_SHARED_BYTES:
            self._kernel.max_dynamic_shared_size_bytes = plan.shared_bytes
        stream = cp.cuda.get_current_stream()
        for t0 in range(0, self.num_sweeps, plan.sweeps_per_launch):
            if cancel_check is not None and cancel_check():
                raise InterruptedError("annealing cancelled")
            t1 = min(self.num_sweeps, t0 + plan.sweeps_per_launch)
            args = (*self._jargs, self._blocks, self._betas, keys, spins, fields,
                    np.int32(self.n), np.int32(R), np.int32(t0), np.int32(t1),
                    np.int32(self.gibbs), np.int32(plan.fields_in_shared))
            self._kernel((plan.blocks,), (32 * plan.warps_per_block,), args,
                         shared_mem=plan.shared_bytes)
            stream.synchronize()
        return spins
