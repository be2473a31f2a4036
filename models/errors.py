"""Errors of the models room. Both are :class:`kpp_sdk.KppError` subclasses, so ``kpp train``
prints them as one line."""

from __future__ import annotations

from kpp_sdk.errors import KppError

__all__ = ["InvalidDataError", "CheckpointError"]


class InvalidDataError(KppError, ValueError):
    """Training or evaluation data do not fit the model: wrong shape, values outside {0, 1} for
    binary units, NaN or infinite values."""


class CheckpointError(KppError, ValueError):
    """A checkpoint cannot be loaded: not a kpp model checkpoint, another model class, or another
    model shape."""
