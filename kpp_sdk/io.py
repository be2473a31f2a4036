"""Problem files: ``.npz``, kpp JSON and rudy/Gset edge lists.

Formats, chosen by extension:

- ``.npz``: arrays ``J`` (dense), or ``J_data``/``J_indices``/``J_indptr``/``J_shape`` (CSR), plus
  optional ``h`` and ``offset``. An ``.npz``/``.npy`` holding a single bare matrix (as the
  cim-optimizer instance files do) is read as MAX-CUT/coupling weights ``W`` and converted with the
  cim-optimizer convention ``J = -W`` (so ``E = 1/2 s^T W s``); pass ``bare_matrix="J"`` to take it
  as ``J`` instead.
- ``.json``: ``{"format": "kpp-ising", "version": 1, "n": ..., "J": {...}, "h": [...], "offset": ...}``
  (see :meth:`IsingProblem.to_json_dict`).
- ``.txt``, ``.rudy``, ``.gset``: rudy edge list: a header ``n m`` then ``m`` lines ``i j w`` with
  1-based vertices; read as a MAX-CUT graph, ``J = -W`` (so ``cut = (sum W - E) / 2``).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import scipy.sparse as sp

from .errors import ProblemError, ProblemFormatError
from .problem import IsingProblem

__all__ = ["load_problem", "save_problem", "read_rudy", "write_rudy", "atomic_write"]

_RUDY = {".txt", ".rudy", ".gset"}


def _suffix(path: Path) -> str:
    s = path.suffix.lower()
    if s not in {".npz", ".npy", ".json"} | _RUDY:
        raise ProblemFormatError(
            f"{path.name}: unknown problem file type {s or '(none)'!r}; use .npz, .json, "
            "or a rudy edge list (.txt, .rudy, .gset)"
        )
    return s


def load_problem(path: str | os.PathLike, *, bare_matrix: str = "W") -> IsingProblem:
    """Read a problem file (format by extension, see the module docstring)."""
    path = Path(path)
    suffix = _suffix(path)
    if not path.is_file():
        raise ProblemFormatError(f"{path}: no such file")
    if bare_matrix not in ("W", "J"):
        raise ProblemError(f'bare_matrix must be "W" (J = -W) or "J", got {bare_matrix!r}')
    try:
        if suffix in (".npz", ".npy"):
            return _read_npz(path, bare_matrix)
        if suffix == ".json":
            with open(path, encoding="utf-8") as f:
                try:
                    d = json.load(f)
                except json.JSONDecodeError as exc:
                    raise ProblemFormatError(f"{path.name}: not valid JSON ({exc})") from None
            return IsingProblem.from_json_dict(d)
        return read_rudy(path)
    except ProblemError as exc:
        if str(exc).startswith(path.name):
            raise
        raise type(exc)(f"{path.name}: {exc}") from None


def _read_npz(path: Path, bare_matrix: str) -> IsingProblem:
    try:
        data = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ProblemFormatError(f"{path.name}: not a readable .npz/.npy file ({exc})") from None
    if isinstance(data, np.ndarray):
        W = data
        return IsingProblem(-W if bare_matrix == "W" else W)
    with data:
        keys = set(data.files)
        h = data["h"] if "h" in keys else None
        offset = float(data["offset"]) if "offset" in keys else 0.0
        if "J" in keys:
            return IsingProblem(data["J"], h, offset)
        if {"J_data", "J_indices", "J_indptr", "J_shape"} <= keys:
            J = sp.csr_matrix(
                (data["J_data"], data["J_indices"], data["J_indptr"]), shape=tuple(data["J_shape"])
            )
            return IsingProblem(J, h, offset)
        if len(keys) == 1:
            (k,) = keys
            W = data[k]
            return IsingProblem(-W if bare_matrix == "W" else W)
        raise ProblemFormatError(
            f"{path.name}: expected arrays 'J' (or J_data/J_indices/J_indptr/J_shape) and optional "
            f"'h', 'offset'; found {sorted(keys)}"
        )


def read_rudy(path: str | os.PathLike) -> IsingProblem:
    """Read a rudy/Gset edge list as MAX-CUT: ``J = -W`` (1-based vertices, ``n m`` header)."""
    path = Path(path)
    with open(path, encoding="utf-8") as f:
        lines = [ln.split() for ln in f if ln.strip() and not ln.lstrip().startswith(("#", "%"))]
    if not lines:
        raise ProblemFormatError(f"{path.name}: empty file; expected a header line 'n m'")
    try:
        n, m = int(lines[0][0]), int(lines[0][1])
    except (ValueError, IndexError):
        raise ProblemFormatError(
            f"{path.name}, line 1: expected the header 'n m' (two integers), got {' '.join(lines[0])!r}"
        ) from None
    body = lines[1:]
    if len(body) != m:
        raise ProblemFormatError(f"{path.name}: header says {m} edges but the file has {len(body)}")
    if n <= 0:
        raise ProblemFormatError(f"{path.name}: header says n = {n}; need at least one vertex")
    rows = np.empty(m, dtype=np.int64)
    cols = np.empty(m, dtype=np.int64)
    w = np.empty(m, dtype=np.float64)
    for k, parts in enumerate(body):
        try:
            rows[k], cols[k] = int(parts[0]), int(parts[1])
            w[k] = float(parts[2]) if len(parts) > 2 else 1.0
        except (ValueError, IndexError):
            raise ProblemFormatError(
                f"{path.name}, line {k + 2}: expected 'i j w', got {' '.join(parts)!r}"
            ) from None
    bad = (rows < 1) | (rows > n) | (cols < 1) | (cols > n)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise ProblemFormatError(
            f"{path.name}, line {k + 2}: vertex out of range 1..{n} ({rows[k]} {cols[k]})"
        )
    if np.any(rows == cols):
        k = int(np.flatnonzero(rows == cols)[0])
        raise ProblemFormatError(f"{path.name}, line {k + 2}: self-loop on vertex {rows[k]}")
    rows -= 1
    cols -= 1
    W = sp.coo_matrix((np.r_[w, w], (np.r_[rows, cols], np.r_[cols, rows])), shape=(n, n)).tocsr()
    return IsingProblem(-W)


def write_rudy(problem: IsingProblem, f) -> None:
    if problem.has_fields or problem.offset != 0:
        raise ProblemError(
            "a rudy edge list holds only a graph (J = -W); this problem has fields or an offset: "
            "save it as .npz or .json instead"
        )
    coo = sp.triu(problem.sparse_J(), k=1).tocoo()
    f.write(f"{problem.n} {coo.nnz}\n")
    for i, j, v in zip(coo.row, coo.col, coo.data):
        w = -v
        f.write(f"{i + 1} {j + 1} {int(w) if float(w).is_integer() else repr(float(w))}\n")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()  # read once at import: os.umask is process-wide, not thread-safe to probe


def atomic_write(path: str | os.PathLike, writer: Callable[[Any], None], binary: bool = False) -> None:
    """Write through a temporary file in the same folder and rename it into place.

    A failure (bad data, a full disk, Ctrl-C) leaves any existing file untouched and no partial one.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent or ".", prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as f:
            writer(f)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; a user's file gets the usual mode
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def save_problem(problem: IsingProblem, path: str | os.PathLike) -> None:
    """Write ``problem`` in the format given by the extension of ``path``; atomic."""
    path = Path(path)
    suffix = _suffix(path)
    if suffix == ".npy":
        raise ProblemFormatError(".npy holds a bare matrix only; save as .npz to keep h and offset")
    if suffix == ".npz":
        if problem.is_sparse:
            J = problem.J
            arrays = dict(J_data=J.data, J_indices=J.indices, J_indptr=J.indptr, J_shape=J.shape)
        else:
            arrays = dict(J=problem.J)
        atomic_write(
            path,
            lambda f: np.savez_compressed(f, h=problem.h, offset=problem.offset, **arrays),
            binary=True,
        )
    elif suffix == ".json":
        atomic_write(path, lambda f: json.dump(problem.to_json_dict(), f))
    else:
        atomic_write(path, lambda f: write_rudy(problem, f))
