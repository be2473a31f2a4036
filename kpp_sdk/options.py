"""Device options declared once: name, default, type, range, unit and doc in one :class:`Option`.

A device lists its options as an :class:`OptionSpec`; one validator (:meth:`OptionSpec.validate`)
serves :meth:`Device.submit <kpp_sdk.Device.submit>`, :meth:`Device.validate
<kpp_sdk.Device.validate>`, the server and the samplers, and the same spec renders the options
for ``help(device.sample)`` and ``kpp devices --options NAME``.

>>> from kpp_sdk.options import Option, OptionSpec
>>> spec = OptionSpec(num_sweeps=Option(1000, "sweeps per read", type=int, ge=1))
>>> spec.validate({"num_sweeps": 50}, owner="sa.cpu")
{'num_sweeps': 50}
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .errors import InvalidOptionError, InvalidOptionTypeError, UnknownOptionError

__all__ = ["Option", "OptionSpec", "check_int", "check_number", "as_spec"]


def check_int(value: Any, what: str, *, ge: int | None = None, le: int | None = None) -> int:
    """``value`` as a Python int: ints and NumPy integers pass, bools and floats do not
    (``2.0`` is refused: a count is never fractional). Raises :class:`InvalidOptionTypeError`
    for another type and :class:`InvalidOptionError` for a value out of range."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise InvalidOptionTypeError(f"{what} must be an integer{_range_text(ge, le, None, None)}, "
                                 f"got {value!r}")
    value = int(value)
    if (ge is not None and value < ge) or (le is not None and value > le):
        raise InvalidOptionError(f"{what} must be an integer{_range_text(ge, le, None, None)}, "
                                 f"got {value}")
    return value


def check_number(value: Any, what: str, *, ge: float | None = None, le: float | None = None,
                 gt: float | None = None, lt: float | None = None) -> float:
    """``value`` as a finite Python float (ints and NumPy numbers pass, bools do not; another
    type is an :class:`InvalidOptionTypeError`)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer,
                                                                     np.floating)):
        raise InvalidOptionTypeError(f"{what} must be a number{_range_text(ge, le, gt, lt)}, "
                                 f"got {value!r}")
    v = float(value)
    if (not math.isfinite(v) or (ge is not None and v < ge) or (le is not None and v > le)
            or (gt is not None and v <= gt) or (lt is not None and v >= lt)):
        raise InvalidOptionError(f"{what} must be a finite number{_range_text(ge, le, gt, lt)}, "
                                 f"got {value!r}")
    return v


def _range_text(ge, le, gt, lt) -> str:
    lo = f">= {ge:g}" if ge is not None else (f"> {gt:g}" if gt is not None else None)
    hi = f"<= {le:g}" if le is not None else (f"< {lt:g}" if lt is not None else None)
    if lo and hi:
        return f" {lo} and {hi}"
    return f" {lo or hi}" if (lo or hi) else ""


@dataclass(frozen=True)
class Option:
    """One device option.

    default: the value when the caller gives none.
    doc: what it does, one or two sentences (units and meaning).
    type: ``int``, ``float``, ``bool`` or ``str`` (checked; NumPy scalars count as their Python
        kind, bools are never numbers); None accepts any value (``check`` may still refuse).
    choices: the allowed values (for strings).
    ge, le, gt, lt: numeric bounds.
    unit: printed after the default (``"s"``, ``"round trips"``).
    nullable: None is allowed even when the default is not None (always when it is).
    check: ``value -> value`` for what the fields above cannot say (arrays, pairs); raises
        :class:`InvalidOptionError`. Runs after the type and range checks, never on None.
    """

    default: Any = None
    doc: str = ""
    type: type | None = None
    choices: tuple | None = None
    ge: float | None = None
    le: float | None = None
    gt: float | None = None
    lt: float | None = None
    unit: str | None = None
    nullable: bool = False
    check: Callable[[Any], Any] | None = field(default=None, compare=False)
    name: str = ""

    def validate(self, value: Any) -> Any:
        """The checked (normalised) value, or :class:`InvalidOptionError` naming the option,
        the value and what is allowed."""
        if value is None:
            if self.default is None or self.nullable:
                return None
            raise InvalidOptionError(f"{self.name} must be {self.allowed()}, got None")
        if self.type is int:
            value = check_int(value, self.name, ge=self.ge, le=self.le)
        elif self.type is float:
            value = check_number(value, self.name, ge=self.ge, le=self.le, gt=self.gt, lt=self.lt)
        elif self.type is bool:
            if not isinstance(value, (bool, np.bool_)):
                raise InvalidOptionTypeError(f"{self.name} must be True or False, got {value!r}")
            value = bool(value)
        elif self.type is str and not isinstance(value, str):
            raise InvalidOptionTypeError(f"{self.name} must be {self.allowed()}, got {value!r}")
        if self.choices is not None and value not in self.choices:
            raise InvalidOptionError(f"{self.name} must be {self.allowed()}, got {value!r}")
        if self.check is not None:
            value = self.check(value)
        return value

    def allowed(self) -> str:
        """What the option accepts, in words."""
        if self.choices is not None:
            text = "one of " + ", ".join(repr(c) for c in self.choices)
        elif self.type is int:
            text = "an integer" + _range_text(self.ge, self.le, None, None)
        elif self.type is float:
            text = "a number" + _range_text(self.ge, self.le, self.gt, self.lt)
        elif self.type is bool:
            text = "True or False"
        elif self.type is str:
            text = "a string"
        else:
            text = "a value as documented"
        if self.default is None or self.nullable:
            text += " or None"
        return text

    def describe(self, width: int = 92) -> str:
        """One entry of the options table: ``name [default unit]`` then the doc and the range,
        wrapped to ``width`` columns."""
        unit = f" {self.unit}" if self.unit and self.default is not None else ""
        head = f"{self.name} [{self.default!r}{unit}]"
        body = self.doc.strip()
        if self.type is not None or self.choices is not None:
            body = f"{body}. Allowed: {self.allowed()}." if body else f"Allowed: {self.allowed()}."
        if not body:
            return head
        return head + "\n" + textwrap.fill(body, width, initial_indent="    ",
                                           subsequent_indent="    ")


class OptionSpec(Mapping[str, Option]):
    """An ordered, read-only mapping of option names to :class:`Option` (``OptionSpec(a=Option(...),
    ...)``). ``dict(spec.defaults())`` gives the defaults, ``spec.validate(values)`` checks values."""

    def __init__(self, options: Mapping[str, Option] | None = None, /, **more: Option):
        merged = {**dict(options or {}), **more}
        self._options = {}
        for name, opt in merged.items():
            if not isinstance(opt, Option):
                raise TypeError(f"option {name!r} must be an Option, got {type(opt).__name__}")
            self._options[name] = replace(opt, name=name)

    def __getitem__(self, name: str) -> Option:
        return self._options[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._options)

    def __len__(self) -> int:
        return len(self._options)

    def __repr__(self) -> str:
        return f"OptionSpec({', '.join(self._options)})"

    def defaults(self) -> dict:
        return {name: opt.default for name, opt in self._options.items()}

    def check_names(self, names: Any, owner: str) -> None:
        """Raise :class:`UnknownOptionError` for names not in the spec, listing the known ones."""
        unknown = sorted(set(names) - set(self._options))
        if unknown:
            known = ", ".join(["num_reads", "seed", *self._options])
            raise UnknownOptionError(
                f"{owner} does not know the option(s) {', '.join(map(repr, unknown))}; "
                f"known options: {known}")

    def validate(self, values: Mapping[str, Any], *, owner: str = "the device") -> dict:
        """Check every given value (names first); returns the normalised values (only those
        given: merging with defaults is the caller's)."""
        self.check_names(values, owner)
        return {name: self._options[name].validate(v) for name, v in values.items()}

    def describe(self) -> str:
        """The options table for docstrings and ``kpp devices --options``."""
        if not self._options:
            return "(no options)"
        return "\n".join(opt.describe() for opt in self._options.values())


def as_spec(options: Any) -> OptionSpec:
    """An :class:`OptionSpec` from a spec or a plain ``{name: default}`` dict (a device written
    before option specs: every value is accepted and the device's own checks apply)."""
    if isinstance(options, OptionSpec):
        return options
    return OptionSpec({k: v if isinstance(v, Option) else Option(v, nullable=True)
                       for k, v in dict(options or {}).items()})
