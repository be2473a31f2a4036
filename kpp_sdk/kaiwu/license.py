"""``kw.license``: the stand-in needs no license (nothing is sent anywhere)."""

from __future__ import annotations

from .common import logger

__all__ = ["init"]


def init(user_id: str | None = None, sdk_code: str | None = None) -> None:
    """Accept Kaiwu's ``license.init(user_id, sdk_code)`` call. The stand-in runs offline on this
    SDK's devices, so there is nothing to unlock: the credentials are neither stored nor sent."""
    logger.debug("kpp_sdk.kaiwu needs no license; license.init ignored")
