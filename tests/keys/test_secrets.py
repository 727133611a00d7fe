from __future__ import annotations

import hashlib

from app.keys.secrets import (
    display_prefix,
    generate_secret,
    hash_secret,
    looks_like_key,
    new_key_id,
)


def test_secrets_have_the_documented_shape_and_are_unique() -> None:
    secrets = {generate_secret() for _ in range(200)}
    assert len(secrets) == 200
    for secret in secrets:
        assert secret.startswith("sk-")
        assert len(secret) == 46
        assert looks_like_key(secret)


def test_hash_is_sha256_hex() -> None:
    assert hash_secret("sk-abc") == hashlib.sha256(b"sk-abc").hexdigest()
    assert len(hash_secret(generate_secret())) == 64


def test_display_prefix_is_eleven_characters() -> None:
    secret = "sk-AbCd1234" + "x" * 35
    assert display_prefix(secret) == "sk-AbCd1234"


def test_looks_like_key_rejects_other_shapes() -> None:
    good = generate_secret()
    assert not looks_like_key(good[:-1])
    assert not looks_like_key(good + "a")
    assert not looks_like_key("pk-" + good[3:])
    assert not looks_like_key(good[:-1] + "!")
    assert not looks_like_key("")


def test_key_ids_are_distinct() -> None:
    assert len({new_key_id() for _ in range(100)}) == 100
    assert new_key_id().startswith("key_")
