"""The streaming JSON edit reader: the same fields orjson would read, data URIs kept as the
bytes that arrived, refusals at the chunk that crosses a limit."""

from __future__ import annotations

import base64
import os
import random
from typing import Any

import orjson
import pytest

from app.api.json_edit import (
    INLINE_MAX,
    MAX_FIELD_BYTES,
    _Splitter,
    max_data_uri_bytes,
    parse_split_body,
    split_json_edit,
)
from app.errors import GatewayError, InvalidRequest, PayloadTooLarge
from app.images.edits import RequestBody

MAX_IMAGE = 1_000_000
PNG = b"\x89PNG\r\n\x1a\n" + os.urandom(300_000)
URI = "data:image/png;base64," + base64.b64encode(PNG).decode()


def read_in_chunks(raw: bytes, seed: int, max_image_bytes: int = MAX_IMAGE) -> RequestBody:
    """Feed `raw` in random pieces (1 byte to 64 KiB), as a socket might deliver it."""
    rng = random.Random(seed)
    splitter = _Splitter(max_string_bytes=max_data_uri_bytes(max_image_bytes))
    position = 0
    while position < len(raw):
        size = rng.choice([1, 2, 3, rng.randint(1, 200), rng.randint(1, 65536)])
        splitter.feed(raw[position : position + size])
        position += size
    splitter.finish()
    return parse_split_body(splitter, max_image_bytes=max_image_bytes)


BODIES: list[dict[str, Any]] = [
    {"model": "m", "prompt": "x", "images": [{"image_url": URI}]},
    {"model": "m", "prompt": "x", "images": [URI, {"image_url": {"url": URI}}], "mask": URI},
    {"model": "m", "prompt": "x", "images": [{"image_url": URI}], "mask": {"image_url": URI}},
    # long text elsewhere, with every kind of escape; short data URIs; unicode keys and text
    {
        "model": "m",
        "prompt": 'quote " backslash \\ slash / tab \t nl \n é 𝄞 \u0001' * 400,
        "images": ["data:image/png;base64," + base64.b64encode(b"tiny").decode()],
        "extra": {"deep": [[{"k": None, "n": 1.5, "t": True}]], "é" * 5000: "long key"},
        "user": "u",
    },
]


@pytest.mark.parametrize("body", BODIES)
@pytest.mark.parametrize("seed", range(4))
def test_the_fields_are_what_orjson_reads_and_the_images_decode(
    body: dict[str, Any], seed: int
) -> None:
    raw = orjson.dumps(body)
    expected = orjson.loads(raw)
    read = read_in_chunks(raw, seed)
    images, mask = expected.pop("images", []), expected.pop("mask", None)
    assert read.fields == expected
    decoded = read.decoded()
    assert decoded.images == [_bytes(item) for item in images]
    assert decoded.mask == (None if mask is None else _bytes(mask))


def _bytes(item: Any) -> bytes:
    uri = item if isinstance(item, str) else item["image_url"]
    uri = uri if isinstance(uri, str) else uri["url"]
    return base64.b64decode(uri.partition(",")[2])


def test_a_long_data_uri_is_kept_as_the_bytes_that_arrived() -> None:
    body = split_json_edit(orjson.dumps({"images": [URI]}), max_image_bytes=MAX_IMAGE)
    assert body.encoded is not None
    assert isinstance(body.encoded.images[0].uri, bytearray)  # never a str, never decoded
    assert len(URI) > INLINE_MAX


def test_escaped_slashes_in_a_data_uri_are_read() -> None:
    # some encoders (PHP's json_encode) write "/" as "\/": the URI is read through orjson
    raw = orjson.dumps({"images": [URI]}).replace(b"/", b"\\/")
    assert b"\\/" in raw
    assert read_in_chunks(raw, 7).decoded().images == [PNG]


@pytest.mark.parametrize("seed", range(3))
def test_backslashes_and_quotes_at_chunk_edges(seed: int) -> None:
    prompt = '\\"' * 3000 + "\\" * 4001 + '"end'
    raw = orjson.dumps({"prompt": prompt, "images": [URI]})
    assert read_in_chunks(raw, seed).fields == {"prompt": prompt}


def test_a_string_longer_than_any_accepted_data_uri_is_413_at_that_chunk() -> None:
    limit = max_data_uri_bytes(MAX_IMAGE)
    splitter = _Splitter(max_string_bytes=limit)
    splitter.feed(b'{"model": "m", "images": [{"image_url": "data:image/png;base64,')
    fed = 0
    with pytest.raises(PayloadTooLarge) as info:
        while True:
            splitter.feed(b"A" * 65536)
            fed += 65536
    assert limit - 65536 < fed <= limit  # refused at the chunk that crossed, not at the end
    assert info.value.param == "images"


def test_a_data_uri_over_the_image_limit_is_413_from_its_length() -> None:
    raw = orjson.dumps({"images": ["x", URI]}).replace(b'"x"', orjson.dumps(URI))
    with pytest.raises(PayloadTooLarge) as info:
        split_json_edit(raw, max_image_bytes=len(PNG) - 1)
    assert info.value.param == "images[0]"
    assert f"{len(PNG)} bytes" in info.value.message


@pytest.mark.parametrize(
    "raw",
    [
        b'{"model": "m", "numbers": [' + b"0," * MAX_FIELD_BYTES + b"0]}",
        b'{"model": "m", "words": [' + b'"ab",' * (MAX_FIELD_BYTES // 5) + b'"z"]}',
        # long strings that are not images count against the same limit
        orjson.dumps({"model": "m", "texts": ["x" * (INLINE_MAX + 1)] * 600}),
    ],
)
def test_everything_but_the_images_is_bounded(raw: bytes) -> None:
    with pytest.raises(PayloadTooLarge):
        split_json_edit(raw, max_image_bytes=MAX_IMAGE)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"  ",
        b"[1, 2]",
        b'"just a string"',
        b'{"model": "m"',
        b'{"model": "m", "prompt": "never closed',
        b'{"model": "m"} "' + b"x" * (INLINE_MAX + 10),
        b'{"model": "m", "prompt": "\xff\xfe"}',
        b'{"model": "m", "prompt": "' + b"\x01" * (INLINE_MAX + 10) + b'"}',
        b'{"model": "m", "prompt": "bad \\q escape ' + b"x" * INLINE_MAX + b'"}',
        b'{"model": "m"} trailing',
        # deeper than orjson writes (Idempotency-Key hash, forwarding): not a 500 later
        b'{"model": "m", "x": ' + b"[" * 300 + b"]" * 300 + b"}",
        b'{"model": "m", "x": ' + b'{"a":' * 65 + b"1" + b"}" * 65 + b"}",
    ],
)
def test_malformed_bodies_are_400(raw: bytes) -> None:
    with pytest.raises(InvalidRequest) as info:
        split_json_edit(raw, max_image_bytes=MAX_IMAGE)
    assert info.value.status == 400


def test_a_client_cannot_forge_a_long_string_marker() -> None:
    forged = "\x00" + "0" * 24 + ":0"
    body = split_json_edit(
        orjson.dumps({"prompt": forged, "images": [URI]}), max_image_bytes=MAX_IMAGE
    )
    assert body.fields == {"prompt": forged}
    assert body.decoded().images == [PNG]


def test_nesting_up_to_the_limit_is_read() -> None:
    nested: Any = 1
    for _ in range(63):
        nested = [nested]
    body = split_json_edit(orjson.dumps({"x": nested, "images": [URI]}), max_image_bytes=MAX_IMAGE)
    assert body.fields == {"x": nested}


def test_refusals_are_gateway_errors() -> None:
    with pytest.raises(GatewayError):
        split_json_edit(b'{"images": 5}', max_image_bytes=MAX_IMAGE)
