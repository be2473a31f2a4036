"""The array-module reference of ``sa.gpu``: the same annealer written once against NumPy's API, so
the identical code runs on NumPy (CI, no GPU) and on CuPy, and the fused CUDA kernel
(:mod:`kpp_sdk.devices._sa_cuda`) is checked against it.

Algorithm (that of ``sa.cpu``): every read sweeps its spins in index order, once per beta of the
schedule. Spin ``i`` with local field ``f_i = (J s + h)_i`` costs ``dE = 2 s_i f_i`` to flip. With a
uniform ``u`` in (0, 1) it flips when ``beta * dE < L(u)``, where

* Metropolis: ``L(u) = -log(u)``, i.e. ``u < exp(-beta dE)``: probability ``min(1, exp(-beta dE))``;
* Gibbs (heat bath): ``L(u) = log((1 - u) / u)``, i.e. ``u < 1 / (1 + exp(beta dE))``.

The test is evaluated as ``s_i f_i < L(u) / (2 beta)`` (``s_i f_i`` is exact, the threshold has one
rounding; at ``beta = 0`` it is ``+-inf``, which gives probability 1 and 1/2 as it should). The
thresholds of a whole sweep are computed at once, off the sequential path, which is then one
multiply and one comparison per spin.

Vectorised over reads: the state is the spins ``S`` and the fields ``F``, both float64 and kept
spin-major (n, reads). Spins are visited one at a time for all reads in parallel. The field update
is blocked: spins are taken in tiles of ``tile`` consecutive indices; inside a tile each flip
updates only the tile's own fields (a ``tile x tile`` diagonal block of J), and after the tile one
matrix product ``F += J[tile, :]^T D`` (D: the ±2 / 0 flip amounts) brings every field up to date.
In exact arithmetic this is the same chain as updating all fields after every flip; with integer
couplings (any problem whose fields are integers below 2**53) it is the same bit for bit, for every
tile size.

Randomness is counter-based (Philox4x32-10, Salmon et al., SC'11): read ``r`` has the key
``(lo, hi)`` = the two 32-bit halves of ``kpp_sdk.devices.annealing.seed_streams(seed, reads)[r]``, and the
uniform of spin ``i`` in sweep ``t`` is word ``i % 4`` of ``Philox(key, counter=(i // 4, t, 0, 0))``
mapped to ``(w + 0.5) / 2**32``. Initial spins (when none are given) are the bits of
``Philox(key, counter=(b, 0, 1, 0))``: spin ``i`` is bit ``i % 32`` of word ``(i // 32) % 4`` of
block ``b = i // 128`` (1 -> +1). Every random number is a pure function of (key, sweep, spin), so a
read's result depends only on its own key, never on the number of reads, the chunking, or the
backend, and the fused kernel draws exactly the same numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

__all__ = ["PHILOX_ROUNDS", "ArrayModule", "cupy_module", "diagonal_blocks", "initial_spins",
           "initial_state", "numpy_module", "philox4x32", "read_keys", "sweep_array", "thresholds",
           "uniforms"]

PHILOX_ROUNDS = 10
_M0, _M1 = 0xD2511F53, 0xCD9E8D57  # Philox4x32 multipliers
_W0, _W1 = 0x9E3779B9, 0xBB67AE85  # Weyl key increments
_TWO_M32 = 2.0 ** -32
#: Random numbers are made for this many (sweep, spin, read) triples at a time (at least one sweep):
#: small batches stay in cache, which on NumPy is 2-4x faster than one large batch. Only speed and
#: memory depend on it, never a result.
_RNG_BATCH = 1 << 16


@dataclass(frozen=True)
class ArrayModule:
    """One array library: ``xp`` (numpy or cupy), its sparse module, and host <-> device copies."""

    name: str
    xp: Any
    sparse: Any

    def asarray(self, a: Any, dtype: Any = None) -> Any:
        return self.xp.asarray(a, dtype=dtype)

    def to_host(self, a: Any) -> np.ndarray:
        return a if isinstance(a, np.ndarray) else a.get()

    def csr(self, m: sp.spmatrix) -> Any:
        """A host CSR matrix on this module's device."""
        return m if self.sparse is sp else self.sparse.csr_matrix(m)

    def synchronize(self) -> None:
        if self.name == "cupy":
            self.xp.cuda.get_current_stream().synchronize()


def numpy_module() -> ArrayModule:
    return ArrayModule("numpy", np, sp)


def cupy_module() -> ArrayModule:
    """CuPy as an :class:`ArrayModule` (the caller has checked that CuPy and a GPU are there)."""
    import cupy
    import cupyx.scipy.sparse as cusp

    return ArrayModule("cupy", cupy, cusp)


# --- random numbers -----------------------------------------------------------------------------


def philox4x32(xp: Any, counter: tuple, key: tuple) -> tuple:
    """Philox4x32-10 of broadcastable uint32 arrays: ``counter = (c0, c1, c2, c3)``,
    ``key = (k0, k1)``; returns the four uint32 output words (broadcast shape).

    Matches the Random123 reference (known-answer vectors in the tests).
    """
    u32, u64 = xp.uint32, xp.uint64
    c0, c1, c2, c3 = (xp.asarray(c, dtype=u32) for c in counter)
    k0, k1 = (xp.asarray(k, dtype=u32) for k in key)
    m0, m1, sh = u64(_M0), u64(_M1), u64(32)
    for r in range(PHILOX_ROUNDS):
        if r:
            k0 = k0 + u32(_W0)
            k1 = k1 + u32(_W1)
        p0 = c0.astype(u64) * m0
        p1 = c2.astype(u64) * m1
        c0, c1, c2, c3 = ((p1 >> sh).astype(u32) ^ c1 ^ k0, p1.astype(u32),
                          (p0 >> sh).astype(u32) ^ c3 ^ k1, p0.astype(u32))
    return c0, c1, c2, c3


def read_keys(streams: np.ndarray) -> np.ndarray:
    """(reads, 2) uint32 Philox keys ``(low, high)`` from the 64-bit per-read seeds of
    :func:`kpp_sdk.devices.annealing.seed_streams`."""
    s = np.asarray(streams, dtype=np.uint64)
    return np.stack([(s & np.uint64(0xFFFFFFFF)).astype(np.uint32),
                     (s >> np.uint64(32)).astype(np.uint32)], axis=1)


def uniforms(xp: Any, keys: Any, t0: int, t1: int, n: int) -> Any:
    """Uniforms in (0, 1) of sweeps ``t0 .. t1-1`` for every spin and read: float64 array
    (t1 - t0, n, reads), spin-major like the state of :func:`sweep_array`."""
    nb = (n + 3) // 4
    R = keys.shape[0]
    t = xp.arange(t0, t1, dtype=xp.uint32)[:, None, None]
    b = xp.arange(nb, dtype=xp.uint32)[None, :, None]
    zero = xp.zeros((1, 1, 1), dtype=xp.uint32)
    key = (keys[:, 0][None, None, :], keys[:, 1][None, None, :])
    words = xp.stack(philox4x32(xp, (b, t, zero, zero), key), axis=2)  # (T, nb, 4, R)
    w = words.reshape(t1 - t0, 4 * nb, R)[:, :n, :]
    return (w.astype(xp.float64) + 0.5) * _TWO_M32


def thresholds(xp: Any, u: Any, gibbs: bool) -> Any:
    """``L(u)`` (see the module docstring): spin ``i`` flips when ``s_i f_i < L(u) / (2 beta)``."""
    return xp.log((1.0 - u) / u) if gibbs else -xp.log(u)


def initial_spins(xp: Any, keys: Any, n: int) -> Any:
    """Uniformly random ±1 starting spins from each read's key: int8 (reads, n)."""
    nb = (n + 127) // 128
    b = xp.arange(nb, dtype=xp.uint32)[None, :]
    zero = xp.zeros((1, 1), dtype=xp.uint32)
    one = xp.ones((1, 1), dtype=xp.uint32)
    words = xp.stack(philox4x32(xp, (b, zero, one, zero), (keys[:, 0:1], keys[:, 1:2])), axis=-1)
    words = words.reshape(keys.shape[0], 4 * nb)
    bits = (words[:, :, None] >> xp.arange(32, dtype=xp.uint32)) & xp.uint32(1)
    return (2 * bits.reshape(keys.shape[0], 128 * nb)[:, :n].astype(xp.int8) - 1).astype(xp.int8)


# --- problem data -------------------------------------------------------------------------------


def diagonal_blocks(J: Any, tile: int) -> np.ndarray:
    """The ``tile x tile`` diagonal blocks of J (dense or sparse), zero-padded past ``n``: float64
    (ceil(n / tile), tile, tile), block ``b`` = ``J[b*tile:(b+1)*tile, b*tile:(b+1)*tile]``."""
    n = J.shape[0]
    nt = (n + tile - 1) // tile
    out = np.zeros((nt, tile, tile))
    if sp.issparse(J):
        c = sp.coo_matrix(J)
        keep = (c.row // tile) == (c.col // tile)
        r, col, v = c.row[keep], c.col[keep], c.data[keep]
        np.add.at(out, (r // tile, r % tile, col % tile), v)
    else:
        Jd = np.asarray(J)
        for b in range(nt):
            lo, hi = b * tile, min(n, (b + 1) * tile)
            out[b, : hi - lo, : hi - lo] = Jd[lo:hi, lo:hi]
    return out


def initial_state(am: ArrayModule, J_dev: Any, h: np.ndarray, keys_dev: Any,
                  init: np.ndarray | None) -> tuple[Any, Any]:
    """``(spins int8 (reads, n), fields float64 (reads, n))`` on the device: the given initial
    states or the Philox ones, and ``F = S J + h`` (J symmetric)."""
    xp = am.xp
    n = h.shape[0]
    S = initial_spins(xp, keys_dev, n) if init is None else am.asarray(init, dtype=xp.int8)
    Sf = S.astype(xp.float64)
    if am.sparse.issparse(J_dev):
        F = (J_dev @ xp.ascontiguousarray(Sf.T)).T
    else:
        F = Sf @ J_dev
    F = xp.ascontiguousarray(F + am.asarray(h, dtype=xp.float64)[None, :])
    return xp.ascontiguousarray(S), F


# --- the sweeps -----------------------------------------------------------------------------


def sweep_array(am: ArrayModule, J: Any, betas: np.ndarray, keys_dev: Any, S: Any, F: Any, *,
                gibbs: bool, tile: int = 64, cancel_check: Callable[[], bool] | None = None) -> Any:
    """Run every sweep of ``betas`` from the state ``(S, F)`` of :func:`initial_state`; returns
    the final spins, int8 (reads, n) on the device. ``J`` is the host matrix (ndarray or
    scipy.sparse), ``keys_dev`` the (reads, 2) uint32 keys on the device.

    ``tile`` only changes speed (see the module docstring). ``cancel_check`` is called before
    every tile of every sweep (a sweep of many reads can take seconds); when it returns True,
    ``InterruptedError`` is raised.
    """
    xp = am.xp
    R, n = S.shape
    if tile < 1:
        raise ValueError(f"tile must be >= 1, got {tile}")
    tile = min(tile, n)
    sparse = sp.issparse(J)
    bounds = [(lo, min(n, lo + tile)) for lo in range(0, n, tile)]
    blocks = am.asarray(diagonal_blocks(J, tile))
    if sparse:
        Jc = sp.csr_matrix(J)
        # J[lo:hi, :]^T (n x tile) as CSR: F^T += J[lo:hi, :]^T D^T is one sparse product per tile
        rows_t = [am.csr(Jc[lo:hi].T.tocsr()) for lo, hi in bounds]
    else:
        Jd = am.asarray(J, dtype=xp.float64)
    # spin-major (n, reads): the per-spin work reads and writes contiguous rows
    St = xp.ascontiguousarray(S.T).astype(xp.float64)
    Ft = xp.ascontiguousarray(F.T)
    betas = np.asarray(betas, dtype=np.float64)
    T = betas.shape[0]
    per_batch = max(1, _RNG_BATCH // max(1, R * n))
    for ta in range(0, T, per_batch):
        tb = min(T, ta + per_batch)
        L = thresholds(xp, uniforms(xp, keys_dev, ta, tb, n), gibbs)
        for t in range(ta, tb):
            with np.errstate(divide="ignore"):  # beta = 0: thresholds +-inf, as intended
                thr = L[t - ta] / (2.0 * float(betas[t]))
            for b, (lo, hi) in enumerate(bounds):
                if cancel_check is not None and cancel_check():
                    raise InterruptedError("annealing cancelled")
                w = hi - lo
                Fb = Ft[lo:hi].copy()  # the tile's fields, kept current flip by flip
                Jb = blocks[b]
                neg2s = -2.0 * St[lo:hi]  # a spin's change if it flips (it flips once at most)
                D = xp.empty((w, R), dtype=xp.float64)
                for k in range(w):
                    xp.multiply(neg2s[k], St[lo + k] * Fb[k] < thr[lo + k], out=D[k])
                    if k + 1 < w:
                        Fb[k + 1:] += Jb[k, k + 1:w][:, None] * D[k]
                St[lo:hi] += D
                if sparse:
                    Ft += rows_t[b] @ D
                else:
                    ks = xp.flatnonzero(D.any(axis=1))
                    if ks.size:
                        Ft += Jd[lo + ks].T @ D[ks]
    return xp.ascontiguousarray(St.T).astype(xp.int8)
