"""Bridges to other ecosystems: Kaiwu-style optimizers (:mod:`.kaiwu`) and dimod
(:mod:`.dimod`); each imports its library lazily.

:func:`as_device` is the one place where "anything that can sample" becomes a
:class:`~kpp_sdk.Device`.
"""

from __future__ import annotations

from typing import Any

from ..device import Device
from ..errors import InvalidOptionError

__all__ = ["as_device"]


def as_device(obj: Any) -> Device:
    """A :class:`~kpp_sdk.Device` from a Device, a registered device name (``"sa.cpu"``) or a
    Kaiwu-style optimizer (an object with ``solve(ising_matrix)``, wrapped by
    :class:`~kpp_sdk.interop.kaiwu.KaiwuOptimizerDevice`)."""
    if isinstance(obj, Device):
        return obj
    if isinstance(obj, str):
        from ..registry import get_device

        return get_device(obj)
    if callable(getattr(obj, "solve", None)):
        from .kaiwu import KaiwuOptimizerDevice

        return KaiwuOptimizerDevice(obj)
    raise InvalidOptionError(
        f"expected a kpp_sdk Device, a device name (see `kpp devices`) or a Kaiwu optimizer with "
        f"solve(ising_matrix), got {type(obj).__name__}")
