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
  1-based vertices; read as a MAX-CUT graph, ``J = -W`` (so ``cut = (sum W - E) / 2``). Each edge
  once (``i j`` and ``j i`` are the same edge; listing one twice is an error).

Reading is strict and bounded. Every defect raises :class:`~kpp_sdk.ProblemFormatError` (or
another :class:`~kpp_sdk.ProblemError`) with one line naming the file, the place and the fix;
nothing is changed silently: no fractional index or size is rounded, no duplicate pair is
summed, no complex coefficient is cut to its real part. Sizes a file claims are checked against
what it holds before anything is allocated: an ``.npy`` member's header against its length, a
compressed member against the most deflate can expand (:data:`MAX_DEFLATE_RATIO`), a CSR shape
against its index arrays, and a problem of ``n`` spins must list couplings or fields for all
but at most :data:`MAX_ISOLATED_SPINS` of them.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np
import scipy.sparse as sp

from .errors import ProblemError, ProblemFormatError
from .problem import IsingProblem

__all__ = ["jsonable", "load_problem", "save_problem", "read_rudy", "write_rudy", "atomic_write",
           "MAX_ISOLATED_SPINS", "MAX_DEFLATE_RATIO"]

_RUDY = {".txt", ".rudy", ".gset"}
#: Spins a file may declare beyond those its couplings and fields name (isolated vertices of a
#: rudy graph, a sparse JSON problem without fields): 2**20, the largest problem any built-in
#: device takes.
MAX_ISOLATED_SPINS = 1 << 20
#: Deflate expands at most ~1032-fold; a compressed ``.npz`` member claiming more is refused.
MAX_DEFLATE_RATIO = 1100
#: Errors of the parsers that mean "this file is malformed".
_FORMAT_ERRORS = (ValueError, TypeError, OverflowError, KeyError, IndexError, EOFError,
                  zipfile.BadZipFile, zlib.error, RecursionError, UnicodeDecodeError)


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
            return _read_json(path)
        return read_rudy(path)
    except ProblemError as exc:
        if str(exc).startswith(path.name):
            raise
        raise type(exc)(f"{path.name}: {_one_line(exc)}") from None
    except MemoryError:
        raise ProblemFormatError(f"{path.name}: too large to load into memory") from None
    except _FORMAT_ERRORS as exc:  # a defect the checks above did not name: still one line
        raise ProblemFormatError(f"{path.name}: malformed {suffix} file "
                                 f"({type(exc).__name__}: {_one_line(exc)})") from None
    except OSError as exc:
        raise ProblemFormatError(f"{path.name}: cannot be read ({_one_line(exc)})") from None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]


# --- .npz / .npy ---------------------------------------------------------------------------------


def _npy_header(f: Any, where: str) -> tuple[tuple[int, ...], np.dtype, int]:
    """``(shape, dtype, header_bytes)`` of the ``.npy`` stream ``f`` (positioned at its start)."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(f)
        if version == (1, 0):
            shape, _fortran, dtype = fmt.read_array_header_1_0(f)
        else:
            shape, _fortran, dtype = fmt.read_array_header_2_0(f)
    except (ValueError, EOFError) as exc:
        raise ProblemFormatError(f"{where}: not a valid .npy header ({_one_line(exc)})") from None
    if dtype.hasobject:
        raise ProblemFormatError(f"{where}: holds Python objects; only numeric arrays are read")
    return tuple(int(x) for x in shape), dtype, f.tell()


def _check_npz_members(path: Path) -> None:
    """Every member's header against its size, before any array is allocated."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise ProblemFormatError(f"{path.name}: not a readable .npz file ({_one_line(exc)})") from None
    with zf:
        for info in zf.infolist():
            where = f"{path.name}[{info.filename}]"
            if info.compress_type != zipfile.ZIP_STORED and \
                    info.file_size > MAX_DEFLATE_RATIO * info.compress_size + 4096:
                raise ProblemFormatError(
                    f"{where}: claims {info.file_size:,} bytes from {info.compress_size:,} "
                    "compressed, more than deflate can produce: the file is corrupt")
            if not info.filename.endswith(".npy"):
                continue
            with zf.open(info) as f:
                shape, dtype, head = _npy_header(f, where)
            need = math.prod(shape) * dtype.itemsize
            if need != info.file_size - head:
                raise ProblemFormatError(
                    f"{where}: its header claims shape {shape} of {dtype} ({need:,} bytes) but "
                    f"it holds {info.file_size - head:,}: the file is truncated or corrupt")


def _read_npz(path: Path, bare_matrix: str) -> IsingProblem:
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic == b"\x93NUMPY":  # np.load goes by content: an .npz may hold a bare .npy
        with open(path, "rb") as f:
            shape, dtype, head = _npy_header(f, path.name)
        need = math.prod(shape) * dtype.itemsize
        if need != path.stat().st_size - head:
            raise ProblemFormatError(
                f"{path.name}: its header claims shape {shape} of {dtype} ({need:,} bytes) but "
                f"the file holds {path.stat().st_size - head:,}: it is truncated or corrupt")
    else:
        _check_npz_members(path)
    try:
        data = np.load(path, allow_pickle=False)
    except _FORMAT_ERRORS + (OSError,) as exc:
        raise ProblemFormatError(f"{path.name}: not a readable .npz/.npy file "
                                 f"({_one_line(exc)})") from None
    if isinstance(data, np.ndarray):
        W = _numeric(data, "the matrix")
        return IsingProblem(-W if bare_matrix == "W" else W)
    with data:
        keys = set(data.files)
        h = _numeric(data["h"], "'h'") if "h" in keys else None
        offset = _scalar(data["offset"], "'offset'") if "offset" in keys else 0.0
        if "J" in keys:
            return IsingProblem(_numeric(data["J"], "'J'"), h, offset)
        if {"J_data", "J_indices", "J_indptr", "J_shape"} <= keys:
            return IsingProblem(_csr(data), h, offset)
        if len(keys) == 1:
            (k,) = keys
            W = _numeric(data[k], f"{k!r}")
            return IsingProblem(-W if bare_matrix == "W" else W)
        raise ProblemFormatError(
            f"expected arrays 'J' (or J_data/J_indices/J_indptr/J_shape) and optional "
            f"'h', 'offset'; found {sorted(keys)}"
        )


def _numeric(a: np.ndarray, what: str) -> np.ndarray:
    if a.dtype.kind not in "biufc":
        raise ProblemFormatError(f"{what} has dtype {a.dtype}; expected numbers")
    return a


def _scalar(a: np.ndarray, what: str) -> float:
    if a.ndim != 0 or a.dtype.kind not in "iuf":
        raise ProblemFormatError(f"{what} must be one real number, got an array of shape "
                                 f"{a.shape} and dtype {a.dtype}")
    return float(a)


def _csr(data: Any) -> sp.csr_matrix:
    shape = np.asarray(data["J_shape"])
    if shape.shape != (2,) or shape.dtype.kind not in "iu" or shape[0] != shape[1] or shape[0] < 1:
        raise ProblemFormatError(f"'J_shape' must be two equal positive integers (n, n), got "
                                 f"{shape.tolist()}")
    n = int(shape[0])
    indptr, indices, values = data["J_indptr"], data["J_indices"], data["J_data"]
    for name, arr in (("J_indptr", indptr), ("J_indices", indices)):
        if arr.ndim != 1 or arr.dtype.kind not in "iu":
            raise ProblemFormatError(f"'{name}' must be a 1-D integer array")
    if indptr.shape[0] != n + 1:  # the shape a file claims is backed by its index array
        raise ProblemFormatError(
            f"'J_shape' says n = {n} but 'J_indptr' has {indptr.shape[0]} entries (n + 1 needed)")
    if values.ndim != 1 or values.shape != indices.shape or int(indptr[-1]) != values.shape[0] \
            or int(indptr[0]) != 0 or np.any(np.diff(indptr) < 0):
        raise ProblemFormatError("'J_data', 'J_indices' and 'J_indptr' do not describe one CSR "
                                 "matrix (lengths or row pointers disagree)")
    if indices.size and (int(indices.min()) < 0 or int(indices.max()) >= n):
        raise ProblemFormatError(f"a column index in 'J_indices' is outside 0..{n - 1}")
    return sp.csr_matrix((_numeric(values, "'J_data'"), indices, indptr), shape=(n, n))


# --- JSON ----------------------------------------------------------------------------------------


def _read_json(path: Path) -> IsingProblem:
    with open(path, encoding="utf-8") as f:
        try:
            d = json.load(f)
        except json.JSONDecodeError as exc:
            raise ProblemFormatError(f"{path.name}: not valid JSON ({exc})") from None
        except RecursionError:
            raise ProblemFormatError(f"{path.name}: JSON nested too deeply to be a kpp "
                                     "problem") from None
    return IsingProblem.from_json_dict(d)


# --- rudy ----------------------------------------------------------------------------------------


def read_rudy(path: str | os.PathLike) -> IsingProblem:
    """Read a rudy/Gset edge list as MAX-CUT: ``J = -W`` (1-based vertices, ``n m`` header)."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, encoding="utf-8") as f:
        lines = ((k, ln.split()) for k, ln in enumerate(f, 1)
                 if ln.strip() and not ln.lstrip().startswith(("#", "%")))
        first = next(lines, None)
        if first is None:
            raise ProblemFormatError(f"{path.name}: empty file; expected a header line 'n m'")
        k0, head = first
        if len(head) != 2 or not all(_is_int_text(x) for x in head):
            raise ProblemFormatError(
                f"{path.name}, line {k0}: expected the header 'n m' (two integers), got "
                f"{' '.join(head)[:80]!r}")
        n, m = int(head[0]), int(head[1])
        if n <= 0:
            raise ProblemFormatError(f"{path.name}: header says n = {n}; need at least one vertex")
        if m < 0 or m > size // 4:  # an edge line is at least "i j\n"
            raise ProblemFormatError(
                f"{path.name}: header says {m:,} edges but a file of {size:,} bytes holds at "
                f"most {size // 4:,}")
        if n > 2 * m + MAX_ISOLATED_SPINS:
            raise ProblemFormatError(
                f"{path.name}: header says n = {n:,} vertices but {m:,} edges touch at most "
                f"{2 * m:,}; more than {MAX_ISOLATED_SPINS:,} isolated vertices is taken for a "
                "corrupt header")
        rows = np.empty(m, dtype=np.int64)
        cols = np.empty(m, dtype=np.int64)
        w = np.empty(m, dtype=np.float64)
        lineno = np.empty(m, dtype=np.int64)
        count = 0
        for k, parts in lines:
            if count == m:
                raise ProblemFormatError(f"{path.name}: header says {m} edges but line {k} is "
                                         "one more")
            if len(parts) not in (2, 3) or not (_is_int_text(parts[0]) and
                                                _is_int_text(parts[1])):
                raise ProblemFormatError(
                    f"{path.name}, line {k}: expected 'i j w' (two vertex numbers and a weight), "
                    f"got {' '.join(parts)[:80]!r}")
            i, j = int(parts[0]), int(parts[1])
            if not (1 <= i <= n and 1 <= j <= n):
                raise ProblemFormatError(
                    f"{path.name}, line {k}: vertex out of range 1..{n} ({parts[0][:24]} "
                    f"{parts[1][:24]})")
            if i == j:
                raise ProblemFormatError(f"{path.name}, line {k}: self-loop on vertex {i}")
            try:
                w[count] = float(parts[2]) if len(parts) > 2 else 1.0
            except ValueError:
                raise ProblemFormatError(
                    f"{path.name}, line {k}: the weight {parts[2][:40]!r} is not a number") from None
            rows[count], cols[count], lineno[count] = i - 1, j - 1, k
            count += 1
    if count != m:
        raise ProblemFormatError(f"{path.name}: header says {m} edges but the file has {count}")
    lo, hi = np.minimum(rows, cols), np.maximum(rows, cols)
    key = lo * n + hi
    order = np.argsort(key, kind="stable")
    dup = np.flatnonzero(np.diff(key[order]) == 0)
    if dup.size:
        a, b = order[dup[0]], order[dup[0] + 1]
        raise ProblemFormatError(
            f"{path.name}, line {lineno[b]}: edge {lo[b] + 1}-{hi[b] + 1} is listed again (first "
            f"on line {lineno[a]}); list each edge once, with the weights summed if that is meant")
    W = sp.coo_matrix((np.r_[w, w], (np.r_[rows, cols], np.r_[cols, rows])), shape=(n, n)).tocsr()
    return IsingProblem(-W)


def _is_int_text(t: str) -> bool:
    return t.lstrip("+-").isdigit()


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


def jsonable(x: Any) -> Any:
    """``x`` as plain JSON values: dicts (keys as strings), lists, numbers, strings, bools and
    None. NumPy arrays become lists, NumPy and torch scalars their Python value, NaN becomes None
    (JSON has no NaN), anything else its ``repr``. Used for ``SampleSet.info`` and ``log.json``."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if hasattr(x, "item") and callable(x.item) and getattr(x, "ndim", 0) == 0:
        x = x.item()
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    return repr(x)

