"""Whole numbers in request headers: one parser for every header that carries one (the timeout
headers, the mock provider's ``x-mock-*``), answering any bad value with a 400 naming the header."""

from __future__ import annotations

from collections.abc import Mapping

from .errors import InvalidRequestError

__all__ = ["MAX_MILLISECONDS", "whole_number"]

MAX_MILLISECONDS = 86_400_000
"""24 h: the longest time a header may ask for."""


def whole_number(headers: Mapping[str, str], name: str, *, low: int, high: int, unit: str = "") -> int | None:
    """The header ``name`` as a whole number from ``low`` to ``high`` (``None`` when absent).

    ASCII digits only (``str.isdigit`` also takes ``²``, which ``int()`` refuses), and never more
    of them than ``high`` has once leading zeros are dropped, so ``int()`` is neither refused nor
    slow, however long the value. ``unit`` (``"milliseconds"``) goes into the messages."""
    value = headers.get(name)
    if value is None:
        return None
    digits = value.lstrip("0")
    if not (value.isascii() and value.isdigit()) or (not digits and low > 0):
        raise _invalid(name, _expected(name, low, high, unit))
    if len(digits) > len(str(high)) or int(digits or "0") > high:
        of = f" {unit}" if unit else ""
        day = " (24 hours)" if unit == "milliseconds" and high == MAX_MILLISECONDS else ""
        raise _invalid(name, f"{name} must be at most {high}{of}{day}.")
    number = int(digits or "0")
    if number < low:
        raise _invalid(name, _expected(name, low, high, unit))
    return number


def _expected(name: str, low: int, high: int, unit: str) -> str:
    of = f" of {unit}" if unit else ""
    if low == 0:
        return f"{name} must be a whole number{of}."
    if low == 1:
        return f"{name} must be a positive whole number{of}."
    return f"{name} must be a whole number from {low} to {high}{of}."


def _invalid(name: str, message: str) -> InvalidRequestError:
    return InvalidRequestError(message, param=name, code="invalid_header")
