"""kpp_sdk.emulator: physics and machine timing of a measurement-feedback coherent Ising machine.

Pure physics, no Device and no HTTP; it takes plain arrays (J dense or scipy.sparse CSR,
symmetric, zero diagonal; h a vector or None) with the energy E = -1/2 s^T J s - h^T s.

Main entry points
-----------------
``simulate(J, h, params, runs=..., seed=...) -> CIMResult``  the round-trip map, batched over runs
``sample(profile, J, h, runs=..., seed=...)``                 the same on a hardware profile
``get_profile(name)`` / ``CIMParameters`` / ``HardwareProfile``  machine data
``device_time(profile, n_spins, runs, round_trips)``          seconds of machine time
``simulate_queue(tasks, profile)``                            FIFO queue of tasks (simpy)
``estimate_beta(energies, J=..., h=...)``                     effective inverse temperature
``temperature_knob(params, t, p_threshold)``                  one knob -> pump and noise
``calibrate_knob(profile, J, target_energy, knob=...)``        fit an imperfection knob (V5)
``fit_profile(profile, measurements, {name: (lo, hi)})``      fit parameters to a machine's P

Physics and validation numbers: docs/cim-physics.md.
"""

from .calibration import (
    BetaEstimate,
    KnobCalibration,
    ProfileFit,
    SampleQuality,
    calibrate_knob,
    enumerate_energies,
    estimate_beta,
    fit_profile,
    sample_quality,
    temperature_knob,
)
from .coupling import ising_energy, quantize_couplings, spectral_bounds
from .errors import EmulatorError, ParameterError, ProblemError, SpinLimitError, UnknownProfileError
from .physics import CIMResult, coupled_threshold, lose_shots, numba_available, sample, simulate
from .profiles import (
    CAC_VARIANTS,
    COUPLING_NORMS,
    FEEDBACK_MODES,
    PROFILES,
    CIMParameters,
    HardwareProfile,
    check_problem,
    get_profile,
    list_profiles,
)
from .timing import (
    Machine,
    Task,
    TaskTiming,
    check_slots,
    device_time,
    round_trip_time,
    simulate_queue,
)

__all__ = [
    "CAC_VARIANTS",
    "COUPLING_NORMS",
    "FEEDBACK_MODES",
    "PROFILES",
    "BetaEstimate",
    "CIMParameters",
    "CIMResult",
    "EmulatorError",
    "HardwareProfile",
    "KnobCalibration",
    "ProfileFit",
    "Machine",
    "ParameterError",
    "ProblemError",
    "SampleQuality",
    "SpinLimitError",
    "Task",
    "TaskTiming",
    "UnknownProfileError",
    "calibrate_knob",
    "check_problem",
    "check_slots",
    "coupled_threshold",
    "device_time",
    "enumerate_energies",
    "estimate_beta",
    "fit_profile",
    "get_profile",
    "ising_energy",
    "list_profiles",
    "lose_shots",
    "numba_available",
    "quantize_couplings",
    "round_trip_time",
    "sample",
    "sample_quality",
    "simulate",
    "simulate_queue",
    "spectral_bounds",
    "temperature_knob",
]
