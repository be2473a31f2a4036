"""Fused CPU kernels (numba) for the round-trip map, float32 only.

Why: on a CPU the matrix product of one round trip is already close to the BLAS peak, and
NumPy's elementwise passes plus its Gaussian generator (about 10 ns per variate) cost several
times more than the product itself. These kernels do each half of a round trip in one pass
over the (runs, N) state (``gain_loss_measure``: steps 1-4 and the ADC; ``inject``: exact
chunk sum, DAC, injection, error variables), with a counter-based generator that vectorises:

* uniform words: ``w0 = hash(hash(c ^ k_in) ^ k_out)`` with Chris Wellons' ``lowbias32``
  integer hash (in i32 arithmetic so that it vectorises 8-wide), where ``c`` is the element
  counter (run * N + pulse, mod 2**32) and the 32-bit keys depend on (seed, round trip,
  stream); further words of the same element chain one more round,
  ``w_{j+1} = hash(w_j ^ k_j)``. The output for a given run therefore does not depend on how
  many runs are simulated or how many threads run them.
* normals: Box-Muller on two 24-bit uniforms, with float32 polynomial log, sin and cos (so the
  loop stays SIMD; numba has no vector libm here). The largest normal it can produce is
  sqrt(2*25*ln 2) = 5.9 sigma (probability of a larger |z| is 4e-9).

The reference engine (``engine="xp"``) uses NumPy/CuPy Generators instead; both engines give
the same statistics, not the same numbers, for a given seed.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, types
from numba.extending import intrinsic

_F = np.float32
_TWO_M24 = _F(5.9604644775390625e-08)  # 2**-24
_LN2 = _F(0.6931471805599453)
_LOG2E = _F(1.4426950408889634)
_PI = _F(3.141592653589793)
_M1 = np.uint32(0x7FEB352D)
_M2 = np.uint32(0x846CA68B)
_S16 = np.uint32(16)
_S15 = np.uint32(15)
_S8 = np.uint32(8)


def _kernel(py_func):
    """Compile a kernel: serial (the driver runs blocks of runs in threads), no GIL,
    ``error_model="numpy"`` (drops the division-by-zero checks that stop LLVM from vectorising
    the loops: 3.7x on the gain kernel), fastmath, cached on disk."""
    return njit(parallel=False, fastmath=True, cache=True, error_model="numpy", nogil=True)(py_func)


@intrinsic
def _mul32(typingctx, a, b):
    """a * b mod 2**32 as one i32 multiply (numba would widen uint32 arithmetic to 64 bits,
    which vectorises 4-wide with emulated multiplies instead of 8-wide vpmulld)."""
    sig = types.uint32(types.uint32, types.uint32)

    def codegen(context, builder, signature, args):
        return builder.mul(args[0], args[1])

    return sig, codegen


@intrinsic
def _xorshr32(typingctx, a, s):
    """a ^ (a >> s) on i32."""
    sig = types.uint32(types.uint32, types.uint32)

    def codegen(context, builder, signature, args):
        return builder.xor(args[0], builder.lshr(args[0], args[1]))

    return sig, codegen


@intrinsic
def _xor32(typingctx, a, b):
    """a ^ b on i32."""
    sig = types.uint32(types.uint32, types.uint32)

    def codegen(context, builder, signature, args):
        return builder.xor(args[0], args[1])

    return sig, codegen


@njit(inline="always")
def _h32(x):
    """lowbias32 (C. Wellons) integer hash, in i32 arithmetic."""
    x = _xorshr32(x, _S16)
    x = _mul32(x, _M1)
    x = _xorshr32(x, _S15)
    x = _mul32(x, _M2)
    return _xorshr32(x, _S16)


@njit(inline="always")
def _word(c, k_in, k_out):
    """32-bit random word for the uint32 counter c and two uint32 keys."""
    return _h32(_xor32(_h32(_xor32(c, k_in)), k_out))


@njit(inline="always")
def _log_unit(u):
    """ln(u) for float32 u in (0, 1], ~1e-7 relative accuracy."""
    bits = np.float32(u).view(np.uint32)
    e = np.float32(np.int32(bits >> np.uint32(23)) - np.int32(127))
    m = np.uint32((bits & np.uint32(0x7FFFFF)) | np.uint32(0x3F800000)).view(np.float32)
    big = m > _F(1.4142135)
    m = _F(0.5) * m if big else m
    e = e + _F(1.0) if big else e
    s = (m - _F(1.0)) / (m + _F(1.0))
    s2 = s * s
    lnm = (
        _F(2.0)
        * s
        * (
            _F(1.0)
            + s2 * (_F(1.0 / 3.0) + s2 * (_F(0.2) + s2 * (_F(1.0 / 7.0) + s2 * _F(1.0 / 9.0))))
        )
    )
    return e * _LN2 + lnm


@njit(inline="always")
def _exp32(t):
    """exp(t) in float32 (relative error ~2e-7), t clamped to [-87, 88]."""
    t = min(max(t, _F(-87.0)), _F(88.0))
    z = t * _LOG2E
    ni = np.int32(z + _F(128.5)) - np.int32(128)  # round(z); z + 128.5 > 0, truncation = floor
    g = (z - np.float32(ni)) * _LN2
    p = _F(1.0) + g * (
        _F(1.0)
        + g
        * (
            _F(0.5)
            + g
            * (
                _F(1.0 / 6.0)
                + g
                * (
                    _F(1.0 / 24.0)
                    + g * (_F(1.0 / 120.0) + g * (_F(1.0 / 720.0) + g * _F(1.0 / 5040.0)))
                )
            )
        )
    )
    scale = np.uint32((ni + np.int32(127)) << np.int32(23)).view(np.float32)
    return p * scale


@njit(inline="always")
def _round_clip(v, lo, hi):
    """clip(floor(v + 1/2), lo, hi) in float32 without leaving float32/int32 (vectorises)."""
    w = min(max(v, lo - _F(1.0)), hi + _F(1.0)) + _F(0.5)
    nf = np.float32(np.int32(w))  # truncation toward zero
    nf = nf - _F(1.0) if nf > w else nf  # -> floor
    return min(max(nf, lo), hi)


@njit(inline="always")
def _box_muller(a, b):
    """Two independent standard normals (float32) from two 32-bit words."""
    u1 = (np.float32(np.int32(a >> _S8)) + _F(0.5)) * _TWO_M24
    r = math.sqrt(_F(-2.0) * _log_unit(u1))
    phi = (np.float32(np.int32(b >> _S8)) * _TWO_M24 - _F(0.5)) * _PI  # half angle in [-pi/2, pi/2)
    p2 = phi * phi
    sn = phi * (
        _F(1.0)
        + p2
        * (
            _F(-1.0 / 6.0)
            + p2
            * (
                _F(1.0 / 120.0)
                + p2 * (_F(-1.0 / 5040.0) + p2 * (_F(1.0 / 362880.0) + p2 * _F(-1.0 / 39916800.0)))
            )
        )
    )
    cs = _F(1.0) + p2 * (
        _F(-0.5)
        + p2
        * (
            _F(1.0 / 24.0)
            + p2
            * (
                _F(-1.0 / 720.0)
                + p2
                * (_F(1.0 / 40320.0) + p2 * (_F(-1.0 / 3628800.0) + p2 * _F(1.0 / 479001600.0)))
            )
        )
    )
    return r * (_F(1.0) - _F(2.0) * sn * sn), r * (_F(2.0) * sn * cs)


@_kernel
def fill_normals(out, keys, run_offset):
    """out (R, N) float32 <- standard normals (keys[0:3] of a step_keys() array)."""
    R, N = out.shape
    k0a = keys[0]
    k0b = keys[1]
    k1a = keys[2]
    for r in range(R):
        base = np.uint32((r + run_offset) * N)
        for i in range(N):
            c = np.uint32(base + i)
            a = _word(c, k0a, k0b)
            n1, _n2 = _box_muller(a, _h32(_xor32(a, k1a)))
            out[r, i] = n1


@_kernel
def init_state(x, y, keys, std, amp, uniform, run_offset):
    """Initial amplitudes: vacuum N(0, std^2) for x and y, or x ~ U(-amp, amp), y = 0."""
    R, N = x.shape
    k0a = keys[0]
    k0b = keys[1]
    k1a = keys[2]
    for r in range(R):
        base = np.uint32((r + run_offset) * N)
        for i in range(N):
            c = np.uint32(base + i)
            a = _word(c, k0a, k0b)
            b = _h32(_xor32(a, k1a))
            if uniform:
                x[r, i] = (np.float32(np.int32(a >> _S8)) * _TWO_M24 * _F(2.0) - _F(1.0)) * amp
                y[r, i] = _F(0.0)
            else:
                n1, n2 = _box_muller(a, b)
                x[r, i] = std * n1
                y[r, i] = std * n2


@_kernel
def gain_loss_measure(
    x,
    p_k,
    run_pump_std,
    dtau,
    sqrt_t,
    vac_std,
    meas_std,
    pulse_pump_std,
    inj_noise,
    adc_on,
    adc_inv_lsb,
    adc_lo,
    adc_hi,
    code_out,
    keys,
    run_offset,
):
    """Steps 1-4 and the ADC of step 5 for one round trip, in place (in-phase quadrature only).

    x: (R, N) float32 state. p_k: pump of this round trip; run_pump_std: std of the pump
    fluctuation common to all pulses of a run in this round trip (stream keys[12:16]);
    pulse_pump_std: per-pulse pump noise (0: none). inj_noise: (R, N) float32, receives the
    standard normals that the injection of this round trip uses. code_out: (R, N) float32,
    receives the ADC codes (integer values) or, with adc_on False, the measured amplitudes.
    keys: (16,) uint32 stream keys of this round trip (step_keys(base, k, 8)). The inner loop
    body is branch-free (selects only) so that it vectorises.
    """
    R, N = x.shape
    k0a = keys[0]
    k0b = keys[1]
    k1a = keys[2]
    k2a = keys[4]
    k3a = keys[6]
    kpa = keys[12]
    kpb = keys[13]
    kqa = keys[14]
    kqb = keys[15]
    for r in range(R):
        base = np.uint32((r + run_offset) * N)
        n_run, _n_unused_run = _box_muller(
            _word(np.uint32(r + run_offset), kpa, kpb), _word(np.uint32(r + run_offset), kqa, kqb)
        )
        p_r = p_k + run_pump_std * n_run
        for i in range(N):
            c = np.uint32(base + i)
            w0 = _word(c, k0a, k0b)
            w1 = _h32(_xor32(w0, k1a))  # chain: one more round per further word
            w2 = _h32(_xor32(w1, k2a))
            w3 = _h32(_xor32(w2, k3a))
            n_vx, n_m = _box_muller(w0, w1)
            n_inj, n_pp = _box_muller(w2, w3)
            inj_noise[r, i] = n_inj
            xi = x[r, i]
            xi = xi * _exp32(dtau * (p_r + pulse_pump_std * n_pp - xi * xi))
            xi = sqrt_t * xi + vac_std * n_vx
            x[r, i] = xi
            xm = xi + meas_std * n_m
            q = _round_clip(xm * adc_inv_lsb, adc_lo, adc_hi)
            code_out[r, i] = q if adc_on else xm


@_kernel
def gain_loss_measure_xy(
    x,
    y,
    p_k,
    run_pump_std,
    dtau,
    sqrt_t,
    vac_std,
    meas_std,
    pulse_pump_std,
    inj_noise,
    adc_on,
    adc_inv_lsb,
    adc_lo,
    adc_hi,
    code_out,
    keys,
    run_offset,
):
    """As :func:`gain_loss_measure`, also evolving the squeezed quadrature y."""
    R, N = x.shape
    k0a = keys[0]
    k0b = keys[1]
    k1a = keys[2]
    k2a = keys[4]
    k3a = keys[6]
    k4a = keys[8]
    k5a = keys[10]
    kpa = keys[12]
    kpb = keys[13]
    kqa = keys[14]
    kqb = keys[15]
    for r in range(R):
        base = np.uint32((r + run_offset) * N)
        n_run, _n_unused_run = _box_muller(
            _word(np.uint32(r + run_offset), kpa, kpb), _word(np.uint32(r + run_offset), kqa, kqb)
        )
        p_r = p_k + run_pump_std * n_run
        for i in range(N):
            c = np.uint32(base + i)
            w0 = _word(c, k0a, k0b)
            w1 = _h32(_xor32(w0, k1a))
            w2 = _h32(_xor32(w1, k2a))
            w3 = _h32(_xor32(w2, k3a))
            w4 = _h32(_xor32(w3, k4a))
            w5 = _h32(_xor32(w4, k5a))
            n_vx, n_m = _box_muller(w0, w1)
            n_inj, n_vy = _box_muller(w2, w3)
            n_pp, _n_unused = _box_muller(w4, w5)
            inj_noise[r, i] = n_inj
            xi = x[r, i]
            yi = y[r, i]
            p = p_r + pulse_pump_std * n_pp
            s2 = xi * xi + yi * yi
            xi = xi * _exp32(dtau * (p - s2))
            yi = yi * _exp32(dtau * (-p - s2))
            xi = sqrt_t * xi + vac_std * n_vx
            y[r, i] = sqrt_t * yi + vac_std * n_vy
            x[r, i] = xi
            xm = xi + meas_std * n_m
            q = _round_clip(xm * adc_inv_lsb, adc_lo, adc_hi)
            code_out[r, i] = q if adc_on else xm


@_kernel
def inject(
    x,
    acc,
    integer_acc,
    code_del,
    e,
    mode,
    gain_scale,
    xi_k,
    dac_on,
    dac_lsb,
    dac_inv_lsb,
    dac_lo,
    dac_hi,
    dtau,
    sig_inj,
    inj_noise,
    adc_lsb,
    a_row,
    beta_row,
    e_min,
    e_max,
):
    """Step 5 (scaling, DAC) and 6 (injection), plus the error-variable update, in place.

    acc: (C, R, N) chunk products. integer_acc: they hold integers (quantised J and ADC), and
    are summed exactly in int32 (|total| < 2**31 by the accumulation plan); else C == 1 and
    acc[0] is used as is. f = gain_scale * sum is sum_j J_ij x_q,j in original units. e: (R, N) error variables
    (ones for mode 0). mode 0: plain; 1: AHC/CAC, e <- e (1 - dtau beta_r (x_q^2 - a_r));
    2: CFC, e <- e (1 - dtau beta_r (u^2 - a_r)); u = xi_k e f; x <- x + dtau DAC(u)(1 + sig n).
    Branch-free loop body (selects), so that it vectorises.
    """
    C = acc.shape[0]
    R, N = x.shape
    m1 = mode == 1
    m2 = mode == 2
    for r in range(R):
        a_r = a_row[r]
        b_r = beta_row[r]
        tot = np.empty(N, dtype=np.int32)
        for i in range(N):
            tot[i] = np.int32(acc[0, r, i])
        for cc in range(1, C):
            for i in range(N):
                tot[i] += np.int32(acc[cc, r, i])
        for i in range(N):
            fa = np.float32(tot[i]) if integer_acc else acc[0, r, i]
            f = fa * gain_scale
            ei = e[r, i]
            u = xi_k * ei * f
            uq_d = _round_clip(u * dac_inv_lsb, dac_lo, dac_hi) * dac_lsb
            uq = uq_d if dac_on else u
            x[r, i] = x[r, i] + dtau * uq * (_F(1.0) + sig_inj * inj_noise[r, i])
            xq = code_del[r, i] * adc_lsb
            g1 = xq * xq - a_r
            g2 = u * u - a_r
            gg = g1 if m1 else g2
            en = min(max(ei * (_F(1.0) - dtau * b_r * gg), e_min), e_max)
            e[r, i] = en if (m1 or m2) else ei


_MASK64 = (1 << 64) - 1


def splitmix64(z: int) -> int:
    """One splitmix64 output for the 64-bit input z (Python ints)."""
    z = (z + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def step_keys(base: int, k: int, n: int = 6) -> np.ndarray:
    """Stream keys of round trip k (k = -1: the initial state): 2n uint32 values, an inner and
    an outer key for each of n streams, from splitmix64 of (seed, k, stream)."""
    out = np.empty(2 * n, dtype=np.uint32)
    h = splitmix64((base ^ splitmix64((k + 3) & _MASK64)) & _MASK64)
    for s in range(n):
        h = splitmix64(h ^ (s + 1))
        out[2 * s] = h & 0xFFFFFFFF
        out[2 * s + 1] = h >> 32
    return out
