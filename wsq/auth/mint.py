"""Minting tokens with a tenant's HMAC key: ``wsq token``, the development page and tests."""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence
from typing import Any

import jwt

from wsq.config import TenantConfig
from wsq.core.addresses import is_valid_pattern
from wsq.core.errors import ConfigError
from wsq.keys import HMAC_ALGORITHMS, HMAC_MIN_BYTES


def mint_token(
    tenant: TenantConfig,
    sub: str,
    *,
    publish: Sequence[str] = (),
    subscribe: Sequence[str] = (),
    ops: bool = False,
    ttl_s: int = 3600,
    kid: str | None = None,
    now: float | None = None,
) -> str:
    """A token for ``tenant`` signed with its first HMAC key (or the HMAC key ``kid``).

    ``ConfigError`` when the tenant has no such key; ``ValueError`` on an empty ``sub`` or an
    invalid pattern (the gateway would refuse the token).
    """
    key = next(
        (
            k
            for k in tenant.keys
            if k.secret is not None and k.alg in HMAC_ALGORITHMS and (kid is None or k.kid == kid)
        ),
        None,
    )
    if key is None or key.secret is None:
        which = f"an HMAC key with kid {kid!r}" if kid is not None else "an HMAC key"
        raise ConfigError(f"tenant {tenant.name!r} has no {which} to sign tokens with")
    if not isinstance(sub, str) or not sub:
        raise ValueError("sub must be a non-empty string")
    for pattern in (*publish, *subscribe):
        if not is_valid_pattern(pattern):
            raise ValueError(f"invalid address pattern: {pattern!r}")
    issued = math.floor(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "iss": tenant.issuer or tenant.name,
        "sub": sub,
        "iat": issued,
        "exp": issued + ttl_s,
        "wsq": {"publish": list(publish), "subscribe": list(subscribe)},
    }
    if ops:
        claims["wsq"]["ops"] = True
    headers = {"kid": key.kid} if key.kid is not None else None
    if len(key.secret.encode()) >= HMAC_MIN_BYTES[key.alg]:
        return jwt.encode(claims, key.secret, algorithm=key.alg, headers=headers)
    with warnings.catch_warnings():
        # A short secret is the configuration's choice (the Authenticator logs it once); PyJWT
        # would warn on every token.
        warnings.simplefilter("ignore")
        return jwt.encode(claims, key.secret, algorithm=key.alg, headers=headers)
