"""Ising problems: the one convention every device, model and file format goes through.

Energy convention (fixed once for the whole SDK)::

    E(s) = -1/2 * s^T J s - h^T s + offset,      s in {-1, +1}^n (int8)

with ``J`` symmetric and zero on the diagonal. A ferromagnetic coupling is ``J_ij > 0``. MAX-CUT on
weights ``W`` is ``J = -W``, so that ``cut(s) = (sum_{i<j} W_ij - E(s)) / 2``.

QUBO convention: ``E(x) = x^T Q x + offset`` with ``x in {0, 1}^n`` and ``s = 2x - 1``.

Kaiwu (QBoson) hardware convention: an ``(n+1) x (n+1)`` symmetric matrix ``M`` whose last row and
column carry ``h`` through an ancilla spin ``s_n = +1``, with ``H(s) = -s^T M s`` (a full double sum,
no 1/2). Hence ``M[:n, :n] = J / 2`` and ``M[:n, n] = h / 2``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from .errors import (
    AsymmetricCouplingError,
    DiagonalCouplingError,
    EmptyProblemError,
    InvalidSpinsError,
    NonFiniteError,
    NotSquareError,
    ProblemError,
    ProblemFormatError,
    SizeMismatchError,
)

__all__ = ["IsingProblem", "QuantizedProblem", "quantize"]

#: Relative tolerance of the symmetry check: |J_ij - J_ji| <= SYMMETRY_RTOL * max|J|.
SYMMETRY_RTOL = 1e-9
#: Samples are checked and their energies computed in blocks of about this many spins, so the
#: temporaries of :meth:`IsingProblem.energy` stay below ~3 x 8 MiB however many samples.
BLOCK_ELEMENTS = 1 << 20


def _blocks(rows: int, n: int):
    step = max(1, BLOCK_ELEMENTS // max(n, 1))
    for a in range(0, rows, step):
        yield a, min(rows, a + step)

_JSON_FORMAT = "kpp-ising"
_JSON_VERSION = 1


def _first_index(mask: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argwhere(mask)[0])


def _real(a: Any, what: str) -> Any:
    """``a`` with a complex dtype turned real when every imaginary part is zero (nothing is
    lost); a nonzero imaginary part is an error, never silently dropped."""
    if not np.iscomplexobj(a):
        return a
    data = a.data if sp.issparse(a) else np.asarray(a)
    bad = np.imag(data) != 0
    if np.any(bad):
        where = _first_index(bad) if data.ndim and not sp.issparse(a) else ()
        at = f" (e.g. {what}{list(where)})" if where else ""
        raise ProblemError(
            f"{what} is complex with a nonzero imaginary part{at}; Ising coefficients are real: "
            f"pass {what}.real if the imaginary part is meant to be dropped")
    return a.real if sp.issparse(a) else np.real(data)


def _check_energy_range_of(J: Any, h: np.ndarray, offset: float) -> None:
    """Energies are summed as ``-1/2 sum_i s_i (J s)_i - h.s + offset``, whose partial sums are
    bounded by ``sum |J_ij| + sum |h_i| + |offset|``: that must be a finite float64, or energies
    overflow. A bound from max|J| settles it without a pass over |J| unless coefficients are
    huge."""
    data = J.data if sp.issparse(J) else J
    if data.size == 0:
        jmax = 0.0
    else:
        jmax = max(float(data.max()), -float(data.min()))
    hsum = float(np.abs(h).sum())
    with np.errstate(over="ignore"):
        bound = jmax * data.size + hsum + abs(offset)
        if not np.isfinite(bound):
            bound = float(np.abs(data).sum()) + hsum + abs(offset)
    if not np.isfinite(bound):
        raise NonFiniteError(
            "the coefficients are so large that energies overflow float64 (sum |J_ij| + "
            "sum |h_i| + |offset| is not finite); rescale the problem, e.g. divide J, h and "
            "offset by max |coefficient|")


class IsingProblem:
    """An Ising problem ``E(s) = -1/2 s^T J s - h^T s + offset`` (see the module docstring).

    Parameters
    ----------
    J : (n, n) array_like or scipy.sparse matrix
        Symmetric couplings with a zero diagonal. Dense input is stored as C-contiguous float64,
        sparse input as CSR float64 (explicit zeros removed).
    h : (n,) array_like, optional
        External fields; zeros when omitted.
    offset : float
        Constant energy offset.

    Raises
    ------
    ProblemError subclasses
        ``EmptyProblemError``, ``NotSquareError``, ``AsymmetricCouplingError``,
        ``DiagonalCouplingError``, ``NonFiniteError`` or ``SizeMismatchError``, each naming the first
        offending index and the fix. Validation happens here, before any device sees the problem.
    """

    __slots__ = ("_J", "_h", "_offset", "_n", "__weakref__")

    def __init__(self, J: Any, h: Any = None, offset: float = 0.0):
        J = self._validate_J(J)
        n = J.shape[0]
        if h is None:
            h = np.zeros(n)
        else:
            try:
                h = np.array(_real(h, "h"), dtype=np.float64, copy=True)
            except (TypeError, ValueError) as exc:
                if isinstance(exc, ProblemError):
                    raise
                raise ProblemError(f"h must be a numeric vector: {exc}") from None
            if h.ndim != 1:
                raise SizeMismatchError(f"h must be a 1-D vector, got an array of shape {h.shape}")
            if h.shape[0] != n:
                raise SizeMismatchError(
                    f"h has {h.shape[0]} entries but J is {n}x{n}; give one field per spin"
                )
            bad = ~np.isfinite(h)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise NonFiniteError(f"h[{i}] = {h[i]} is not finite; every field must be a number")
        try:
            offset = float(offset)
        except (TypeError, ValueError):
            raise ProblemError(f"offset must be a real number, got {offset!r}") from None
        if not np.isfinite(offset):
            raise NonFiniteError(f"offset = {offset} is not finite")
        _check_energy_range_of(J, h, offset)
        h.flags.writeable = False
        self._J, self._h, self._offset, self._n = J, h, offset, n

    @staticmethod
    def _validate_J(J: Any):
        if sp.issparse(J):
            if J.ndim != 2 or J.shape[0] != J.shape[1]:
                raise NotSquareError(f"J must be square, got shape {J.shape}")
            if J.shape[0] == 0:
                raise EmptyProblemError("the problem has no variables (J is 0x0)")
            J = sp.csr_matrix(_real(J, "J"), dtype=np.float64, copy=True)
            J.eliminate_zeros()
            J.sum_duplicates()
            J.sort_indices()
            if not np.isfinite(J.data).all():
                k = int(np.flatnonzero(~np.isfinite(J.data))[0])
                row = int(np.searchsorted(J.indptr, k, side="right") - 1)
                raise NonFiniteError(
                    f"J[{row}, {J.indices[k]}] = {J.data[k]} is not finite; "
                    "every coupling must be a number"
                )
            diag = J.diagonal()
            if np.any(diag != 0):
                i = int(np.flatnonzero(diag)[0])
                raise DiagonalCouplingError(
                    f"J[{i}, {i}] = {diag[i]} but the diagonal must be zero: s_i^2 = 1 makes it a "
                    "constant; move -1/2 * trace(J) into offset"
                )
            scale = float(np.abs(J.data).max()) if J.nnz else 0.0
            with np.errstate(over="ignore"):  # +-1e308 pairs: inf, correctly "asymmetric"
                diff = (J - J.T).tocoo()
            bad = np.abs(diff.data) > SYMMETRY_RTOL * max(scale, 1e-300)
            if bad.any():
                k = int(np.flatnonzero(bad)[0])
                i, j = int(diff.row[k]), int(diff.col[k])
                raise AsymmetricCouplingError(
                    f"J is not symmetric: J[{i}, {j}] = {J[i, j]} but J[{j}, {i}] = {J[j, i]}; "
                    "symmetrise it, e.g. (J + J.T) / 2, or build it from the upper triangle"
                )
            return J
        try:
            J = np.array(_real(J, "J"), dtype=np.float64, copy=True, order="C")
        except (TypeError, ValueError) as exc:
            if isinstance(exc, ProblemError):
                raise
            raise ProblemError(f"J must be a numeric matrix: {exc}") from None
        if J.ndim != 2 or J.shape[0] != J.shape[1]:
            raise NotSquareError(f"J must be a square 2-D matrix, got shape {J.shape}")
        if J.shape[0] == 0:
            raise EmptyProblemError("the problem has no variables (J is 0x0)")
        bad = ~np.isfinite(J)
        if bad.any():
            i, j = _first_index(bad)
            raise NonFiniteError(
                f"J[{i}, {j}] = {J[i, j]} is not finite; every coupling must be a number"
            )
        diag = np.diagonal(J)
        if np.any(diag != 0):
            i = int(np.flatnonzero(diag)[0])
            raise DiagonalCouplingError(
                f"J[{i}, {i}] = {diag[i]} but the diagonal must be zero: s_i^2 = 1 makes it a "
                "constant; move -1/2 * trace(J) into offset"
            )
        scale = float(np.abs(J).max())
        with np.errstate(over="ignore"):  # +-1e308 pairs: inf, correctly "asymmetric"
            bad = np.abs(J - J.T) > SYMMETRY_RTOL * max(scale, 1e-300)
        if bad.any():
            i, j = _first_index(bad)
            raise AsymmetricCouplingError(
                f"J is not symmetric: J[{i}, {j}] = {J[i, j]} but J[{j}, {i}] = {J[j, i]}; "
                "symmetrise it, e.g. (J + J.T) / 2, or build it from the upper triangle"
            )
        if not np.array_equal(J, J.T):
            # exactly symmetric so kernels can use rows for columns; halves first, so values
            # near the float64 maximum do not overflow
            J = 0.5 * J + 0.5 * J.T
        J.flags.writeable = False
        return J

    # --- basic properties ---------------------------------------------------------------

    @property
    def J(self):
        """The couplings: a read-only float64 ndarray, or a float64 CSR matrix."""
        return self._J

    @property
    def h(self) -> np.ndarray:
        """The fields, a read-only float64 vector of length ``n``."""
        return self._h

    @property
    def offset(self) -> float:
        return self._offset

    @property
    def num_spins(self) -> int:
        return self._n

    n = num_spins

    @property
    def is_sparse(self) -> bool:
        return sp.issparse(self._J)

    @property
    def has_fields(self) -> bool:
        return bool(np.any(self._h != 0))

    def __len__(self) -> int:
        return self._n

    def __repr__(self) -> str:
        kind = f"sparse, nnz={self._J.nnz}" if self.is_sparse else "dense"
        return f"IsingProblem(n={self._n}, {kind}, fields={self.has_fields}, offset={self._offset})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, IsingProblem) or other.n != self.n:
            return NotImplemented if not isinstance(other, IsingProblem) else False
        return (
            self.offset == other.offset
            and np.array_equal(self.h, other.h)
            and np.array_equal(self.dense_J(), other.dense_J())
        )

    __hash__ = None  # type: ignore[assignment]

    def allclose(self, other: "IsingProblem", rtol: float = 1e-12, atol: float = 1e-12) -> bool:
        """Equal up to floating-point rounding (for round trips through other conventions)."""
        return (
            isinstance(other, IsingProblem)
            and other.n == self.n
            and np.isclose(self.offset, other.offset, rtol=rtol, atol=atol)
            and np.allclose(self.h, other.h, rtol=rtol, atol=atol)
            and np.allclose(self.dense_J(), other.dense_J(), rtol=rtol, atol=atol)
        )

    def dense_J(self) -> np.ndarray:
        """J as a dense float64 array (a copy for sparse problems, the stored array otherwise)."""
        return self._J.toarray() if self.is_sparse else self._J

    def sparse_J(self) -> sp.csr_matrix:
        """J as a float64 CSR matrix."""
        return self._J if self.is_sparse else sp.csr_matrix(self._J)

    def to_sparse(self) -> "IsingProblem":
        return IsingProblem(self.sparse_J(), self._h, self._offset)

    def to_dense(self) -> "IsingProblem":
        return IsingProblem(self.dense_J(), self._h, self._offset)

    def max_abs_coefficient(self) -> float:
        jmax = float(np.abs(self._J.data).max()) if self.is_sparse and self._J.nnz else 0.0
        if not self.is_sparse:
            jmax = float(np.abs(self._J).max())
        return max(jmax, float(np.abs(self._h).max()))

    # --- energies -------------------------------------------------------------------------

    def check_spins(self, spins: Any) -> np.ndarray:
        """Return ``spins`` as a 2-D int8 array, or raise :class:`InvalidSpinsError`."""
        s = np.asarray(spins)
        if s.ndim == 1:
            s = s[None, :]
        if s.ndim != 2 or s.shape[1] != self._n:
            raise InvalidSpinsError(
                f"spins must have shape (num_samples, {self._n}) or ({self._n},), got {np.shape(spins)}"
            )
        for a, b in _blocks(s.shape[0], self._n):  # bounded temporaries for any number of rows
            blk = s[a:b]
            bad = (blk != 1) & (blk != -1)
            if bad.any():
                r, c = _first_index(bad)
                raise InvalidSpinsError(
                    f"spins[{a + r}, {c}] = {blk[r, c]} but spins must be -1 or +1 "
                    "(for 0/1 variables use IsingProblem.from_qubo and x = (s + 1) / 2)"
                )
        return s.astype(np.int8, copy=False)

    def energy(self, spins: Any) -> np.ndarray | float:
        """Energies of one configuration (a float) or many (shape ``(num_samples,)``).

        Vectorised: one sparse or dense matrix product per block of samples (blocks of
        :data:`BLOCK_ELEMENTS` spins, so the float64 temporaries stay bounded), in float64.
        """
        single = np.ndim(spins) == 1
        s8 = self.check_spins(spins)
        e = np.empty(s8.shape[0])
        for a, b in _blocks(s8.shape[0], self._n):
            s = s8[a:b].astype(np.float64)
            Js = np.asarray(self._J @ s.T).T if self.is_sparse else s @ self._J
            e[a:b] = -0.5 * np.einsum("ij,ij->i", s, Js) - s @ self._h + self._offset
        return float(e[0]) if single else e

    def energies(self, spins: Any) -> np.ndarray:
        """Energies of many samples, always a 1-D float64 array (dimod's ``energies``; a single
        sample gives an array of one). :meth:`energy` returns a float for a single sample."""
        return np.atleast_1d(np.asarray(self.energy(spins), dtype=np.float64))

    def local_fields(self, spins: Any) -> np.ndarray:
        """``J s + h`` for each sample: flipping spin i changes the energy by ``2 s_i f_i``."""
        s = self.check_spins(spins).astype(np.float64)
        Js = np.asarray(self._J @ s.T).T if self.is_sparse else s @ self._J
        return Js + self._h

    # --- conversions ------------------------------------------------------------------------

    @classmethod
    def _trusted(cls, J: np.ndarray, h: np.ndarray, offset: float) -> "IsingProblem":
        """Internal: wrap a dense ``J`` and ``h`` that the caller built valid by construction
        (float64, square, symmetric, zero diagonal, finite), without the O(n^2) checks.

        For hot paths that build many small problems (batch selection: one per training step),
        where the checks cost as much as the solve. ``J`` and ``h`` are taken over (made
        read-only), not copied. Never use it on user input.
        """
        self = object.__new__(cls)
        J.flags.writeable = False
        h.flags.writeable = False
        self._J, self._h, self._offset, self._n = J, h, float(offset), int(J.shape[0])
        return self

    @classmethod
    def from_qubo(cls, Q: Any, offset: float = 0.0) -> "IsingProblem":
        """Exact conversion of ``E(x) = x^T Q x + offset`` (x in {0,1}) with ``s = 2x - 1``.

        ``Q`` need not be symmetric; only ``(Q + Q^T)/2`` matters. It may also be dimod's dict
        ``{(u, v): Q_uv}`` over the integers ``0..n-1`` (``E = sum Q_uv x_u x_v``; ``(u, u)`` is
        linear; both orders listed add up).
        """
        if isinstance(Q, dict):
            Q = _qubo_dict_matrix(Q)
        if sp.issparse(Q):
            Q = sp.csr_matrix(Q, dtype=np.float64)
            Qs = (Q + Q.T) * 0.5
            d = Qs.diagonal()
            Qoff = Qs - sp.diags(d)
            J = -0.5 * Qoff
            rows = np.asarray(Qs.sum(axis=1)).ravel()
            total = float(Qs.sum())
        else:
            Q = np.asarray(Q, dtype=np.float64)
            if Q.ndim != 2 or Q.shape[0] != Q.shape[1]:
                raise NotSquareError(f"Q must be a square matrix, got shape {Q.shape}")
            if Q.shape[0] == 0:
                raise EmptyProblemError("the QUBO has no variables (Q is 0x0)")
            if not np.isfinite(Q).all():
                i, j = _first_index(~np.isfinite(Q))
                raise NonFiniteError(f"Q[{i}, {j}] = {Q[i, j]} is not finite")
            Qs = 0.5 * (Q + Q.T)
            d = np.diagonal(Qs).copy()
            J = -0.5 * (Qs - np.diag(d))
            rows = Qs.sum(axis=1)
            total = float(Qs.sum())
        h = -0.5 * rows
        const = 0.25 * total + 0.25 * float(np.sum(d)) + float(offset)
        return cls(J, h, const)

    def to_qubo(self) -> tuple[np.ndarray | sp.csr_matrix, float]:
        """Exact inverse of :meth:`from_qubo`: returns ``(Q, offset)`` with Q symmetric.

        ``E(s) = x^T Q x + offset`` for ``x = (s + 1) / 2``.
        """
        Jrow = np.asarray(self._J.sum(axis=1)).ravel()
        lin = 2.0 * Jrow - 2.0 * self._h
        if self.is_sparse:
            Q = (-2.0 * self._J + sp.diags(lin)).tocsr()
        else:
            Q = -2.0 * self._J + np.diag(lin)
        offset = -0.5 * float(Jrow.sum()) + float(self._h.sum()) + self._offset
        return Q, offset

    def to_kaiwu(self) -> np.ndarray:
        """The Kaiwu (n+1)x(n+1) ancilla matrix ``M`` with ``E(s) = -[s,1]^T M [s,1] + offset``.

        ``M[:n,:n] = J/2``, ``M[:n,n] = M[n,:n] = h/2``, ``M[n,n] = 0``. The offset is not part of
        the hardware format: keep it (``self.offset``) to convert energies back.
        """
        n = self._n
        M = np.zeros((n + 1, n + 1))
        M[:n, :n] = 0.5 * self.dense_J()
        M[:n, n] = M[n, :n] = 0.5 * self._h
        return M

    @classmethod
    def from_kaiwu(cls, M: Any, offset: float = 0.0) -> "IsingProblem":
        """Inverse of :meth:`to_kaiwu`. A diagonal of ``M`` is a constant and moves to the offset."""
        M = np.asarray(M, dtype=np.float64)
        if M.ndim != 2 or M.shape[0] != M.shape[1] or M.shape[0] < 2:
            raise NotSquareError(
                f"a Kaiwu matrix must be square with at least 2 rows (n spins + 1 ancilla), got {M.shape}"
            )
        if not np.isfinite(M).all():
            i, j = _first_index(~np.isfinite(M))
            raise NonFiniteError(f"M[{i}, {j}] = {M[i, j]} is not finite")
        n = M.shape[0] - 1
        if np.abs(M[:n, n] - M[n, :n]).max(initial=0) > SYMMETRY_RTOL * max(np.abs(M).max(), 1e-300):
            j = int(np.argmax(np.abs(M[:n, n] - M[n, :n])))
            raise AsymmetricCouplingError(
                f"Kaiwu matrix is not symmetric: M[{j}, {n}] = {M[j, n]} but M[{n}, {j}] = {M[n, j]}"
            )
        d = np.diagonal(M)
        J = 2.0 * (M[:n, :n] - np.diag(d[:n]))
        h = M[:n, n] + M[n, :n]
        return cls(J, h, offset - float(d.sum()))

    @staticmethod
    def spins_from_kaiwu(spins_with_ancilla: Any, n: int | None = None) -> np.ndarray:
        """The one Kaiwu gauge fix: ``(k, n+1)`` rows whose last column is the ancilla ->
        ``(k, n)`` int8 spins.

        The Kaiwu energy ``-[s, a]^T M [s, a]`` is unchanged by flipping every spin, ancilla
        included, so each row is multiplied by its ancilla (``a = +1`` afterwards) and the
        ancilla is dropped. ``n`` (optional) is the expected number of spins. Raises
        :class:`InvalidSpinsError` for another shape, no rows, or values other than -1 and +1.
        """
        s = np.asarray(spins_with_ancilla)
        if s.ndim == 1:
            s = s[None, :]
        want = "(k, n+1)" if n is None else f"(k, {n + 1})"
        if s.ndim != 2 or s.shape[0] == 0 or s.shape[1] < 2 or (n is not None and s.shape[1] != n + 1):
            raise InvalidSpinsError(
                f"Kaiwu output must be spins of shape {want} (n spins + the ancilla) with k >= 1, "
                f"got shape {np.shape(spins_with_ancilla)}")
        if np.any((s != 1) & (s != -1)):
            raise InvalidSpinsError("Kaiwu output holds values other than -1 and +1")
        return (s[:, :-1] * s[:, -1:]).astype(np.int8)

    @classmethod
    def from_dimod(cls, bqm: Any) -> tuple["IsingProblem", list]:
        """From a dimod BinaryQuadraticModel; returns ``(problem, variable_order)``."""
        from .interop.dimod import problem_from_bqm

        return problem_from_bqm(bqm)

    def to_dimod(self):
        """A dimod SPIN BinaryQuadraticModel with the same energies (variables 0..n-1)."""
        from .interop.dimod import problem_to_bqm

        return problem_to_bqm(self)

    @classmethod
    def from_ising_dicts(cls, h: Any, J: Any, offset: float = 0.0) -> "IsingProblem":
        """From our convention given sparsely: ``h`` a sequence or ``{i: h_i}``, ``J`` ``{(i, j): J_ij}``.

        Each pair is one symmetric coupling (``J_ij = J_ji``); listing both orders adds them.
        Variables must be the integers ``0..n-1``.
        """
        hd = dict(enumerate(h)) if not isinstance(h, dict) else dict(h)
        keys = set(hd)
        for i, j in J:
            keys.update((i, j))
        if not keys:
            raise EmptyProblemError("the problem has no variables (empty h and J)")
        if not all(isinstance(k, (int, np.integer)) and k >= 0 for k in keys):
            raise ProblemError("variables must be non-negative integers 0..n-1")
        n = int(max(keys)) + 1
        hv = np.zeros(n)
        for i, v in hd.items():
            hv[int(i)] = v
        rows, cols, vals = [], [], []
        for (i, j), v in J.items():
            if i == j:
                raise DiagonalCouplingError(f"coupling ({i}, {j}) is a self-coupling; put it in offset")
            rows += [i, j]
            cols += [j, i]
            vals += [v, v]
        Jm = sp.coo_matrix((vals, (rows, cols)), shape=(n, n)).tocsr()
        return cls(Jm, hv, offset)

    @classmethod
    def from_dimod_ising(cls, h: Any, J: Any, offset: float = 0.0) -> "IsingProblem":
        """From dimod's Ising convention, ``E(s) = sum_i h_i s_i + sum_{i<j} J_ij s_i s_j + offset``
        (what ``sample_ising`` takes everywhere in dimod; dimod itself is not needed).

        ``h``: a sequence or ``{i: h_i}``. ``J``: ``{(i, j): J_ij}`` (both orders listed add up,
        as in dimod) or an ``(n, n)`` array whose off-diagonal entries all count
        (``E = s^T J s`` off the diagonal; the diagonal is a constant, ``s_i^2 = 1``, added to the
        offset). Variables are the integers ``0..n-1``. The result has exactly the same energies
        in this class's convention: ``h_ours = -h``, ``J_ours = -(J + J^T)`` off the diagonal.
        """
        if isinstance(J, dict):
            return cls.from_ising_dicts(_dict_of(h, lambda v: -v), {k: -v for k, v in J.items()},
                                        offset)
        if sp.issparse(J):
            Jm = sp.csr_matrix(J, dtype=np.float64)
            d = Jm.diagonal()
            Jm = -(Jm + Jm.T) + sp.diags(2.0 * d)
        else:
            Jm = np.asarray(J, dtype=np.float64)
            if Jm.ndim != 2 or Jm.shape[0] != Jm.shape[1]:
                raise NotSquareError(f"J must be a dict {{(i, j): J_ij}} or a square matrix, got "
                                     f"shape {Jm.shape}")
            d = np.diagonal(Jm).copy()
            Jm = -(Jm + Jm.T) + np.diag(2.0 * d)
        n = Jm.shape[0]
        hv = np.zeros(n)
        for i, v in _dict_of(h, float).items():
            if not (isinstance(i, (int, np.integer)) and 0 <= i < n):
                raise SizeMismatchError(f"h has variable {i!r} but J is {n}x{n}")
            hv[int(i)] = -v
        return cls(Jm, hv, float(offset) + float(np.sum(d)))

    def quantize(self, bits: int = 8) -> "QuantizedProblem":
        """Integer problem at hardware precision; see :func:`quantize`."""
        return quantize(self, bits)

    # --- random instances ---------------------------------------------------------------------

    @classmethod
    def random_sk(cls, n: int, seed: Any = None, fields: bool = False, gaussian: bool = True):
        """Sherrington-Kirkpatrick couplings ``J_ij ~ N(0, 1)`` (or ±1) symmetric, optional N(0,1) h."""
        rng = np.random.default_rng(seed)
        A = rng.standard_normal((n, n)) if gaussian else rng.choice([-1.0, 1.0], size=(n, n))
        J = np.triu(A, 1)
        J = J + J.T
        h = rng.standard_normal(n) if fields else None
        return cls(J, h)

    # --- files --------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> None:
        """Write to ``.npz``, ``.json`` or a rudy edge list (``.txt``/``.rudy``/``.gset``).

        Writes to a temporary file and renames it, so a failure never leaves half a file.
        """
        from . import io

        io.save_problem(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike, **kwargs: Any) -> "IsingProblem":
        """Read a problem; the format is chosen by extension (see :mod:`kpp_sdk.io`)."""
        from . import io

        return io.load_problem(path, **kwargs)

    def to_json_dict(self) -> dict:
        d: dict[str, Any] = {"format": _JSON_FORMAT, "version": _JSON_VERSION, "n": self._n}
        if self.is_sparse:
            coo = sp.triu(self._J, k=1).tocoo()
            d["J"] = {"i": coo.row.tolist(), "j": coo.col.tolist(), "v": coo.data.tolist()}
        else:
            iu = np.triu_indices(self._n, 1)
            d["J"] = {"upper": self._J[iu].tolist()}
        d["h"] = self._h.tolist()
        d["offset"] = self._offset
        return d

    @classmethod
    def from_json_dict(cls, d: Any) -> "IsingProblem":
        """The inverse of :meth:`to_json_dict`; strict: ``n`` and indices must be integers, each
        coupled pair appears once with ``i < j``, and a sparse problem without ``h`` may declare
        at most :data:`kpp_sdk.io.MAX_ISOLATED_SPINS` spins beyond those its couplings name."""
        if not isinstance(d, dict) or d.get("format") != _JSON_FORMAT:
            raise ProblemFormatError(
                f'not a kpp problem: expected a JSON object with "format": "{_JSON_FORMAT}"'
            )
        if d.get("version") != _JSON_VERSION:
            raise ProblemFormatError(
                f"unsupported kpp problem version {d.get('version')!r}; this kpp-sdk reads "
                f"version {_JSON_VERSION}"
            )
        try:
            n = _json_int(d["n"], "n")
            if n < 1:
                raise EmptyProblemError(f"n = {n}; a problem needs at least one spin")
            Jd = d["J"]
            if not isinstance(Jd, dict):
                raise ProblemFormatError('"J" must be an object: {"upper": [...]} or '
                                         '{"i": [...], "j": [...], "v": [...]}')
            h = d.get("h")
            if h is not None:
                h = _json_numbers(h, "h")
                if h.shape != (n,):
                    raise SizeMismatchError(f"h has {h.size} entries but n = {n}")
            if "upper" in Jd:
                upper = _json_numbers(Jd["upper"], "J.upper")
                if upper.shape != (n * (n - 1) // 2,):
                    raise ProblemFormatError(
                        f"J.upper has {upper.size} entries; n = {n} needs {n * (n - 1) // 2}"
                    )
                J = np.zeros((n, n))
                J[np.triu_indices(n, 1)] = upper
                J = J + J.T
            else:
                i = _json_indices(Jd["i"], "J.i")
                j = _json_indices(Jd["j"], "J.j")
                v = _json_numbers(Jd["v"], "J.v")
                if not (i.shape == j.shape == v.shape):
                    raise ProblemFormatError("J.i, J.j and J.v must have the same length")
                if h is None and n > 2 * i.size + _max_isolated():
                    raise ProblemFormatError(
                        f"n = {n:,} but the {i.size:,} couplings name at most {2 * i.size:,} "
                        f"spins and there is no h; more than {_max_isolated():,} spins without "
                        "a coupling or a field is taken for a corrupt file")
                if i.size and (min(i.min(), j.min()) < 0 or max(i.max(), j.max()) >= n):
                    raise ProblemFormatError(f"a coupling index is outside 0..{n - 1}")
                if np.any(i == j):
                    k = int(np.flatnonzero(i == j)[0])
                    raise DiagonalCouplingError(f"coupling ({i[k]}, {j[k]}) is a self-coupling")
                if np.any(i > j):
                    k = int(np.flatnonzero(i > j)[0])
                    raise ProblemFormatError(
                        f"coupling {k} is ({i[k]}, {j[k]}), in the lower triangle; list each "
                        "pair once with i < j (as to_json_dict writes it)")
                key = i * n + j
                if np.unique(key).size != key.size:
                    order = np.argsort(key, kind="stable")
                    k = int(order[np.flatnonzero(np.diff(key[order]) == 0)[0] + 1])
                    raise ProblemFormatError(
                        f"coupling ({i[k]}, {j[k]}) is listed twice; list each pair once (sum "
                        "the values if that is meant)")
                J = sp.coo_matrix(
                    (np.r_[v, v], (np.r_[i, j], np.r_[j, i])), shape=(n, n)
                ).tocsr()
            return cls(J, h, _json_number(d.get("offset", 0.0), "offset"))
        except KeyError as exc:
            raise ProblemFormatError(f"kpp problem JSON lacks the field {exc.args[0]!r}") from None
        except (TypeError, ValueError, OverflowError) as exc:
            if isinstance(exc, ProblemError):
                raise
            raise ProblemFormatError(f"malformed kpp problem JSON: {exc}") from None


def _max_isolated() -> int:
    from .io import MAX_ISOLATED_SPINS

    return MAX_ISOLATED_SPINS


def _json_int(x: Any, what: str) -> int:
    """An integer from JSON: ints, and floats with an integral value (``3.0``); never ``2.7``."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise ProblemFormatError(f"{what} must be an integer, got {x!r}")
    if isinstance(x, float) and not (np.isfinite(x) and x.is_integer()):
        raise ProblemFormatError(f"{what} must be an integer, got {x!r} (not rounded)")
    return int(x)


def _json_number(x: Any, what: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise ProblemFormatError(f"{what} must be a number, got {x!r}")
    return float(x)


def _json_numbers(x: Any, what: str) -> np.ndarray:
    if not isinstance(x, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                          for v in x):
        raise ProblemFormatError(f"{what} must be a list of numbers")
    return np.asarray(x, dtype=np.float64)


def _json_indices(x: Any, what: str) -> np.ndarray:
    if not isinstance(x, list):
        raise ProblemFormatError(f"{what} must be a list of integers")
    for k, v in enumerate(x):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (
                isinstance(v, float) and not (np.isfinite(v) and v.is_integer())):
            raise ProblemFormatError(f"{what}[{k}] = {v!r} is not an integer index (indices are "
                                     "never rounded)")
        if abs(v) >= 2**62:
            raise ProblemFormatError(f"{what}[{k}] = {v!r} is out of range")
    return np.fromiter((int(v) for v in x), dtype=np.int64, count=len(x))


@dataclass(frozen=True)
class QuantizedProblem:
    """The result of :func:`quantize`.

    ``problem`` has integer-valued coefficients in ``[-(2^(bits-1)-1), 2^(bits-1)-1]``;
    ``problem ≈ original * scale`` (the offset is scaled but not rounded), so ``lsb = 1 / scale``
    is the size of one integer level in the original units (what the emulator reports as
    ``coupling_lsb``). ``max_error`` is the worst absolute rounding error of one coefficient in
    the *original* units.
    """

    problem: IsingProblem
    scale: float
    max_error: float
    bits: int

    @property
    def lsb(self) -> float:
        """Original units per integer level: ``original ≈ lsb * problem``."""
        return 1.0 / self.scale

    def energy_in_original_units(self, spins: Any) -> np.ndarray | float:
        return self.problem.energy(spins) / self.scale


def quantize(problem: IsingProblem, bits: int = 8) -> QuantizedProblem:
    """Rescale so the largest ``|J_ij|`` or ``|h_i|`` is ``2^(bits-1) - 1`` (127 for 8 bits), round.

    This is the hardware precision rule of QBoson's machine (int8 with one sign bit). Fields share
    the scale of the couplings, as they do in the Kaiwu ancilla matrix.
    """
    if not isinstance(bits, (int, np.integer)) or not 2 <= bits <= 53:
        raise ProblemError(f"bits must be an integer in 2..53, got {bits!r}")
    top = 2 ** (int(bits) - 1) - 1
    m = problem.max_abs_coefficient()
    if m == 0:
        return QuantizedProblem(problem, 1.0, 0.0, int(bits))
    scale = top / m
    if problem.is_sparse:
        Jq = problem.J.copy()
        Jq.data = np.round(Jq.data * scale)
        err_j = float(np.abs(Jq.data / scale - problem.J.data).max()) if Jq.nnz else 0.0
    else:
        Jq = np.round(problem.J * scale)
        err_j = float(np.abs(Jq / scale - problem.J).max())
    hq = np.round(problem.h * scale)
    err_h = float(np.abs(hq / scale - problem.h).max())
    q = IsingProblem(Jq, hq, problem.offset * scale)
    return QuantizedProblem(q, scale, max(err_j, err_h), int(bits))


def _dict_of(values: Any, conv) -> dict:
    """``{i: conv(v)}`` from a dict or a sequence (dimod accepts both for ``h``)."""
    items = values.items() if isinstance(values, dict) else enumerate(values)
    return {i: conv(v) for i, v in items}


def _qubo_dict_matrix(Q: dict) -> sp.csr_matrix:
    """dimod's ``{(u, v): Q_uv}`` as a sparse ``n x n`` matrix (entries of repeated pairs add)."""
    keys = {k for pair in Q for k in pair}
    if not keys:
        raise EmptyProblemError("the QUBO has no variables (empty Q)")
    if not all(isinstance(k, (int, np.integer)) and k >= 0 for k in keys):
        raise ProblemError("QUBO variables must be the integers 0..n-1; for other labels use "
                           "kpp_sdk.interop.dimod.DimodSampler")
    n = int(max(keys)) + 1
    rows = [int(u) for u, _ in Q]
    cols = [int(v) for _, v in Q]
    return sp.coo_matrix((np.asarray(list(Q.values()), dtype=np.float64), (rows, cols)),
                         shape=(n, n)).tocsr()
