"""Address and pattern grammar (contract section 6) and pattern matching.

An address is dot-separated tokens of ``[A-Za-z0-9_-]``, at most 255 characters. A pattern is an
address whose tokens may be ``*`` (one token) or, as the last token, ``>`` (one or more tokens).
"""

from __future__ import annotations

import re
from functools import lru_cache

MAX_ADDRESS_LENGTH = 255

_ADDRESS_RE = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")
_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]+")


def is_valid_address(value: object) -> bool:
    """True when ``value`` is a string that is a valid address."""
    return (
        isinstance(value, str)
        and len(value) <= MAX_ADDRESS_LENGTH
        and _ADDRESS_RE.fullmatch(value) is not None
    )


#: The gateway's own addresses (an extension of the contract: docs/protocol.md, "Operator
#: figures"). ``$`` is outside the address grammar, so no tenant address can look like one; they
#: live in a namespace of their own (``SYS_TENANT``) and only a token with the ``ops`` right may
#: receive from them. Nobody publishes to them but the gateway.
SYS_PREFIX = "$sys."
SYS_TENANT = "$sys"
#: Where every gateway process publishes its figures, once a second (``wsq.sys_stats``).
SYS_STATS_ADDRESS = "$sys.stats"


def is_sys_address(value: object) -> bool:
    """True when ``value`` is one of the gateway's own addresses: ``$sys.`` then an address."""
    return (
        isinstance(value, str)
        and value.startswith(SYS_PREFIX)
        and is_valid_address(value[len(SYS_PREFIX) :])
    )


def is_valid_pattern(value: object) -> bool:
    """True when ``value`` is a string that is a valid pattern (an address is one too)."""
    if not isinstance(value, str) or not value or len(value) > MAX_ADDRESS_LENGTH:
        return False
    tokens = value.split(".")
    for i, token in enumerate(tokens):
        if token == "*":
            continue
        if token == ">":
            if i != len(tokens) - 1:
                return False
            continue
        if _TOKEN_RE.fullmatch(token) is None:
            return False
    return True


class Pattern:
    """A compiled pattern; ``matches(address)`` is the hot call (subject filters, rights)."""

    __slots__ = ("_exact", "_tail", "_tokens", "text")

    def __init__(self, text: str) -> None:
        if not is_valid_pattern(text):
            raise ValueError(f"invalid pattern: {text!r}")
        self.text = text
        tokens = text.split(".")
        self._tail = tokens[-1] == ">"
        if self._tail:
            tokens = tokens[:-1]
        self._tokens: tuple[str | None, ...] = tuple(None if t == "*" else t for t in tokens)
        # Patterns without wildcards compare as plain strings: the common case for rights.
        self._exact = text if ("*" not in tokens and not self._tail) else None

    def matches(self, address: str) -> bool:
        if self._exact is not None:
            return address == self._exact
        parts = address.split(".")
        n = len(self._tokens)
        if self._tail:
            if len(parts) <= n:
                return False
        elif len(parts) != n:
            return False
        for want, got in zip(self._tokens, parts, strict=False):
            if want is not None and want != got:
                return False
        return True

    def __repr__(self) -> str:
        return f"Pattern({self.text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Pattern) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)


@lru_cache(maxsize=4096)
def compile_pattern(text: str) -> Pattern:
    """A cached ``Pattern``: tokens of many connections share the same few patterns."""
    return Pattern(text)


def matches_any(patterns: tuple[Pattern, ...], address: str) -> bool:
    return any(p.matches(address) for p in patterns)
