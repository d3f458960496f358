"""``HttpPublisher``: a small synchronous publisher over the HTTP bridge (docs/http-api.md), for
request/response code that holds no socket (a Django view, a cron job). One ``Idempotency-Key``
per call, kept across its own retries of 429, 503 and network errors, so a retried request is
answered what the first one was and stores nothing twice."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

from wsq.core import codec
from wsq.core.addresses import is_valid_address

from .errors import HTTP, ClientError

#: The longest a ``Retry-After`` may make one retry wait (s): a hostile or confused answer must
#: not park the caller for an hour.
MAX_RETRY_AFTER = 30.0


def _json_field(answer: httpx.Response, name: str) -> Any:
    """``name`` of the answer's JSON object; None when the answer is not one (a proxy's page)."""
    try:
        value = answer.json()
    except ValueError:
        return None
    return value.get(name) if isinstance(value, dict) else None


def _message(
    body: Any,
    subject: str | None,
    message_id: str | None,
    ttl: float | None,
    content_type: str | None,
    headers: Mapping[str, Any] | None,
) -> dict[str, Any]:
    m: dict[str, Any] = {"body": body}
    if subject is not None:
        m["subject"] = subject
    if message_id is not None:
        m["message_id"] = message_id
    if ttl is not None:
        m["ttl"] = round(ttl * 1000)
    if content_type is not None:
        m["content_type"] = content_type
    if headers is not None:
        m["headers"] = dict(headers)
    return m


class HttpPublisher:
    """``HttpPublisher("https://gw.example", token).publish("orders.eu", {...})`` answers the
    message's position. ``token``: a string or a callable asked at every request."""

    def __init__(
        self,
        base_url: str,
        token: str | Callable[[], str],
        *,
        timeout: float = 10.0,
        retries: int = 3,
        retry_delay: float = 0.2,
        client: httpx.Client | None = None,
    ) -> None:
        if not callable(token) and not (isinstance(token, str) and token):
            raise TypeError("token: a token string or a callable answering one is required")
        if retries < 0:
            raise ValueError("retries: >= 0")
        self.base_url = base_url.rstrip("/")
        self._token = token
        self.retries = retries
        self.retry_delay = retry_delay
        self._http = client or httpx.Client(timeout=timeout)
        self._own = client is None

    def __enter__(self) -> HttpPublisher:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._own:
            self._http.close()

    def publish(
        self,
        address: str,
        body: Any,
        *,
        subject: str | None = None,
        message_id: str | None = None,
        ttl: float | None = None,
        content_type: str | None = None,
        headers: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> str:
        """Publish one message; answers its position (the first one's, for a duplicate by
        ``message_id``). ``ClientError`` with the bridge's condition and ``status``."""
        ids = self._post(
            address,
            _message(body, subject, message_id, ttl, content_type, headers),
            idempotency_key,
        )
        return ids[0]

    def publish_many(
        self,
        address: str,
        messages: Sequence[Mapping[str, Any]],
        *,
        idempotency_key: str | None = None,
    ) -> list[str]:
        """Publish a batch in one request (each ``{"body": ..., "subject": ..., ...}`` as the
        bridge takes it); answers their positions in order."""
        return self._post(address, {"messages": [dict(m) for m in messages]}, idempotency_key)

    def _post(self, address: str, payload: dict[str, Any], key: str | None) -> list[str]:
        if not is_valid_address(address):
            raise ClientError("wsq:invalid-frame", f"not an address: {address!r}", address=address)
        url = f"{self.base_url}/v1/addresses/{quote(address)}/messages"
        try:
            content = codec.dumps(payload)
        except (TypeError, ValueError) as exc:
            raise ClientError(
                "wsq:invalid-frame", f"the body is not JSON: {exc}", address=address
            ) from None
        # One key for every try of this call: a retry is answered what the first try was.
        key = key or str(uuid.uuid4())
        attempt = 0
        while True:
            token = self._token() if callable(self._token) else self._token
            retry_after: float | None = None
            try:
                answer = self._http.post(
                    url,
                    content=content,
                    headers={
                        "Authorization": f"Bearer {token}",
                        "Idempotency-Key": key,
                        "Content-Type": "application/json",
                    },
                )
            except httpx.TransportError as exc:
                if attempt >= self.retries:
                    raise ClientError(HTTP, repr(exc), address=address) from exc
            else:
                if answer.status_code in (200, 201):
                    ids = _json_field(answer, "ids")
                    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
                        raise ClientError(HTTP, "an answer without ids", address=address)
                    return ids
                error = self._error(answer, address)
                if answer.status_code not in (429, 503) or attempt >= self.retries:
                    raise error
                retry_after = self._retry_after(answer)
            attempt += 1
            delay = self.retry_delay * 2 ** (attempt - 1)
            time.sleep(min(MAX_RETRY_AFTER, retry_after if retry_after is not None else delay))

    @staticmethod
    def _retry_after(answer: httpx.Response) -> float | None:
        try:
            return max(0.0, float(answer.headers.get("Retry-After", "")))
        except ValueError:
            return None

    @staticmethod
    def _error(answer: httpx.Response, address: str) -> ClientError:
        condition, description = HTTP, f"HTTP {answer.status_code}"
        error = _json_field(answer, "error")
        if isinstance(error, dict):
            if isinstance(error.get("condition"), str):
                condition = error["condition"][:256]
            if isinstance(error.get("description"), str):
                description = error["description"][:4096]
        return ClientError(condition, description, address=address, status=answer.status_code)
