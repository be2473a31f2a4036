"""Exceptions raised by :mod:`kpp_sdk.emulator`.

All of them subclass :class:`ValueError` so that callers that only know the standard library
can still catch bad input; the Device adapter maps them onto the SDK's own error hierarchy.
"""

from __future__ import annotations


class EmulatorError(Exception):
    """Root of the emulator's exceptions (never raised directly)."""


class ParameterError(EmulatorError, ValueError):
    """A physical or machine parameter is outside its allowed range.

    The message names the parameter, the offending value and the allowed range.
    """

    def __init__(self, name: str, value, allowed: str):
        self.name = name
        self.value = value
        self.allowed = allowed
        super().__init__(f"parameter {name}={value!r} is invalid: allowed {allowed}")


class UnknownProfileError(EmulatorError, ValueError):
    """``get_profile`` was asked for a profile that does not exist."""

    def __init__(self, name, known):
        self.name = name
        self.known = tuple(known)
        super().__init__(
            f"unknown hardware profile {name!r}; known profiles: {', '.join(self.known)}"
        )


class SpinLimitError(EmulatorError, ValueError):
    """The problem has more spins than the profile's machine can hold."""

    def __init__(self, n_spins: int, limit: int, profile: str, detail: str = ""):
        self.n_spins = n_spins
        self.limit = limit
        self.profile = profile
        extra = f" ({detail})" if detail else ""
        super().__init__(
            f"problem needs {n_spins} spins but profile {profile!r} holds at most {limit}{extra}"
        )


class ProblemError(EmulatorError, ValueError):
    """The coupling matrix or field is malformed (shape, symmetry, non-finite values)."""
