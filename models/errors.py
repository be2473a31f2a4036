"""Errors of the models room. All are :class:`kpp_sdk.KppError` subclasses, so ``kpp train``
prints them as one line."""

from __future__ import annotations

from kpp_sdk.errors import KppError

__all__ = ["CheckpointError", "InvalidDataError", "TrainingInterrupted"]


class InvalidDataError(KppError, ValueError):
    """Training or evaluation data do not fit the model: wrong shape, values outside {0, 1} for
    binary units, NaN or infinite values."""


class CheckpointError(KppError, ValueError):
    """A checkpoint cannot be loaded: not a readable kpp model checkpoint, a version this
    kpp-sdk does not read, a configuration or parameter names that do not describe a model,
    another model class or shape, NaN or infinite weights, or a training state that does not
    belong to the run being resumed."""


class TrainingInterrupted(KppError):
    """A training loop stopped early because its ``stop()`` said so (``kpp train``: Ctrl-C).
    The loop handed its complete state to ``on_checkpoint`` before raising, so the run resumes
    from there with the same results as if it had not stopped. ``epoch`` and ``batch``: where
    it stopped (completed epochs, batches done in the next one)."""

    def __init__(self, message: str, *, epoch: int = 0, batch: int = 0):
        super().__init__(message)
        self.epoch, self.batch = int(epoch), int(batch)
