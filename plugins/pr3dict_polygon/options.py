"""attrs validators for the Config classes, with messages that name the option.

attrs' own ``in_`` puts a tuple repr in its error; pipeline errors are read by operators.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

Validator = Callable[[Any, Any, Any], None]


def between(low: float, high: float) -> Validator:
    def check(instance: Any, attribute: Any, value: Any) -> None:
        if not low <= value <= high:
            raise ValueError(f"{attribute.name} must be between {low} and {high}, got {value}")
    return check


def at_least(low: float) -> Validator:
    def check(instance: Any, attribute: Any, value: Any) -> None:
        if value < low:
            raise ValueError(f"{attribute.name} must be >= {low}, got {value}")
    return check


def above(low: float) -> Validator:
    def check(instance: Any, attribute: Any, value: Any) -> None:
        if value <= low:
            raise ValueError(f"{attribute.name} must be > {low}, got {value}")
    return check


def one_of(choices: Iterable[str]) -> Validator:
    allowed = tuple(choices)

    def check(instance: Any, attribute: Any, value: Any) -> None:
        if value not in allowed:
            raise ValueError(f"{attribute.name} must be one of {', '.join(allowed)}, "
                             f"got {value!r}")
    return check
