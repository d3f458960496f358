"""What a verified token allows, and whom it speaks for: rights by address pattern."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from wsq.core.addresses import Pattern, compile_pattern, is_valid_pattern, matches_any
from wsq.core.errors import Unauthorized

# Patterns per right in one token.
MAX_PATTERNS: Final = 1024


@dataclass(frozen=True, slots=True)
class Rights:
    """What a token allows: patterns of addresses it may publish to and subscribe to, and
    whether it may watch the gateway's own figures (``ops``: the ``$sys.`` addresses, which show
    every tenant's counts, so a tenant must be configured with ``ops = true`` to grant it)."""

    publish: tuple[Pattern, ...]
    subscribe: tuple[Pattern, ...]
    ops: bool = False

    def can_publish(self, address: str) -> bool:
        return matches_any(self.publish, address)

    def can_subscribe(self, address: str) -> bool:
        return matches_any(self.subscribe, address)

    @classmethod
    def of(
        cls, publish: Iterable[str] = (), subscribe: Iterable[str] = (), ops: bool = False
    ) -> Rights:
        """Rights from pattern strings; ``ValueError`` on an invalid pattern."""
        return cls(
            tuple(dict.fromkeys(compile_pattern(p) for p in publish)),
            tuple(dict.fromkeys(compile_pattern(p) for p in subscribe)),
            ops,
        )


NO_RIGHTS: Final = Rights((), ())


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a verified token speaks for."""

    tenant: str  # tenant name (config key), not the issuer
    sub: str
    exp: int  # unix seconds
    rights: Rights


def parse_rights(claim: object) -> Rights:
    """The ``wsq`` claim -> ``Rights``; ``Unauthorized`` when it is not that shape."""
    if claim is None:  # absent (or null): no rights
        return NO_RIGHTS
    if not isinstance(claim, dict):
        raise Unauthorized('token claim "wsq" must be an object')
    ops = claim.get("ops", False)
    if not isinstance(ops, bool):
        raise Unauthorized('token claim "wsq.ops" must be a boolean')
    return Rights(_parse_patterns(claim, "publish"), _parse_patterns(claim, "subscribe"), ops)


def _parse_patterns(claim: dict[str, Any], name: str) -> tuple[Pattern, ...]:
    value = claim.get(name)
    if value is None:
        return ()
    if not isinstance(value, list):
        raise Unauthorized(f'token claim "wsq.{name}" must be a list of patterns')
    if len(value) > MAX_PATTERNS:
        raise Unauthorized(f'token claim "wsq.{name}" has more than {MAX_PATTERNS} patterns')
    patterns: dict[Pattern, None] = {}
    for i, text in enumerate(value):
        if not isinstance(text, str) or not is_valid_pattern(text):
            raise Unauthorized(f'token claim "wsq.{name}[{i}]" is not a valid address pattern')
        patterns[compile_pattern(text)] = None
    return tuple(patterns)
