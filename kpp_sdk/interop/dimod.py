"""dimod both ways (``pip install 'kpp-sdk[dimod]'``): any Device as a ``dimod.Sampler``
(:class:`DimodSampler`), any ``dimod.Sampler`` as a Device (:class:`DimodDevice`, which
:func:`kpp_sdk.interop.as_device` builds), and SampleSets to and from dimod's.

dimod's Ising convention is ``E = sum_i h_i s_i + sum_{i<j} J_ij s_i s_j + offset``; ours
(:class:`~kpp_sdk.IsingProblem`) is ``E = -1/2 s^T J s - h^T s + offset``. So ``h_ours = -h_dimod``
and ``J_ours[i, j] = J_ours[j, i] = -J_dimod[i, j]``; energies are equal, which the round-trip
tests check. ``Device.sample_ising`` / ``sample_qubo`` take dimod's convention too (they carry
dimod's names).

:class:`DimodSampler` is defined on first use (``from kpp_sdk.interop.dimod import
DimodSampler``), so importing this module does not import dimod.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..device import Device, DeviceProperties, RunContext, RunResult, resolve_seed
from ..errors import InvalidOptionError, MissingDependencyError
from ..options import Option, OptionSpec
from ..problem import IsingProblem
from ..sampleset import SampleSet

__all__ = [
    "DimodDevice",
    "DimodSampler",  # noqa: F822 - built on first use by the module's __getattr__
    "as_dimod_sampler",
    "from_dimod_sampleset",
    "is_dimod_sampler",
    "problem_from_bqm",
    "problem_to_bqm",
    "to_dimod_sampleset",
]


def _dimod():
    try:
        import dimod
    except ImportError:
        raise MissingDependencyError("dimod", extra="dimod", feature="dimod interop") from None
    return dimod


def problem_to_bqm(problem: IsingProblem):
    """A SPIN ``dimod.BinaryQuadraticModel`` over variables ``0..n-1`` with equal energies."""
    dimod = _dimod()
    coo = sp.triu(problem.sparse_J(), k=1).tocoo()
    bqm = dimod.BinaryQuadraticModel.from_numpy_vectors(
        -problem.h, (coo.row, coo.col, -coo.data), problem.offset, dimod.SPIN
    )
    return bqm


def problem_from_bqm(bqm) -> tuple[IsingProblem, list]:
    """``(problem, variables)``: the Ising form of any BQM (BINARY is converted), with the variable
    order used for the columns of the spins."""
    dimod = _dimod()
    if bqm.vartype is not dimod.SPIN:
        bqm = bqm.change_vartype(dimod.SPIN, inplace=False)
    variables = list(bqm.variables)
    n = len(variables)
    lin, (row, col, quad), offset = bqm.to_numpy_vectors(variable_order=variables)
    J = sp.coo_matrix((np.r_[-quad, -quad], (np.r_[row, col], np.r_[col, row])), shape=(n, n)).tocsr()
    return IsingProblem(J, -np.asarray(lin, dtype=np.float64), float(offset)), variables


def to_dimod_sampleset(ss: SampleSet, variables: Sequence | None = None):
    """A ``dimod.SampleSet`` with the same spins, energies and occurrences; timing and info go to
    its ``info``."""
    dimod = _dimod()
    labels = list(range(ss.num_spins)) if variables is None else list(variables)
    return dimod.SampleSet.from_samples(
        (np.asarray(ss.spins), labels), vartype=dimod.SPIN, energy=ss.energies,
        num_occurrences=ss.num_occurrences,
        info={"timing": dict(ss.timing), "job_id": ss.job_id, **ss.info},
    )


def from_dimod_sampleset(dss, problem: IsingProblem, variables: Sequence | None = None) -> SampleSet:
    """Our SampleSet from a dimod one (SPIN or BINARY); energies are recomputed from ``problem``."""
    dimod = _dimod()
    if dss.vartype is not dimod.SPIN:
        dss = dss.change_vartype(dimod.SPIN, inplace=False)
    order = list(range(problem.n)) if variables is None else list(variables)
    idx = [dss.variables.index(v) for v in order]
    spins = np.asarray(dss.record.sample)[:, idx]
    return SampleSet(problem, spins, dss.record.num_occurrences, info=dict(dss.info))


# --- a dimod.Sampler as a Device ---------------------------------------------------------------


def is_dimod_sampler(obj: Any) -> bool:
    """True for an instance of ``dimod.Sampler`` (False, without importing dimod, when dimod
    was never imported: nothing can then be one)."""
    import sys

    dimod = sys.modules.get("dimod")
    return dimod is not None and isinstance(obj, dimod.Sampler)


class DimodDevice(Device):
    """Any ``dimod.Sampler`` (Ocean's samplers, dwave-samplers, your own) as a kpp Device, so it
    can drive the models and every other place a Device is accepted.

    A job turns the :class:`IsingProblem` into a SPIN BQM over ``0..n-1``
    (:func:`problem_to_bqm`, equal energies), calls ``sampler.sample(bqm, **options)`` and turns
    the dimod SampleSet back (energies recomputed from the problem). ``num_reads`` and ``seed``
    are passed when the sampler lists them in its ``parameters`` (the seed reduced to 31 bits,
    which every dimod sampler accepts); a sampler without ``num_reads`` returns what it returns
    (``ExactSolver``: every state). The options are the sampler's other ``parameters``, checked
    by name here and by value by the sampler.

    Parameters
    ----------
    sampler : dimod.Sampler
    max_spins : int, optional
        The sampler's size limit, checked before any work (default: none).
    name : str, optional
        Default ``"dimod.<ClassName>"``.
    **defaults
        Default values of the sampler's parameters for every job (and ``num_reads``).
    """

    DEFAULT_NUM_READS = 10

    def __init__(self, sampler: Any, *, max_spins: int | None = None, name: str | None = None,
                 **defaults: Any):
        dimod = _dimod()
        if not isinstance(sampler, dimod.Sampler):
            raise InvalidOptionError(f"expected a dimod.Sampler, got {type(sampler).__name__}")
        self.sampler = sampler
        self.name = name or f"dimod.{type(sampler).__name__}"
        params = dict(sampler.parameters)
        self._passes = {k: k in params for k in ("num_reads", "seed")}
        self.OPTIONS = OptionSpec({
            k: Option(None, f"{type(sampler).__name__}'s parameter {k!r}", nullable=True)
            for k in params if k not in ("num_reads", "seed")})
        self._max_spins = (1 << 30) if max_spins is None else int(max_spins)
        super().__init__(**defaults)

    @property
    def properties(self) -> DeviceProperties:
        return DeviceProperties(max_spins=self._max_spins, supports_fields=True,
                                extra={"dimod_sampler": type(self.sampler).__name__,
                                       "dimod_properties": sorted(self.sampler.properties)})

    def _run(self, problem: IsingProblem, *, num_reads: int, seed: int, options: dict,
             ctx: RunContext) -> RunResult:
        kwargs = {k: v for k, v in options.items() if v is not None}
        if self._passes["num_reads"]:
            kwargs["num_reads"] = num_reads
        if self._passes["seed"]:
            kwargs["seed"] = seed % (2**31)
        ctx.raise_if_cancelled()
        dss = self.sampler.sample(problem_to_bqm(problem), **kwargs)
        ss = from_dimod_sampleset(dss, problem)
        return RunResult(spins=ss.spins, num_occurrences=ss.num_occurrences,
                         info={"dimod_info": _plain(dict(dss.info))})


def _plain(info: dict) -> dict:
    """dimod's ``info`` with arrays as lists (SampleSet.info travels as JSON)."""
    return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in info.items()
            if isinstance(v, (int, float, str, bool, list, tuple, dict, np.ndarray, type(None)))}


# --- a Device as a dimod.Sampler ----------------------------------------------------------------


def _make_dimod_sampler_class():
    dimod = _dimod()
    from dimod.core.initialized import Initialized

    class DimodSampler(dimod.Sampler, Initialized):
        """Any kpp Device (or a registered device name) as a ``dimod.Sampler`` that passes
        dimod's own generated tests (``dimod.testing.load_sampler_bqm_tests``) and
        ``assert_sampler_api``.

        ``sample(bqm, **parameters)`` takes any BQM (any labels, SPIN or BINARY; an empty BQM
        gives an empty SampleSet) and returns a ``dimod.SampleSet`` of the BQM's vartype whose
        energies are the BQM's. ``sample_ising`` / ``sample_qubo`` are dimod's. Parameters:
        ``num_reads`` (default: the device's), ``seed``, and the device's options; on devices
        with ``initial_states`` also dimod's ``initial_states`` in every form dimod accepts (a
        SampleSet, a dict or a list of dicts, an ``(array, labels)`` pair, an array) with
        ``initial_states_generator`` ``"random"`` (default), ``"tile"`` or ``"none"``; then
        ``num_reads`` defaults to the number of initial states, as in dwave-samplers. A wrong
        type (``num_reads=3.5``) is a ``TypeError`` (:class:`~kpp_sdk.InvalidOptionTypeError`,
        also a KppError), a bad value a ``ValueError``, an unknown keyword a
        ``SamplerUnknownArgWarning`` and is ignored, as dimod samplers do.

        Parameters
        ----------
        device : Device or str
            A device, or a name for :func:`kpp_sdk.get_device`.
        **defaults
            Options for every job (with a name: the device is built with them).
        """

        def __init__(self, device: Any = "sa.cpu", **defaults: Any):
            if isinstance(device, str):
                from ..registry import get_device

                device, defaults = get_device(device, **defaults), {}
            if not isinstance(device, Device):
                raise InvalidOptionError(
                    f"DimodSampler takes a kpp Device or a device name (see `kpp devices`), got "
                    f"{type(device).__name__}")
            device.check_options(**defaults)
            self.device = device
            self._defaults = dict(defaults)

        @property
        def parameters(self) -> dict:
            params = {"num_reads": [], "seed": [],
                      **{k: ["device_options"] for k in self.device.OPTIONS}}
            if "initial_states" in self.device.OPTIONS:
                params["initial_states_generator"] = []
            return params

        @property
        def properties(self) -> dict:
            return {"device": self.device.name, "device_properties":
                    self.device.properties.to_dict(),
                    "device_options": {k: o.doc for k, o in self.device.OPTIONS.items()}}

        def sample(self, bqm, **parameters: Any):
            parameters = self.remove_unknown_kwargs(**parameters)
            given_reads = parameters.pop("num_reads", None)
            seed = resolve_seed(parameters.pop("seed", None))
            generator = parameters.pop("initial_states_generator", "random")
            initial = parameters.pop("initial_states", None)
            options = {**self._defaults, **parameters}
            num_reads = (None if given_reads is None
                         else self.device.check_num_reads(given_reads))
            self.device.check_options(**options)  # types and ranges, before any work

            if len(bqm.variables) == 0:
                return dimod.SampleSet.from_samples([], bqm.vartype, energy=[],
                                                    info={"device": self.device.name})
            problem, variables = problem_from_bqm(bqm)
            if "initial_states" in self.device.OPTIONS and (initial is not None
                                                            or generator != "random"):
                parsed = self.parse_initial_states(
                    bqm, initial_states=initial, initial_states_generator=generator,
                    num_reads=num_reads, seed=seed % (2**32))
                states = parsed.initial_states
                idx = [states.variables.index(v) for v in variables]
                spins = np.asarray(states.record.sample, dtype=np.int8)[:, idx]
                options["initial_states"] = spins if bqm.vartype is dimod.SPIN else 2 * spins - 1
                num_reads = parsed.num_reads
            ss = self.device.sample(problem, num_reads=num_reads, seed=seed, **options)
            out = to_dimod_sampleset(ss, variables)
            if bqm.vartype is not dimod.SPIN:
                out = out.change_vartype(bqm.vartype, inplace=False)
            return out

        def close(self) -> None:
            self.device.close()

        def __repr__(self) -> str:
            return f"DimodSampler({self.device!r})"

    DimodSampler.__module__ = __name__
    return DimodSampler


def as_dimod_sampler(device: Any, **defaults: Any):
    """``DimodSampler(device, **defaults)``."""
    return _dimod_sampler_class()(device, **defaults)


def _dimod_sampler_class() -> type:
    cls = globals().get("DimodSampler")
    if cls is None:
        cls = globals()["DimodSampler"] = _make_dimod_sampler_class()
    return cls


def __getattr__(name: str) -> Any:
    if name == "DimodSampler":
        return _dimod_sampler_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
