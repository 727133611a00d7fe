"""API key secrets: how they are made, stored and shown.

A secret is `sk-` followed by `secrets.token_urlsafe(32)`: 32 random bytes (256 bits) as 43
URL-safe base64 characters, 46 characters in all. Only its SHA-256 (hex) is stored; a plain,
unsalted hash is enough because the input is uniformly random and far too large to brute
force, and it lets the hot path find a key with one indexed equality lookup.

The first 11 characters (`sk-` + 8) are kept as the display prefix so operators can tell
keys apart in listings and error messages without ever seeing the secret again.
"""

from __future__ import annotations

import hashlib
import re
import secrets

SECRET_PREFIX = "sk-"
DISPLAY_PREFIX_LENGTH = 11
_SECRET_RE = re.compile(r"sk-[A-Za-z0-9_-]{43}")


def generate_secret() -> str:
    """A fresh secret; shown to the operator once, never stored."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    """The SHA-256 hex digest stored in `api_keys.key_hash`."""
    return hashlib.sha256(secret.encode()).hexdigest()


def display_prefix(secret: str) -> str:
    """The part of a secret that may be shown: `sk-AbCd1234`."""
    return secret[:DISPLAY_PREFIX_LENGTH]


def looks_like_key(value: str) -> bool:
    """Whether `value` has the shape of a gateway secret (checked before any lookup)."""
    return _SECRET_RE.fullmatch(value) is not None


def new_key_id() -> str:
    """A public, non-secret identifier for a key row."""
    return "key_" + secrets.token_hex(12)
