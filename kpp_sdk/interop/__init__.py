"""Bridges to other ecosystems: Kaiwu-style optimizers (:mod:`.kaiwu`) and dimod
(:mod:`.dimod`, both ways); each imports its library lazily.

:func:`as_device` is the one place where "anything that can sample" becomes a
:class:`~kpp_sdk.Device`.
"""

from __future__ import annotations

from typing import Any

from ..device import Device
from ..errors import InvalidOptionError

__all__ = ["as_device"]


def as_device(obj: Any) -> Device:
    """A :class:`~kpp_sdk.Device` from a Device, a registered device name (``"sa.cpu"``), a
    ``dimod.Sampler`` (any Ocean or dwave-samplers sampler, wrapped by
    :class:`~kpp_sdk.interop.dimod.DimodDevice`) or a Kaiwu-style optimizer (an object with
    ``solve(ising_matrix)``, wrapped by :class:`~kpp_sdk.interop.kaiwu.KaiwuOptimizerDevice`).

    Everything that takes a Device (the models' samplers, ``model.sample``, the selection
    solvers) goes through here, so each of these works there."""
    if isinstance(obj, Device):
        return obj
    if isinstance(obj, str):
        from ..registry import get_device

        return get_device(obj)
    from .dimod import DimodDevice, is_dimod_sampler

    if is_dimod_sampler(obj):
        return DimodDevice(obj)
    if callable(getattr(obj, "solve", None)):
        from .kaiwu import KaiwuOptimizerDevice

        return KaiwuOptimizerDevice(obj)
    raise InvalidOptionError(
        f"expected a kpp_sdk Device, a device name (see `kpp devices`), a dimod.Sampler or a "
        f"Kaiwu optimizer with solve(ising_matrix), got {type(obj).__name__}")
