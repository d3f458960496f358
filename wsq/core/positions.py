"""Positions: where a message stands in its address, ``"<ms>-<seq>"`` (contract section 5).

The one definition of the grammar and its bound, used by the protocol core (``attach`` ``from``),
the HTTP bridge (``after``, claim ids), the OpenAPI document and every broker. Each half is 1 to
19 ASCII digits: every such number fits the 64 bits of a Redis stream id, so a position the
contract takes is one every broker can read after.
"""

from __future__ import annotations

#: The position before every message: reading after it reads from the oldest retained.
START = "0-0"

#: Digits of each half of a position at most (10**19 - 1 < 2**64).
MAX_POSITION_DIGITS = 19

#: The grammar as a regular expression (JSON Schema, docs); ``parse_position`` is the same rule.
POSITION_PATTERN = rf"^[0-9]{{1,{MAX_POSITION_DIGITS}}}-[0-9]{{1,{MAX_POSITION_DIGITS}}}$"

Position = tuple[int, int]


def parse_position(value: str) -> Position:
    """``"<ms>-<seq>"`` -> ``(ms, seq)``; raises ValueError when malformed."""
    ms, sep, seq = value.partition("-")
    if (
        not sep
        or not 0 < len(ms) <= MAX_POSITION_DIGITS
        or not 0 < len(seq) <= MAX_POSITION_DIGITS
        # str.isdigit() is true for other scripts' digits too, which int() would read.
        or not ms.isascii()
        or not seq.isascii()
        or not ms.isdigit()
        or not seq.isdigit()
    ):
        raise ValueError(f"invalid position: {value!r}")
    return int(ms), int(seq)


def is_valid_position(value: object) -> bool:
    """True when ``value`` is a string the grammar takes."""
    if not isinstance(value, str):
        return False
    try:
        parse_position(value)
    except ValueError:
        return False
    return True


def format_position(pos: Position) -> str:
    return f"{pos[0]}-{pos[1]}"
