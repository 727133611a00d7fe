"""A real HTTP server speaking Stability AI's Stable Image REST API (v2beta), for adapter tests.

    with MockStabilityUpstream(api_key="sk-upstream") as upstream:
        provider = ProviderConfig(adapter="stability", base_url=upstream.base_url, api_key=...)
        ...                                   # upstream.requests: what the gateway sent

A Starlette app served by uvicorn in a background thread on 127.0.0.1 (ephemeral port):

    POST /v2beta/stable-image/generate/ultra   prompt, image + strength (image-to-image)
    POST /v2beta/stable-image/generate/core    prompt only (text-to-image)
    POST /v2beta/stable-image/generate/sd3     prompt, model, mode, image + strength
    POST /v2beta/stable-image/edit/inpaint     prompt, image, mask

Contract followed (sources: Stability's REST API reference, platform.stability.ai/docs/
api-reference, "Stable Image Ultra / Core", "Stable Diffusion 3.5", "Inpaint", as quoted in
gambithunt/imagen `.github/instructions/sd_ultra.instructions.md` and `sd_core.instructions.md`;
the OpenAPI-generated client aj-foster/open-api-generator `stability-ai/generate.ex` (status
codes, the 200 JSON `{image, finish_reason: SUCCESS|CONTENT_FILTERED, seed}`, error bodies
`{id, name, errors: [..]}`) and `stability-ai/content_moderation_response.ex` (403 with
`name: content_moderation`); the `finish-reason` / `seed` response headers of `Accept:
image/*` answers as read by Cardano-After-Dark/cardgen `imgen/stability_ai_client.py`):
- Auth: `Authorization: Bearer <key>`, else 401 `unauthorized`; like some real servers the
  message quotes the presented key, so tests prove the gateway never passes it on.
- The body must be multipart/form-data (else 400). `prompt` 1..10000 characters;
  `aspect_ratio` one of 16:9 1:1 21:9 2:3 3:2 4:5 5:4 9:16 9:21 (text-to-image only);
  `output_format` png|jpeg|webp (SD3: png|jpeg); `seed` 0..4294967294; `strength` 0..1 and
  required with `image`; Core takes no image; SD3 needs `mode=image-to-image` with an image
  and a `model` starting with `sd3`; inpaint needs `image` and `mask`. Violations: 400
  `bad_request` (422 for the Core image case, like the API's "invalid_parameters").
- `Accept: application/json` answers `{"image": <base64>, "finish_reason", "seed"}` with
  content type `application/json; type=image/<fmt>`; otherwise raw image bytes with
  `finish-reason` and `seed` headers (the API's default `image/*`).
- A prompt containing `BLOCKME` is refused (403 `content_moderation`); one containing
  `FILTERME` is generated but answered with `finish_reason: CONTENT_FILTERED`.
- Output: text-to-image has the asked aspect ratio (long side 256 px here, for speed; the
  API makes ~1-4 megapixels); image-to-image and inpaint keep the input image's size.

Knobs (attributes, changeable while running): `latency_s`, `fail_next(status, body)`.
"""

from __future__ import annotations

import asyncio
import io
import threading
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any

import orjson
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.mocks.openai_upstream import RecordedRequest, _parse_multipart, _render
from tests.mocks.server import MockServer

ASPECT_RATIOS = ("16:9", "1:1", "21:9", "2:3", "3:2", "4:5", "5:4", "9:16", "9:21")
FORMATS = ("png", "jpeg", "webp")
MODERATION_MESSAGE = (
    "Your request was flagged by our content moderation system, as a result your request "
    "was denied and you were not charged."
)
_LONG_SIDE = 256


@dataclass
class _Failure:
    status: int
    body: Any
    headers: dict[str, str]


def stability_error(status: int, name: str, *errors: str) -> Response:
    body = {"id": uuid.uuid4().hex, "name": name, "errors": list(errors)}
    return Response(orjson.dumps(body), status, media_type="application/json")


class MockStabilityUpstream(MockServer):
    label = "Stability"
    graceful_shutdown_s = 1

    def __init__(self, *, api_key: str = "sk-mock-stability-key", latency_s: float = 0.0) -> None:
        super().__init__()
        self.api_key = api_key
        self.latency_s = latency_s
        self._default_latency_s = latency_s
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._failures: deque[_Failure] = deque()
        self.app = Starlette(
            routes=[
                Route("/v2beta/stable-image/generate/{model}", self._handle, methods=["POST"]),
                Route("/v2beta/stable-image/edit/{model}", self._handle, methods=["POST"]),
            ]
        )

    # -- knobs -----------------------------------------------------------------------------
    def fail_next(
        self,
        status: int,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next `times` requests with `status` and `body` (JSON-encoded unless
        bytes; default: a Stability-shaped server error)."""
        if body is None:
            body = {"id": "mock", "name": "internal_error", "errors": ["An unexpected error"]}
        with self._lock:
            self._failures.extend(_Failure(status, body, headers or {}) for _ in range(times))

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self._failures.clear()
            self.latency_s = self._default_latency_s

    # -- handler ---------------------------------------------------------------------------
    async def _handle(self, request: Request) -> Response:
        raw = await request.body()
        content_type = request.headers.get("content-type", "")
        recorded = RecordedRequest(
            method=request.method,
            path=request.url.path,
            query=dict(request.query_params),
            headers={k.lower(): v for k, v in request.headers.items()},
        )
        if content_type.startswith("multipart/form-data"):
            recorded.form, recorded.files = _parse_multipart(content_type, raw)
        with self._lock:
            self.requests.append(recorded)
        await self._sleep(self.latency_s)

        presented = recorded.headers.get("authorization", "").removeprefix("Bearer ")
        if presented != self.api_key:
            return stability_error(
                401, "unauthorized", f"authorization: invalid API key {presented!r}"
            )
        with self._lock:
            failure = self._failures.popleft() if self._failures else None
        if failure is not None:
            body = failure.body if isinstance(failure.body, bytes) else orjson.dumps(failure.body)
            return Response(body, failure.status, failure.headers, media_type="application/json")
        if not content_type.startswith("multipart/form-data"):
            return stability_error(400, "bad_request", "content-type: must be multipart/form-data")

        endpoint = request.url.path.rsplit("/", 2)
        problem = _validate(f"{endpoint[-2]}/{endpoint[-1]}", recorded)
        if problem is not None:
            return problem
        return await self._success(recorded)

    async def _success(self, recorded: RecordedRequest) -> Response:
        form = recorded.form
        prompt = form["prompt"]
        if "BLOCKME" in prompt:
            return stability_error(403, "content_moderation", MODERATION_MESSAGE)
        fmt = form.get("output_format", "png")
        seed = int(form.get("seed") or 0) or int.from_bytes(uuid.uuid4().bytes[:4], "big") // 2
        source = recorded.files.get("image")
        if source:
            width, height = await asyncio.to_thread(_size_of, source[0])
        else:
            width, height = _dimensions(form.get("aspect_ratio", "1:1"))
        data, b64 = await asyncio.to_thread(_render, width, height, fmt, f"{prompt}\x00{seed}")
        finish_reason = "CONTENT_FILTERED" if "FILTERME" in prompt else "SUCCESS"
        if recorded.headers.get("accept", "image/*") == "application/json":
            body = {"image": b64, "finish_reason": finish_reason, "seed": seed}
            return Response(orjson.dumps(body), media_type=f"application/json; type=image/{fmt}")
        headers = {"finish-reason": finish_reason, "seed": str(seed)}
        return Response(data, headers=headers, media_type=f"image/{fmt}")


def _validate(endpoint: str, recorded: RecordedRequest) -> Response | None:
    form, files = recorded.form, recorded.files
    prompt = form.get("prompt", "")
    if not 1 <= len(prompt) <= 10000:
        return stability_error(400, "bad_request", "prompt: must be 1 to 10000 characters")
    formats = ("png", "jpeg") if endpoint == "generate/sd3" else FORMATS
    if form.get("output_format", "png") not in formats:
        return stability_error(400, "bad_request", f"output_format: must be one of {formats}")
    seed = form.get("seed", "0")
    if not (seed.isdigit() and int(seed) <= 4294967294):
        return stability_error(400, "bad_request", "seed: must be between 0 and 4294967294")
    if form.get("aspect_ratio", "1:1") not in ASPECT_RATIOS:
        return stability_error(400, "bad_request", "aspect_ratio: unsupported value")
    image = bool(files.get("image"))
    if endpoint == "edit/inpaint":
        if not (image and files.get("mask")):
            return stability_error(400, "bad_request", "image and mask are required")
        return None
    if endpoint == "generate/core" and image:
        return stability_error(422, "invalid_parameters", "image: not supported by this model")
    if endpoint == "generate/sd3":
        if not form.get("model", "sd3.5-large").startswith("sd3"):
            return stability_error(400, "bad_request", "model: unknown model")
        if (form.get("mode") == "image-to-image") != image:
            return stability_error(400, "bad_request", "image-to-image mode needs an image")
    if image:
        strength = form.get("strength")
        try:
            valid = strength is not None and 0 <= float(strength) <= 1
        except ValueError:
            valid = False
        if not valid:
            return stability_error(400, "bad_request", "strength: required with image, 0..1")
    return None


def _dimensions(aspect: str) -> tuple[int, int]:
    width, height = (int(part) for part in aspect.split(":"))
    if width >= height:
        return _LONG_SIDE, round(_LONG_SIDE * height / width)
    return round(_LONG_SIDE * width / height), _LONG_SIDE


def _size_of(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        return image.size
