"""A real HTTP server speaking BytePlus ModelArk's image generation API (Seedream 4.x).

    with MockSeedreamUpstream(api_key="ark-key") as upstream:
        provider = ProviderConfig(adapter="seedream", base_url=upstream.base_url, api_key=...)
        ...                                   # upstream.requests: what the gateway sent

The server lifecycle, recorded requests, queued failures (`fail_next`), `latency_s` and the
`/files/{id}` CDN stand-in come from `MockOpenAIUpstream`; the route below speaks Ark:

    POST /api/v3/images/generations   JSON body

Contract followed (sources: BytePlus ModelArk "Image generation API" reference,
docs.byteplus.com/en/docs/ModelArk/1541523, as mirrored in anongecko/seedream-studio
`references/SEEDREAM-4point5-api-docs.md`; the official SDK, volcengine/volcengine-python-sdk
`volcenginesdkarkruntime/resources/images/images.py`; Ark error codes,
volcengine.com/docs/82379/1299023; the batch-item error shape quoted by
docs.router.shengsuanyun.com/204175126d0):
- Auth: `Authorization: Bearer <key>`, else 401 `AuthenticationError` (this mock echoes the
  presented key in the message, so tests prove the gateway never passes it on).
- Body: `model`, `prompt` (required); `size`: `1K` (4.0 only) / `2K` / `4K` (rendered square
  here; the real model picks an aspect from the prompt) or `WxH` with total pixels in
  [1280x720 (4.0) or 2560x1440 (4.5), 4096x4096] and aspect in [1/16, 16]; default
  2048x2048. `image`: a URL or `data:image/<lowercase fmt>;base64,...`, or a list of up to
  14. `sequential_image_generation` `auto` | `disabled` (default) with
  `sequential_image_generation_options.max_images` 1..15, references + outputs <= 15.
  `response_format` `url` (default) | `b64_json`; `watermark` (default true); `seed` in
  [-1, 2147483647]. Outputs are JPEG.
- Answer: `{model, created, data: [{b64_json | url, size}], usage: {generated_images,
  output_tokens = round(sum(w*h) / 256), total_tokens}}`.
- Errors: `{"error": {"code", "message", "param", "type"}}`: 400 `InvalidParameter` /
  `MissingParameter`; a prompt containing `BLOCKME` is 400
  `InputTextSensitiveContentDetected`; `BLOCKOUT` has the first output image refused:
  400 `OutputImageSensitiveContentDetected` for a single image, or, in a batch, a
  `data[0].error` entry beside the other images.

Knobs: `auto_images` (how many images batch mode yields: the model decides; None = all
`max_images`), `mode` (`url` forces URLs), plus the inherited ones.
"""

from __future__ import annotations

import base64
import binascii
import io
import time
from typing import Any

import orjson
from PIL import Image
from starlette.requests import Request
from starlette.responses import Response

from tests.mocks.openai_upstream import MockOpenAIUpstream, _json

_TIERS = {"1K": 1024, "2K": 2048, "4K": 4096}
_MIN_PIXELS = {"seedream-4-0": 1280 * 720, "seedream-4-5": 2560 * 1440}
_MAX_PIXELS = 4096 * 4096
_MAX_REFERENCES = 14
_MAX_TOTAL = 15


def ark_error(status: int, code: str, message: str, param: str | None = None) -> Response:
    error_type = {400: "BadRequest", 401: "Unauthorized", 429: "TooManyRequests"}.get(
        status, "InternalServiceError"
    )
    body = {"error": {"code": code, "message": message, "param": param, "type": error_type}}
    return _json(status, body)


def _invalid(param: str, why: str) -> Response:
    return ark_error(
        400,
        f"InvalidParameter.{param}",
        f"The parameter `{param}` specified in the request is not valid: {why}. "
        "Request id: 021mock",
        param,
    )


class MockSeedreamUpstream(MockOpenAIUpstream):
    def __init__(self, *, api_key: str = "ark-mock-upstream-key", **kwargs: Any) -> None:
        super().__init__(api_key=api_key, **kwargs)
        self.auto_images: int | None = None
        self._defaults["auto_images"] = None
        #: decoded reference images of the last request, in order
        self.references: list[bytes] = []

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/api/v3"

    async def _generations(self, request: Request) -> Response:
        raw = await request.body()
        recorded = self._record(request)
        await self._sleep(self.latency_s)
        presented = recorded.headers.get("authorization", "").removeprefix("Bearer ")
        if presented != self.api_key:
            return ark_error(
                401,
                "AuthenticationError",
                f"The API key {presented} in the request is missing or invalid. "
                "Request id: 021mock",
            )
        with self._lock:
            failure = self._failures.popleft() if self._failures else None
        if failure is not None:
            content = (
                failure.body if isinstance(failure.body, bytes) else orjson.dumps(failure.body)
            )
            return Response(content, failure.status, failure.headers, media_type="application/json")
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            return ark_error(400, "InvalidParameter", "The request body is not valid JSON.")
        recorded.json = body
        problem = self._validate(body)
        if problem is not None:
            return problem
        return await self._success(body)

    def _validate(self, body: dict[str, Any]) -> Response | None:
        model, prompt = str(body.get("model") or ""), body.get("prompt")
        for name in ("model", "prompt"):
            if not body.get(name):
                return ark_error(
                    400,
                    f"MissingParameter.{name}",
                    f"The request failed because it is missing a required parameter: {name}",
                    name,
                )
        if not model.startswith(tuple(_MIN_PIXELS)):
            return ark_error(404, "InvalidEndpointOrModel.NotFound", f"model {model} not found")
        if body.get("response_format", "url") not in ("url", "b64_json"):
            return _invalid("response_format", "must be url or b64_json")
        if _dimensions(body.get("size"), model) is None:
            return _invalid("size", f"{body.get('size')!r} is out of range")
        seed = body.get("seed", -1)
        if not isinstance(seed, int) or not -1 <= seed <= 2147483647:
            return _invalid("seed", "must be an integer in [-1, 2147483647]")
        references = self._references(body.get("image"))
        if references is None:
            return _invalid("image", "expected URLs or data:image/<format>;base64 URIs")
        if len(references) > _MAX_REFERENCES:
            return _invalid("image", f"at most {_MAX_REFERENCES} images")
        self.references = references
        mode = body.get("sequential_image_generation", "disabled")
        if mode not in ("auto", "disabled"):
            return _invalid("sequential_image_generation", "must be auto or disabled")
        options = body.get("sequential_image_generation_options") or {}
        max_images = options.get("max_images", 15) if isinstance(options, dict) else None
        if not isinstance(max_images, int) or not 1 <= max_images <= _MAX_TOTAL:
            return _invalid("sequential_image_generation_options.max_images", "1..15")
        if mode == "auto" and len(references) + max_images > _MAX_TOTAL:
            return _invalid("image", "reference images + generated images exceed 15")
        if isinstance(prompt, str) and "BLOCKME" in prompt:
            return ark_error(
                400,
                "InputTextSensitiveContentDetected",
                "The request failed because the input text may contain sensitive "
                "information. Request id: 021mock",
            )
        return None

    def _references(self, image: Any) -> list[bytes] | None:
        items = [] if image is None else image if isinstance(image, list) else [image]
        decoded: list[bytes] = []
        for item in items:
            if not isinstance(item, str):
                return None
            if item.startswith(("https://", "http://")):
                decoded.append(b"")
                continue
            header, _, payload = item.partition(",")
            fmt = header.removeprefix("data:image/").removesuffix(";base64")
            if not header.startswith("data:image/") or fmt != fmt.lower() or fmt == header:
                return None
            try:
                data = base64.b64decode(payload, validate=True)
                Image.open(io.BytesIO(data)).verify()
            except (binascii.Error, ValueError, OSError):
                return None
            decoded.append(data)
        return decoded

    async def _success(self, body: dict[str, Any]) -> Response:
        model, prompt = str(body["model"]), str(body["prompt"])
        width, height = _dimensions(body.get("size"), model) or (2048, 2048)
        count = 1
        if body.get("sequential_image_generation") == "auto":
            options = body.get("sequential_image_generation_options") or {}
            count = int(options.get("max_images", 15))
            count = min(count, self.auto_images or count)
        blocked_first = "BLOCKOUT" in prompt
        if blocked_first and count == 1:
            return ark_error(
                400,
                "OutputImageSensitiveContentDetected",
                "The request failed because the output image may contain sensitive "
                "information. Request id: 021mock",
            )
        as_url = self.mode == "url" or body.get("response_format", "url") == "url"
        data: list[dict[str, Any]] = []
        for index in range(count):
            if blocked_first and index == 0:
                data.append(
                    {
                        "error": {
                            "code": "OutputImageSensitiveContentDetected",
                            "message": "The output image may contain sensitive information.",
                        }
                    }
                )
                continue
            key = f"{prompt}\x00{index}\x00{time.time_ns()}"
            image, b64 = await self._image(width, height, "jpeg", key)
            item: dict[str, Any] = {"size": f"{width}x{height}"}
            if as_url:
                file_id = f"img-{next(self._file_ids)}"
                self._files[file_id] = (image, "image/jpeg")
                item["url"] = f"{self.root_url}/files/{file_id}"
            else:
                item["b64_json"] = b64
            data.append(item)
        generated = sum(1 for item in data if "error" not in item)
        tokens = round(generated * width * height / 256)
        answer = {
            "model": model,
            "created": int(time.time()),
            "data": data,
            "usage": {
                "generated_images": generated,
                "output_tokens": tokens,
                "total_tokens": tokens,
            },
        }
        return Response(orjson.dumps(answer), media_type="application/json")


def _dimensions(size: Any, model: str) -> tuple[int, int] | None:
    if size is None:
        return 2048, 2048
    if not isinstance(size, str):
        return None
    if size in _TIERS and not (size == "1K" and model.startswith("seedream-4-5")):
        return _TIERS[size], _TIERS[size]
    width, sep, height = size.partition("x")
    if not (sep and width.isdigit() and height.isdigit()) or "0" in (width[:1], height[:1]):
        return None
    w, h = int(width), int(height)
    minimum = next(v for k, v in _MIN_PIXELS.items() if model.startswith(k))
    if not minimum <= w * h <= _MAX_PIXELS or not 1 / 16 <= w / h <= 16:
        return None
    return w, h
