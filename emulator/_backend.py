"""Array-module switch (NumPy or CuPy) and the random-number abstraction.

Everything in the reference engine is written against one array module ``xp``. Random numbers
come from :class:`_Rng`, which wraps a :class:`numpy.random.Generator` when ``xp`` is NumPy and
a ``cupy.random.Generator`` (or CuPy's legacy RandomState when that is missing) when ``xp`` is
CuPy, so that noise is generated on the device that holds the state.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "blas_threads",
    "get_xp",
    "is_cupy",
    "make_rng",
    "resolve_seed",
    "seed_to_int",
    "to_numpy",
]


def get_xp(xp=None):
    """Resolve an array module: None or "numpy" -> numpy; "cupy" -> cupy (imported lazily)."""
    if xp is None or xp == "numpy":
        return np
    if xp == "cupy":
        try:
            import cupy
        except ImportError as exc:  # pragma: no cover - depends on the machine
            raise ImportError("the CuPy array module needs `pip install cupy-cuda12x`") from exc
        return cupy
    return xp


def is_cupy(xp) -> bool:
    return getattr(xp, "__name__", "") == "cupy"


def to_numpy(a):
    """Copy a NumPy or CuPy array to host NumPy (no-op for NumPy)."""
    if a is None:
        return None
    if hasattr(a, "get") and not isinstance(a, np.ndarray):
        return a.get()
    return np.asarray(a)


def resolve_seed(seed) -> np.random.Generator:
    """``seed`` (None, int, SeedSequence or Generator) -> a numpy Generator.

    A Generator passed in is used as is (its state advances)."""
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


def seed_to_int(seed) -> int:
    """Derive a 63-bit integer from ``seed`` (deterministic for ints and Generators)."""
    return int(resolve_seed(seed).integers(0, 2**63 - 1, dtype=np.int64))


class _Rng:
    """Normal variates on the array module's own device.

    ``normal(shape, dtype)`` returns standard normals of ``shape``.
    """

    def __init__(self, xp, seed):
        self.xp = xp
        if is_cupy(xp):  # pragma: no cover - needs a GPU
            s = seed_to_int(seed)
            gen_cls = getattr(xp.random, "Generator", None)
            try:
                self._gen = xp.random.default_rng(s) if gen_cls is not None else None
                self._gen.standard_normal((1,), dtype=xp.float32)
                self._legacy = False
            except Exception:  # noqa: BLE001 - any failure of the new API: use the legacy one
                self._gen = xp.random.RandomState(s)
                self._legacy = True
        else:
            self._gen = resolve_seed(seed)
            self._legacy = False

    def normal(self, shape, dtype):
        if self._legacy:  # pragma: no cover
            return self._gen.standard_normal(shape, dtype=dtype)
        return self._gen.standard_normal(shape, dtype=dtype)

    def uniform(self, low, high, shape, dtype):
        if self._legacy:  # pragma: no cover
            return self._gen.uniform(low, high, shape).astype(dtype)
        u = self._gen.random(shape, dtype=dtype)
        return low + (high - low) * u


def make_rng(xp, seed) -> _Rng:
    """The ``_rng`` abstraction for array module ``xp`` seeded by ``seed``."""
    return _Rng(xp, seed)


#: GEMMs smaller than this (multiply-adds per round trip) run with one BLAS thread: for them the
#: thread hand-off costs more than it saves, and on a busy machine it costs whole scheduler
#: slices (measured: 10x slower for 300 runs x 50 spins on a loaded 2-core machine).
SMALL_GEMM_MACS = 2 * 10**7


class blas_threads:
    """Context manager: limit the BLAS thread pool to ``n`` threads (no-op when ``n`` is None,
    or when threadpoolctl is not installed)."""

    def __init__(self, n):
        self.n = n
        self._ctl = None

    def __enter__(self):
        if self.n is not None:
            try:
                from threadpoolctl import threadpool_limits

                self._ctl = threadpool_limits(self.n, user_api="blas")
            except Exception:  # noqa: BLE001  # pragma: no cover - threadpoolctl missing
                self._ctl = None
        return self

    def __exit__(self, *exc):
        if self._ctl is not None:
            self._ctl.restore_original_limits()
        return False
