"""A tenant's JWKS URL: its keys fetched with httpx, cached, refreshed in the background when
stale, and refetched (rate-limited, one fetch in flight per URL) when a token names a key id the
cache does not know. A failed fetch keeps the keys cached before it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit, urlunsplit

from wsq.auth.keyset import EMPTY_KEYSET, Key, KeySet, jwk_key
from wsq.background import stop
from wsq.core.errors import ConfigError

if TYPE_CHECKING:
    from wsq.auth.authenticator import Authenticator

log = logging.getLogger("wsq.auth")

# Largest JWKS document read (bytes).
MAX_JWKS_BYTES: Final = 1024 * 1024


def check_jwks_url(where: str, url: str) -> None:
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


class JwksSource:
    """One JWKS URL: its cached keys (per algorithm expected of them) and its refresh state."""

    def __init__(self, owner: Authenticator, url: str) -> None:
        self._owner = owner
        self.url = url
        self.algs: set[str] = set()
        self.keys: dict[str, KeySet] = {}  # alg -> keys usable with it
        self.fetched_at: float | None = None  # last successful fetch
        self._attempted_at: float | None = None  # last fetch started (success or not)
        self._inflight: asyncio.Task[None] | None = None

    def keyset(self, alg: str) -> KeySet:
        return self.keys.get(alg, EMPTY_KEYSET)

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
                raise JwksError(f"HTTP {resp.status_code}")
            body = bytearray()
            async for chunk in resp.aiter_bytes():
                body += chunk
                if len(body) > MAX_JWKS_BYTES:
                    raise JwksError(f"document larger than {MAX_JWKS_BYTES} bytes")
        try:
            return json.loads(body)
        except ValueError:
            raise JwksError("document is not JSON") from None

    def _build(self, document: object) -> dict[str, KeySet]:
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise JwksError('document is not a JWK Set (no "keys" list)')
        result: dict[str, KeySet] = {}
        for alg in self.algs:
            by_kid: dict[str, Key] = {}
            anonymous: list[Key] = []
            for jwk in document["keys"]:
                key = jwk_key(jwk, alg)
                if key is None:
                    continue
                if key.kid is None:
                    anonymous.append(key)
                else:
                    by_kid.setdefault(key.kid, key)
            if by_kid or anonymous:
                result[alg] = KeySet(by_kid, tuple(anonymous))
        if not result:
            raise JwksError(f"no usable key for {'/'.join(sorted(self.algs))}")
        return result

    async def aclose(self) -> None:
        await stop([self._inflight])


class JwksError(Exception):
    pass


def _error_summary(exc: BaseException) -> str:
    if isinstance(exc, JwksError):
        return str(exc)
    return type(exc).__name__  # httpx messages may repeat the URL with its query
