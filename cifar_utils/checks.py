"""Argument checks shared by the package's public functions.

Each raises `ValueError` naming the argument, what it must be and what was received, and
returns the value in its plain Python type:

    epochs = checks.whole_number(epochs, "epochs", minimum=1)
    rate = checks.number(learning_rate, "learning_rate", positive=True)
"""

from __future__ import annotations

import math
import numbers


def whole_number(value, name: str, minimum: int = 0, maximum: int | None = None) -> int:
    """`value` as an `int`, if it is a whole number (not a bool) from `minimum` to `maximum`.

    Raises:
        ValueError: naming `name`, the range and what was received.
    """
    whole = not isinstance(value, bool) and isinstance(value, numbers.Integral)
    if not whole or value < minimum or (maximum is not None and value > maximum):
        expected = f">= {minimum}" if maximum is None else f"from {minimum} to {maximum}"
        raise ValueError(f"{name} must be a whole number {expected}; received {value!r}.")
    return int(value)


def number(value, name: str, positive: bool = False, minimum=None, below=None) -> float:
    """`value` as a `float`, if it is a finite real number (not a bool) in the range asked.

    Args:
        value: the argument.
        name: its name, for the message.
        positive: require `value > 0`.
        minimum: require `value >= minimum`, unless None.
        below: require `value < below`, unless None.

    Raises:
        ValueError: naming `name`, what it must be and what was received.
    """
    real = not isinstance(value, bool) and isinstance(value, numbers.Real)
    ok = real and math.isfinite(value)
    ok = ok and (not positive or value > 0)
    ok = ok and (minimum is None or value >= minimum) and (below is None or value < below)
    if not ok:
        expected = "a positive finite number" if positive else "a finite number"
        if minimum is not None and below is not None:
            expected += f" in [{minimum}, {below})"
        elif minimum is not None:
            expected += f" >= {minimum}"
        elif below is not None:
            expected += f" < {below}"
        raise ValueError(f"{name} must be {expected}; received {value!r}.")
    return float(value)


def one_of(value, name: str, choices) -> object:
    """`value`, if it is one of `choices`.

    Raises:
        ValueError: naming `name`, the choices and what was received.
    """
    if value not in choices:
        raise ValueError(
            f"{name} must be one of {', '.join(map(str, choices))}; received {value!r}."
        )
    return value


def instance(value, name: str, kind, expected: str) -> object:
    """`value`, if it is an instance of `kind` (a type or tuple of types).

    Raises:
        ValueError: naming `name`, `expected` (the type in words) and what was received.
    """
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _types(kind)):
        raise ValueError(f"{name} must be {expected}; received {value!r}.")
    return value


def _types(kind) -> tuple:
    return kind if isinstance(kind, tuple) else (kind,)
