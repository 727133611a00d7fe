"""Standard Webhooks signatures, against the reference libraries' published test vector
(standard-webhooks/standard-webhooks, `libraries/*/tests`: `test_sign_function`)."""

from __future__ import annotations

import pytest

from app.webhooks.signing import SignatureError, generate_secret, headers, secret_bytes, verify

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
TIMESTAMP = 1614265330
BODY = b'{"test": 2432232314}'


def test_the_reference_vector() -> None:
    signed = headers(SECRET, msg_id=MSG_ID, timestamp=TIMESTAMP, body=BODY)
    assert signed["webhook-signature"] == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert signed["webhook-id"] == MSG_ID and signed["webhook-timestamp"] == str(TIMESTAMP)
    verify(SECRET, received=signed, body=BODY, now=TIMESTAMP + 60)


def test_verification_refuses_tampering_stale_timestamps_and_other_secrets() -> None:
    signed = headers(SECRET, msg_id=MSG_ID, timestamp=TIMESTAMP, body=BODY)
    with pytest.raises(SignatureError):
        verify(SECRET, received=signed, body=BODY + b" ", now=TIMESTAMP)
    with pytest.raises(SignatureError, match="tolerance"):
        verify(SECRET, received=signed, body=BODY, now=TIMESTAMP + 301)
    with pytest.raises(SignatureError):
        verify(generate_secret(), received=signed, body=BODY, now=TIMESTAMP)
    other = {**signed, "webhook-id": "msg_other"}
    with pytest.raises(SignatureError):
        verify(SECRET, received=other, body=BODY, now=TIMESTAMP)
    # several signatures (secret rotation): one matching v1 is enough
    rotated = {**signed, "webhook-signature": "v1,AAAA " + signed["webhook-signature"]}
    verify(SECRET, received=rotated, body=BODY, now=TIMESTAMP)


def test_generated_secrets_have_the_spec_format() -> None:
    secret = generate_secret()
    assert secret.startswith("whsec_") and 24 <= len(secret_bytes(secret)) <= 64
    assert generate_secret() != secret
