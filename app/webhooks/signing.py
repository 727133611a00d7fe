"""Standard Webhooks signatures (https://www.standardwebhooks.com, spec v1.0.0:
github.com/standard-webhooks/standard-webhooks `spec/standard-webhooks.md`, "Signature scheme"
and "Webhook headers").

    secret     whsec_<base64 of 24..64 random bytes>          (one per endpoint)
    signed     "{webhook-id}.{webhook-timestamp}.{body}"       (the exact bytes sent)
    header     webhook-signature: v1,<base64 HMAC-SHA256(secret bytes, signed)>

`webhook-id` stays the same across retries (the receiver's idempotency key); the timestamp is
the attempt's, so every attempt is signed afresh. `verify` is what a receiver does (the tests
use it, and it documents the scheme in code): constant-time comparison, timestamp tolerance.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

SECRET_PREFIX = "whsec_"
_SECRET_BYTES = 32
#: a receiver should refuse timestamps further than this from its clock (replays)
DEFAULT_TOLERANCE_S = 5 * 60


class SignatureError(ValueError):
    pass


def generate_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(_SECRET_BYTES)).decode()


def secret_bytes(secret: str) -> bytes:
    if not secret.startswith(SECRET_PREFIX):
        raise SignatureError("a signing secret starts with whsec_")
    try:
        return base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except binascii.Error as exc:
        raise SignatureError("the signing secret is not valid base64") from exc


def signature(secret: str, *, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header value (one `v1,` signature)."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_bytes(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(secret: str, *, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secret, msg_id=msg_id, timestamp=timestamp, body=body),
        "content-type": "application/json",
    }


def verify(
    secret: str,
    *,
    received: dict[str, str],
    body: bytes,
    now: int,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
) -> None:
    """Raise `SignatureError` unless one of the `v1` signatures matches and the timestamp is
    within `tolerance_s` of `now` (header names are matched case-insensitively)."""
    lowered = {name.lower(): value for name, value in received.items()}
    msg_id = lowered.get("webhook-id")
    raw_timestamp = lowered.get("webhook-timestamp", "")
    if not msg_id or not raw_timestamp.isdigit():
        raise SignatureError("missing webhook-id or webhook-timestamp")
    timestamp = int(raw_timestamp)
    if abs(now - timestamp) > tolerance_s:
        raise SignatureError("webhook-timestamp is outside the tolerance")
    expected = signature(secret, msg_id=msg_id, timestamp=timestamp, body=body)
    for candidate in lowered.get("webhook-signature", "").split():
        if candidate.startswith("v1,") and hmac.compare_digest(candidate, expected):
            return
    raise SignatureError("no matching v1 signature")
