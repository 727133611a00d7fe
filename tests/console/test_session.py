"""The session cookie codec: signed, expiring on the injected clock, never the token."""

from __future__ import annotations

from app.console.session import FLASH_TTL_S, SessionCodec, csrf_matches, signing_key
from tests.console.conftest import tampered
from tests.support.clock import FakeClock

TOKEN = "admin-token-0123456789abcdefghijklmnop"


def codec(clock: FakeClock, *, secret: str | None = None, token: str = TOKEN) -> SessionCodec:
    return SessionCodec(
        signing_key(admin_token=token, console_secret=secret), ttl_s=60, clock=clock
    )


def test_a_session_round_trips_until_it_expires() -> None:
    clock = FakeClock()
    sessions = codec(clock)
    session = sessions.new(signed_in=True)
    cookie = sessions.dumps(session)
    assert TOKEN not in cookie
    assert sessions.loads(cookie) == session
    clock.advance(59)
    assert sessions.loads(cookie) == session
    clock.advance(1)
    assert sessions.loads(cookie) is None


def test_a_cookie_signed_with_another_key_is_refused() -> None:
    clock = FakeClock()
    cookie = codec(clock).dumps(codec(clock).new(signed_in=True))
    assert codec(clock, token=TOKEN + "x").loads(cookie) is None  # the admin token rotated
    assert codec(clock, secret="s" * 32).loads(cookie) is None
    assert codec(clock).loads(tampered(cookie)) is None
    assert codec(clock).loads("not-a-cookie") is None
    assert codec(clock).loads(None) is None


def test_each_session_has_its_own_csrf_token() -> None:
    sessions = codec(FakeClock())
    first, second = sessions.new(signed_in=False), sessions.new(signed_in=True)
    assert first.csrf != second.csrf and len(first.csrf) >= 40
    assert csrf_matches(first, first.csrf)
    assert not csrf_matches(first, second.csrf)
    assert not csrf_matches(first, None)


def test_a_flash_message_is_signed_and_short_lived() -> None:
    clock = FakeClock()
    sessions = codec(clock)
    cookie = sessions.dump_flash("Account acme created.")
    assert sessions.load_flash(cookie) == "Account acme created."
    assert sessions.load_flash(sessions.dumps(sessions.new(signed_in=True))) is None
    clock.advance(FLASH_TTL_S)
    assert sessions.load_flash(cookie) is None
