"""Argument checks shared by every public function.

One place builds the error text, so every bad argument reads the same way:
``ValueError: bits=7 is not allowed; choose one of 2, 3, 4, 8``. Messages stay on one line
because notebooks and the papermill runner print them as the whole error.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["check_choice", "check_range", "check_bits", "ALLOWED_BITS", "FULL_PRECISION"]

FULL_PRECISION = 32
ALLOWED_BITS: tuple[int, ...] = tuple(range(2, 17)) + (FULL_PRECISION,)


def _fmt(values: Iterable[Any]) -> str:
    values = list(values)
    ints = all(isinstance(v, int) and not isinstance(v, bool) for v in values)
    if ints and len(values) > 4 and values == list(range(values[0], values[-1] + 1)):
        return f"{values[0]}..{values[-1]}"
    if ints and len(values) > 4 and values[: -1] == list(range(values[0], values[-2] + 1)):
        # 2..16 and 32 read better than sixteen numbers
        return f"{values[0]}..{values[-2]} or {values[-1]}"
    return ", ".join(repr(v) if isinstance(v, str) else str(v) for v in values)


def check_choice(name: str, value: Any, allowed: Iterable[Any]) -> Any:
    """Return ``value`` if it is one of ``allowed``, else raise a one-line ValueError."""
    allowed = tuple(allowed)
    # 8.0 == 8 and True == 1 in Python; a value must also have the type of an allowed one
    if value not in allowed or type(value) not in {type(a) for a in allowed}:
        raise ValueError(f"{name}={value!r} is not allowed; choose one of {_fmt(allowed)}")
    return value


def check_range(name: str, value: float, low: float | None = None, high: float | None = None,
                *, integer: bool = False) -> float:
    """Check ``low <= value <= high`` (either end optional) and, if asked, that it is an int."""
    if integer and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValueError(f"{name}={value!r} must be an integer"
                         + (f" in [{low}, {high}]" if low is not None and high is not None else ""))
    if not integer and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise ValueError(f"{name}={value!r} must be a number")
    if (low is not None and value < low) or (high is not None and value > high):
        lo = "-inf" if low is None else low
        hi = "inf" if high is None else high
        raise ValueError(f"{name}={value!r} is out of range; allowed values are in [{lo}, {hi}]")
    return value


def check_bits(name: str, bits: int, allowed: Iterable[int] = ALLOWED_BITS) -> int:
    """A bit-width: an integer 2..16, or 32 for full precision (no quantization)."""
    return check_choice(name, bits, allowed)
