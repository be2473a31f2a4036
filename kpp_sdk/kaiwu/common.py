"""``kw.common``: the two names Kaiwu scripts set up before they solve anything."""

from __future__ import annotations

import logging

__all__ = ["CheckpointManager", "set_log_level"]

logger = logging.getLogger("kpp_sdk.kaiwu")


class CheckpointManager:
    """Where results are kept between runs (``CheckpointManager.save_dir = "tmp"``).

    Source: Kaiwu's ``CIMOptimizer`` keeps each task's result under ``save_dir`` and returns it
    again for the same task name and matrix instead of submitting the task twice. Here
    :class:`~kpp_sdk.kaiwu.cim.CIMOptimizer` does the same when ``save_dir`` is set (a ``.npy``
    file per task); None (the default) keeps nothing.
    """

    save_dir: str | None = None


def set_log_level(level: str | int) -> None:
    """Set the level of the stand-in's logger (``"DEBUG"``, ``"INFO"``, ...)."""
    logger.setLevel(level.upper() if isinstance(level, str) else level)
    if not logger.handlers:
        logger.addHandler(logging.StreamHandler())
