"""Fused CPU kernels (numba) for the round-trip map, float32 only.

Why: on a CPU the matrix product of one round trip is already close to the BLAS peak, and
NumPy's elementwise passes plus its Gaussian generator (about 10 ns per variate) cost several
times more than the product itself. These kernels do each half of a round trip in one pass
over the (runs, N) state (``gain_loss_measure``: steps 1-4 and the ADC; ``inject``: exact
chunk sum, DAC, injection noise and injection, error variables), with a counter-based
generator that vectorises (the generator is most of the cost of these kernels, hence the
care to draw no normal that is not used):

* uniform words: ``w0 = hash(hash(c ^ k_in) ^ k_out)`` with Chris Wellons' ``lowbias32``
  integer hash (in i32 arithmetic so that it vectorises 8-wide), where ``c`` is the element
  counter (run * N + pulse, mod 2**32) and the 32-bit keys depend on (seed, round trip,
  stream); further words of the same element hash w0 once more with their own key,
  ``w_j = hash(w0 ^ k_j)`` (independent of each other, so they do not form one long
  dependency chain). The output for a given run therefore does not depend on how many runs
  are simulated or how many threads run them.
* which normals: ``gain_loss_measure`` draws one Box-Muller pair per pulse (vacuum and
  measurement noise; a second pair, half used, only with per-pulse pump noise).
  ``inject`` draws the injection normals itself (none when sigma_inj == 0), one Box-Muller pair
  for the two pulses i and i + N//2 of a run (cos half, sin half; a pair of its own for the
  last pulse when N is odd). All of them are standard normals, independent across pulses,
  runs, round trips and streams, as before; only the assignment of random words to them
  changed (so a given seed gives other numbers than earlier versions).
* normals: Box-Muller on two 24-bit uniforms, with float32 polynomial log, sin and cos (so the
  loop stays SIMD; numba has no vector libm here). The largest normal it can produce is
  sqrt(2*25*ln 2) = 5.9 sigma (probability of a larger |z| is 4e-9).

The reference engine (``engine="xp"``) uses NumPy/CuPy Generators instead; both engines give
the same statistics, not the same numbers, for a given seed.

The FPGA product of the CPU engine (``igemm``) multiplies the int16 ADC codes by the int16
(int8-valued) couplings with int32 accumulation, as the FPGA does: on x86 with AVX2 the 16x16-bit
products and pair sums become ``vpmaddwd`` (16 multiply-adds per instruction, twice the float32
FMA rate, half the memory traffic). It is exact whenever the row bound of the accumulation plan
is < 2**31 (every partial sum, in any order, is then an int32), so it gives bit for bit the same
sums as the chunked float32 BLAS product it replaces.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
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


@intrinsic
def _ctr32(typingctx, base, i):
    """uint32(base + i) for uint32 base and int64 i, as an i32 add of the truncated index (the
    counter vector then stays 8 x i32 instead of being built from 64-bit lanes and narrowed)."""
    sig = types.uint32(types.uint32, types.int64)

    def codegen(context, builder, signature, args):
        return builder.add(args[0], builder.trunc(args[1], ir.IntType(32)))

    return sig, codegen


@intrinsic
def _shr_f32(typingctx, a, s):
    """float32(a >> s) for uint32 a, s >= 1, in i32 arithmetic (numba would widen the shift to
    64 bits, and x86 has no vector int64 -> float conversion: the loop would convert lane by
    lane). Exact: the shifted value is < 2**31 and, for s >= 8, < 2**24."""
    sig = types.float32(types.uint32, types.uint32)

    def codegen(context, builder, signature, args):
        return builder.sitofp(builder.lshr(args[0], args[1]), ir.FloatType())

    return sig, codegen


@intrinsic
def _unbias_f32(typingctx, nb):
    """float32(nb - 128) with the subtraction in i32 (exact; not re-associated by fastmath)."""
    sig = types.float32(types.int32)

    def codegen(context, builder, signature, args):
        v = builder.sub(args[0], ir.Constant(ir.IntType(32), 128))
        return builder.sitofp(v, ir.FloatType())

    return sig, codegen


@intrinsic
def _pow2_biased(typingctx, nb):
    """2.0**(nb - 128) as float32 for int32 nb in [1, 255]: the bits (nb - 1) << 23, in i32."""
    sig = types.float32(types.int32)

    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        e = builder.shl(builder.sub(args[0], ir.Constant(i32, 1)), ir.Constant(i32, 23))
        return builder.bitcast(e, ir.FloatType())

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
    e = _shr_f32(bits, np.uint32(23)) - _F(127.0)
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
    # n = round(z) = floor(z + 128.5) - 128 (z + 128.5 > 0: truncation is floor); kept as the
    # biased int32 nb = n + 128 so that no step widens to int64 (which would not vectorise)
    nb = np.int32(z + _F(128.5))
    g = (z - _unbias_f32(nb)) * _LN2
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
    return p * _pow2_biased(nb)


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
    u1 = (_shr_f32(a, _S8) + _F(0.5)) * _TWO_M24
    r = math.sqrt(_F(-2.0) * _log_unit(u1))
    phi = (_shr_f32(b, _S8) * _TWO_M24 - _F(0.5)) * _PI  # half angle in [-pi/2, pi/2)
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
                x[r, i] = (_shr_f32(a, _S8) * _TWO_M24 * _F(2.0) - _F(1.0)) * amp
                y[r, i] = _F(0.0)
            else:
                n1, n2 = _box_muller(a, b)
                x[r, i] = std * n1
                y[r, i] = std * n2


@njit(inline="always")
def _gain_rows(
    x,
    p_k,
    run_pump_std,
    dtau,
    sqrt_t,
    vac_std,
    meas_std,
    pulse_pump_std,
    adc_on,
    adc_inv_lsb,
    adc_lo,
    adc_hi,
    code_out,
    keys,
    run_offset,
    per_pulse_pump,
):
    """Body of :func:`gain_loss_measure`; ``per_pulse_pump`` is a literal at both call sites, so
    that after inlining LLVM drops the unused branch and each variant is one straight loop."""
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
            c = _ctr32(base, i)
            w0 = _word(c, k0a, k0b)
            # further words hash w0 with their own key (not w1 from w0, w2 from w1, ...): the
            # same statistics, but independent hashes, a shorter dependency chain per element
            n_vx, n_m = _box_muller(w0, _h32(_xor32(w0, k1a)))
            p = p_r
            if per_pulse_pump:
                n_pp, _n_unused = _box_muller(_h32(_xor32(w0, k2a)), _h32(_xor32(w0, k3a)))
                p = p_r + pulse_pump_std * n_pp
            xi = x[r, i]
            xi = xi * _exp32(dtau * (p - xi * xi))
            xi = sqrt_t * xi + vac_std * n_vx
            x[r, i] = xi
            xm = xi + meas_std * n_m
            q = _round_clip(xm * adc_inv_lsb, adc_lo, adc_hi)
            code_out[r, i] = q if adc_on else xm


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
    pulse_pump_std: per-pulse pump noise (0: none; then no normal is drawn for it). code_out:
    (R, N) float32 or int16, receives the ADC codes (integer values) or, with adc_on False, the
    measured amplitudes. keys: (16,) uint32 stream keys of this round trip
    (step_keys(base, k, 8)). Per pulse one Box-Muller pair gives the vacuum and the measurement
    normal (a second pair, half used, the per-pulse pump normal). The inner loop body is
    branch-free (selects only) so that it vectorises.
    """
    if pulse_pump_std == _F(0.0):
        _gain_rows(
            x,
            p_k,
            run_pump_std,
            dtau,
            sqrt_t,
            vac_std,
            meas_std,
            pulse_pump_std,
            adc_on,
            adc_inv_lsb,
            adc_lo,
            adc_hi,
            code_out,
            keys,
            run_offset,
            False,
        )
    else:
        _gain_rows(
            x,
            p_k,
            run_pump_std,
            dtau,
            sqrt_t,
            vac_std,
            meas_std,
            pulse_pump_std,
            adc_on,
            adc_inv_lsb,
            adc_lo,
            adc_hi,
            code_out,
            keys,
            run_offset,
            True,
        )


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
    adc_on,
    adc_inv_lsb,
    adc_lo,
    adc_hi,
    code_out,
    keys,
    run_offset,
):
    """As :func:`gain_loss_measure`, also evolving the squeezed quadrature y (normals: one
    Box-Muller pair for the vacuum of x and the measurement, one for the vacuum of y and the
    per-pulse pump)."""
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
            n_vx, n_m = _box_muller(w0, _h32(_xor32(w0, k1a)))
            n_vy, n_pp = _box_muller(_h32(_xor32(w0, k2a)), _h32(_xor32(w0, k3a)))
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


@njit(inline="always")
def _inject_pulse(
    xi,
    fi,
    ei,
    cq,
    n,
    xi_k,
    dac_on,
    dac_lsb,
    dac_inv_lsb,
    dac_lo,
    dac_hi,
    dtau,
    sig_inj,
    adc_lsb,
    a_r,
    b_r,
    e_min,
    e_max,
    m1,
):
    """Steps 5-6 for one pulse: state xi, feedback fi = sum_j J_ij x_q,j, error variable ei,
    delayed ADC code cq, injection normal n -> (new x, new e). (Scalars only: array arguments
    of an inlined helper would cost reference counting calls that stop the vectoriser.)"""
    u = xi_k * ei * fi
    uq_d = _round_clip(u * dac_inv_lsb, dac_lo, dac_hi) * dac_lsb
    uq = uq_d if dac_on else u
    xq = np.float32(cq) * adc_lsb
    gg = xq * xq - a_r if m1 else u * u - a_r
    en = min(max(ei * (_F(1.0) - dtau * b_r * gg), e_min), e_max)
    return xi + dtau * uq * (_F(1.0) + sig_inj * n), en


@njit(inline="always")
def _inject_rows(
    x,
    acc,
    code_del,
    e,
    m1,
    gain_scale,
    xi_k,
    dac_on,
    dac_lsb,
    dac_inv_lsb,
    dac_lo,
    dac_hi,
    dtau,
    sig_inj,
    adc_lsb,
    a_row,
    beta_row,
    e_min,
    e_max,
    keys,
    run_offset,
    track_e,
    noisy,
):
    """Body of :func:`inject`; track_e and noisy are literals at the call sites, so that each
    variant compiles to one straight vectorised loop without the unused work (with error
    variables fixed at 1, as in mode 0, e is neither read nor written)."""
    C = acc.shape[0]
    R, N = x.shape
    H = N // 2
    kia = keys[8]
    kib = keys[9]
    kja = keys[10]
    f = np.empty(N, dtype=np.float32)
    tot = np.empty(N, dtype=np.int32)
    one = _F(1.0)
    for r in range(R):
        a_r = a_row[r]
        b_r = beta_row[r]
        if C == 1:
            for i in range(N):
                f[i] = np.float32(acc[0, r, i]) * gain_scale
        else:  # integer chunk sums: exact in int32
            for i in range(N):
                tot[i] = np.int32(acc[0, r, i])
            for cc in range(1, C):
                for i in range(N):
                    tot[i] += np.int32(acc[cc, r, i])
            for i in range(N):
                f[i] = np.float32(tot[i]) * gain_scale
        base = np.uint32((r + run_offset) * N)
        # pulses i and j = i + H share one Box-Muller pair (its cos and its sin normal), so the
        # injection noise costs half a pair per pulse; both streams are contiguous: vectorises
        for i in range(H):
            j = i + H
            n1 = n2 = _F(0.0)
            if noisy:
                w = _word(_ctr32(base, i), kia, kib)
                n1, n2 = _box_muller(w, _h32(_xor32(w, kja)))
            x1, e1 = _inject_pulse(
                x[r, i],
                f[i],
                e[r, i] if track_e else one,
                code_del[r, i],
                n1,
                xi_k,
                dac_on,
                dac_lsb,
                dac_inv_lsb,
                dac_lo,
                dac_hi,
                dtau,
                sig_inj,
                adc_lsb,
                a_r,
                b_r,
                e_min,
                e_max,
                m1,
            )
            x2, e2 = _inject_pulse(
                x[r, j],
                f[j],
                e[r, j] if track_e else one,
                code_del[r, j],
                n2,
                xi_k,
                dac_on,
                dac_lsb,
                dac_inv_lsb,
                dac_lo,
                dac_hi,
                dtau,
                sig_inj,
                adc_lsb,
                a_r,
                b_r,
                e_min,
                e_max,
                m1,
            )
            x[r, i] = x1
            x[r, j] = x2
            if track_e:
                e[r, i] = e1
                e[r, j] = e2
        for i in range(2 * H, N):  # odd N: the last pulse, with a pair of its own (counter
            n1 = _F(0.0)  # base + N - 1, not used by the pairs above)
            if noisy:
                w = _word(np.uint32(base + i), kia, kib)
                n1, _n_unused = _box_muller(w, _h32(_xor32(w, kja)))
            x1, e1 = _inject_pulse(
                x[r, i],
                f[i],
                e[r, i] if track_e else one,
                code_del[r, i],
                n1,
                xi_k,
                dac_on,
                dac_lsb,
                dac_inv_lsb,
                dac_lo,
                dac_hi,
                dtau,
                sig_inj,
                adc_lsb,
                a_r,
                b_r,
                e_min,
                e_max,
                m1,
            )
            x[r, i] = x1
            if track_e:
                e[r, i] = e1


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
    adc_lsb,
    a_row,
    beta_row,
    e_min,
    e_max,
    keys,
    run_offset,
):
    """Step 5 (scaling, DAC) and 6 (injection), plus the error-variable update, in place.

    acc: (C, R, N) chunk products. integer_acc: they hold integers (quantised J and ADC); C > 1
    only then (so the flag itself is not needed here), and the chunks are summed exactly in int32 (|total| < 2**31 by the accumulation
    plan); with C == 1, acc[0] is used as is. f = gain_scale * sum is sum_j J_ij x_q,j in
    original units. e: (R, N) error variables (ones, untouched, for mode 0). mode 0: plain;
    1: AHC/CAC, e <- e (1 - dtau beta_r (x_q^2 - a_r)); 2: CFC, e <- e (1 - dtau beta_r
    (u^2 - a_r)); u = xi_k e f; x <- x + dtau DAC(u)(1 + sig_inj n). The injection normals n
    are drawn here (stream keys[8:11] of this round trip's step_keys(base, k, 8); none when
    sig_inj == 0): one Box-Muller pair per two pulses i, i + N//2 of a run.
    """
    m1 = mode == 1
    track_e = mode == 1 or mode == 2
    noisy = sig_inj != _F(0.0)
    if track_e:
        if noisy:
            _inject_rows(
                x,
                acc,
                code_del,
                e,
                m1,
                gain_scale,
                xi_k,
                dac_on,
                dac_lsb,
                dac_inv_lsb,
                dac_lo,
                dac_hi,
                dtau,
                sig_inj,
                adc_lsb,
                a_row,
                beta_row,
                e_min,
                e_max,
                keys,
                run_offset,
                True,
                True,
            )
        else:
            _inject_rows(
                x,
                acc,
                code_del,
                e,
                m1,
                gain_scale,
                xi_k,
                dac_on,
                dac_lsb,
                dac_inv_lsb,
                dac_lo,
                dac_hi,
                dtau,
                sig_inj,
                adc_lsb,
                a_row,
                beta_row,
                e_min,
                e_max,
                keys,
                run_offset,
                True,
                False,
            )
    elif noisy:
        _inject_rows(
            x,
            acc,
            code_del,
            e,
            m1,
            gain_scale,
            xi_k,
            dac_on,
            dac_lsb,
            dac_inv_lsb,
            dac_lo,
            dac_hi,
            dtau,
            sig_inj,
            adc_lsb,
            a_row,
            beta_row,
            e_min,
            e_max,
            keys,
            run_offset,
            False,
            True,
        )
    else:
        _inject_rows(
            x,
            acc,
            code_del,
            e,
            m1,
            gain_scale,
            xi_k,
            dac_on,
            dac_lsb,
            dac_inv_lsb,
            dac_lo,
            dac_hi,
            dtau,
            sig_inj,
            adc_lsb,
            a_row,
            beta_row,
            e_min,
            e_max,
            keys,
            run_offset,
            False,
            False,
        )


# ---------------------------------------------------------------- exact integer FPGA product

#: Codes and coupling rows are padded with zeros to a multiple of this many int16 (one 256-bit
#: vector); see :func:`igemm`.
IGEMM_PAD = 16
_IG_RA = 3  # code rows (runs) per register block
_IG_RB = 3  # coupling rows (output columns) per register block: 9 accumulators + 6 loads
_IG_JT = 96  # coupling rows per cache tile (96 x 576 x 2 B = 108 KiB, stays in L2)


def _make_dot_block(ra: int, rb: int):
    """Intrinsic ``blk(c, M, r, j, nv) -> (ra*rb,) int32``: the dot products of code rows
    r..r+ra-1 with coupling rows j..j+rb-1 over nv vectors of 16 int16.

    Written as generic LLVM vector IR (sign-extend to i32, multiply, add the even and odd
    lanes), which the x86 back end turns into ``vpmaddwd`` and other targets into ordinary
    vector code; numba's own integer typing would widen to int64 and not vectorise."""

    @intrinsic
    def blk(typingctx, c, M, r, j, nv):
        sig = types.UniTuple(types.int32, ra * rb)(c, M, r, j, nv)

        def codegen(context, builder, signature, args):
            ca = context.make_array(signature.args[0])(context, builder, args[0])
            ma = context.make_array(signature.args[1])(context, builder, args[1])
            i32 = ir.IntType(32)
            i64 = ir.IntType(64)
            v16 = ir.VectorType(ir.IntType(16), 16)
            v16w = ir.VectorType(i32, 16)
            v8 = ir.VectorType(i32, 8)
            c_stride = builder.extract_value(ca.strides, 0)
            m_stride = builder.extract_value(ma.strides, 0)
            c0 = builder.ptrtoint(ca.data, i64)
            m0 = builder.ptrtoint(ma.data, i64)
            rr = builder.sext(args[2], i64) if args[2].type.width < 64 else args[2]
            jj = builder.sext(args[3], i64) if args[3].type.width < 64 else args[3]
            pa = [
                builder.add(c0, builder.mul(builder.add(rr, ir.Constant(i64, a)), c_stride))
                for a in range(ra)
            ]
            pb = [
                builder.add(m0, builder.mul(builder.add(jj, ir.Constant(i64, b)), m_stride))
                for b in range(rb)
            ]
            accs = [
                cgutils.alloca_once_value(builder, ir.Constant(v8, None)) for _ in range(ra * rb)
            ]
            even = ir.Constant(v8, [2 * k for k in range(8)])
            odd = ir.Constant(v8, [2 * k + 1 for k in range(8)])
            vptr = v16.as_pointer()
            with cgutils.for_range(builder, args[4]) as loop:
                off = builder.mul(loop.index, ir.Constant(i64, 32))
                wa = [
                    builder.sext(
                        builder.load(builder.inttoptr(builder.add(p, off), vptr), align=2), v16w
                    )
                    for p in pa
                ]
                wb = [
                    builder.sext(
                        builder.load(builder.inttoptr(builder.add(p, off), vptr), align=2), v16w
                    )
                    for p in pb
                ]
                for a in range(ra):
                    for b in range(rb):
                        prod = builder.mul(wa[a], wb[b])
                        pair = builder.add(
                            builder.shuffle_vector(prod, prod, even),
                            builder.shuffle_vector(prod, prod, odd),
                        )
                        acc = accs[a * rb + b]
                        builder.store(builder.add(builder.load(acc), pair), acc)
            red = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(i32, [v8]), "llvm.vector.reduce.add.v8i32"
            )
            vals = [builder.call(red, [builder.load(acc)]) for acc in accs]
            return context.make_tuple(builder, signature.return_type, vals)

        return sig, codegen

    return blk


_blk_33 = _make_dot_block(_IG_RA, _IG_RB)
_blk_31 = _make_dot_block(_IG_RA, 1)
_blk_13 = _make_dot_block(1, _IG_RB)
_blk_11 = _make_dot_block(1, 1)


@_kernel
def igemm(codes, M, out):
    """out[r, j] = sum_i codes[r, i] * M[j, i] (= codes @ M for symmetric M), exactly in int32.

    codes: (R, P) int16, M: (Q, P) int16 with P a multiple of IGEMM_PAD (zero padding);
    out: (R, >= Q) int32. The caller guarantees sum_i |codes[r, i] M[j, i]| < 2**31.
    Cache tiles of _IG_JT coupling rows, 3 x 3 register blocks, 1-wide blocks for the edges.
    """
    R = codes.shape[0]
    Q = M.shape[0]
    nv = codes.shape[1] // 16
    r_main = R - R % _IG_RA
    for j0 in range(0, Q, _IG_JT):
        j1 = min(Q, j0 + _IG_JT)
        j_main = j0 + (j1 - j0) - (j1 - j0) % _IG_RB
        for r in range(0, r_main, _IG_RA):
            for j in range(j0, j_main, _IG_RB):
                t = _blk_33(codes, M, r, j, nv)
                for a in range(_IG_RA):
                    for b in range(_IG_RB):
                        out[r + a, j + b] = t[a * _IG_RB + b]
            for j in range(j_main, j1):
                t1 = _blk_31(codes, M, r, j, nv)
                for a in range(_IG_RA):
                    out[r + a, j] = t1[a]
        for r in range(r_main, R):
            for j in range(j0, j_main, _IG_RB):
                t2 = _blk_13(codes, M, r, j, nv)
                for b in range(_IG_RB):
                    out[r, j + b] = t2[b]
            for j in range(j_main, j1):
                out[r, j] = _blk_11(codes, M, r, j, nv)[0]


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
