"""Type checks of plain values (read from JSON, TOML, a state file, or given by a caller): the
one home of "an int, not a bool", "an integer of any kind (numpy's too)", "a number", "a finite
number" and the JSON name of a value's type for messages (standard library only).

``bool`` is a subclass of ``int`` in Python, so ``isinstance(True, int)`` holds: a ``true`` in a
JSON file would pass for 1. Every check here refuses bools; numpy scalars are not ints
(``numpy.int64`` is no ``int``) but ``numpy.float64`` is a ``float``.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

__all__ = ["is_finite_number", "is_int", "is_integer", "is_number", "json_type"]


def is_int(x: Any) -> bool:
    """Whether ``x`` is a Python ``int`` and not a ``bool``.

    >>> is_int(3), is_int(True), is_int(3.0)
    (True, False, False)
    """
    return isinstance(x, int) and not isinstance(x, bool)


def is_integer(x: Any) -> bool:
    """Whether ``x`` is an integer of any kind (a Python ``int``, a numpy integer: every
    :class:`numbers.Integral`) and not a ``bool``: for arguments given by a caller, who may
    pass a count taken from an array.

    >>> import numpy as np
    >>> is_integer(3), is_integer(np.int64(3)), is_integer(True), is_integer(3.0)
    (True, True, False, False)
    """
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def is_number(x: Any) -> bool:
    """Whether ``x`` is an ``int`` or a ``float`` and not a ``bool``. NaN and ±inf count (a
    float); :func:`is_finite_number` refuses them.

    >>> is_number(2), is_number(0.5), is_number(float("nan")), is_number(False), is_number("1")
    (True, True, True, False, False)
    """
    return isinstance(x, int | float) and not isinstance(x, bool)


def is_finite_number(x: Any) -> bool:
    """Whether ``x`` is a number (:func:`is_number`) that is neither NaN nor ±inf.

    >>> is_finite_number(1e300), is_finite_number(float("inf")), is_finite_number(True)
    (True, False, False)
    """
    return is_number(x) and math.isfinite(x)


def json_type(x: Any) -> str:
    """The JSON name of the type of ``x``, for messages (``'final' is an array, not an
    object``): ``"null"``, ``"boolean"``, ``"number"``, ``"string"``, ``"array"`` (a list or a
    tuple), ``"object"`` (a dict); any other value is named by its Python type.

    >>> [json_type(v) for v in (None, True, 1, 2.5, "a", [1], {"a": 1})]
    ['null', 'boolean', 'number', 'number', 'string', 'array', 'object']
    """
    if x is None:
        return "null"
    if isinstance(x, bool):
        return "boolean"
    if isinstance(x, int | float):
        return "number"
    if isinstance(x, str):
        return "string"
    if isinstance(x, list | tuple):
        return "array"
    if isinstance(x, dict):
        return "object"
    return type(x).__name__
