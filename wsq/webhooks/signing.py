"""Standard Webhooks 1.0 signatures (https://www.standardwebhooks.com/, "Signature scheme").

A request carries ``webhook-id`` (the same on every retry, for the receiver's dedup),
``webhook-timestamp`` (Unix seconds of this attempt) and ``webhook-signature``: ``v1,<base64
HMAC-SHA256 of "id.timestamp.body">``, one per secret, space-separated, so that a receiver
holding either the old or the new secret verifies it during a rotation. A secret is ``whsec_``
followed by the base64 of its key bytes; the key bytes are what HMAC uses.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence

SECRET_PREFIX = "whsec_"
#: Key bytes a secret must hold: Standard Webhooks asks for 24 to 64.
MIN_KEY_BYTES = 24
MAX_KEY_BYTES = 64


def _decode(secret: str) -> bytes:
    # Padding is optional, as the reference libraries read it.
    raw = secret[len(SECRET_PREFIX) :]
    return base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)


def secret_problem(secret: str) -> str | None:
    """Why ``secret`` is not a ``whsec_`` secret (never quoting it), or None."""
    if not secret.startswith(SECRET_PREFIX):
        return f"a secret must start with {SECRET_PREFIX!r} followed by base64"
    try:
        key = _decode(secret)
    except (binascii.Error, ValueError):
        return f"the part after {SECRET_PREFIX!r} is not base64"
    if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
        return f"a secret's key must have {MIN_KEY_BYTES} to {MAX_KEY_BYTES} bytes, got {len(key)}"
    return None


def key_of(secret: str) -> bytes:
    """The HMAC key of a valid ``whsec_`` secret."""
    return _decode(secret)


def sign(msg_id: str, timestamp: int, body: bytes, key: bytes) -> str:
    """One ``v1,<base64>`` signature of ``body`` sent as ``msg_id`` at ``timestamp``."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def signature_headers(
    msg_id: str, timestamp: int, body: bytes, keys: Sequence[bytes]
) -> dict[str, str]:
    """The three Standard Webhooks headers, one signature per key (a rotation signs twice)."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(sign(msg_id, timestamp, body, key) for key in keys),
    }
