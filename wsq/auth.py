"""Token verification (contract section 7): JWT -> ``Principal`` (tenant, sub, exp, rights).

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

import asyncio
import json
import logging
import math
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import httpx
import jwt
from jwt.algorithms import Algorithm
from jwt.types import Options

from wsq.config import KeyConfig, TenantConfig
from wsq.core.addresses import Pattern, compile_pattern, is_valid_pattern, matches_any
from wsq.core.errors import ConfigError, TokenExpired, Unauthorized
from wsq.core.limits import MAX_TOKEN_CHARS
from wsq.keys import (
    EC_JWK_CURVES,
    HMAC_ALGORITHMS,
    HMAC_MIN_BYTES,
    PUBLIC_KEY_ALGORITHMS,
    SUPPORTED_ALGORITHMS,
    public_key_problem,
)

__all__ = [
    "NO_RIGHTS",
    "Authenticator",
    "Principal",
    "Rights",
    "mint_token",
]

log = logging.getLogger("wsq.auth")

# Keys tried for one token that carries no kid (a signature check each): bounds the work a forged
# token can cause against a tenant (or JWKS) with many keys of the same algorithm.
MAX_KEYS_TRIED: Final = 4
# Largest JWKS document read (bytes).
MAX_JWKS_BYTES: Final = 1024 * 1024
# Patterns per right in one token.
MAX_PATTERNS: Final = 1024

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


# --------------------------------------------------------------------------------------- rights


@dataclass(frozen=True, slots=True)
class Rights:
    """What a token allows: patterns of addresses it may publish to and subscribe to."""

    publish: tuple[Pattern, ...]
    subscribe: tuple[Pattern, ...]

    def can_publish(self, address: str) -> bool:
        return matches_any(self.publish, address)

    def can_subscribe(self, address: str) -> bool:
        return matches_any(self.subscribe, address)

    @classmethod
    def of(cls, publish: Iterable[str] = (), subscribe: Iterable[str] = ()) -> Rights:
        """Rights from pattern strings; ``ValueError`` on an invalid pattern."""
        return cls(
            tuple(dict.fromkeys(compile_pattern(p) for p in publish)),
            tuple(dict.fromkeys(compile_pattern(p) for p in subscribe)),
        )


NO_RIGHTS: Final = Rights((), ())


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a verified token speaks for."""

    tenant: str  # tenant name (config key), not the issuer
    sub: str
    exp: int  # unix seconds
    rights: Rights


def _parse_rights(claim: object) -> Rights:
    """The ``wsq`` claim -> ``Rights``; ``Unauthorized`` when it is not that shape."""
    if claim is None:  # absent (or null): no rights
        return NO_RIGHTS
    if not isinstance(claim, dict):
        raise Unauthorized('token claim "wsq" must be an object')
    return Rights(_parse_patterns(claim, "publish"), _parse_patterns(claim, "subscribe"))


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


# ----------------------------------------------------------------------------------------- keys


@dataclass(frozen=True, slots=True)
class _Key:
    """A key ready for ``jwt.decode``: its algorithm (from configuration, never from a token)."""

    alg: str
    kid: str | None
    key: Any  # prepared key (bytes, cryptography public key) or jwt.PyJWK
    short_hmac: bool = False  # PyJWT warns on every use; we warned once at construction


def _describe(tenant: str, index: int, cfg: KeyConfig) -> str:
    return f"tenant {tenant!r} key {cfg.kid!r}" if cfg.kid else f"tenant {tenant!r} key #{index}"


def _algorithm(alg: str) -> Algorithm:
    return jwt.get_algorithm_by_name(alg)


def _prepare_static_key(tenant: str, index: int, cfg: KeyConfig) -> _Key:
    where = _describe(tenant, index, cfg)
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
        return _Key(cfg.alg, cfg.kid, prepared, short)
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
    return _Key(cfg.alg, cfg.kid, prepared)


def _check_jwks_url(where: str, url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{where}: jwks_url must be an http(s) URL")


def _redact(url: str) -> str:
    """A URL for logs: no user info, no query (either may hold a credential)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


# ----------------------------------------------------------------------------------------- JWKS


@dataclass(frozen=True, slots=True)
class _KeySet:
    by_kid: Mapping[str, _Key]
    anonymous: tuple[_Key, ...]  # JWKS keys without a kid

    def __len__(self) -> int:
        return len(self.by_kid) + len(self.anonymous)


_EMPTY_KEYSET: Final = _KeySet({}, ())


class _JwksSource:
    """One JWKS URL: its cached keys (per algorithm expected of them) and its refresh state."""

    def __init__(self, owner: Authenticator, url: str) -> None:
        self._owner = owner
        self.url = url
        self.algs: set[str] = set()
        self.keys: dict[str, _KeySet] = {}  # alg -> keys usable with it
        self.fetched_at: float | None = None  # last successful fetch
        self._attempted_at: float | None = None  # last fetch started (success or not)
        self._inflight: asyncio.Task[None] | None = None

    def keyset(self, alg: str) -> _KeySet:
        return self.keys.get(alg, _EMPTY_KEYSET)

    async def ensure(self) -> None:
        """Keys on hand: wait for a first fetch; when stale, refresh in the background."""
        if self.fetched_at is None:
            await self.refresh()
        elif self._owner._clock() - self.fetched_at >= self._owner._jwks_ttl_s:
            self._start()  # stale-while-revalidate: the old keys keep serving meanwhile

    async def refresh(self) -> None:
        """Fetch now (rate-limited; joins a fetch already in flight) and wait for it."""
        task = self._start()
        if task is not None:
            # shield: a verify that is cancelled must not cancel the fetch others wait on.
            await asyncio.shield(task)

    def _start(self) -> asyncio.Task[None] | None:
        if self._inflight is not None:
            return self._inflight
        now = self._owner._clock()
        if (
            self._attempted_at is not None
            and now - self._attempted_at < self._owner._jwks_min_refresh_interval_s
        ):
            return None
        self._attempted_at = now
        self._inflight = asyncio.get_running_loop().create_task(self._fetch())
        return self._inflight

    async def _fetch(self) -> None:
        try:
            document = await self._download()
            keys = self._build(document)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any failure keeps the old cache
            log.warning(
                "JWKS %s: fetch failed (%s); keeping %d cached key(s)",
                _redact(self.url),
                _error_summary(exc),
                sum(len(k) for k in self.keys.values()),
            )
        else:
            self.keys = keys
            self.fetched_at = self._owner._clock()
            log.info(
                "JWKS %s: %d key(s) loaded", _redact(self.url), sum(len(k) for k in keys.values())
            )
        finally:
            self._inflight = None

    async def _download(self) -> object:
        client = self._owner._http_client()
        async with client.stream("GET", self.url, headers={"Accept": "application/json"}) as resp:
            if resp.status_code != 200:
                raise _JwksError(f"HTTP {resp.status_code}")
            body = bytearray()
            async for chunk in resp.aiter_bytes():
                body += chunk
                if len(body) > MAX_JWKS_BYTES:
                    raise _JwksError(f"document larger than {MAX_JWKS_BYTES} bytes")
        try:
            return json.loads(body)
        except ValueError:
            raise _JwksError("document is not JSON") from None

    def _build(self, document: object) -> dict[str, _KeySet]:
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise _JwksError('document is not a JWK Set (no "keys" list)')
        result: dict[str, _KeySet] = {}
        for alg in self.algs:
            by_kid: dict[str, _Key] = {}
            anonymous: list[_Key] = []
            for jwk in document["keys"]:
                key = _jwk_key(jwk, alg)
                if key is None:
                    continue
                if key.kid is None:
                    anonymous.append(key)
                else:
                    by_kid.setdefault(key.kid, key)
            if by_kid or anonymous:
                result[alg] = _KeySet(by_kid, tuple(anonymous))
        if not result:
            raise _JwksError(f"no usable key for {'/'.join(sorted(self.algs))}")
        return result

    async def aclose(self) -> None:
        task = self._inflight
        if task is not None:
            task.cancel()
            await asyncio.wait([task])  # does not raise the task's CancelledError


class _JwksError(Exception):
    pass


def _error_summary(exc: BaseException) -> str:
    if isinstance(exc, _JwksError):
        return str(exc)
    return type(exc).__name__  # httpx messages may repeat the URL with its query


def _jwk_key(jwk: object, alg: str) -> _Key | None:
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
    return _Key(alg, kid, pyjwk)


# ------------------------------------------------------------------------------ authenticator


@dataclass(frozen=True, slots=True)
class _Tenant:
    name: str
    by_kid: Mapping[str, _Key]
    anonymous: tuple[_Key, ...]  # static keys without a kid
    jwks: tuple[tuple[_JwksSource, str], ...]  # (source, alg expected of its keys)


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
        self._sources: dict[str, _JwksSource] = {}
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
        by_kid: dict[str, _Key] = {}
        anonymous: list[_Key] = []
        jwks: list[tuple[_JwksSource, str]] = []
        for index, key_cfg in enumerate(cfg.keys):
            where = _describe(name, index, key_cfg)
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
                _check_jwks_url(where, key_cfg.jwks_url)
                source = self._sources.get(key_cfg.jwks_url)
                if source is None:
                    source = self._sources[key_cfg.jwks_url] = _JwksSource(self, key_cfg.jwks_url)
                source.algs.add(key_cfg.alg)
                if (source, key_cfg.alg) not in jwks:
                    jwks.append((source, key_cfg.alg))
                continue
            key = _prepare_static_key(name, index, key_cfg)
            if key.kid is None:
                anonymous.append(key)
            else:
                by_kid[key.kid] = key
        return _Tenant(name, by_kid, tuple(anonymous), tuple(jwks))

    def _http_client(self) -> httpx.AsyncClient:
        if self._closed:
            raise _JwksError("authenticator is closed")
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

    async def _candidates(self, tenant: _Tenant, alg: str, kid: str | None) -> list[_Key]:
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
    def _anonymous_keys(tenant: _Tenant, alg: str, *, with_static_kids: bool = False) -> list[_Key]:
        keys = [k for k in tenant.anonymous if k.alg == alg]
        if with_static_kids:
            keys += [k for k in tenant.by_kid.values() if k.alg == alg]
        else:
            for source, source_alg in tenant.jwks:
                if source_alg == alg:
                    keys += source.keyset(alg).anonymous
        return keys

    @staticmethod
    def _jwks_keys(tenant: _Tenant, alg: str) -> list[_Key]:
        keys: list[_Key] = []
        for source, source_alg in tenant.jwks:
            if source_alg == alg:
                keyset = source.keyset(alg)
                keys += keyset.anonymous
                keys += keyset.by_kid.values()
        return keys

    async def _jwks_key(self, tenant: _Tenant, kid: str) -> _Key | None:
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
    def _jwks_kid(tenant: _Tenant, kid: str) -> _Key | None:
        for source, alg in tenant.jwks:
            key = source.keyset(alg).by_kid.get(kid)
            if key is not None:
                return key
        return None

    def _check_signature(self, token: str, keys: Sequence[_Key]) -> dict[str, Any]:
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
    def _decode(token: str, key: _Key) -> dict[str, Any]:
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
        rights = _parse_rights(claims.get("wsq"))
        return Principal(tenant=tenant.name, sub=sub, exp=math.floor(exp_s), rights=rights)


def _number(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Unauthorized(f'token claim "{name}" must be a number')
    if isinstance(value, float) and not math.isfinite(value):
        raise Unauthorized(f'token claim "{name}" must be a finite number')
    return value


# --------------------------------------------------------------------------------------- mint


def mint_token(
    tenant: TenantConfig,
    sub: str,
    *,
    publish: Sequence[str] = (),
    subscribe: Sequence[str] = (),
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
    headers = {"kid": key.kid} if key.kid is not None else None
    if len(key.secret.encode()) >= HMAC_MIN_BYTES[key.alg]:
        return jwt.encode(claims, key.secret, algorithm=key.alg, headers=headers)
    with warnings.catch_warnings():
        # A short secret is the configuration's choice (the Authenticator logs it once); PyJWT
        # would warn on every token.
        warnings.simplefilter("ignore")
        return jwt.encode(claims, key.secret, algorithm=key.alg, headers=headers)
