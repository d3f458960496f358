"""Token verification, the ``Authenticator`` (contract section 7): JWT -> ``Principal``.

A token names its tenant by ``iss``; the tenant's configured keys verify it. Every key names its
algorithm and a token is only ever checked with that algorithm (``algorithms=[key.alg]``), so a
token cannot pick its own: ``none`` and algorithm confusion (an HS256 token "signed" with an RSA
public key as the HMAC secret) are refused. ``kid`` picks the key; keys may also come from a
tenant's JWKS URL, fetched with httpx, cached, refreshed in the background when stale and refetched
(rate-limited, one fetch in flight per URL) when a token names a key id the cache does not know.

Time claims (``exp``, ``nbf``, ``iat``) are checked here, after the signature, against the injected
clock with a small leeway; an expired token raises ``TokenExpired``, everything else that is wrong
raises ``Unauthorized``. Neither the token nor any key material ever appears in an exception
message or a log line.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import httpx
import jwt
from jwt.types import Options

from wsq.auth.jwks import JwksError, JwksSource, check_jwks_url
from wsq.auth.keyset import Key, describe_key, prepare_static_key
from wsq.auth.rights import Principal, parse_rights
from wsq.config import TenantConfig
from wsq.core.errors import ConfigError, TokenExpired, Unauthorized
from wsq.core.limits import MAX_TOKEN_CHARS
from wsq.keys import PUBLIC_KEY_ALGORITHMS, SUPPORTED_ALGORITHMS

log = logging.getLogger("wsq.auth")

# Keys tried for one token that carries no kid (a signature check each): bounds the work a forged
# token can cause against a tenant (or JWKS) with many keys of the same algorithm.
MAX_KEYS_TRIED: Final = 4

# Signature only: the claims are checked below against the injected clock.
_VERIFY_OPTIONS: Final[Options] = {
    "verify_signature": True,
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
    "verify_aud": False,
    "verify_iss": False,
    "verify_sub": False,
    "verify_jti": False,
    "require": [],
}
_UNVERIFIED_OPTIONS: Final[Options] = {**_VERIFY_OPTIONS, "verify_signature": False}

_DEFAULT_HTTP_TIMEOUT_S: Final = 5.0


@dataclass(frozen=True, slots=True)
class _Tenant:
    name: str
    by_kid: Mapping[str, Key]
    anonymous: tuple[Key, ...]  # static keys without a kid
    jwks: tuple[tuple[JwksSource, str], ...]  # (source, alg expected of its keys)


class Authenticator:
    """Verifies tokens against the tenants' keys. One per process; ``verify`` is concurrency-safe."""

    def __init__(
        self,
        tenants: Mapping[str, TenantConfig],
        *,
        http: httpx.AsyncClient | None = None,
        leeway_s: float = 5.0,
        jwks_ttl_s: float = 300.0,
        jwks_min_refresh_interval_s: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if leeway_s < 0 or jwks_ttl_s < 0 or jwks_min_refresh_interval_s < 0:
            raise ConfigError("leeway and JWKS intervals must not be negative")
        self._leeway_s = leeway_s
        self._jwks_ttl_s = jwks_ttl_s
        self._jwks_min_refresh_interval_s = jwks_min_refresh_interval_s
        self._clock = clock
        self._http = http
        self._own_http = http is None
        self._closed = False
        self._sources: dict[str, JwksSource] = {}
        self._by_issuer: dict[str, _Tenant] = {}
        for name, cfg in tenants.items():
            issuer = cfg.issuer or name
            if issuer in self._by_issuer:
                raise ConfigError(
                    f"tenants {self._by_issuer[issuer].name!r} and {name!r} share issuer {issuer!r}"
                )
            self._by_issuer[issuer] = self._build_tenant(name, cfg)

    def _build_tenant(self, name: str, cfg: TenantConfig) -> _Tenant:
        if not cfg.keys:
            raise ConfigError(f"tenant {name!r} has no keys")
        by_kid: dict[str, Key] = {}
        anonymous: list[Key] = []
        jwks: list[tuple[JwksSource, str]] = []
        for index, key_cfg in enumerate(cfg.keys):
            where = describe_key(name, index, key_cfg)
            if key_cfg.alg not in SUPPORTED_ALGORITHMS:
                raise ConfigError(
                    f"{where}: algorithm {key_cfg.alg!r} is not supported "
                    f"(one of {', '.join(sorted(SUPPORTED_ALGORITHMS))})"
                )
            given = [v is not None for v in (key_cfg.secret, key_cfg.public_key, key_cfg.jwks_url)]
            if sum(given) != 1:
                raise ConfigError(f"{where}: set exactly one of secret, public_key, jwks_url")
            if key_cfg.kid is not None and key_cfg.kid in by_kid:
                raise ConfigError(f"{where}: kid {key_cfg.kid!r} appears twice")
            if key_cfg.jwks_url is not None:
                if key_cfg.alg not in PUBLIC_KEY_ALGORITHMS:
                    raise ConfigError(
                        f"{where}: a JWKS URL serves public keys; use RS*, ES* or EdDSA"
                    )
                check_jwks_url(where, key_cfg.jwks_url)
                source = self._sources.get(key_cfg.jwks_url)
                if source is None:
                    source = self._sources[key_cfg.jwks_url] = JwksSource(self, key_cfg.jwks_url)
                source.algs.add(key_cfg.alg)
                if (source, key_cfg.alg) not in jwks:
                    jwks.append((source, key_cfg.alg))
                continue
            key = prepare_static_key(name, index, key_cfg)
            if key.kid is None:
                anonymous.append(key)
            else:
                by_kid[key.kid] = key
        return _Tenant(name, by_kid, tuple(anonymous), tuple(jwks))

    def _http_client(self) -> httpx.AsyncClient:
        if self._closed:
            raise JwksError("authenticator is closed")
        if self._http is None:
            self._http = httpx.AsyncClient(
                timeout=_DEFAULT_HTTP_TIMEOUT_S,
                follow_redirects=True,
                headers={"User-Agent": "wsq"},
            )
        return self._http

    async def aclose(self) -> None:
        """Stops JWKS fetches in flight; closes the HTTP client if this object created it."""
        self._closed = True
        for source in self._sources.values():
            await source.aclose()
        if self._own_http and self._http is not None:
            await self._http.aclose()
            self._http = None

    # ------------------------------------------------------------------------------ verify

    async def verify(self, token: object) -> Principal:
        """The principal of a valid token; ``TokenExpired`` or ``Unauthorized`` otherwise."""
        if not isinstance(token, str) or not token:
            raise Unauthorized("token must be a non-empty string")
        if len(token) > MAX_TOKEN_CHARS:
            raise Unauthorized(f"token longer than {MAX_TOKEN_CHARS} characters")
        try:
            unverified = jwt.decode_complete(token, options=_UNVERIFIED_OPTIONS)
        except (jwt.PyJWTError, ValueError, TypeError, RecursionError):
            raise Unauthorized("malformed token") from None
        header: dict[str, Any] = unverified["header"]
        claims: dict[str, Any] = unverified["payload"]

        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in SUPPORTED_ALGORITHMS:
            raise Unauthorized("token algorithm is not allowed")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise Unauthorized("token kid must be a string")
        iss = claims.get("iss")
        if not isinstance(iss, str) or not iss:
            raise Unauthorized('token has no "iss" claim')
        tenant = self._by_issuer.get(iss)
        if tenant is None:
            raise Unauthorized("token issuer is not a known tenant")

        keys = await self._candidates(tenant, alg, kid)
        payload = self._check_signature(token, keys)
        return self._principal(tenant, payload)

    async def _candidates(self, tenant: _Tenant, alg: str, kid: str | None) -> list[Key]:
        """The keys to try for a token: the one its kid names, else those of its algorithm."""
        if kid is not None:
            key = tenant.by_kid.get(kid)
            if key is None and tenant.jwks:
                key = await self._jwks_key(tenant, kid)
            if key is not None:
                if key.alg != alg:
                    raise Unauthorized("token algorithm does not match its key")
                return [key]
            # A key configured (or published) without a kid stands for any kid.
            keys = self._anonymous_keys(tenant, alg)
            if not keys:
                raise Unauthorized("token kid names no key of its tenant")
            return keys[:MAX_KEYS_TRIED]
        keys = self._anonymous_keys(tenant, alg, with_static_kids=True)
        if len(keys) < MAX_KEYS_TRIED:
            for source, source_alg in tenant.jwks:
                if source_alg == alg:
                    await source.ensure()
            keys += self._jwks_keys(tenant, alg)
        if not keys:
            raise Unauthorized("no key of the token's tenant uses the token's algorithm")
        return keys[:MAX_KEYS_TRIED]

    @staticmethod
    def _anonymous_keys(tenant: _Tenant, alg: str, *, with_static_kids: bool = False) -> list[Key]:
        keys = [k for k in tenant.anonymous if k.alg == alg]
        if with_static_kids:
            keys += [k for k in tenant.by_kid.values() if k.alg == alg]
        else:
            for source, source_alg in tenant.jwks:
                if source_alg == alg:
                    keys += source.keyset(alg).anonymous
        return keys

    @staticmethod
    def _jwks_keys(tenant: _Tenant, alg: str) -> list[Key]:
        keys: list[Key] = []
        for source, source_alg in tenant.jwks:
            if source_alg == alg:
                keyset = source.keyset(alg)
                keys += keyset.anonymous
                keys += keyset.by_kid.values()
        return keys

    async def _jwks_key(self, tenant: _Tenant, kid: str) -> Key | None:
        """The JWKS key with this kid: from the cache, else after one (rate-limited) refetch."""
        for source, _ in tenant.jwks:
            await source.ensure()
        key = self._jwks_kid(tenant, kid)
        if key is None:
            # Unknown kid: maybe the issuer rotated its keys. Refetch (at most once per
            # min refresh interval per URL, sharing a fetch in flight) and look again.
            for source, _ in tenant.jwks:
                await source.refresh()
            key = self._jwks_kid(tenant, kid)
        return key

    @staticmethod
    def _jwks_kid(tenant: _Tenant, kid: str) -> Key | None:
        for source, alg in tenant.jwks:
            key = source.keyset(alg).by_kid.get(kid)
            if key is not None:
                return key
        return None

    def _check_signature(self, token: str, keys: Sequence[Key]) -> dict[str, Any]:
        for key in keys:
            try:
                if key.short_hmac:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")  # weak secret: warned at construction
                        return self._decode(token, key)
                return self._decode(token, key)
            except jwt.InvalidSignatureError:
                continue
            except (jwt.PyJWTError, ValueError, TypeError, RecursionError):
                raise Unauthorized("malformed token") from None
        raise Unauthorized("token signature is not valid")

    @staticmethod
    def _decode(token: str, key: Key) -> dict[str, Any]:
        # algorithms=[key.alg]: the key's own algorithm, never the one the token names.
        return jwt.decode(token, key.key, algorithms=[key.alg], options=_VERIFY_OPTIONS)

    def _principal(self, tenant: _Tenant, claims: dict[str, Any]) -> Principal:
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise Unauthorized('token has no "sub" claim (a non-empty string)')
        exp = claims.get("exp")
        if exp is None:
            raise Unauthorized('token has no "exp" claim')
        exp_s = _number(exp, "exp")
        now = self._clock()
        if now - self._leeway_s >= exp_s:
            raise TokenExpired("token has expired")
        nbf = claims.get("nbf")
        if nbf is not None and _number(nbf, "nbf") > now + self._leeway_s:
            raise Unauthorized("token is not valid yet (nbf)")
        iat = claims.get("iat")
        if iat is not None and _number(iat, "iat") > now + self._leeway_s:
            raise Unauthorized("token is issued in the future (iat)")
        rights = parse_rights(claims.get("wsq"))
        return Principal(tenant=tenant.name, sub=sub, exp=math.floor(exp_s), rights=rights)


def _number(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Unauthorized(f'token claim "{name}" must be a number')
    if isinstance(value, float) and not math.isfinite(value):
        raise Unauthorized(f'token claim "{name}" must be a finite number')
    return value
