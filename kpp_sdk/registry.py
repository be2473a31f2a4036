"""Device registry: every device, built-in or third-party, is an entry point in the group
``kpp_sdk.devices`` (``"name" = "package.module:DeviceClass"`` in its pyproject)."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata
from typing import Any

from .device import Device
from .errors import DeviceNotFoundError, KppError, MissingDependencyError

__all__ = ["get_device", "list_devices", "device_class", "DeviceInfo", "ENTRY_POINT_GROUP"]

ENTRY_POINT_GROUP = "kpp_sdk.devices"


@dataclass(frozen=True)
class DeviceInfo:
    """One row of :func:`list_devices`: ``reason`` says why an unavailable device is unavailable."""

    name: str
    target: str
    available: bool
    reason: str = ""
    properties: Any = None


def _entry_points() -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def device_class(name: str) -> type[Device]:
    """The class registered under ``name`` (checks its optional dependencies)."""
    eps = _entry_points()
    if name not in eps:
        known = ", ".join(sorted(eps)) or "(none: is kpp-sdk installed with pip?)"
        raise DeviceNotFoundError(f"no device named {name!r}; registered devices: {known}")
    try:
        cls = eps[name].load()
    except MissingDependencyError:
        raise
    except ImportError as exc:
        raise DeviceNotFoundError(
            f"device {name!r} is registered ({eps[name].value}) but cannot be imported: {exc}; "
            "reinstall kpp-sdk or the plugin that provides it"
        ) from exc
    if not (isinstance(cls, type) and issubclass(cls, Device)):
        raise KppError(f"entry point {name!r} -> {eps[name].value} is not a kpp_sdk.Device subclass")
    cls.check_available()
    return cls


def get_device(name: str, **options: Any) -> Device:
    """An instance of the device registered as ``name``; ``options`` become its defaults."""
    return device_class(name)(**options)


def list_devices(available_only: bool = False) -> list[DeviceInfo]:
    """Every registered device, sorted by name, with availability and default properties."""
    rows = []
    for name, ep in sorted(_entry_points().items()):
        try:
            dev = get_device(name)
            rows.append(DeviceInfo(name, ep.value, True, "", dev.properties))
        except MissingDependencyError as exc:
            rows.append(DeviceInfo(name, ep.value, False, str(exc)))
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not break the listing
            rows.append(DeviceInfo(name, ep.value, False, f"failed to load: {exc!r}"))
    return [r for r in rows if r.available] if available_only else rows
