"""``cim.kaiwu``: QBoson's cloud CIM through its official SDK (the ``kaiwu`` package).

The Kaiwu SDK ships wheels for CPython 3.10 only; elsewhere this device is unavailable and
``check_available`` says how to install it. Credentials: ``user_id`` and ``sdk_code`` arguments or
the ``KAIWU_USER_ID`` / ``KAIWU_SDK_CODE`` environment variables (the code is held in a
:class:`~kpp_sdk.config.Secret`).

The conversion, in :func:`kaiwu_matrix` and :func:`spins_from_kaiwu_output`:

1. quantize the problem to the machine's 8-bit precision (:func:`kpp_sdk.quantize`: the largest
   ``|J_ij|`` or ``|h_i|`` becomes 127);
2. build the ``(n+1) x (n+1)`` Kaiwu ancilla matrix ``M`` (``problem.to_kaiwu()``) and send
   ``2 M``, which is integer-valued (``[[Jq, hq], [hq^T, 0]]``) and has the same minimisers;
3. the machine returns rows of ``n + 1`` spins; ``H(-s) = H(s)``, so rows whose ancilla is -1 are
   flipped (:meth:`IsingProblem.spins_from_kaiwu`) and the ancilla is dropped;
4. energies are recomputed from the *original* (unquantized) problem by the SampleSet.
"""

from __future__ import annotations

import os
import re
import threading
from typing import Any

import numpy as np

from kpp_sdk.config import Secret
from kpp_sdk.device import Device, DeviceProperties, JobSpec, RunContext, RunResult, result_bytes
from kpp_sdk.errors import (
    ConfigError,
    InvalidOptionError,
    InvalidResponseError,
    MissingDependencyError,
)
from kpp_sdk.limits import JobCost
from kpp_sdk.options import Option, OptionSpec
from kpp_sdk.problem import IsingProblem, QuantizedProblem, quantize

__all__ = ["KaiwuCIM", "kaiwu_matrix", "spins_from_kaiwu_output"]

#: Spins of the cloud machine; one of them is the ancilla that carries the fields.
HARDWARE_SPINS = 550
COEFFICIENT_BITS = 8

_license_lock = threading.Lock()
_licensed: set[tuple[str, str]] = set()


def kaiwu_matrix(problem: IsingProblem,
                 bits: int = COEFFICIENT_BITS) -> tuple[np.ndarray, QuantizedProblem]:
    """The integer Kaiwu matrix ``2 M`` of the ``bits``-bit quantized problem, and the
    quantization (its ``scale`` and ``max_error``). ``-[s,1]^T (2M) [s,1] = 2 (E_q(s) - offset_q)``
    for the quantized energy ``E_q``, so minimisers are those of the quantized problem."""
    qp = quantize(problem, bits)
    M = 2.0 * qp.problem.to_kaiwu()
    Mi = np.rint(M)
    if not np.array_equal(M, Mi):  # pragma: no cover - quantize returns integers
        raise AssertionError("the quantized Kaiwu matrix is not integer-valued")
    return Mi, qp


def spins_from_kaiwu_output(raw: Any, n: int) -> np.ndarray:
    """Rows of ``n + 1`` spins from the machine -> gauge-fixed ``(k, n)`` int8 spins."""
    a = np.asarray(raw)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2 or a.shape[1] != n + 1 or a.shape[0] == 0:
        raise InvalidResponseError(
            f"the Kaiwu optimizer returned an array of shape {np.shape(raw)}; expected "
            f"(num_samples, {n + 1}) spins (n = {n} plus the ancilla)")
    if np.any((a != 1) & (a != -1)):
        raise InvalidResponseError("the Kaiwu optimizer returned values other than -1 and +1")
    return IsingProblem.spins_from_kaiwu(a)


def _check_prefix(prefix: str) -> str:
    if not re.match(r"^[A-Za-z0-9_-]{1,32}$", prefix):
        raise InvalidOptionError(
            f"task_name_prefix must be 1-32 of A-Z a-z 0-9 _ -, got {prefix!r}")
    return prefix


class KaiwuCIM(Device):
    """QBoson's coherent Ising machine on the Kaiwu cloud (see the module docstring).

    ``num_reads`` becomes the task's ``sample_number``; the machine may return fewer distinct
    rows. The seed is recorded but the hardware's noise is not seedable. ``optimizer`` replaces the
    SDK's ``CIMOptimizer`` by any object with ``solve(matrix) -> (k, n+1) spins`` (tests, or a
    Kaiwu simulator).
    """

    name = "cim.kaiwu"
    DEFAULT_NUM_READS = 100
    OPTIONS = OptionSpec(
        task_name_prefix=Option("kpp", "tasks are named <prefix>_<job id> in the Kaiwu console "
                                "(1-32 of A-Z a-z 0-9 _ -)", type=str, check=_check_prefix),
        task_mode=Option("quota", "Kaiwu's billing mode of the task", type=str),
        interval=Option(1.0, "seconds between the SDK's status checks while waiting",
                        type=float, gt=0.0, le=3600.0, unit="s"),
        checkpoint_dir=Option(None, "folder where the SDK keeps task checkpoints (its "
                              "CheckpointManager.save_dir)", type=str),
    )

    def __init__(self, user_id: str | None = None, sdk_code: str | Secret | None = None, *,
                 optimizer: Any = None, executor: Any = None, **defaults: Any):
        self._user_id = user_id or os.environ.get("KAIWU_USER_ID") or None
        code = sdk_code if sdk_code is not None else os.environ.get("KAIWU_SDK_CODE")
        self._sdk_code = code if isinstance(code, Secret) or code is None else Secret(str(code))
        if optimizer is not None and not callable(getattr(optimizer, "solve", None)):
            raise ConfigError("optimizer must have a solve(matrix) method")
        self._optimizer = optimizer
        super().__init__(executor=executor, **defaults)

    def __repr__(self) -> str:
        return f"KaiwuCIM(user_id={self._user_id!r}, sdk_code={self._sdk_code!r})"

    @classmethod
    def check_available(cls) -> None:
        try:
            import kaiwu  # noqa: F401
        except ImportError:
            raise MissingDependencyError(
                "kaiwu", feature="cim.kaiwu (QBoson's SDK; wheels for CPython 3.10 only)") from None

    @property
    def properties(self) -> DeviceProperties:
        return DeviceProperties(max_spins=HARDWARE_SPINS - 1, coefficient_bits=COEFFICIENT_BITS,
                                supports_fields=True, is_remote=True, max_reads=10_000,
                                extra={"hardware_spins": HARDWARE_SPINS})

    def _prepare(self, problem: IsingProblem, num_reads: int, options: dict) -> None:
        """What the run would find missing, found at submit: the SDK and the credentials."""
        if self._optimizer is None:
            self.check_available()
            self._check_credentials()

    def _check_credentials(self) -> None:
        if not self._user_id or not self._sdk_code:
            raise ConfigError("cim.kaiwu needs Kaiwu credentials: pass user_id= and sdk_code=, or "
                              "set KAIWU_USER_ID and KAIWU_SDK_CODE")

    def estimate_cost(self, spec: JobSpec) -> JobCost:
        """The work is remote: no local compute time is stated. Memory: the Kaiwu matrix (and
        its quantized copies) and the result."""
        n, reads = spec.problem.n, spec.num_reads
        parts = {"kaiwu_matrix": 3 * 8 * (n + 1) ** 2, "result": result_bytes(reads, n)}
        return JobCost(None, int(sum(parts.values())), parts)

    def _make_optimizer(self, num_reads: int, options: dict, job_id: str) -> Any:
        self.check_available()
        import kaiwu as kw

        self._check_credentials()
        key = (self._user_id, self._sdk_code.reveal())
        with _license_lock:
            if key not in _licensed:
                kw.license.init(user_id=key[0], sdk_code=key[1])
                _licensed.add(key)
        if options["checkpoint_dir"]:
            kw.common.CheckpointManager.save_dir = str(options["checkpoint_dir"])
        return kw.cim.CIMOptimizer(task_name=f"{options['task_name_prefix']}_{job_id[:16]}",
                                   wait=True, interval=options["interval"],
                                   task_mode=options["task_mode"], sample_number=int(num_reads))

    def _run(self, problem: IsingProblem, *, num_reads: int, seed: int, options: dict,
             ctx: RunContext) -> RunResult:
        matrix, qp = kaiwu_matrix(problem)
        optimizer = self._optimizer or self._make_optimizer(num_reads, options, ctx.job_id)
        # the SDK's solve blocks until the cloud task ends: wait for it where a cancel is seen
        raw = ctx.call(optimizer.solve, matrix)
        spins = spins_from_kaiwu_output(raw, problem.n)
        return RunResult(spins, info={"quantization_scale": qp.scale,
                                      "quantization_max_error": qp.max_error,
                                      "requested_reads": num_reads,
                                      "returned_samples": int(spins.shape[0])})
