"""Timing of a measurement-feedback CIM: round-trip time, pulse slots, device time of a task,
and a simpy model of a machine that serves tasks first-in first-out.

Device time of one task (what the real machine would spend, docs section 3 "Timing"):

    task_overhead_s + shots * (round_trips + reset_round_trips) * T_rt,   T_rt = n_g L / c

with shots = runs, or ceil(runs / copies) for a profile that runs copies of a problem at once
(``parallel_copies``, :func:`copies_per_shot`).

with T_rt = 4.897 us for 1 km of fiber (n_g = 1.468). ``task_overhead_s`` (0.5 s by default)
and ``reset_round_trips`` (20) are assumptions [A] of the profile.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import simpy

from .errors import ParameterError, SpinLimitError
from .profiles import HardwareProfile, check_problem

__all__ = [
    "Machine",
    "Task",
    "TaskTiming",
    "check_slots",
    "copies_per_shot",
    "device_time",
    "pulse_slots",
    "round_trip_time",
    "simulate_queue",
]


def round_trip_time(profile: HardwareProfile) -> float:
    """T_rt = n_g * L_fiber / c in seconds."""
    return profile.round_trip_time_s


def pulse_slots(profile: HardwareProfile) -> int:
    """Number of pulse slots in the ring, floor(f_rep * T_rt)."""
    return profile.pulse_slots


def check_slots(profile: HardwareProfile, n_spins: int, has_field: bool = False) -> int:
    """Check that N (+1 ancilla) + reserved slots fit in the ring and under the spin limit.

    Returns the number of free slots left; raises :class:`SpinLimitError` otherwise."""
    check_problem(profile, n_spins, has_field)
    return profile.pulse_slots - n_spins - (1 if has_field else 0) - profile.reserved_slots


def copies_per_shot(profile: HardwareProfile, n_spins: int, has_field: bool = False) -> int:
    """Runs of one problem that one shot of the ring holds: floor(max_spins / (N + ancilla))
    with ``profile.parallel_copies`` (1 without, or with no spin limit)."""
    if not profile.parallel_copies or profile.max_spins is None:
        return 1
    return max(1, profile.max_spins // (int(n_spins) + (1 if has_field else 0)))


def device_time(
    profile: HardwareProfile,
    n_spins: int,
    runs: int,
    round_trips: int | None = None,
    *,
    has_field: bool = False,
    include_overhead: bool = True,
) -> float:
    """Seconds the machine is busy with one task of ``runs`` runs on ``n_spins`` spins.

    With ``profile.parallel_copies`` the runs go ``copies_per_shot`` at a time, so the task
    takes ceil(runs / copies) shots. round_trips defaults to ``profile.cim.round_trips``. Raises :class:`SpinLimitError` when the
    problem does not fit the ring (see :func:`check_slots`)."""
    if not isinstance(runs, int) or runs < 0:
        raise ParameterError("runs", runs, "an integer >= 0")
    k = profile.cim.round_trips if round_trips is None else round_trips
    if not isinstance(k, int) or k < 1:
        raise ParameterError("round_trips", k, "an integer >= 1")
    check_slots(profile, n_spins, has_field)
    shots = -(-runs // copies_per_shot(profile, n_spins, has_field))
    t = shots * (k + profile.reset_round_trips) * profile.round_trip_time_s
    return t + (profile.task_overhead_s if include_overhead else 0.0)


@dataclass(frozen=True)
class Task:
    """A task submitted to a machine: ``runs`` runs of ``round_trips`` round trips on
    ``n_spins`` spins, arriving at ``submit_time`` seconds."""

    name: str
    n_spins: int
    runs: int = 2000
    round_trips: int | None = None
    submit_time: float = 0.0
    has_field: bool = False


@dataclass(frozen=True)
class TaskTiming:
    """When a task ran: ``queue_wait = start - submit``; ``device_time = end - start``."""

    name: str
    submit: float
    start: float
    end: float

    @property
    def queue_wait(self) -> float:
        return self.start - self.submit

    @property
    def device_time(self) -> float:
        return self.end - self.start


class Machine:
    """A simpy model of one CIM: a capacity-1 resource served first-in first-out.

    Each task holds the machine for its set-up overhead and then for its runs (its shots, with
    ``parallel_copies``); with ``per_run_events=True`` every run (shot) is its own simpy event
    (useful to observe progress)."""

    def __init__(
        self, env: simpy.Environment, profile: HardwareProfile, per_run_events: bool = False
    ):
        self.env = env
        self.profile = profile
        self.resource = simpy.Resource(env, capacity=1)
        self.per_run_events = per_run_events
        self.log: list[TaskTiming] = []
        self.runs_done = 0

    def process(self, task: Task):
        env = self.env
        prof = self.profile
        if task.submit_time > env.now:
            yield env.timeout(task.submit_time - env.now)
        submit = env.now
        k = prof.cim.round_trips if task.round_trips is None else task.round_trips
        check_slots(prof, task.n_spins, task.has_field)
        with self.resource.request() as req:
            yield req
            start = env.now
            yield env.timeout(prof.task_overhead_s)
            shot_t = (k + prof.reset_round_trips) * prof.round_trip_time_s
            copies = copies_per_shot(prof, task.n_spins, task.has_field)
            if self.per_run_events:  # one event per shot (of up to ``copies`` runs)
                left = task.runs
                while left > 0:
                    yield env.timeout(shot_t)
                    self.runs_done += min(copies, left)
                    left -= copies
            else:
                yield env.timeout(-(-task.runs // copies) * shot_t)
                self.runs_done += task.runs
            self.log.append(TaskTiming(task.name, submit, start, env.now))


def simulate_queue(
    tasks: Sequence[Task] | Iterable[Task], profile: HardwareProfile, per_run_events: bool = False
) -> list[TaskTiming]:
    """Run ``tasks`` through one machine (FIFO by submit time, ties in list order).

    Returns one :class:`TaskTiming` per task, in the order given. Raises SpinLimitError for a
    task that does not fit the machine, before simulating anything."""
    tasks = list(tasks)
    for t in tasks:
        check_slots(profile, t.n_spins, t.has_field)
    env = simpy.Environment()
    m = Machine(env, profile, per_run_events=per_run_events)
    order = sorted(range(len(tasks)), key=lambda i: (tasks[i].submit_time, i))
    for i in order:
        env.process(m.process(tasks[i]))
    env.run()
    by_name = {}
    for rec in m.log:
        by_name.setdefault(rec.name, []).append(rec)
    out = []
    for t in tasks:
        out.append(by_name[t.name].pop(0))
    return out


__all__ += ["SpinLimitError"]
