"""Hostile and malformed bodies: every family is a 4xx in the error shape, never a 500, and
nothing is charged. Routing errors keep their headers (405 carries `Allow`)."""

from __future__ import annotations

import base64
import io
import socket
from collections.abc import Iterator

import httpx
import pytest
from PIL import Image

from tests.e2e.conftest import Env
from tests.e2e.helpers import balance


def _png(size: tuple[int, int] = (32, 32)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (1, 2, 3)).save(buffer, "PNG")
    return buffer.getvalue()


def _multipart(boundary: str, parts: list[tuple[str, bytes, bool]]) -> bytes:
    body = b""
    for name, data, is_file in parts:
        filename = b'; filename="x.png"' if is_file else b""
        body += (
            b"--" + boundary.encode() + b"\r\n"
            b'Content-Disposition: form-data; name="'
            + name.encode()
            + b'"'
            + filename
            + b"\r\n\r\n"
            + data
            + b"\r\n"
        )
    return body + b"--" + boundary.encode() + b"--\r\n"


def _post(env: Env, path: str, content: bytes, content_type: str) -> httpx.Response:
    return httpx.post(
        f"{env.gateway.base_url}{path}",
        content=content,
        headers={"Authorization": f"Bearer {env.secret}", "Content-Type": content_type},
        timeout=30,
    )


def _assert_client_error(response: httpx.Response, status: int = 400) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert "Traceback" not in response.text


FIELDS = [("model", b"local-preview", False), ("prompt", b"edit", False)]


def _hostile_multiparts() -> list[tuple[str, bytes, str, int]]:
    ok = _png()
    long = "b" * 300
    jpeg_segments = b"\xff\xd8" + b"\xff\xe0\x00\x02" * 100_000 + b"\xff\xd9"
    return [
        (
            "boundary over 256",
            _multipart(long, [*FIELDS, ("image", ok, True)]),
            f"multipart/form-data; boundary={long}",
            400,
        ),
        ("no boundary", b"--x\r\n", "multipart/form-data", 400),
        ("garbage body", b"\x00\x01 not multipart at all", "multipart/form-data; boundary=zz", 400),
        (
            "truncated",
            _multipart("zz", [*FIELDS, ("image", ok, True)])[:-20],
            "multipart/form-data; boundary=zz",
            400,
        ),
        (
            "part without name",
            b"--zz\r\nContent-Disposition: form-data\r\n\r\nx\r\n--zz--\r\n",
            "multipart/form-data; boundary=zz",
            400,
        ),
        (
            "non-utf8 field",
            _multipart("zz", [("model", b"\xff\xfe", False)]),
            "multipart/form-data; boundary=zz",
            400,
        ),
        (
            "unexpected file",
            _multipart("zz", [*FIELDS, ("image", ok, True), ("markup", ok, True)]),
            "multipart/form-data; boundary=zz",
            400,
        ),
        (
            "not an image",
            _multipart("zz", [*FIELDS, ("image", b"GIF89a" + b"\x00" * 50, True)]),
            "multipart/form-data; boundary=zz",
            400,
        ),
        (
            "jpeg of empty segments",
            _multipart("zz", [*FIELDS, ("image", jpeg_segments, True)]),
            "multipart/form-data; boundary=zz",
            400,
        ),
        (
            "truncated png",
            _multipart("zz", [*FIELDS, ("image", ok[:30], True)]),
            "multipart/form-data; boundary=zz",
            400,
        ),
        (
            "png bomb header",
            _multipart("zz", [*FIELDS, ("image", _bomb_header(), True)]),
            "multipart/form-data; boundary=zz",
            400,
        ),
        (
            "n not a number",
            _multipart("zz", [*FIELDS, ("n", b"two", False), ("image", ok, True)]),
            "multipart/form-data; boundary=zz",
            400,
        ),
    ]


def _bomb_header() -> bytes:
    png = _png()
    # IHDR claims 100000 x 100000: refused from the header alone
    return png[:16] + (100_000).to_bytes(4, "big") * 2 + png[24:]


@pytest.mark.parametrize(
    ("content", "content_type", "status"),
    [case[1:] for case in _hostile_multiparts()],
    ids=[case[0] for case in _hostile_multiparts()],
)
def test_hostile_multipart_edits_are_4xx_and_free(
    env: Env, content: bytes, content_type: str, status: int
) -> None:
    before = balance(env)
    _assert_client_error(_post(env, "/images/edits", content, content_type), status)
    assert balance(env) == before


EDIT = b'{"model": "local-preview", "prompt": "x", '


def _data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{",
        b"[]",
        b'"a string"',
        b'{"model": "local-preview", "prompt": "x", "images": "nope"}',
        EDIT + b'"images": [{"image_url": "https://10.0.0.1/a.png"}]}',
        EDIT + b'"images": [{"image_url": "data:image/png;base64,@@@"}]}',
        EDIT + b'"images": [{"image_url": "data:image/png,raw"}]}',
        EDIT + b'"images": [{"image_url": 5}]}',
        b'{"model": "local-preview", "prompt": "x", "mask": {"image_url": {"url": 7}}}',
        b'{"model": 5, "prompt": "x"}',
        b'{"model": "local-preview", "prompt": "x", "n": "many"}',
        b'{"model": "local-preview", "prompt": "x", "width": 1e400}',
        b"\xff\xfe{}",
    ],
)
def test_malformed_json_edits_are_400(env: Env, body: bytes) -> None:
    _assert_client_error(_post(env, "/images/edits", body, "application/json"))


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{",
        b"[1]",
        b"null",
        b'{"model": "local-preview"}',
        b'{"model": "local-preview", "prompt": []}',
        b'{"model": "local-preview", "prompt": "x", "n": 1.5}',
        b"\x00" * 100,
        # nested past what orjson writes back (254) or reads (1024): a 4xx, never a 500
        b'{"model": "local-preview", "prompt": "x", "user": ' + b"[" * 300 + b"]" * 300 + b"}",
        b'{"model": "local-preview", "prompt": "x", "extra": ' + b"[" * 2000 + b"]" * 2000 + b"}",
        # deeper than any image request (64 levels), in a field the model does not even read
        b'{"model": "local-preview", "prompt": "x", "x": ' + b'{"a": ' * 100 + b"1" + b"}" * 101,
    ],
)
def test_malformed_generations_are_400(env: Env, body: bytes) -> None:
    _assert_client_error(_post(env, "/images/generations", body, "application/json"))


def test_an_oversized_json_edit_is_413_before_it_is_read(env: Env) -> None:
    # a raw socket: the declared length is a lie the client never backs with bytes
    limit = env.gateway.settings.max_request_bytes
    with socket.create_connection(("127.0.0.1", env.gateway.port), timeout=30) as sock:
        sock.sendall(
            b"POST /v1/images/edits HTTP/1.1\r\nHost: gateway\r\n"
            b"Authorization: Bearer " + env.secret.encode() + b"\r\n"
            b"Content-Type: application/json\r\n"
            b"Content-Length: " + str(limit + 1).encode() + b"\r\n\r\n{"
        )
        head = sock.recv(65536)
    assert head.startswith(b"HTTP/1.1 413"), head[:200]
    assert b"PAYLOAD_TOO_LARGE" in head


def test_a_json_edit_with_an_oversized_data_uri_is_413(env: Env) -> None:
    image = _data_uri(b"\x89PNG\r\n\x1a\n" + b"\x00" * (env.gateway.settings.max_image_bytes + 10))
    body = (
        b'{"model":"local-preview","prompt":"x","images":[{"image_url":"' + image.encode() + b'"}]}'
    )
    _assert_client_error(_post(env, "/images/edits", body, "application/json"), 413)


def test_405_carries_allow(env: Env) -> None:
    response = httpx.get(
        f"{env.gateway.base_url}/images/generations",
        headers={"Authorization": f"Bearer {env.secret}"},
    )
    _assert_client_error(response, 405)
    assert "POST" in response.headers["allow"]


@pytest.mark.gateway(settings={"max_request_bytes": 100_000})
def test_a_json_edit_without_a_length_is_counted_as_it_arrives(env: Env) -> None:
    # chunked: no Content-Length to refuse up front, so the running count must stop it
    def chunks() -> Iterator[bytes]:
        yield b'{"model": "local-preview", "prompt": "x", "images": ["'
        for _ in range(30):
            yield b"A" * 10_000
        yield b'"]}'

    response = httpx.post(
        f"{env.gateway.base_url}/images/edits",
        content=chunks(),
        headers={"Authorization": f"Bearer {env.secret}", "Content-Type": "application/json"},
        timeout=30,
    )
    _assert_client_error(response, 413)
    assert response.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
