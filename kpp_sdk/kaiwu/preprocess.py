"""``kw.preprocess``: :class:`PrecisionReducer` (also importable from ``kw.cim``, where older
Kaiwu releases kept it)."""

from .cim import PrecisionReducer

__all__ = ["PrecisionReducer"]
