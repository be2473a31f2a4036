"""``kw.cim``: Kaiwu's CIM optimizer on ``cim.emulator`` (QBoson's cloud machine, emulated), and
the precision reducer that makes a matrix fit the machine."""

from __future__ import annotations

import enum
import hashlib
import os
from typing import Any

import numpy as np

from ..errors import InvalidOptionError, ProblemError, ProblemTooLargeError
from ..job import InlineExecutor
from ..options import check_int
from ._matrix import kaiwu_problem, numpy_seed, with_ancilla
from .common import CheckpointManager, logger

__all__ = ["COEFFICIENT_BITS", "MAX_SPINS", "CIMOptimizer", "PrecisionReducer", "TaskMode"]

#: The cloud machine's limits, checked before a task is "submitted": spins of the Kaiwu matrix
#: (the ancilla is a spin on the machine) and signed integer bits of its entries.
MAX_SPINS = 550
COEFFICIENT_BITS = 8


class TaskMode(str, enum.Enum):
    """Kaiwu 1.4's task modes (source: Kaiwu's documentation). Kaiwu 1.3's strings are accepted
    too: ``"quota"`` is OPTIMIZATION and ``"sample"`` is SAMPLING."""

    OPTIMIZATION = "optimization"
    SAMPLING = "sampling"

    @classmethod
    def parse(cls, value: Any) -> TaskMode:
        aliases = {"quota": cls.OPTIMIZATION, "sample": cls.SAMPLING}
        if isinstance(value, cls):
            return value
        if isinstance(value, str) and value.lower() in aliases:
            return aliases[value.lower()]
        try:
            return cls(str(value).lower())
        except ValueError:
            raise InvalidOptionError(
                f"task_mode must be TaskMode.OPTIMIZATION ('optimization', or Kaiwu 1.3's "
                f"'quota') or TaskMode.SAMPLING ('sampling' / 'sample'), got {value!r}") from None


def check_machine_matrix(M: np.ndarray, bits: int = COEFFICIENT_BITS,
                         max_spins: int = MAX_SPINS) -> None:
    """What the machine refuses: more than ``max_spins`` spins (ancilla included) or entries
    that are not ``bits``-bit signed integers. The error names the fix."""
    if M.shape[0] > max_spins:
        raise ProblemTooLargeError(
            f"the Ising matrix has {M.shape[0]} spins (N + 1 ancilla) but the CIM takes at most "
            f"{max_spins}; split the problem, or reduce it with kw.cim.PrecisionReducer("
            f"optimizer, precision=8, target_bits={max_spins})")
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    bad = (M != np.round(M)) | (M < lo) | (M > hi)
    if bad.any():
        i, j = (int(k) for k in np.argwhere(bad)[0])
        raise ProblemError(
            f"the CIM takes {bits}-bit integer couplings ({lo}..{hi}) but M[{i}, {j}] = "
            f"{M[i, j]!r}; wrap the optimizer in kw.cim.PrecisionReducer(optimizer, "
            f"precision={bits}) to round the matrix to the machine's precision")


class CIMOptimizer:
    """Kaiwu's ``CIMOptimizer``, with the emulated machine (``cim.emulator``, profile
    ``qboson-550``) in place of the cloud.

    Source (Kaiwu's documentation): ``CIMOptimizer(task_name, wait, interval, project_no,
    task_mode, sample_number)``; ``solve(ising_matrix)`` returns the solutions as ``(k, N+1)``
    spins; task modes OPTIMIZATION and SAMPLING; in SAMPLING mode ``sample_number`` is required
    and lies in 10..2000; the machine takes 8-bit integer matrices and 550 spins (checked here
    before anything runs, with the fix in the error); a task is identified by its name and its
    matrix, and with ``kw.common.CheckpointManager.save_dir`` set its result is kept and returned
    again for the same name and matrix instead of running twice.

    Assumptions: OPTIMIZATION returns the machine's post-processing of one task (2,000 runs,
    de-duplicated, lowest energies first), at most ``sample_number`` rows (default 10, the size
    of the example in Kaiwu's documentation); SAMPLING returns ``sample_number`` raw runs, one
    sample each. ``wait``, ``interval`` and ``project_no`` are accepted: the emulator always
    finishes before ``solve`` returns (the real SDK may return None while a task is still
    running with ``wait=False``). The machine takes no seed; the emulator's is drawn from
    NumPy's global generator (``np.random.seed`` makes a run repeatable) unless ``seed`` is given.

    Parameters
    ----------
    task_name : str, optional
        The task's name (Kaiwu 1.3's ``task_name_prefix`` is accepted too).
    **emulator_options
        Options of ``cim.emulator`` (e.g. ``round_trips=300`` for a quicker, rougher run).
    """

    def __init__(self, task_name: str | None = None, wait: bool = False, interval: int = 1,
                 project_no: str | None = None, task_mode: Any = TaskMode.OPTIMIZATION,
                 sample_number: int | None = None, *, task_name_prefix: str | None = None,
                 seed: int | None = None, **emulator_options: Any):
        self.task_name = task_name if task_name is not None else (task_name_prefix or "kpp_task")
        self.wait = bool(wait)
        self.interval = check_int(interval, "interval", ge=1)
        self.project_no = project_no
        self.task_mode = TaskMode.parse(task_mode)
        if self.task_mode is TaskMode.SAMPLING:
            if sample_number is None:
                raise InvalidOptionError("task_mode=SAMPLING needs sample_number (10..2000)")
            self.sample_number = check_int(sample_number, "sample_number", ge=10, le=2000)
        else:
            self.sample_number = check_int(10 if sample_number is None else sample_number,
                                           "sample_number", ge=1, le=2000)
        self.seed = None if seed is None else check_int(seed, "seed", ge=0)
        from ..registry import get_device

        self._device = get_device("cim.emulator", **emulator_options)
        self._matrix = None

    def __repr__(self) -> str:
        return (f"CIMOptimizer(task_name={self.task_name!r}, task_mode={self.task_mode.name}, "
                f"sample_number={self.sample_number})")

    def set_matrix(self, ising_matrix: Any) -> None:
        self._matrix = np.asarray(ising_matrix, dtype=np.float64)

    def _cache_path(self, M: np.ndarray) -> str | None:
        if CheckpointManager.save_dir is None:
            return None
        digest = hashlib.md5(np.ascontiguousarray(M).tobytes()).hexdigest()
        return os.path.join(CheckpointManager.save_dir,
                            f"{self.task_name}_{self.task_mode.value}_{self.sample_number}_"
                            f"{digest}.npy")

    def solve(self, ising_matrix: Any = None) -> np.ndarray:
        """The task's solutions, ``(k, N+1)`` int8 spins with the ancilla +1 (class docstring)."""
        M = np.asarray(self._matrix if ising_matrix is None else ising_matrix, dtype=np.float64)
        problem = kaiwu_problem(M)
        check_machine_matrix(M)
        path = self._cache_path(M)
        if path is not None and os.path.exists(path):
            logger.debug("task %s: result kept in %s", self.task_name, path)
            return np.load(path)
        seed = numpy_seed(self.seed)
        if self.task_mode is TaskMode.SAMPLING:
            ss = self._device.sample(problem, num_reads=self.sample_number, seed=seed,
                                     output="raw", executor=InlineExecutor())
            spins = np.repeat(ss.spins, ss.num_occurrences, axis=0)
        else:
            ss = self._device.sample(problem, num_reads=self.sample_number, seed=seed,
                                     output="topk", executor=InlineExecutor())
            spins = ss.unique().spins[: self.sample_number]
        out = with_ancilla(spins)
        if path is not None:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            np.save(path, out)
        return out

    def get_task_result(self, ising_matrix: Any) -> dict:
        """``{"task_name", "task_mode", "solutions"}`` of the task for ``ising_matrix``."""
        return {"task_name": self.task_name, "task_mode": self.task_mode.value,
                "solutions": self.solve(ising_matrix)}


class PrecisionReducer:
    """Kaiwu's ``PrecisionReducer(component, precision=8, target_bits=None,
    only_feasible_solution=True, truncated_precision=20)``: make a matrix fit a machine of
    ``precision`` bits before ``component.solve`` sees it.

    Source (Kaiwu's documentation): the signature and that it wraps any optimizer. Here the
    matrix is scaled so that its largest ``|entry|`` is ``2^(precision-1) - 1`` and rounded (the
    rule of :func:`kpp_sdk.quantize`); the component's solutions are returned as they are.
    Assumption/difference: Kaiwu may also split variables to reach the precision
    (``target_bits`` bounds the spins that may use); the stand-in never splits, so every
    solution is feasible and ``target_bits`` is only checked against the matrix size.
    """

    def __init__(self, component: Any, precision: int = 8, target_bits: int | None = None,
                 only_feasible_solution: bool = True, truncated_precision: int = 20):
        if not callable(getattr(component, "solve", None)):
            raise InvalidOptionError(
                f"PrecisionReducer wraps an optimizer with solve(ising_matrix), got "
                f"{type(component).__name__}")
        self.component = component
        self.precision = check_int(precision, "precision", ge=2, le=53)
        self.target_bits = None if target_bits is None else check_int(target_bits,
                                                                      "target_bits", ge=2)
        self.truncated_precision = check_int(truncated_precision, "truncated_precision", ge=2)
        self.only_feasible_solution = bool(only_feasible_solution)
        self._matrix = None

    def set_matrix(self, ising_matrix: Any) -> None:
        self._matrix = np.asarray(ising_matrix, dtype=np.float64)

    def reduce(self, ising_matrix: Any) -> np.ndarray:
        """The matrix at ``precision`` bits (integers, largest ``|entry|`` ``2^(precision-1)-1``)."""
        M = np.asarray(ising_matrix, dtype=np.float64)
        kaiwu_problem(M)
        if self.target_bits is not None and M.shape[0] > self.target_bits:
            raise ProblemTooLargeError(
                f"the Ising matrix has {M.shape[0]} spins, more than target_bits="
                f"{self.target_bits}; the stand-in does not split variables, so reduce the "
                "problem first")
        top = float(np.abs(M).max())
        if top == 0:
            return M.copy()
        return np.round(M * ((2 ** (self.precision - 1) - 1) / top))

    def solve(self, ising_matrix: Any = None) -> np.ndarray:
        M = self._matrix if ising_matrix is None else ising_matrix
        return self.component.solve(self.reduce(M))
