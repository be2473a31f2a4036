"""``cim.emulator``: the physics-level measurement-feedback CIM of :mod:`kpp_sdk.emulator` as a
Device.

A job is one *task* on the emulated machine: ``runs`` runs of ``round_trips`` round trips each, on
a hardware profile (``qboson-550`` by default: 550 spins, int8 couplings, a 1 km fiber ring).
The result's ``timing["device_s"]`` is the time the real machine would have been busy with that
task (set-up overhead + runs x (round trips + reset) x round-trip time, from
:func:`kpp_sdk.emulator.device_time`), not the time the emulation took on this computer
(``timing["run_s"]``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from kpp_sdk import emulator as emu
from kpp_sdk.device import Device, DeviceProperties, JobSpec, RunContext, RunResult, result_bytes
from kpp_sdk.errors import InvalidOptionError, ProblemError, ProblemTooLargeError
from kpp_sdk.limits import JobCost
from kpp_sdk.options import Option, OptionSpec
from kpp_sdk.problem import IsingProblem

__all__ = ["CIMEmulator", "OUTPUTS", "estimate_beta"]

#: ``"raw"``: one sample per run (``num_reads`` runs; Boltzmann-like sampling).
#: ``"topk"``: the cloud's post-processing: ``runs`` runs, de-duplicated, the ``num_reads`` lowest
#: energies returned with their occurrence counts.
OUTPUTS = ("raw", "topk")

#: Largest problem on a profile without a spin limit (``ideal``): bounded by memory, not physics.
UNLIMITED_SPINS = 1 << 16
#: Upper bounds of the options ``runs`` and ``round_trips`` (the job limits usually refuse far
#: less: see :meth:`CIMEmulator.estimate_cost`).
MAX_RUNS = 10**7
MAX_ROUND_TRIPS = 10**8


def _check_profile_name(name: Any) -> Any:
    if not isinstance(name, (str, emu.HardwareProfile)):
        raise InvalidOptionError(f"profile must be a profile name, one of "
                                 f"{', '.join(emu.list_profiles())}, got {name!r}")
    return name


def _check_params(params: Any) -> dict:
    if not isinstance(params, dict):
        raise InvalidOptionError(
            f"params must be a dict of CIMParameters fields, got {type(params).__name__}")
    return params



class CIMEmulator(Device):
    """A measurement-feedback coherent Ising machine, emulated round trip by round trip.

    Physics (docs/cim-physics.md): optical pulses in a fiber ring; per round trip a pump ramp,
    phase-sensitive gain with saturation, loss with vacuum noise, homodyne measurement of a
    tapped fraction, an FPGA with an ADC, int8 couplings, exact integer accumulation, a DAC and a
    feedback latency, injection, and readout by the sign of each pulse (an external field rides on
    an ancilla pulse with a gauge fix). All runs of a job advance together: one matrix product per
    round trip.

    The options are in :attr:`OPTIONS` (``help(device.sample)``, ``kpp devices --options
    cim.emulator``).
    """

    name = "cim.emulator"
    DEFAULT_NUM_READS = 100
    OPTIONS = OptionSpec(
        profile=Option("qboson-550", "hardware profile (kpp_sdk.emulator.list_profiles()): "
                       "'qboson-550' (QBoson's cloud machine), 'ntt-2000' (Inagaki et al. 2016), "
                       "'ideal' (float couplings, only quantum noise, no spin limit). Set it when "
                       "constructing the device: it fixes the device's properties",
                       check=_check_profile_name),
        output=Option("raw", "'raw': num_reads runs, one sample each (Boltzmann sampling); "
                      "'topk': the cloud's post-processing: `runs` runs, de-duplicated, the "
                      "num_reads lowest-energy states with their counts in num_occurrences",
                      type=str, choices=OUTPUTS),
        runs=Option(None, "runs per task with output='topk' (None: the profile's, 2000)",
                    type=int, ge=1, le=MAX_RUNS, unit="runs"),
        round_trips=Option(None, "round trips per run (None: the profile's, 2000 for "
                           "qboson-550)", type=int, ge=1, le=MAX_ROUND_TRIPS, unit="round trips"),
        feedback=Option(None, "amplitude control: 'none', 'ahc', 'cac', 'cfc' (None: the "
                        "profile's); switching it on also sets the recommended fixed pump "
                        "(kpp_sdk.emulator.CIMParameters.with_feedback)", type=str,
                        choices=emu.FEEDBACK_MODES),
        temperature=Option(0.0, "the temperature knob t (kpp_sdk.emulator.temperature_knob): 0 "
                           "keeps the profile's pump and noise (cold, for optimisation); larger "
                           "t lowers the end pump towards the coupled threshold and adds noise, "
                           "so samples become hotter (measure it with estimate_beta)",
                           type=float, ge=0.0, le=1.0),
        track_best=Option(False, "return each run's lowest-energy state seen along its "
                          "trajectory (as cim-optimizer does) instead of the state at the last "
                          "round trip", type=bool),
        engine=Option("auto", "'numba' (fused CPU kernels), 'xp' (array code on NumPy/CuPy) or "
                      "'auto'", type=str, choices=("auto", "numba", "xp")),
        params=Option(None, "a dict overriding any kpp_sdk.emulator.CIMParameters field (e.g. "
                      "{'p1': 1.1, 'sigma_add': 0.05}); checked against its physical range",
                      check=_check_params),
    )
    FAST_OPTIONS = {"round_trips": 120}
    SLOW_OPTIONS = {"round_trips": 10_000_000}
    COST_HINT = "round_trips, runs or num_reads"

    #: One core's seconds per (run, round trip): per pulse (gain, noise, ADC, injection) and per
    #: coupling multiply-add of the FPGA product (dense; a stored coupling when sparse); per
    #: round trip (the Python loop); measured with the numba engine on SK problems
    #: (n = 10..500), rounded up. Tracking energies (track_best, CAC) doubles the products.
    SECONDS_PER_PULSE = 15e-9
    SECONDS_PER_MAC = 0.04e-9
    SECONDS_PER_ROUND_TRIP = 20e-6
    def __init__(self, **defaults: Any):
        profile = defaults.get("profile", self.OPTIONS["profile"].default)
        self._profile = self._get_profile(profile)
        super().__init__(**defaults)
        self.check_options()

    @staticmethod
    def _get_profile(name: Any) -> emu.HardwareProfile:
        if isinstance(name, emu.HardwareProfile):
            return name
        try:
            return emu.get_profile(name)
        except emu.UnknownProfileError as exc:
            raise InvalidOptionError(f"{exc}; pass profile=<one of them>") from None

    @property
    def profile(self) -> emu.HardwareProfile:
        """The hardware profile this device emulates."""
        return self._profile

    @property
    def properties(self) -> DeviceProperties:
        prof = self._profile
        return DeviceProperties(
            max_spins=prof.max_spins or UNLIMITED_SPINS,
            coefficient_bits=prof.coefficient_bits,
            supports_fields=True,
            is_remote=False,
            device_time_per_sample=prof.run_time_s(),
            max_reads=100_000,
            extra={
                "profile": prof.name,
                "description": prof.description,
                "round_trip_time_s": prof.round_trip_time_s,
                "pulse_slots": prof.pulse_slots,
                "task_overhead_s": prof.task_overhead_s,
                "default_runs": prof.default_runs,
            },
        )

    # --- checks, all before any work ------------------------------------------------------

    def check_problem(self, problem: Any) -> IsingProblem:
        """The base checks, with a too-large error that names the profiles that fit."""
        if isinstance(problem, IsingProblem):
            try:
                self._profile.check_problem(problem.n, problem.has_fields)
            except emu.SpinLimitError as exc:
                raise ProblemTooLargeError(self._too_large(problem, exc)) from None
        return super().check_problem(problem)

    def _too_large(self, problem: IsingProblem, exc: Exception) -> str:
        fit = []
        for name in emu.list_profiles():
            prof = emu.get_profile(name)
            try:
                prof.check_problem(problem.n, problem.has_fields)
            except emu.SpinLimitError:
                continue
            fit.append(f"{name} ({prof.max_spins or 'no'} spin limit)"
                       if prof.max_spins is None else f"{name} ({prof.max_spins} spins)")
        hint = (f"profiles that fit: {', '.join(fit)}; choose one with "
                f"get_device('cim.emulator', profile=...) or `kpp sample FILE --device "
                f"cim.emulator -o profile=NAME`") if fit else "no profile fits it"
        return f"{exc}; {hint}"

    def _check_options(self, options: dict, problem: IsingProblem | None) -> dict:
        prof = self._get_profile(options["profile"])
        if prof.name != self._profile.name:
            raise InvalidOptionError(
                f"this device emulates profile {self._profile.name!r}; its limits are its "
                f"properties, so the profile is fixed per device: use "
                f"get_device('cim.emulator', profile={prof.name!r}) for {prof.name!r}"
            )
        if options["runs"] is not None and options["output"] == "raw":
            raise InvalidOptionError(
                "runs is the task size of output='topk'; with output='raw' every run is one read, "
                "so set num_reads instead"
            )
        self._parameters(options)  # physical ranges, unknown parameter names
        return options

    def _parameters(self, options: dict, problem: IsingProblem | None = None) -> emu.CIMParameters:
        """The CIM parameters of a job: profile, then feedback, round trips, params, temperature."""
        try:
            cim = self._profile.cim
            if options["feedback"] is not None:
                cim = self._profile.with_feedback(options["feedback"])
            if options["round_trips"] is not None:
                cim = cim.replace(round_trips=int(options["round_trips"]))
            if options["params"]:
                cim = cim.replace(**options["params"])
            if problem is not None and options["temperature"] > 0:
                J, h = _arrays(problem)
                cim = emu.temperature_knob(cim, float(options["temperature"]), J=J, h=h)
        except emu.ParameterError as exc:
            raise InvalidOptionError(f"{exc}; see kpp_sdk.emulator.CIMParameters") from None
        return cim

    def _prepare(self, problem: IsingProblem, num_reads: int, options: dict) -> None:
        try:
            self._profile.check_problem(problem.n, problem.has_fields)
        except emu.SpinLimitError as exc:
            raise ProblemTooLargeError(self._too_large(problem, exc)) from None
        if options["output"] == "topk":
            runs = options["runs"] or self._profile.default_runs
            if num_reads > runs:
                raise InvalidOptionError(
                    f"output='topk' returns at most runs={runs} states; num_reads={num_reads} "
                    "is larger: lower num_reads or raise runs")

    def estimate_cost(self, spec: JobSpec) -> JobCost:
        """Time: ``runs x round_trips`` steps of the map (class constants), plus the spectral
        bounds of the couplings (a dense eigendecomposition up to 1200 spins, Lanczos beyond).
        Memory: the coupling matrices the emulator keeps (float64, the FPGA's copy, and one for
        energies), per run the amplitudes, noise and feedback buffers and the latency line of
        measurements, and the result."""
        p, opts = spec.problem, spec.options
        cim = self._parameters(opts)  # no problem: no temperature fit (that is O(n^3))
        topk = opts["output"] == "topk"
        runs = (opts["runs"] or self._profile.default_runs) if topk else spec.num_reads
        nt = p.n + (1 if p.has_fields else 0)
        macs = (p.J.nnz + 2 * p.n) if p.is_sparse else nt * nt
        energy = cim.feedback == "cac" or bool(opts["track_best"])
        step = (self.SECONDS_PER_PULSE * nt
                + self.SECONDS_PER_MAC * macs * (2 if energy else 1))
        seconds = float(runs) * cim.round_trips * step + cim.round_trips * self.SECONDS_PER_ROUND_TRIP
        if p.is_sparse or nt > 1200:
            seconds += 600 * 2e-9 * macs  # two Lanczos runs
        else:
            seconds += 2e-9 * nt ** 3
        amp = 8 if cim.dtype == "float64" else 4
        parts = {
            "couplings": (16 * macs if p.is_sparse else 8 * macs) * 3,
            "run_state": runs * nt * (amp * (6 + cim.latency + 1) + (1 if energy else 0)),
            "result": result_bytes(runs, p.n) + (runs * nt if topk else 0),
        }
        return JobCost(seconds, int(sum(parts.values())), parts)

    # --- the work ---------------------------------------------------------------------------

    def _run(self, problem: IsingProblem, *, num_reads: int, seed: int, options: dict,
             ctx: RunContext) -> RunResult:
        cim = self._parameters(options, problem)
        topk = options["output"] == "topk"
        runs = (options["runs"] or self._profile.default_runs) if topk else num_reads
        J, h = _arrays(problem)
        ctx.raise_if_cancelled()
        try:
            res = emu.simulate(J, h, cim, runs=runs, seed=seed, engine=options["engine"],
                               track_best=bool(options["track_best"]),
                               cancel_check=ctx.cancelled)
        except emu.ProblemError as exc:  # IsingProblem validated already; keep the hierarchy
            raise ProblemError(str(exc)) from None
        res = emu.lose_shots(self._profile, res, J, h, seed=seed)
        spins = res.best_spins if options["track_best"] else res.spins
        occ = None
        if topk:
            spins, occ = _top_k(problem, spins, num_reads)
        device_s = emu.device_time(self._profile.replace(cim=cim), problem.n, runs,
                                   cim.round_trips, has_field=problem.has_fields)
        info = {
            "profile": self._profile.name,
            "runs": runs,
            "round_trips": cim.round_trips,
            "feedback": cim.feedback,
            "p1": cim.p1,
            "sigma_add": cim.sigma_add,
            "engine": res.info.get("engine"),
            "xi": _plain(res.info.get("xi")),
            "coupling_scale": _plain(res.info.get("coupling_scale")),
            "coupling_quantization_error": _plain(res.info.get("coupling_quantization_error")),
            "spectral_radius": _plain(res.info.get("spectral_radius")),
        }
        return RunResult(np.ascontiguousarray(spins, dtype=np.int8), occ, device_s, info)

    def trace(self, problem: IsingProblem, *, runs: int = 8, seed: Any = 0, record_every: int = 1,
              **options: Any) -> emu.CIMResult:
        """Run ``runs`` runs and keep every pulse's amplitude over the round trips (for plots).

        Returns the emulator's :class:`kpp_sdk.emulator.CIMResult`; ``trajectories`` has shape
        (records, runs, N [+1 ancilla]) and ``trajectory_round_trips`` the round trip of each
        record. Trajectories are never stored by :meth:`submit`.
        """
        from kpp_sdk.device import resolve_seed

        opts = self.validate(problem, 1, **options).options
        cim = self._parameters(opts, problem)
        J, h = _arrays(problem)
        return emu.simulate(J, h, cim, runs=int(runs), seed=resolve_seed(seed),
                            engine=opts["engine"], record_runs=True,
                            record_every=int(record_every))


def _arrays(problem: IsingProblem):
    J = problem.sparse_J() if problem.is_sparse else problem.dense_J()
    h = problem.h if problem.has_fields else None
    return J, h


def _plain(v: Any) -> Any:
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _top_k(problem: IsingProblem, spins: np.ndarray, k: int):
    """De-duplicate runs, keep the ``k`` lowest energies (ties in first-seen order)."""
    uniq, first, inverse = np.unique(spins, axis=0, return_index=True, return_inverse=True)
    counts = np.bincount(inverse.ravel(), minlength=len(uniq))
    energies = np.asarray(problem.energy(uniq), dtype=np.float64)
    order = np.lexsort((first, energies))[:k]
    return uniq[order], counts[order].astype(np.int64)


def estimate_beta(problem: IsingProblem, samples, *, min_count: int = 5):
    """The effective inverse temperature of ``samples`` (a SampleSet, or an array of spins) drawn
    on ``problem`` (n <= 24).

    Fits exp(-beta E) to the samples by moment matching (``beta_moment``: the mean energy of the
    samples equals the Boltzmann mean energy) and by maximum likelihood over the states seen at
    least ``min_count`` times (``beta_ml``), against the exact spectrum of ``problem``. Returns
    :class:`kpp_sdk.emulator.BetaEstimate`. Models use it to calibrate the emulator's temperature
    (the ``temperature`` option moves it). For larger problems use
    :func:`kpp_sdk.models.samplers.pseudo_likelihood_beta` (any n, no enumeration).
    """
    from kpp_sdk.sampleset import SampleSet

    if isinstance(problem, SampleSet) and isinstance(samples, IsingProblem):
        import warnings

        warnings.warn("estimate_beta(sampleset, problem) is now estimate_beta(problem, samples); "
                      "the old order goes away in the next release", DeprecationWarning,
                      stacklevel=2)
        problem, samples = samples, problem
    if problem.n > 24:
        raise ProblemError(f"estimate_beta enumerates all 2^n states; n = {problem.n} > 24 is too "
                           "large: estimate on a smaller problem of the same kind")
    J, h = _arrays(problem)
    J = J.toarray() if hasattr(J, "toarray") else J
    if isinstance(samples, SampleSet):
        spins = np.repeat(samples.spins, np.asarray(samples.num_occurrences, dtype=np.int64), axis=0)
    else:
        spins = problem.check_spins(samples)
    return emu.estimate_beta(spins=spins, J=J, h=h, min_count=min_count)
