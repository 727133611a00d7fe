"""`images.edit` (SPEC 1.2) through the official SDK and raw HTTP: multipart as the SDK sends
it (one `image`, a list as `image[]`, a `mask`), JSON bodies with data URIs, form coercion,
the image checks and limits, the openai adapter's multipart upstream, billing (books checked
after every test) and streaming edit events."""

from __future__ import annotations

import base64
import io
import os
import struct
import zlib
from typing import Any

import httpx
import openai
import pytest
from PIL import Image

from tests.e2e.conftest import Env
from tests.e2e.helpers import PREVIEW_PARTIALS_MODEL, balance, decode

EDIT_MODELS = pytest.mark.gateway(
    models="""
  gpt-image-edit:
    routes: [{provider: mockai, upstream_model: gpt-image-1}]
    max_n: 4
    output_formats: [png, jpeg, webp]
    parameters:
      image_size: {type: enum, values: [auto, 1024x1024, 1536x1024, 1024x1536], default: auto}
      quality: {type: enum, values: [low, medium, high, auto], default: auto}
    edit: {supported: true, max_reference_images: 4}
    pricing:
      per_image: 0.04
"""
    + PREVIEW_PARTIALS_MODEL,
)


def png(width: int = 96, height: int = 64, colour: tuple[int, int, int] = (255, 0, 0)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, "PNG")
    return buffer.getvalue()


def last_request(env: Env) -> dict[str, Any]:
    with env.admin() as admin:
        row: dict[str, Any] = admin.get("/requests", params={"limit": 1}).json()["data"][0]
    return row


def test_edit_one_image_tints_the_reference_at_the_requested_size(env: Env) -> None:
    before = balance(env)
    result = env.client().images.edit(
        model="local-preview",
        image=("ref.png", png(colour=(255, 0, 0)), "image/png"),
        prompt="make it warmer",
        size="320x256",
    )
    image = decode(result.data[0].b64_json).convert("RGB")
    assert image.size == (320, 256)
    assert result.size == "320x256"
    # 70% of the red reference + 30% of a tint: red-dominant wherever no disc or caption is
    reddish = sum(1 for r, g, b in image.get_flattened_data() if r >= 178 and g <= 77 and b <= 77)
    assert reddish > 0.3 * 320 * 256
    assert result.to_dict()["usage"]["cost"]["total_cost"] == 0.001
    assert balance(env) == before - 1000
    row = last_request(env)
    assert (row["endpoint"], row["state"], row["status"], row["images"]) == (
        "edits",
        "settled",
        200,
        1,
    )


def test_edit_with_a_list_of_images_and_a_mask(env: Env) -> None:
    result = env.client().images.edit(
        model="local-preview",
        image=[("a.png", png(colour=(0, 0, 255)), "image/png"), ("b.webp", _webp(), "image/webp")],
        mask=("mask.png", png(colour=(0, 0, 0)), "image/png"),
        prompt="combine them",
        n=2,
        output_format="jpeg",
    )
    assert len(result.data) == 2
    assert all(decode(item.b64_json).format == "JPEG" for item in result.data)


def _webp() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 40), (0, 200, 0)).save(buffer, "WEBP")
    return buffer.getvalue()


@EDIT_MODELS
def test_edit_through_the_openai_adapter_sends_multipart_upstream(env: Env) -> None:
    before = balance(env)
    first, second, mask = png(colour=(1, 2, 3)), png(colour=(4, 5, 6)), png(colour=(0, 0, 0))
    result = env.client().images.edit(
        model="gpt-image-edit",
        image=[("a.png", first, "image/png"), ("b.png", second, "image/png")],
        mask=("m.png", mask, "image/png"),
        prompt="add a hat",
        n=2,
        size="1024x1536",
        quality="low",
    )
    assert len(result.data) == 2 and result.size == "1024x1536"
    [sent] = env.upstream.requests
    assert sent.path.endswith("/images/edits")
    assert sent.files == {"image[]": [first, second], "mask": [mask]}
    assert sent.form["model"] == "gpt-image-1"
    assert sent.form["prompt"] == "add a hat"
    assert (sent.form["n"], sent.form["size"], sent.form["quality"]) == ("2", "1024x1536", "low")
    assert balance(env) == before - 80_000

    env.upstream.requests.clear()
    env.client().images.edit(model="gpt-image-edit", image=("one.png", first), prompt="x")
    assert env.upstream.requests[0].files == {"image": [first]}  # one image: part `image`


@EDIT_MODELS
def test_upstream_failure_on_an_edit_is_refunded(env: Env) -> None:
    before = balance(env)
    env.upstream.fail_next(500)
    with pytest.raises(openai.InternalServerError) as info:
        env.client().images.edit(model="gpt-image-edit", image=("a.png", png()), prompt="x")
    assert info.value.code == "UPSTREAM_ERROR"  # type: ignore[attr-defined]
    assert balance(env) == before


def expect_400(call: Any, code: str, param: str | None) -> openai.BadRequestError:
    with pytest.raises(openai.BadRequestError) as info:
        call()
    assert (info.value.code, info.value.param) == (code, param)
    return info.value


def test_edit_refusals_are_400_and_free(env: Env) -> None:
    before = balance(env)
    client = env.client()
    image = ("a.png", png(), "image/png")
    expect_400(
        lambda: client.images.edit(model="gpt-image-1", image=image, prompt="x"),
        "EDIT_NOT_SUPPORTED",
        "model",
    )
    expect_400(
        lambda: client.images.edit(model="local-preview", image=[image] * 5, prompt="x"),
        "TOO_MANY_IMAGES",
        "image",
    )
    not_an_image = ("photo.png", b"GIF89a definitely not a png", "image/png")
    error = expect_400(
        lambda: client.images.edit(model="local-preview", image=not_an_image, prompt="x"),
        "INVALID_IMAGE",
        "image",
    )
    assert "PNG, JPEG or WebP" in error.message
    bad_mask = ("m.png", b"\x00" * 100, "image/png")
    expect_400(
        lambda: client.images.edit(model="local-preview", image=image, mask=bad_mask, prompt="x"),
        "INVALID_IMAGE",
        "mask",
    )
    expect_400(
        lambda: client.images.edit(model="local-preview", image=[], prompt="x"),
        "MISSING_PARAMETER",
        "image",
    )
    assert balance(env) == before
    assert last_request(env)["endpoint"] == "edits"


def bomb_png(width: int, height: int) -> bytes:
    """A PNG header declaring a huge image (the pixel data never follows)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + chunk + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))


def test_decompression_bomb_is_refused_before_decoding(env: Env) -> None:
    error = expect_400(
        lambda: env.client().images.edit(
            model="local-preview", image=("bomb.png", bomb_png(50_000, 50_000)), prompt="x"
        ),
        "INVALID_IMAGE",
        "image",
    )
    assert "50000x50000" in error.message


@pytest.mark.gateway(settings={"max_image_bytes": 100_000, "max_request_bytes": 250_000})
def test_oversized_image_and_request_are_413(env: Env) -> None:
    big = b"\x89PNG\r\n\x1a\n" + os.urandom(120_000)
    with pytest.raises(openai.APIStatusError) as info:
        env.client().images.edit(model="local-preview", image=("big.png", big), prompt="x")
    assert (info.value.status_code, info.value.code) == (413, "PAYLOAD_TOO_LARGE")  # type: ignore[attr-defined]
    assert "100000 bytes" in info.value.message

    parts = [("p.png", b"\x89PNG\r\n\x1a\n" + os.urandom(90_000)) for _ in range(3)]
    with pytest.raises(openai.APIStatusError) as total:
        env.client().images.edit(model="local-preview", image=parts, prompt="x")
    assert (total.value.status_code, total.value.code) == (413, "PAYLOAD_TOO_LARGE")  # type: ignore[attr-defined]
    assert "250000 bytes" in total.value.message


def post_edit(env: Env, headers: dict[str, str] | None = None, **kwargs: Any) -> httpx.Response:
    return httpx.post(
        f"{env.gateway.base_url}/images/edits",
        headers={"Authorization": f"Bearer {env.secret}", **(headers or {})},
        timeout=30,
        **kwargs,
    )


def data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def test_json_body_with_data_uris(env: Env) -> None:
    before = balance(env)
    response = post_edit(
        env,
        json={
            "model": "local-preview",
            "prompt": "x",
            "images": [{"image_url": data_uri(png())}, {"image_url": data_uri(png())}],
            "mask": {"image_url": data_uri(png(colour=(0, 0, 0)))},
            "size": "128x128",
            "n": 2,
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert [decode(item["b64_json"]).size for item in body["data"]] == [(128, 128)] * 2
    assert body["usage"]["cost"]["total_cost"] == 0.002
    assert balance(env) == before - 2000

    link = post_edit(
        env,
        json={"model": "local-preview", "prompt": "x", "images": [{"image_url": "http://x/y"}]},
    )
    assert link.status_code == 400
    assert (link.json()["error"]["code"], link.json()["error"]["param"]) == (
        "INVALID_IMAGE",
        "images[0]",
    )


def test_form_fields_are_coerced_by_the_model_schema(env: Env) -> None:
    result = env.client().images.edit(
        model="local-preview",
        image=("a.png", png()),
        prompt="x",
        n=2,  # sent as the form string "2"
        extra_body={"width": "192", "height": "128"},
    )
    assert [decode(item.b64_json).size for item in result.data] == [(192, 128)] * 2

    bad = post_edit(
        env,
        files=[("image", ("a.png", png(), "image/png"))],
        data={"model": "local-preview", "prompt": "x", "n": "x"},
    )
    assert bad.status_code == 400
    assert bad.json()["error"]["param"] == "n"
    mixed = post_edit(
        env,
        files=[
            ("image", ("a.png", png(), "image/png")),
            ("image[]", ("b.png", png(), "image/png")),
        ],
        data={"model": "local-preview", "prompt": "x", "stream": "false"},
    )
    assert mixed.status_code == 200, mixed.text
    malformed = post_edit(
        env,
        content=b"--zz\r\nContent-Disposition: form-data; name=prompt\r\n\r\nx",
        headers={"Content-Type": "multipart/form-data; boundary=zz"},
    )
    assert malformed.status_code == 400
    assert malformed.json()["error"]["code"] == "INVALID_REQUEST"


@EDIT_MODELS
def test_streaming_edit_events(env: Env) -> None:
    before = balance(env)
    stream = env.client().images.edit(
        model="preview-partials",
        image=("a.png", png()),
        prompt="x",
        size="160x96",
        partial_images=1,
        stream=True,
    )
    events = list(stream)
    assert [event.type for event in events] == ["image_edit.partial_image", "image_edit.completed"]
    assert all(decode(event.b64_json).size == (160, 96) for event in events)
    assert events[-1].to_dict()["usage"]["cost"]["total_cost"] == 0.002
    assert balance(env) == before - 2000


def test_idempotent_edit_replays_across_multipart_boundaries(env: Env) -> None:
    before = balance(env)
    client = env.client()

    def edit() -> Any:
        return client.images.edit(
            model="local-preview",
            image=("a.png", png()),
            prompt="once",
            extra_headers={"Idempotency-Key": "edit-1"},
        )

    first, again = edit(), edit()
    assert again.data[0].b64_json == first.data[0].b64_json
    assert balance(env) == before - 1000


@pytest.mark.gateway(settings={"max_image_bytes": 100_000})
def test_oversized_part_is_refused_mid_stream_without_content_length(env: Env) -> None:
    boundary = "b0undary"

    def body() -> Any:
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\n'
            f"local-preview\r\n--{boundary}\r\n"
            'Content-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n'
        ).encode()
        for _ in range(4):  # 160 KB in chunks; the refusal comes before the end
            yield b"\x89PNG" + os.urandom(40_000)

    response = post_edit(
        env,
        content=body(),
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert "content-length" not in response.request.headers
    assert response.status_code == 413
    assert response.json()["error"]["param"] == "image"
