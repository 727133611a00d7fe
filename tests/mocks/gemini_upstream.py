"""A real HTTP server speaking the Gemini API's `generateContent` for image models.

    with MockGeminiUpstream(api_key="AIza-mock") as upstream:
        provider = ProviderConfig(adapter="gemini", base_url=upstream.base_url, api_key=...)
        ...                                   # upstream.requests: what the gateway sent

A Starlette app served by uvicorn in a background thread on 127.0.0.1 (ephemeral port):

    POST /{version}/models/{model}:generateContent   JSON body
    GET  /files/{id}                                  images of `mode="file"` answers

Contract followed (sources: the Gemini API reference, `models.generateContent` and the image
generation guide at ai.google.dev/gemini-api/docs/image-generation; the official SDK's types,
googleapis/python-genai `google/genai/types.py`: `ImageConfig` (aspect ratios "1:1" .. "21:9",
image sizes 1K/2K/4K), `Part` (`inlineData`, `fileData`, `thought`), `FinishReason`,
`BlockedReason`, `GenerateContentResponseUsageMetadata`; error bodies as Google returns them,
e.g. the `API_KEY_INVALID` answer quoted in cequence-io/openai-scala-client#109 and the
`RESOURCE_EXHAUSTED` ones in google-gemini/gemini-cli#8437):
- Auth: `x-goog-api-key` (or `?key=`); a wrong key is a 400 INVALID_ARGUMENT with
  `details[].reason = API_KEY_INVALID`, as Google answers. Unlike Google, the message
  echoes the presented key, so tests prove the gateway never passes it on.
- Body: `contents[].parts[]` (text, `inlineData` images), `generationConfig` with
  `responseModalities` (must include IMAGE), `imageConfig` {`aspectRatio`, `imageSize`},
  `seed`; `candidateCount` > 1 is refused ("Multiple candidates is not enabled").
  `imageSize` is refused by `gemini-2.5-*` models; `gemini-3.1-flash-*` also takes "512"
  and the 1:4, 4:1, 1:8, 8:1 ratios (`AspectRatio` / `ImageSize` enums of the SDK).
- Answer: one candidate whose `content.parts` hold the image as `inlineData`
  {`mimeType`, `data`} (camelCase), `finishReason: STOP`, and `usageMetadata`
  (`promptTokenCount`, `candidatesTokenCount` 1290 per 2.5 image, 1120 (1K/2K) or 2000 (4K)
  per Gemini 3 image, `thoughtsTokenCount` for Gemini 3, `totalTokenCount`,
  `promptTokensDetails` per modality, 258 tokens per input image).
- Moderation: a prompt with `BLOCKPROMPT` gets `promptFeedback.blockReason:
  PROHIBITED_CONTENT` and no candidates; `BLOCKIMAGE` a candidate with `finishReason:
  IMAGE_SAFETY` and no content; `TEXTONLY` a text-only answer (`finishReason: STOP`).
- Errors: `{"error": {"code", "message", "status", "details"?}}`.

Knobs (attributes, changeable while running): `mode` ("inline", "snake" = snake_case keys,
"file" = `fileData` links to /files), `image_format`, `thought_images` (Gemini 3's interim
`thought: true` images before the answer), `latency_s`, `fail_next(status, body)`,
`scale` (pixels per tier pixel, so tests stay fast).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import itertools
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.mocks.server import MockServer

ImageFormat = Literal["png", "jpeg", "webp"]
ASPECT_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")
#: Gemini 3.1 Flash Image adds extreme ratios and a 512 px size
WIDE_ASPECT_RATIOS = ("1:4", "4:1", "1:8", "8:1")
IMAGE_SIZES = {"512": 512, "1K": 1024, "2K": 2048, "4K": 4096}
_PIL_NAMES = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: dict[str, Any] | None = None


def google_error(code: int, status: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "status": status, **extra}}


class MockGeminiUpstream(MockServer):
    label = "Gemini"

    def __init__(self, *, api_key: str = "AIza-mock-upstream-key", scale: float = 1 / 8) -> None:
        super().__init__()
        self.api_key = api_key
        self.scale = scale
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._failures: deque[tuple[int, Any, dict[str, str]]] = deque()
        self._files: dict[str, tuple[bytes, str]] = {}
        self._ids = itertools.count(1)
        self.reset()
        self.app = Starlette(
            routes=[
                Route("/{version}/models/{call}", self._generate, methods=["POST"]),
                Route("/files/{file_id}", self._file, methods=["GET"]),
            ]
        )

    # -- knobs -----------------------------------------------------------------------------
    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self._failures.clear()
            self._files.clear()
        self.mode: Literal["inline", "snake", "file"] = "inline"
        self.image_format: ImageFormat = "png"
        self.thought_images = 0
        self.latency_s = 0.0

    def fail_next(
        self,
        status: int,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next `times` calls with `status` and `body` (JSON unless bytes)."""
        if body is None:
            body = google_error(500, "INTERNAL", "An internal error has occurred.")
        with self._lock:
            self._failures.extend((status, body, headers or {}) for _ in range(times))

    # -- handlers --------------------------------------------------------------------------
    async def _generate(self, request: Request) -> Response:
        raw = await request.body()
        recorded = RecordedRequest(
            request.method,
            request.url.path,
            dict(request.query_params),
            {k.lower(): v for k, v in request.headers.items()},
        )
        with self._lock:
            self.requests.append(recorded)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        recorded.json = body if isinstance(body, dict) else None
        await self._sleep(self.latency_s)
        key = recorded.headers.get("x-goog-api-key") or recorded.query.get("key", "")
        if key != self.api_key:
            return _json(
                400,
                google_error(
                    400,
                    "INVALID_ARGUMENT",
                    f"API key not valid. Please pass a valid API key. ({key})",
                    details=[
                        {
                            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                            "reason": "API_KEY_INVALID",
                            "domain": "googleapis.com",
                        }
                    ],
                ),
            )
        with self._lock:
            failure = self._failures.popleft() if self._failures else None
        if failure is not None:
            status, content, headers = failure
            payload = content if isinstance(content, bytes) else orjson.dumps(content)
            return Response(payload, status, headers, media_type="application/json")
        model, _, method = request.path_params["call"].partition(":")
        if method != "generateContent":
            return _json(404, google_error(404, "NOT_FOUND", f"Method {method} not found."))
        if recorded.json is None:
            return _bad("Invalid JSON payload received.")
        return await self._answer(model, recorded.json)

    async def _answer(self, model: str, body: dict[str, Any]) -> Response:
        config = body.get("generationConfig") or {}
        image_config = config.get("imageConfig") or {}
        parts = [p for c in body.get("contents") or [] for p in c.get("parts") or []]
        prompt = " ".join(str(p["text"]) for p in parts if "text" in p)
        images_in = sum(1 for p in parts if "inlineData" in p)
        if not prompt:
            return _bad("* GenerateContentRequest.contents: contents is not specified")
        if "IMAGE" not in [str(m).upper() for m in config.get("responseModalities") or []]:
            return _bad("Model only supports image output: set responseModalities to IMAGE.")
        if config.get("candidateCount", 1) != 1:
            return _bad(f"Multiple candidates is not enabled for models/{model}")
        wide = "3.1-flash" in model
        aspect = image_config.get("aspectRatio", "1:1")
        if aspect not in ASPECT_RATIOS + (WIDE_ASPECT_RATIOS if wide else ()):
            return _bad(f"Unsupported aspect ratio: {aspect}")
        size = image_config.get("imageSize", "1K")
        if (
            size not in IMAGE_SIZES
            or ("imageSize" in image_config and "2.5" in model)
            or (size == "512" and not wide)
        ):
            return _bad(f"Unsupported image size: {size}")
        text_tokens = max(1, len(prompt.split()))
        pro = model.startswith("gemini-3")
        usage = {
            "promptTokenCount": text_tokens + 258 * images_in,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": text_tokens}]
            + ([{"modality": "IMAGE", "tokenCount": 258 * images_in}] if images_in else []),
        }
        if "BLOCKPROMPT" in prompt:
            return _json(200, {"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}})
        if "BLOCKIMAGE" in prompt:
            return _json(200, {"candidates": [{"finishReason": "IMAGE_SAFETY", "index": 0}]})
        if "TEXTONLY" in prompt:
            text = {"role": "model", "parts": [{"text": "I can only describe it in words."}]}
            return _json(200, {"candidates": [{"content": text, "finishReason": "STOP"}]})
        long_side = IMAGE_SIZES[size] * self.scale
        w, h = (int(x) for x in aspect.split(":"))
        width, height = (long_side, long_side * h / w) if w >= h else (long_side * w / h, long_side)
        out: list[dict[str, Any]] = []
        for index in range(self.thought_images):
            out.append({**await self._image_part(16, 16, f"thought{index}"), "thought": True})
        seed = f"{prompt}\x00{config.get('seed')}\x00{time.time_ns()}"
        out.append(await self._image_part(round(width), round(height), seed))
        output_tokens = (2000 if size == "4K" else 1120) if pro else 1290
        usage |= {"candidatesTokenCount": output_tokens}
        if pro:
            usage |= {"thoughtsTokenCount": 150}
        counted = ("promptTokenCount", "candidatesTokenCount", "thoughtsTokenCount")
        usage["totalTokenCount"] = sum(int(usage[k]) for k in counted if k in usage)
        answer: dict[str, Any] = {
            "candidates": [
                {"content": {"role": "model", "parts": out}, "finishReason": "STOP", "index": 0}
            ],
            "usageMetadata": usage,
            "modelVersion": model,
        }
        content = orjson.dumps(answer)
        if self.mode == "snake":  # proto-JSON's original field names, as some proxies send
            for camel, snake in ((b"inlineData", b"inline_data"), (b"mimeType", b"mime_type")):
                content = content.replace(b'"%s"' % camel, b'"%s"' % snake)
        return Response(content, media_type="application/json")

    async def _image_part(self, width: int, height: int, key: str) -> dict[str, Any]:
        fmt = self.image_format
        data = await asyncio.to_thread(_render, max(1, width), max(1, height), fmt, key)
        mime = f"image/{fmt}"
        if self.mode == "file":
            file_id = f"img-{next(self._ids)}"
            self._files[file_id] = (data, mime)
            return {"fileData": {"mimeType": mime, "fileUri": f"{self.root_url}/files/{file_id}"}}
        return {"inlineData": {"mimeType": mime, "data": base64.b64encode(data).decode()}}

    async def _file(self, request: Request) -> Response:
        with self._lock:
            self.requests.append(
                RecordedRequest(
                    request.method,
                    request.url.path,
                    dict(request.query_params),
                    {k.lower(): v for k, v in request.headers.items()},
                )
            )
        entry = self._files.get(request.path_params["file_id"])
        if entry is None:
            return _json(404, google_error(404, "NOT_FOUND", "No such file."))
        return Response(entry[0], media_type=entry[1])


def _render(width: int, height: int, fmt: str, key: str) -> bytes:
    digest = hashlib.sha256(key.encode()).digest()
    image = Image.new("RGB", (width, height), (digest[0], digest[1], digest[2]))
    buffer = io.BytesIO()
    image.save(buffer, _PIL_NAMES[fmt])
    return buffer.getvalue()


def _bad(message: str) -> Response:
    return _json(400, google_error(400, "INVALID_ARGUMENT", message))


def _json(status: int, body: dict[str, Any]) -> Response:
    return Response(orjson.dumps(body), status, media_type="application/json")
