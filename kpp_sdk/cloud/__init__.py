"""The HTTP side of kpp-sdk: the wire format (:mod:`.wire`), the server behind ``kpp serve``
(:mod:`.server`, needs the ``server`` extra), the client of the ``cim.cloud`` device
(:mod:`.client`, :mod:`.poller`) and :class:`LocalServer`, a ``kpp serve`` subprocess on
127.0.0.1 for tests, benchmarks and examples. See ``docs/cloud.md``.

Names load on first use, so that ``kpp --version`` (which imports :mod:`.cli`) stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["LocalServer", "STATUS_ERRORS", "CloudConnectionError", "IdempotencyConflict"]

_WHERE = {"LocalServer": ".local", "STATUS_ERRORS": ".errors", "CloudConnectionError": ".errors",
          "IdempotencyConflict": ".errors"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
