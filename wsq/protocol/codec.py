"""JSON in and out of the wire, in one place.

orjson does the work; standard ``json`` is the fallback for what orjson refuses but JSON allows
(lone surrogate escapes when decoding, integers beyond 64 bits when encoding). Non-standard
constants (NaN, Infinity) and numbers too large for a double are refused either way.
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson


class DecodeError(ValueError):
    """The text is not valid JSON."""


def _refuse_constant(name: str) -> Any:
    raise DecodeError(f"{name} is not JSON")


def _parse_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise DecodeError(f"{text} is too large for a double")
    return value


def loads(text: str | bytes) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        pass
    try:
        # What orjson refuses but JSON allows: escaped lone surrogates ("\ud800"). Note that
        # orjson does not refuse integers beyond 64 bits: it reads them as floats.
        return json.loads(text, parse_constant=_refuse_constant, parse_float=_parse_float)
    except (ValueError, RecursionError) as exc:
        raise DecodeError(str(exc)) from None


def dumps(value: Any) -> str:
    """Compact JSON text. Raises TypeError / ValueError for what JSON cannot hold."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        pass
    try:
        # ASCII escapes: a lone surrogate (``"\ud800"`` is valid JSON text) must not come out
        # raw, or the text is no longer valid UTF-8 and cannot be sent or stored.
        return json.dumps(value, separators=(",", ":"), allow_nan=False)
    except RecursionError:
        raise ValueError("value nested too deeply") from None


def dumps_str(value: str) -> str:
    """A JSON string literal for ``value``."""
    return orjson.dumps(value).decode()
