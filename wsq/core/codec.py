"""JSON in and out of the wire, in one place.

orjson does the work; standard ``json`` is the fallback for what orjson refuses but JSON allows
(lone surrogate escapes when decoding, integers beyond 64 bits when encoding), and for text with
a run of 19 or more digits, where orjson would silently read an integer beyond 64 bits as a
float and change a body. Non-standard constants (NaN, Infinity) and numbers too large for a
double are refused either way.
"""

from __future__ import annotations

import json
import math
import re
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


# 2**63 has 19 digits: a shorter run of digits is always an integer orjson keeps exactly.
# (A long run inside a string or a fraction also matches: it only costs the slower parser.)
# Looked for on frames clients send only (the publish path), never per subscriber; a silently
# changed body would cost more. The regular expression tries every position (about 5 us per
# published message of ~150 characters, 8 % of a compact fan-out's CPU at 200 subscribers);
# ASCII text (every publish but those with raw non-ASCII characters) is looked at as its digits
# all turned into "0" instead, where a run of 19 is a substring search: ~20x faster.
_LONG_DIGITS = re.compile(r"[0-9]{19}")
_ZEROS = str.maketrans("123456789", "000000000")
_ZEROS_BYTES = bytes.maketrans(b"123456789", b"000000000")
_RUN = "0" * 19
_RUN_BYTES = _RUN.encode()


def has_long_digits(text: str | bytes) -> bool:
    """Whether ``text`` has a run of 19 or more digits."""
    if isinstance(text, str):
        if not text.isascii():
            return _LONG_DIGITS.search(text) is not None
        return _RUN in text.translate(_ZEROS)
    return _RUN_BYTES in text.translate(_ZEROS_BYTES)


def loads(text: str | bytes) -> Any:
    if not has_long_digits(text):
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
    try:
        # What orjson refuses but JSON allows (escaped lone surrogates, "\ud800"), and what it
        # would read inexactly (integers beyond 64 bits).
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
