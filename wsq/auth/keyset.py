"""Keys ready to verify signatures with: a tenant's configured keys and those of its JWKS.

Every key carries its algorithm from the configuration (or the JWKS entry), never from a token:
``jwt.decode`` is always called with ``algorithms=[key.alg]``. What makes a key fit for an
algorithm is the key policy (``wsq.keys``), shared with the configuration.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import jwt
from jwt.algorithms import Algorithm

from wsq.config import KeyConfig
from wsq.core.errors import ConfigError
from wsq.keys import (
    EC_JWK_CURVES,
    HMAC_ALGORITHMS,
    HMAC_MIN_BYTES,
    PUBLIC_KEY_ALGORITHMS,
    public_key_problem,
)

log = logging.getLogger("wsq.auth")


@dataclass(frozen=True, slots=True)
class Key:
    """A key ready for ``jwt.decode``: its algorithm (from configuration, never from a token)."""

    alg: str
    kid: str | None
    key: Any  # prepared key (bytes, cryptography public key) or jwt.PyJWK
    short_hmac: bool = False  # PyJWT warns on every use; we warned once at construction


def describe_key(tenant: str, index: int, cfg: KeyConfig) -> str:
    return f"tenant {tenant!r} key {cfg.kid!r}" if cfg.kid else f"tenant {tenant!r} key #{index}"


def _algorithm(alg: str) -> Algorithm:
    return jwt.get_algorithm_by_name(alg)


def prepare_static_key(tenant: str, index: int, cfg: KeyConfig) -> Key:
    where = describe_key(tenant, index, cfg)
    if cfg.secret is not None:
        if cfg.alg not in HMAC_ALGORITHMS:
            raise ConfigError(f"{where}: a secret needs an HMAC algorithm (HS256/384/512)")
        if not cfg.secret:
            raise ConfigError(f"{where}: the secret is empty")
        try:
            prepared = _algorithm(cfg.alg).prepare_key(cfg.secret)
        except (jwt.PyJWTError, ValueError, TypeError):
            # PyJWT refuses a PEM/SSH key as an HMAC secret (algorithm confusion).
            raise ConfigError(
                f"{where}: the secret looks like a public key, not an HMAC secret"
            ) from None
        short = len(prepared) < HMAC_MIN_BYTES[cfg.alg]
        if short:
            log.warning(
                "%s: HMAC secret shorter than %d bytes (RFC 7518 3.2); use a longer one",
                where,
                HMAC_MIN_BYTES[cfg.alg],
            )
        return Key(cfg.alg, cfg.kid, prepared, short)
    # public_key
    if cfg.alg not in PUBLIC_KEY_ALGORITHMS:
        raise ConfigError(f"{where}: a public key needs RS256/384/512, ES256/384 or EdDSA")
    assert cfg.public_key is not None
    problem = public_key_problem(cfg.alg, cfg.public_key)
    if problem is not None:
        raise ConfigError(f"{where}: public_key {problem}")
    try:
        prepared = _algorithm(cfg.alg).prepare_key(cfg.public_key)
    except (jwt.PyJWTError, ValueError, TypeError):
        raise ConfigError(f"{where}: public_key is not a PEM key usable with {cfg.alg}") from None
    return Key(cfg.alg, cfg.kid, prepared)


@dataclass(frozen=True, slots=True)
class KeySet:
    by_kid: Mapping[str, Key]
    anonymous: tuple[Key, ...]  # JWKS keys without a kid

    def __len__(self) -> int:
        return len(self.by_kid) + len(self.anonymous)


EMPTY_KEYSET: Final = KeySet({}, ())


def jwk_key(jwk: object, alg: str) -> Key | None:
    """A JWK usable to verify ``alg``, or None (another algorithm, not for signing, broken)."""
    if not isinstance(jwk, dict):
        return None
    if jwk.get("use", "sig") != "sig":
        return None
    if jwk.get("alg", alg) != alg:
        return None
    ops = jwk.get("key_ops")
    if isinstance(ops, list) and "verify" not in ops:
        return None
    if alg in EC_JWK_CURVES and jwk.get("crv") != EC_JWK_CURVES[alg]:
        return None
    kid = jwk.get("kid")
    if kid is not None and not isinstance(kid, str):
        return None
    if "d" in jwk or jwk.get("kty") == "oct":  # never accept private or symmetric JWKS keys
        return None
    try:
        pyjwk = jwt.PyJWK(jwk, algorithm=alg)
    except (jwt.PyJWTError, ValueError, TypeError, KeyError):
        return None
    return Key(alg, kid, pyjwk)
