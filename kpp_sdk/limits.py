"""Bounded work: what a job will cost (:class:`JobCost`) and what one may cost (:class:`JobLimits`).

Every device states, before any work, the time and memory a job will need
(:meth:`Device.estimate_cost <kpp_sdk.Device.estimate_cost>`, from ``n``, the number of couplings,
``num_reads`` and the sweeps or round trips). :meth:`Device.validate <kpp_sdk.Device.validate>`
compares that estimate with the device's :class:`JobLimits` and raises :class:`JobTooLargeError`,
naming the limit and the fix, for a job beyond them. ``kpp serve`` does the same with its own
limits (``--max-job-seconds``, ``--max-job-memory``) and also counts the memory of decoding the
request.

Limits follow the configuration rule of :mod:`kpp_sdk.config`: ``Device(limits=...)`` >
``KPP_MAX_JOB_SECONDS`` / ``KPP_MAX_JOB_MEMORY`` > ``max_job_seconds`` / ``max_job_memory`` in the
profile file > the defaults (:data:`DEFAULT_MAX_JOB_SECONDS`, half of the physical memory).

Units: ``seconds`` are seconds of one CPU core (what the job would take on one thread of the
reference machine the throughput constants were measured on; several threads finish sooner, a
slower machine later); ``memory_bytes`` is the peak memory the job adds to the process
(working arrays and the result; the problem itself is the caller's).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from .errors import ConfigError, JobTooLargeError

__all__ = ["JobCost", "JobLimits", "parse_bytes", "format_bytes", "resolve_limits",
           "DEFAULT_MAX_JOB_SECONDS", "physical_memory"]

#: Default local limit of one job's compute time: one day of one core.
DEFAULT_MAX_JOB_SECONDS = 86_400.0

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9,
          "gb": 10**9, "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30,
          "tib": 2**40}


def parse_bytes(value: Any, what: str = "a memory limit") -> int:
    """``1073741824``, ``"1GiB"``, ``"512 MB"``, ``"2e9"`` -> bytes (int >= 1)."""
    if isinstance(value, bool):
        raise ConfigError(f"{what} must be a number of bytes, got {value!r}")
    if isinstance(value, (int, float)):
        num, unit = float(value), ""
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*", str(value))
        if m is None or m.group(2).lower() not in _UNITS:
            raise ConfigError(f"{what} must be bytes such as 2000000000, '2GB' or '1.5GiB', "
                              f"got {value!r}")
        num, unit = float(m.group(1)), m.group(2).lower()
    out = num * _UNITS[unit]
    if not math.isfinite(out) or out < 1:
        raise ConfigError(f"{what} must be at least 1 byte, got {value!r}")
    return int(out)


def format_bytes(n: float) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.3g} {unit}"
    return f"{int(n)} B"


def physical_memory() -> int | None:
    """Bytes of physical memory, or None where the system does not say."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return None


@dataclass(frozen=True)
class JobCost:
    """What one job will need, stated by its device before any work.

    seconds: compute time on one core of the reference machine (None: the device cannot say;
        no time limit applies then). memory_bytes: peak memory the job adds (working arrays and
        the result). parts: the named terms of the estimate (``{"spins": 8000, ...}``), for the
        error message.
    """

    seconds: float | None
    memory_bytes: int
    parts: Mapping[str, float] = field(default_factory=dict)

    def describe(self) -> str:
        terms = ", ".join(f"{k} {format_bytes(v)}" for k, v in self.parts.items() if v)
        return f" ({terms})" if terms else ""


@dataclass(frozen=True)
class JobLimits:
    """The most one job may cost; None switches a limit off.

    max_seconds: estimated compute seconds (one core). max_memory_bytes: estimated peak memory.
    source: where the values came from (named in the error message, with the fix).
    """

    max_seconds: float | None = DEFAULT_MAX_JOB_SECONDS
    max_memory_bytes: int | None = None
    source: str = "the defaults"

    def __post_init__(self) -> None:
        if self.max_seconds is not None and not (self.max_seconds > 0):
            raise ConfigError(f"max_job_seconds must be > 0, got {self.max_seconds}")
        if self.max_memory_bytes is not None and not (self.max_memory_bytes >= 1):
            raise ConfigError(f"max_job_memory must be >= 1 byte, got {self.max_memory_bytes}")

    @classmethod
    def unlimited(cls) -> "JobLimits":
        return cls(None, None, "JobLimits.unlimited()")

    def check(self, cost: JobCost, owner: str, hint: str = "") -> None:
        """Raise :class:`JobTooLargeError` if ``cost`` exceeds a limit; ``hint`` says what to
        lower (e.g. ``"num_sweeps or num_reads"``)."""
        fix = (f"lower {hint}, split the job, or raise the limit" if hint
               else "split the job or raise the limit")
        if (self.max_memory_bytes is not None and cost.memory_bytes > self.max_memory_bytes):
            raise JobTooLargeError(
                f"{owner}: this job needs about {format_bytes(cost.memory_bytes)} of memory"
                f"{cost.describe()}, over the limit max_job_memory = "
                f"{format_bytes(self.max_memory_bytes)} (from {self.source}); {fix} "
                f"({self._how('memory')})",
                limit="max_job_memory", needed=cost.memory_bytes, allowed=self.max_memory_bytes)
        if (self.max_seconds is not None and cost.seconds is not None
                and cost.seconds > self.max_seconds):
            raise JobTooLargeError(
                f"{owner}: this job needs about {_fmt_seconds(cost.seconds)} of compute, over the "
                f"limit max_job_seconds = {_fmt_seconds(self.max_seconds)} (from {self.source}); "
                f"{fix} ({self._how('seconds')})",
                limit="max_job_seconds", needed=cost.seconds, allowed=self.max_seconds)

    def _how(self, which: str) -> str:
        if self.source.startswith("kpp serve"):
            return f"kpp serve --max-job-{which}"
        env = "KPP_MAX_JOB_SECONDS" if which == "seconds" else "KPP_MAX_JOB_MEMORY"
        return f"{env}, max_job_{which} in the kpp profile, or Device(limits=JobLimits(...))"


def _fmt_seconds(s: float) -> str:
    if s >= 86_400 * 365:
        return f"{s / (86_400 * 365):.3g} years"
    if s >= 86_400:
        return f"{s / 86_400:.3g} days"
    if s >= 3600:
        return f"{s / 3600:.3g} h"
    return f"{s:.3g} s"


def resolve_limits(environ: Mapping[str, str] | None = None) -> JobLimits:
    """The local limits by the precedence in the module docstring (environment > profile file
    > defaults). ``none`` or ``0`` switches a limit off."""
    from .config import load_config

    cfg = load_config(environ=environ)
    seconds: float | None = DEFAULT_MAX_JOB_SECONDS
    phys = physical_memory()
    memory: int | None = phys // 2 if phys else None
    sources = []
    if cfg.max_job_seconds is not None:
        seconds = _parse_seconds(cfg.max_job_seconds)
        sources.append(_source(cfg.sources.get("max_job_seconds"), "KPP_MAX_JOB_SECONDS"))
    if cfg.max_job_memory is not None:
        raw = cfg.max_job_memory
        memory = None if str(raw).strip().lower() in ("none", "0") else parse_bytes(
            raw, "max_job_memory")
        sources.append(_source(cfg.sources.get("max_job_memory"), "KPP_MAX_JOB_MEMORY"))
    return JobLimits(seconds, memory, " and ".join(dict.fromkeys(sources)) or "the defaults")


def _source(where: str | None, env_name: str) -> str:
    return env_name if where == "environment" else (where or "the defaults")


def _parse_seconds(value: Any) -> float | None:
    if str(value).strip().lower() in ("none", "0"):
        return None
    try:
        s = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"max_job_seconds must be a number of seconds, got {value!r}") from None
    if not (math.isfinite(s) and s > 0):
        raise ConfigError(f"max_job_seconds must be a positive number of seconds, got {value!r}")
    return s
