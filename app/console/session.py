"""Console sessions: the admin token is exchanged, once, for a signed cookie.

    POST /console/login (token + csrf) ─▶ constant-time check ─▶ Set-Cookie: igw_console=<signed>
    every console request ─▶ verify signature ─▶ check expiry against the injected clock

The cookie holds a small signed payload (itsdangerous, HMAC-SHA256), never the token:
`{"sub": "admin" | None, "csrf": <random>, "exp": <unix time>}`. It is `HttpOnly` (scripts
cannot read it), `SameSite=Strict` (no other site can make the browser send it), scoped to
`/console`, and `Secure` when the request came over HTTPS. A visitor who has not signed in
gets the same kind of cookie with `sub: None`, so the sign-in form has a CSRF token too.

The signing key is `GATEWAY_CONSOLE_SECRET`, or by default an HMAC of `GATEWAY_ADMIN_TOKEN`:
every replica derives the same key with no extra setting, and rotating the admin token signs
every operator out. Sign-out clears the cookie; a copy taken before that stays valid until its
`exp` (sessions are stateless), which is why the lifetime is bounded
(`GATEWAY_CONSOLE_SESSION_TTL_S`, 8 h by default).

Messages shown after an action ("Account acme created.") travel in a second signed cookie
(`igw_flash`, one minute, read once), never in the URL: a link from elsewhere cannot make the
console display text of its choosing.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from itsdangerous import BadSignature, URLSafeSerializer

COOKIE_NAME = "igw_console"
FLASH_COOKIE = "igw_flash"
COOKIE_PATH = "/console"
FLASH_TTL_S = 60
#: a visitor's pre-sign-in session (it only carries the sign-in form's CSRF token)
ANONYMOUS_TTL_S = 3600


@dataclass(frozen=True, slots=True)
class Session:
    signed_in: bool
    csrf: str
    expires_at: float


def signing_key(*, admin_token: str, console_secret: str | None) -> bytes:
    if console_secret:
        return console_secret.encode()
    return hmac.new(admin_token.encode(), b"image-gateway console session", hashlib.sha256).digest()


class SessionCodec:
    """Signs and verifies session cookies; `clock` is injectable (tests expire sessions)."""

    def __init__(self, key: bytes, *, ttl_s: int, clock: Callable[[], float] = time.time) -> None:
        self._serializer = URLSafeSerializer(key, salt="console-session")
        self._flash = URLSafeSerializer(key, salt="console-flash")
        self.ttl_s = ttl_s
        self.clock = clock

    def new(self, *, signed_in: bool) -> Session:
        ttl = self.ttl_s if signed_in else ANONYMOUS_TTL_S
        return Session(
            signed_in=signed_in, csrf=secrets.token_urlsafe(32), expires_at=self.clock() + ttl
        )

    def dumps(self, session: Session) -> str:
        payload = {
            "sub": "admin" if session.signed_in else None,
            "csrf": session.csrf,
            "exp": session.expires_at,
        }
        return self._serializer.dumps(payload)

    def loads(self, cookie: str | None) -> Session | None:
        """The session in a cookie, or None if it is missing, forged, malformed or expired."""
        if not cookie:
            return None
        try:
            payload: Any = self._serializer.loads(cookie)
        except BadSignature:
            return None
        if not isinstance(payload, dict):
            return None
        csrf, expires_at = payload.get("csrf"), payload.get("exp")
        if not isinstance(csrf, str) or not isinstance(expires_at, int | float):
            return None
        if expires_at <= self.clock():
            return None
        return Session(signed_in=payload.get("sub") == "admin", csrf=csrf, expires_at=expires_at)

    def dump_flash(self, message: str) -> str:
        return self._flash.dumps({"msg": message, "exp": self.clock() + FLASH_TTL_S})

    def load_flash(self, cookie: str | None) -> str | None:
        if not cookie:
            return None
        try:
            payload: Any = self._flash.loads(cookie)
        except BadSignature:
            return None
        if not isinstance(payload, dict) or not isinstance(payload.get("msg"), str):
            return None
        expires_at = payload.get("exp")
        if not isinstance(expires_at, int | float) or expires_at <= self.clock():
            return None
        message: str = payload["msg"]
        return message


def csrf_matches(session: Session, presented: str | None) -> bool:
    return presented is not None and hmac.compare_digest(session.csrf.encode(), presented.encode())
