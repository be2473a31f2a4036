"""Results: spins with energies recomputed from the problem, occurrences, timing and info."""

from __future__ import annotations

import base64
import json
from typing import Any, Mapping, NamedTuple

import numpy as np

from .errors import InvalidSpinsError, ProblemFormatError, SampleSetError, SizeMismatchError
from .io import jsonable
from .problem import IsingProblem

__all__ = ["Sample", "SampleSet", "Timing"]

#: Keys of :attr:`SampleSet.timing`, all in seconds.
#: ``wall_s``: submit to result on this machine; ``queue_s``: waiting before the device started;
#: ``device_s``: the time the (real or emulated) hardware spent on the job.
Timing = dict


class Sample(NamedTuple):
    """One row of a :class:`SampleSet` (what :attr:`SampleSet.first` returns)."""

    spins: np.ndarray
    energy: float
    num_occurrences: int


class SampleSet:
    """Samples of an :class:`IsingProblem`, data first.

    Attributes
    ----------
    spins : (num_samples, n) int8 ndarray in {-1, +1}
    energies : (num_samples,) float64, always recomputed from the problem, never trusted from a device
    num_occurrences : (num_samples,) int64
    timing : dict with ``wall_s``, ``queue_s`` and ``device_s`` (seconds; see :data:`Timing`)
    info : dict (device name, parameters, seed, ...)
    job_id : str or None

    Rows keep the device's order; :meth:`lowest`, :meth:`unique` and :meth:`top_k` return new,
    energy-sorted sets.
    """

    __slots__ = ("spins", "energies", "num_occurrences", "timing", "info", "job_id", "problem")

    def __init__(
        self,
        problem: IsingProblem,
        spins: Any,
        num_occurrences: Any = None,
        *,
        timing: Mapping[str, float] | None = None,
        info: Mapping[str, Any] | None = None,
        job_id: str | None = None,
    ):
        s = np.asarray(spins)
        if s.ndim != 2 or s.shape[1] != problem.n:
            raise InvalidSpinsError(
                f"spins must have shape (num_samples, {problem.n}), got {s.shape}"
            )
        self.problem = problem
        self.spins = problem.check_spins(s) if s.shape[0] else s.astype(np.int8)
        self.spins.flags.writeable = False
        self.energies = (
            np.asarray(problem.energy(self.spins), dtype=np.float64) if s.shape[0] else np.empty(0)
        )
        if num_occurrences is None:
            occ = np.ones(s.shape[0], dtype=np.int64)
        else:
            occ = np.asarray(num_occurrences, dtype=np.int64)
            if occ.shape != (s.shape[0],):
                raise SizeMismatchError(
                    f"num_occurrences has shape {occ.shape}; expected ({s.shape[0]},)"
                )
            if (occ < 1).any():
                raise SampleSetError("num_occurrences must be >= 1 for every sample")
        self.num_occurrences = occ
        t = {"wall_s": 0.0, "queue_s": 0.0, "device_s": 0.0}
        t.update({k: float(v) for k, v in (timing or {}).items()})
        self.timing = t
        self.info = dict(info or {})
        self.job_id = job_id

    # --- basic views ------------------------------------------------------------------------

    def __len__(self) -> int:
        return int(self.spins.shape[0])

    @property
    def num_reads(self) -> int:
        """Total occurrences (the number of reads the device made for this set)."""
        return int(self.num_occurrences.sum())

    @property
    def num_spins(self) -> int:
        return self.problem.n

    @property
    def best_energy(self) -> float:
        return float(self.energies.min())

    def binary(self) -> np.ndarray:
        """The samples as 0/1 variables, ``x = (s + 1) / 2`` (uint8), for QUBO users."""
        return ((self.spins + 1) // 2).astype(np.uint8)

    def __repr__(self) -> str:
        best = f"{self.best_energy:.6g}" if len(self) else "-"
        return (
            f"SampleSet(n={self.num_spins}, samples={len(self)}, reads={self.num_reads}, "
            f"best_energy={best}, device={self.info.get('device')!r}, job_id={self.job_id!r})"
        )

    def _subset(self, idx: np.ndarray, occ: np.ndarray | None = None) -> "SampleSet":
        new = object.__new__(SampleSet)
        new.problem = self.problem
        new.spins = self.spins[idx]
        new.spins.flags.writeable = False
        new.energies = self.energies[idx]
        new.num_occurrences = self.num_occurrences[idx] if occ is None else occ
        new.timing = dict(self.timing)
        new.info = dict(self.info)
        new.job_id = self.job_id
        return new

    # --- selections ---------------------------------------------------------------------------

    def truncate(self, k: int | None = None) -> "SampleSet":
        """The ``k`` lowest-energy rows (all rows when ``k`` is None), sorted by energy
        (dimod's ``truncate(n, sorted_by="energy")``). Not de-duplicated; ties keep the device's
        order (a stable sort)."""
        order = np.argsort(self.energies, kind="stable")
        return self._subset(order if k is None else order[: max(int(k), 0)])

    def lowest(self, rtol: float = 1e-05, atol: float = 1e-08) -> "SampleSet":
        """The rows whose energy is within tolerance of the lowest (dimod's ``lowest``; the
        same tolerances), sorted by energy. For the ``k`` lowest rows use :meth:`truncate`."""
        if isinstance(rtol, (int, np.integer)) and not isinstance(rtol, bool):
            import warnings

            warnings.warn("SampleSet.lowest(k) is now truncate(k); lowest() keeps dimod's "
                          "meaning (the rows at the lowest energy)", DeprecationWarning,
                          stacklevel=2)
            return self.truncate(int(rtol))
        if len(self) == 0:
            return self._subset(np.arange(0))
        e0 = float(self.energies.min())
        close = np.isclose(self.energies, e0, rtol=rtol, atol=atol)
        idx = np.flatnonzero(close)
        return self._subset(idx[np.argsort(self.energies[idx], kind="stable")])

    @property
    def first(self) -> "Sample":
        """The lowest-energy row as ``Sample(spins, energy, num_occurrences)`` (dimod's
        ``first``); raises :class:`SampleSetError` on an empty set."""
        if len(self) == 0:
            raise SampleSetError("the sample set is empty: it has no first sample")
        i = int(np.argmin(self.energies))
        return Sample(self.spins[i], float(self.energies[i]), int(self.num_occurrences[i]))

    def unique(self) -> "SampleSet":
        """De-duplicated rows with summed occurrences, sorted by energy."""
        if len(self) == 0:
            return self._subset(np.arange(0))
        _, first, inverse = np.unique(self.spins, axis=0, return_index=True, return_inverse=True)
        occ = np.bincount(inverse.ravel(), weights=self.num_occurrences).astype(np.int64)
        order = np.lexsort((first, self.energies[first]))
        return self._subset(first[order], occ[order])

    def aggregate(self) -> "SampleSet":
        """De-duplicated rows with summed occurrences in the order each state first appears
        (dimod's ``aggregate``); :meth:`unique` sorts them by energy."""
        if len(self) == 0:
            return self._subset(np.arange(0))
        _, first, inverse = np.unique(self.spins, axis=0, return_index=True, return_inverse=True)
        occ = np.bincount(inverse.ravel(), weights=self.num_occurrences).astype(np.int64)
        order = np.argsort(first, kind="stable")
        return self._subset(first[order], occ[order])

    def top_k(self, k: int) -> "SampleSet":
        """The CIM cloud's post-processing: de-duplicate, then keep the ``k`` lowest energies."""
        return self.unique().truncate(k)

    def energy_histogram(self) -> tuple[np.ndarray, np.ndarray]:
        """Distinct energies (rounded to 1e-9) and their total occurrences."""
        e = np.round(self.energies, 9)
        levels, inv = np.unique(e, return_inverse=True)
        return levels, np.bincount(inv.ravel(), weights=self.num_occurrences).astype(np.int64)

    # --- serialisation ------------------------------------------------------------------------

    def to_dict(self, *, compact: bool = True) -> dict:
        """A JSON-ready dict. With ``compact``, spins travel bit-packed in base64 (1 bit per spin)."""
        d: dict[str, Any] = {
            "format": "kpp-sampleset",
            "version": 1,
            "num_spins": self.num_spins,
            "num_samples": len(self),
            "energies": self.energies.tolist(),
            "num_occurrences": self.num_occurrences.tolist(),
            "timing": dict(self.timing),
            "info": jsonable(self.info),
            "job_id": self.job_id,
        }
        if compact:
            bits = np.packbits(self.spins > 0, axis=1)
            d["spins_packed"] = base64.b64encode(bits.tobytes()).decode("ascii")
        else:
            d["spins"] = self.spins.tolist()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], problem: IsingProblem) -> "SampleSet":
        """Rebuild from :meth:`to_dict` output; energies are recomputed from ``problem`` and
        checked against the stored ones (a mismatch means the wrong problem was given)."""
        try:
            n, m = int(d["num_spins"]), int(d["num_samples"])
            if n != problem.n:
                raise SizeMismatchError(
                    f"the sample set has {n} spins but the problem has {problem.n}"
                )
            if "spins_packed" in d:
                raw = np.frombuffer(base64.b64decode(d["spins_packed"]), dtype=np.uint8)
                width = (n + 7) // 8
                if raw.size != m * width:
                    raise ProblemFormatError(
                        f"packed spins hold {raw.size} bytes; {m} samples x {n} spins need {m * width}"
                    )
                bits = np.unpackbits(raw.reshape(m, width), axis=1, count=n)
                spins = (2 * bits.astype(np.int8) - 1).astype(np.int8)
            else:
                spins = np.asarray(d["spins"], dtype=np.int8).reshape(m, n)
            ss = cls(
                problem,
                spins,
                d.get("num_occurrences"),
                timing=d.get("timing"),
                info=d.get("info"),
                job_id=d.get("job_id"),
            )
        except KeyError as exc:
            raise ProblemFormatError(f"sample set lacks the field {exc.args[0]!r}") from None
        stored = d.get("energies")
        if stored is not None and not np.allclose(stored, ss.energies, rtol=1e-9, atol=1e-6):
            raise SampleSetError(
                "stored energies do not match the energies recomputed from the given problem; "
                "was the sample set produced for a different problem?"
            )
        return ss

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(**kwargs))

    @classmethod
    def from_json(cls, text: str, problem: IsingProblem) -> "SampleSet":
        return cls.from_dict(json.loads(text), problem)

    @classmethod
    def concatenate(cls, sets: list["SampleSet"]) -> "SampleSet":
        """Join sets of the same problem (timings add up; info and job id of the first)."""
        if not sets:
            raise SampleSetError("nothing to concatenate: give at least one SampleSet")
        p = sets[0].problem
        if any(s.problem is not p and s.problem != p for s in sets):
            raise SampleSetError("sample sets of different problems cannot be concatenated")
        timing = {k: sum(s.timing.get(k, 0.0) for s in sets) for k in sets[0].timing}
        return cls(
            p,
            np.concatenate([s.spins for s in sets]),
            np.concatenate([s.num_occurrences for s in sets]),
            timing=timing,
            info=sets[0].info,
            job_id=sets[0].job_id,
        )
