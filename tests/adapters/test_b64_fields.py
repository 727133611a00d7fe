"""`lift_b64_values`: parsing the skeleton and putting the lifted values back must give exactly
what parsing the body gives, for well-formed, hostile and malformed bodies alike."""

from __future__ import annotations

import base64
import os
import random
from typing import Any

import orjson
import pytest

from app.adapters.b64_fields import Lifted, lift_b64_values

B64 = base64.b64encode(os.urandom(3000)).decode()
SHORT = base64.b64encode(b"png!").decode()


def restored(lifted: Lifted, value: Any) -> Any:
    """The parsed skeleton with every placeholder replaced by the text it stands for."""
    if isinstance(value, dict):
        return {key: restored(lifted, item) for key, item in value.items()}
    if isinstance(value, list):
        return [restored(lifted, item) for item in value]
    if isinstance(value, str) and (view := lifted.value(value)) is not None:
        return bytes(view).decode("ascii")
    return value


def parses_alike(body: bytes) -> Lifted:
    lifted = lift_b64_values(body)
    try:
        expected = orjson.loads(body)
    except orjson.JSONDecodeError:
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(lifted.skeleton)
        return lifted
    assert restored(lifted, orjson.loads(lifted.skeleton)) == expected
    return lifted


def test_an_answer_is_parsed_as_a_small_skeleton_with_views_into_the_body() -> None:
    body = orjson.dumps(
        {"created": 1, "data": [{"b64_json": B64}, {"b64_json": SHORT}], "usage": {"x": 1}}
    )
    lifted = parses_alike(body)

    assert len(lifted.skeleton) < 200
    first, second = orjson.loads(lifted.skeleton)["data"]
    view = lifted.value(first["b64_json"])
    assert view is not None and view.obj is body  # no copy of the base64 was made
    assert bytes(view) == B64.encode()
    assert lifted.value(second["b64_json"]) == SHORT.encode()
    assert lifted.value("created") is None


@pytest.mark.parametrize(
    "body",
    [
        # JSON escapes in the value (PHP-style `\/`): left to the full parse
        b'{"data": [{"b64_json": "' + B64.replace("/", "\\/").encode() + b'"}]}',
        # not base64 (strict: no whitespace, padding only at the end)
        b'{"data": [{"b64_json": "QUJD QUJD"}]}',
        b'{"data": [{"b64_json": "QQ==QQ=="}]}',
        b'{"data": [{"b64_json": "QUJD\\u0041"}]}',
        # an unterminated value
        b'{"data": [{"b64_json": "QUJD',
    ],
)
def test_values_that_are_not_plain_base64_are_not_lifted(body: bytes) -> None:
    assert parses_alike(body).skeleton is body


@pytest.mark.parametrize(
    "body",
    [
        # the key's text inside another string: the value of `k"b64_json` is lifted, but
        # only ever read back as that key's value
        b'{"k\\"b64_json": "' + SHORT.encode() + b'", "data": [{"b64_json": "QUJD"}]}',
        # a prompt quoting the key, escaped as JSON escapes it
        b'{"data": [{"revised_prompt": "say \\"b64_json\\": \\"QUJD\\"", "b64_json": "QUJE"}]}',
        # whitespace around the colon, duplicate keys (the last one wins, as in the parse)
        b'{"data": [{"b64_json" :\n\t "QUJD", "b64_json":"QUJE"}]}',
        # nested somewhere else, and empty
        b'{"meta": {"b64_json": "QUJD"}, "data": [{"b64_json": ""}]}',
        # the key as a value, then as a key
        b'{"data": ["b64_json", {"b64_json": "QUJD"}]}',
        # a string spelling a placeholder-like text, also through unicode escapes
        b'{"data": [{"b64_json": "QUJD"}], "note": "igw-0000-0", "n2": "\\u0069gw-"}',
        # malformed around a lifted value: must stay malformed
        b'{"data": [{"b64_json": "QUJD"} {"b64_json": "QUJE"}]}',
        b'{"a":"x"b64_json": "QUJD"}',
        b'["b64_json": "QUJD"]',
        # more whitespace than the lift tolerates: left to the full parse
        b'{"data": [{"b64_json":' + b" " * 100 + b'"QUJD"}]}',
    ],
)
def test_hostile_and_malformed_bodies_parse_exactly_as_the_full_parse(body: bytes) -> None:
    parses_alike(body)


def test_a_value_that_is_not_data_b64_json_never_stands_for_it() -> None:
    # `data[0].b64_json` (its key spelled with an escape, so the lift does not see it) is
    # text a predictable placeholder scheme would confuse with the lifted `meta.b64_json`
    body = b'{"meta": {"b64_json": "QUJD"}, "data": [{"b64\\u005fjson": "igw-0-0"}]}'
    lifted = parses_alike(body)
    [item] = orjson.loads(lifted.skeleton)["data"]
    assert lifted.value(item["b64_json"]) is None


def test_random_bodies_parse_alike() -> None:
    # pieces of JSON around lifted values, shuffled: valid and invalid texts alike
    pieces = [
        b'"b64_json": "QUJD"',
        b'"b64_json":"',
        b'"b64_json"',
        b":",
        b" ",
        b'"',
        b"QUJD",
        b"{",
        b"}",
        b"[",
        b"]",
        b",",
        b"\\",
        b'\\"',
        b'"x"',
        b"1",
        b"\n",
    ]
    rng = random.Random(9)
    lifted_any = 0
    for _ in range(20_000):
        body = b"".join(rng.choice(pieces) for _ in range(rng.randint(1, 14)))
        lifted_any += bool(parses_alike(body).values)
    assert lifted_any > 1_000  # the lift really ran on many of them
    lifted_any = 0
    for _ in range(3_000):
        inner = b",".join(
            b'{"b64_json": "' + rng.choice([SHORT.encode(), b"QUJD", b"QUJE"]) + b'"}'
            for _ in range(rng.randint(1, 3))
        )
        lifted_any += bool(parses_alike(b'{"data": [' + inner + b"]}").values)
    assert lifted_any == 3_000
