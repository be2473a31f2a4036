"""Problem preparation for the emulator: validation, ancilla embedding, spectral radius,
int8 quantisation of the couplings as the FPGA takes them, and the exact-accumulation plan.

Energy convention everywhere: E(s) = -1/2 s^T J s - h^T s, J symmetric with zero diagonal.
"""

from __future__ import annotations

from dataclasses import dataclass

import math

import numpy as np
import scipy.sparse as sp

from .errors import ParameterError, ProblemError

__all__ = [
    "FLOAT32_EXACT_INT",
    "PreparedProblem",
    "accumulation_plan",
    "augment_with_ancilla",
    "feedback_gain",
    "ising_energy",
    "prepare_problem",
    "quantize_couplings",
    "spectral_bounds",
    "validate_problem",
]

#: Integers of magnitude <= 2**24 are exactly representable in float32 (24-bit significand),
#: and so is every partial sum of integer terms whose absolute values add up to <= 2**24.
FLOAT32_EXACT_INT = 2**24
#: The same bound for float64 (53-bit significand).
FLOAT64_EXACT_INT = 2**53
#: Largest self-feedback register value (16-bit signed, in integer coupling units).
INT16_MAX = 2**15 - 1


def validate_problem(J, h=None, *, symmetry_tol: float = 1e-9):
    """Check and normalise (J, h).

    Returns ``(J, h)`` with J a float64 ndarray or scipy CSR matrix and h a float64 vector or
    None (an all-zero h becomes None). Raises :class:`ProblemError` for a non-square,
    non-finite, asymmetric J, a non-zero diagonal, or an h of the wrong size.
    """
    if sp.issparse(J):
        Jm = sp.csr_matrix(J, dtype=np.float64)
        Jm.sum_duplicates()
        if Jm.ndim != 2 or Jm.shape[0] != Jm.shape[1]:
            raise ProblemError(f"J must be square, got shape {Jm.shape}")
        if not np.all(np.isfinite(Jm.data)):
            raise ProblemError("J has non-finite entries (NaN or inf)")
        diff = abs(Jm - Jm.T)
        scale = max(1.0, float(abs(Jm).max()) if Jm.nnz else 1.0)
        if diff.nnz and diff.max() > symmetry_tol * scale:
            raise ProblemError(f"J is not symmetric (max |J - J^T| = {diff.max():.3g})")
        if np.any(Jm.diagonal() != 0):
            raise ProblemError("J must have a zero diagonal (a diagonal only shifts the energy)")
        Jm.eliminate_zeros()
    else:
        Jm = np.asarray(J, dtype=np.float64)
        if Jm.ndim != 2 or Jm.shape[0] != Jm.shape[1]:
            raise ProblemError(f"J must be a square matrix, got shape {Jm.shape}")
        if not np.all(np.isfinite(Jm)):
            raise ProblemError("J has non-finite entries (NaN or inf)")
        scale = max(1.0, float(np.max(np.abs(Jm))) if Jm.size else 1.0)
        if Jm.size and np.max(np.abs(Jm - Jm.T)) > symmetry_tol * scale:
            raise ProblemError(
                f"J is not symmetric (max |J - J^T| = {np.max(np.abs(Jm - Jm.T)):.3g})"
            )
        if np.any(np.diag(Jm) != 0):
            raise ProblemError("J must have a zero diagonal (a diagonal only shifts the energy)")
        Jm = 0.5 * (Jm + Jm.T)  # exact symmetry
    n = Jm.shape[0]
    if n < 1:
        raise ProblemError("J must have at least one spin")
    hv = None
    if h is not None:
        hv = np.asarray(h, dtype=np.float64).reshape(-1)
        if hv.shape[0] != n:
            raise ProblemError(f"h has {hv.shape[0]} entries but J has {n} spins")
        if not np.all(np.isfinite(hv)):
            raise ProblemError("h has non-finite entries (NaN or inf)")
        if not np.any(hv):
            hv = None
    return Jm, hv


def augment_with_ancilla(J, h):
    """(N+1)x(N+1) coupling matrix whose last row and column carry h (ancilla spin N).

    With s_N = +1, -1/2 s^T M s = -1/2 s^T J s - h^T s; flipping every spin (the gauge
    symmetry) leaves it unchanged, so a run that ends with s_N = -1 is read as -s."""
    n = J.shape[0]
    if sp.issparse(J):
        hcol = sp.csr_matrix(h.reshape(n, 1))
        return sp.bmat([[J, hcol], [hcol.T, None]], format="csr")
    M = np.zeros((n + 1, n + 1), dtype=np.float64)
    M[:n, :n] = J
    M[:n, n] = h
    M[n, :n] = h
    return M


def spectral_bounds(J) -> tuple[float, float]:
    """(lambda_min, lambda_max) of the symmetric matrix J.

    Dense matrices up to 1200 spins use a full eigendecomposition; larger or sparse ones use
    ``scipy.sparse.linalg.eigsh`` (Lanczos) for the two extreme eigenvalues."""
    n = J.shape[0]
    if n == 1:
        return 0.0, 0.0
    if not sp.issparse(J) and n <= 1200:
        w = np.linalg.eigvalsh(J)
        return float(w[0]), float(w[-1])
    from scipy.sparse.linalg import eigsh

    A = J if sp.issparse(J) else np.asarray(J)
    if sp.issparse(A) and A.nnz == 0:
        return 0.0, 0.0
    v0 = np.ones(n) / np.sqrt(n) + 1e-3 * np.cos(np.arange(n))  # deterministic start vector
    lmax = eigsh(A, k=1, which="LA", return_eigenvectors=False, v0=v0, tol=1e-8)[0]
    lmin = eigsh(A, k=1, which="SA", return_eigenvectors=False, v0=v0, tol=1e-8)[0]
    return float(lmin), float(lmax)


def quantize_couplings(M, bits: int | None = 8):
    """Integer couplings as the FPGA takes them.

    Rescales M so that max|M_ij| = 2**(bits-1) - 1 (127 for 8 bits) and rounds (half to even).
    Returns ``(M_int, scale, max_abs_error)``: M_int has integer values (float64 array or CSR),
    ``scale * M_int`` approximates M, and ``max_abs_error`` = max|scale*M_int - M| in the
    original units. ``bits=None`` returns ``(M, 1.0, 0.0)``."""
    if bits is None:
        return M, 1.0, 0.0
    qmax = 2 ** (bits - 1) - 1
    data = M.data if sp.issparse(M) else M
    amax = float(np.max(np.abs(data))) if data.size else 0.0
    if amax == 0.0:
        return M.copy(), 1.0, 0.0
    scale = amax / qmax
    if sp.issparse(M):
        Mi = M.copy()
        Mi.data = np.rint(M.data / scale)
        err = float(np.max(np.abs(Mi.data * scale - M.data)))
        Mi.eliminate_zeros()
    else:
        Mi = np.rint(M / scale)
        err = float(np.max(np.abs(Mi * scale - M)))
    return Mi, scale, err


def _requantize(M, scale):
    """Round M on a given (coarser than int8) grid: ``(M_int, scale, max_abs_error)``."""
    if sp.issparse(M):
        Mi = M.copy()
        Mi.data = np.rint(M.data / scale)
        err = float(np.max(np.abs(Mi.data * scale - M.data))) if M.nnz else 0.0
        Mi.eliminate_zeros()
        return Mi, scale, err
    Mi = np.rint(M / scale)
    return Mi, scale, float(np.max(np.abs(Mi * scale - M)))


def bulk_edge(M) -> float:
    """Edge of the bulk of the spectrum of M estimated from its entries, 2 sqrt(sum_ij (M_ij -
    mu)^2 / N) with mu the mean off-diagonal entry: the semicircle edge of a random matrix with
    the same entry variance. It equals lambda_max for SK (2 sqrt(N)) and, without the Perron
    outlier, for random graphs (2 sqrt(N p (1 - p)) for G(N, p) MAX-CUT); on graphs whose
    lambda_max is a localised mode (G42: 16.9 against a bulk edge of 6.9) it is the scale of
    the typical local field."""
    n = M.shape[0]
    if n < 2:
        return 0.0
    pairs = n * (n - 1)
    if sp.issparse(M):
        s1 = float(M.sum())
        s2 = float(M.multiply(M).sum())
    else:
        s1 = float(M.sum())
        s2 = float(np.einsum("ij,ij->", M, M))
    mu = s1 / pairs
    var_sum = max(0.0, s2 - 2 * mu * s1 + mu * mu * pairs)
    return 2.0 * math.sqrt(var_sum / n)


def feedback_gain(
    params,
    lambda_min: float,
    lambda_max: float,
    absmax: float | None = None,
    bulk_edge: float | None = None,
) -> tuple[float, float]:
    """The problem-aware feedback gain ``xi`` and the FPGA self-feedback ``delta`` (original
    coupling units) for a coupling matrix with extreme eigenvalues ``lambda_min <= lambda_max``.

    ``coupling_norm="spectrum"`` (default): the gain is set by the mode that bifurcates,
    ``xi = xi0 / lambda_max`` (for a symmetric spectrum such as SK's this is xi0/rho, as
    before). The most negative mode must not overshoot in the delayed map: a mode of
    eigenvalue lambda of xi (J + delta I) with one round trip of latency has the
    characteristic equation z^2 = a z + dtau xi lambda, whose complex roots have
    |z|^2 = -dtau xi lambda, so it oscillates with a sign flip every round trip once
    dtau xi |lambda| > 1. A self-feedback ``delta`` (each pulse's own delayed measurement fed
    back with gain xi*delta) shifts every eigenvalue by delta and keeps
    dtau xi (lambda_min + delta) >= -stability_margin; for spins it only adds a constant to
    the energy. The extra gain it gives every pulse is taken off the pump (p -> p - xi delta;
    see :func:`kpp_sdk.emulator.physics.simulate`), so the coupled threshold of the top mode
    stays where the couplings alone put it.

    ``coupling_norm="radius"``: the former xi = xi0 / rho(J), no self-feedback.
    ``coupling_norm="coefficient"``: xi = xi0 / max|J_ij| (``absmax``), a fixed gain per unit
    of the largest coupling, capped at dtau*xi*|lambda_min| = stability_margin; no
    self-feedback.

    With amplitude control (``feedback`` not "none") the gain is xi0 / rho and there is no
    self-feedback: each error variable e_i sets its pulse's effective gain, and
    :func:`error_cap` bounds them by the same stability rule.
    """
    rho = max(abs(lambda_min), abs(lambda_max))
    if rho <= 0 or params.xi0 == 0:
        return 0.0, 0.0
    if params.coupling_norm == "radius":
        return params.xi0 / rho, 0.0
    if params.coupling_norm == "coefficient":
        xi = params.xi0 / (absmax if absmax else rho)
        if lambda_min < 0:
            xi = min(xi, params.stability_margin / (params.dtau * abs(lambda_min)))
        return xi, 0.0
    if params.feedback != "none":
        # amplitude control: the error variables e_i set each pulse's effective gain, and
        # the FPGA caps them (error_cap) so that the most negative mode cannot overshoot
        return params.xi0 / rho, 0.0
    # the growing modes set the gain: the edge of the bulk of the spectrum, or lambda_max when
    # it is lower; a problem whose spectrum is (almost) all negative still gets a gain on the
    # scale of its spread
    top = lambda_max if not bulk_edge else min(lambda_max, bulk_edge)
    top = max(top, 0.05 * rho)
    xi = params.xi0 / top
    bound = params.stability_margin / (params.dtau * xi)
    delta = max(0.0, -lambda_min - bound)
    return xi, delta


def error_cap(params, xi: float, lambda_min: float, delta: float) -> float:
    """Largest error variable e (AHC/CAC/CFC) the FPGA allows: min(e_max, the e at which the
    loop gain dtau*xi*e*|lambda_min + delta| of the most negative mode reaches
    ``stability_margin``). Without the cap e grows until that mode overshoots every round trip
    and all pulses lock in phase, flipping sign together (issue 15: MC50 n=100 with CAC ended
    at E = +2475, every spin equal). With xi = xi0/rho, xi0 = 0.6 and dtau = 0.5 the cap is
    3 for every problem."""
    neg = -(lambda_min + delta)
    if neg <= 0 or xi <= 0:
        return params.e_max
    cap = params.stability_margin / (params.dtau * xi * neg)
    return max(params.e_min * 1.0001, min(params.e_max, cap))


def accumulation_plan(M_int, code_max: int):
    """Exact-accumulation plan for f = M_int @ codes with |codes| <= code_max.

    Exactness argument: every term |M_ij * c_j| is an integer, and any partial sum over a set
    of columns C is bounded by B(C) = max_i sum_{j in C} |M_ij| * code_max. If B(C) <= 2**24
    the float32 GEMM over those columns is exact in any summation order (all intermediate
    values are integers representable in float32). Columns are split into contiguous chunks
    with B(chunk) <= 2**24; each chunk runs as one float32 GEMM and the chunk results are added
    exactly (int32 in the CPU engine, guaranteed because the whole row bound is < 2**31;
    float64 in the array-module engine). For the default 8-bit J and 10-bit ADC, B = 127*512 per
    column, i.e. at most 258 columns per chunk; 550 spins take 3 chunks, the same flops as one.

    Returns ``(chunks, dtype)``: a list of (start, stop) column ranges and the GEMM dtype
    ("float32"; "float64" with one chunk when a single column already exceeds 2**24)."""
    n = M_int.shape[1]
    absM = abs(M_int) if sp.issparse(M_int) else np.abs(M_int)
    row_total = (
        float(absM.sum(axis=1).max()) if (absM.nnz if sp.issparse(absM) else absM.size) else 0.0
    ) * code_max
    if row_total >= 2**31:
        # chunk sums are added in int32 by the CPU engine; beyond that use one float64 product
        if row_total > FLOAT64_EXACT_INT:
            raise ParameterError(
                "adc_bits", code_max, "an ADC/coupling range whose sums fit in 2**53"
            )
        return [(0, n)], "float64"
    if sp.issparse(absM):
        total = float(absM.sum(axis=1).max()) * code_max if absM.nnz else 0.0
        if total <= FLOAT32_EXACT_INT:
            return [(0, n)], "float32"
        if total <= FLOAT64_EXACT_INT:
            return [(0, n)], "float64"
        raise ParameterError("adc_bits", code_max, "an ADC/coupling range whose sums fit in 2**53")
    col_max = absM.max(axis=0) * code_max  # worst single column contribution
    if col_max.size and col_max.max() > FLOAT32_EXACT_INT:
        total = float(absM.sum(axis=1).max()) * code_max
        if total > FLOAT64_EXACT_INT:
            raise ParameterError(
                "adc_bits", code_max, "an ADC/coupling range whose sums fit in 2**53"
            )
        return [(0, n)], "float64"
    chunks = []
    start = 0
    run = np.zeros(absM.shape[0])
    for j in range(n):
        nxt = run + absM[:, j]
        if nxt.max() * code_max > FLOAT32_EXACT_INT:
            chunks.append((start, j))
            start = j
            run = absM[:, j].astype(float).copy()
        else:
            run = nxt
    chunks.append((start, n))
    return chunks, "float32"


def ising_energy(J, h, spins) -> np.ndarray:
    """E = -1/2 s^T J s - h^T s for each row of ``spins`` (shape (N,) or (R, N)), float64.

    J dense or CSR (NumPy/SciPy, host memory); h a vector or None."""
    s = np.asarray(spins)
    single = s.ndim == 1
    S = np.atleast_2d(s).astype(np.float64)
    if sp.issparse(J):
        SJ = np.asarray((J @ S.T).T)
    else:
        SJ = S @ np.asarray(J, dtype=np.float64)
    e = -0.5 * np.einsum("ij,ij->i", SJ, S)
    if h is not None:
        e = e - S @ np.asarray(h, dtype=np.float64)
    return e[0] if single else e


@dataclass
class PreparedProblem:
    """A problem ready for the round-trip map (host NumPy/SciPy arrays).

    n: user spins; n_total: pulses used (n + 1 with a field: the ancilla is the last one).
    J, h: the validated user problem (float64). M: the (augmented) float coupling matrix.
    lambda_min, lambda_max, spectral_radius: of M. xi: xi0/rho(M) (0 when M = 0).
    M_fpga: matrix the FPGA multiplies (integer-valued with coef_bits, else M), in
    ``gemm_dtype``; coupling_scale: M ~= coupling_scale * M_fpga; quant_error: max abs
    rounding error of the couplings in original units; chunks: exact-accumulation column chunks.
    """

    n: int
    n_total: int
    has_field: bool
    J: object
    h: np.ndarray | None
    M: object
    lambda_min: float
    lambda_max: float
    spectral_radius: float
    xi: float
    self_feedback: float
    e_cap: float
    M_fpga: object
    coupling_scale: float
    quant_error: float
    chunks: list
    gemm_dtype: str
    sparse: bool


def prepare_problem(J, h, params) -> PreparedProblem:
    """Validate, embed the field through the ancilla, find the spectral radius, quantise."""
    Jv, hv = validate_problem(J, h)
    n = Jv.shape[0]
    has_field = hv is not None
    M = augment_with_ancilla(Jv, hv) if has_field else Jv
    lmin, lmax = spectral_bounds(M)
    rho = max(abs(lmin), abs(lmax))
    data = M.data if sp.issparse(M) else M
    absmax = float(np.max(np.abs(data))) if data.size else 0.0
    xi, self_fb = feedback_gain(params, lmin, lmax, absmax, bulk_edge(M))
    M_int, scale, err = quantize_couplings(M, params.coef_bits)
    self_int = 0.0
    if self_fb > 0:
        # the FPGA's self-feedback register: a separate 16-bit gain on each pulse's own
        # (delayed) measurement, in the units of the integer couplings
        if params.coef_bits is None:
            self_int = self_fb
        else:
            if self_fb / scale > INT16_MAX:  # extreme spectra only: coarser couplings
                M_int, scale, err = _requantize(M, self_fb / INT16_MAX)
            self_int = float(np.rint(self_fb / scale))
        if sp.issparse(M_int):
            M_int = (M_int + sp.identity(M_int.shape[0], format="csr") * self_int).tocsr()
        else:
            M_int = M_int + self_int * np.eye(M_int.shape[0])
    amp_dtype = params.dtype
    if params.coef_bits is not None and params.adc_bits is not None:
        code_max = 2 ** (params.adc_bits - 1)
        chunks, gemm_dtype = accumulation_plan(M_int, code_max)
        if amp_dtype == "float64":
            chunks, gemm_dtype = [(0, M_int.shape[0])], "float64"
    else:
        chunks, gemm_dtype = [(0, M_int.shape[0])], amp_dtype
    if sp.issparse(M_int):
        M_fpga = M_int.astype(gemm_dtype).tocsr()
    else:
        M_fpga = np.ascontiguousarray(M_int, dtype=gemm_dtype)
    return PreparedProblem(
        n=n,
        n_total=M.shape[0],
        has_field=has_field,
        J=Jv,
        h=hv,
        M=M,
        lambda_min=lmin,
        lambda_max=lmax,
        spectral_radius=rho,
        xi=xi,
        self_feedback=self_int * scale,
        e_cap=error_cap(params, xi, lmin, self_int * scale),
        M_fpga=M_fpga,
        coupling_scale=scale,
        quant_error=err,
        chunks=chunks,
        gemm_dtype=gemm_dtype,
        sparse=sp.issparse(M),
    )
