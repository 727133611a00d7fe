"""A real HTTP server speaking the OpenAI Images API, for adapter, end-to-end and load tests.

    with MockOpenAIUpstream(api_key="sk-upstream") as upstream:
        provider = ProviderConfig(adapter="openai", base_url=upstream.base_url, api_key=...)
        ...                                   # upstream.requests: what the gateway sent

A Starlette app served by uvicorn in a background thread on 127.0.0.1 (ephemeral port).
Routes (any path prefix, so Azure-style `/openai/deployments/<d>` base URLs work too):

    POST .../images/generations   JSON body
    POST .../images/edits         multipart: image | image[] (repeated), mask, fields
    GET  /files/{id}              the images of `mode="url"` answers (a CDN stand-in)

Contract followed (sources: the OpenAI API reference, "Images" - create / create edit /
the image generation object; the official SDK's generated types, openai/openai-python
`src/openai/types/image_generate_params.py`, `images_response.py`, `image.py`; error shapes
as OpenAI returns them, e.g. the `moderation_blocked` body quoted in
github.com/jeffstric/ZJT/issues/480 and ucx0204/CarrotMangaTranslator/issues/122):
- Auth: `Authorization: Bearer <key>` (or Azure's `api-key: <key>`); otherwise 401
  `invalid_api_key`. Unlike OpenAI, which masks it, the 401 message echoes the whole
  presented key, so tests prove the gateway never passes such messages on.
- GPT Image models (`gpt-image*`) answer `b64_json` only and reject `response_format`;
  other models (dall-e-*) reject `output_format` and answer a URL unless
  `response_format: b64_json`. `mode="url"` forces URLs for every model (some compatible
  servers do). Answers carry `created`, `data[]`, and for GPT Image `usage`
  (input/output/total tokens, `input_tokens_details`, `output_tokens_details`), `size`,
  `quality` and `background` (`auto` resolved to what was used), `output_format`; dall-e-3
  answers carry `revised_prompt`.
- Errors: `{"error": {"message", "type", "param", "code"}}`. A prompt containing
  `BLOCKME` is refused like OpenAI's safety system: 400 `moderation_blocked` /
  `image_generation_user_error` (GPT Image) or `content_policy_violation` (dall-e).

Knobs (attributes, changeable while running): `mode`, `image_format` (None = honour the
request's `output_format`, else always this format: exercises transcoding), `latency_s`,
`gate` (a `threading.Event`: image requests wait until it is set, so a test decides when
the provider answers), `fail_rate` (fraction answered 500, seeded RNG), `fail_next(status,
body)`, `max_n`
(400 above it: servers allowing only n=1), `chunked_files` (no Content-Length on
/files), `fixed_png` (one cached image per size and format, no Pillow work per request:
for benchmarks).
"""

from __future__ import annotations

import asyncio
import base64
import email.parser
import email.policy
import hashlib
import io
import itertools
import random
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tests.mocks.server import MockServer

ImageFormat = Literal["png", "jpeg", "webp"]
_PIL_NAMES = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
# Output tokens per 1024x1024 image by quality, from OpenAI's GPT Image pricing guide.
_TOKENS_PER_IMAGE = {"low": 272, "medium": 1056, "high": 4160, "auto": 1056}
#: what the mock's `quality: auto` settles on (named in its answer, as OpenAI does)
AUTO_QUALITY = "medium"


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: dict[str, Any] | None = None
    #: multipart text fields (edits)
    form: dict[str, str] = field(default_factory=dict)
    #: multipart file parts by name, in order (edits)
    files: dict[str, list[bytes]] = field(default_factory=dict)


@dataclass
class _Failure:
    status: int
    body: Any
    headers: dict[str, str]


def openai_error(
    message: str, type_: str, code: str | None, param: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


class MockOpenAIUpstream(MockServer):
    label = "OpenAI"
    graceful_shutdown_s = 1

    def __init__(
        self,
        *,
        api_key: str = "sk-mock-upstream-key",
        mode: Literal["b64", "url"] = "b64",
        image_format: ImageFormat | None = None,
        latency_s: float = 0.0,
        fail_rate: float = 0.0,
        seed: int = 0,
        max_n: int = 10,
        fixed_png: bool = False,
        chunked_files: bool = False,
        loop: str = "auto",
    ) -> None:
        super().__init__(loop=loop)
        self.api_key = api_key
        self.mode = mode
        self.image_format = image_format
        self.latency_s = latency_s
        self.fail_rate = fail_rate
        self.max_n = max_n
        self.fixed_png = fixed_png
        self.chunked_files = chunked_files
        self.gate: threading.Event | None = None
        self._defaults = {
            "api_key": api_key,
            "mode": mode,
            "image_format": image_format,
            "latency_s": latency_s,
            "fail_rate": fail_rate,
            "max_n": max_n,
            "fixed_png": fixed_png,
            "chunked_files": chunked_files,
            "gate": None,
        }
        self.requests: list[RecordedRequest] = []
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._failures: deque[_Failure] = deque()
        self._files: dict[str, tuple[bytes, str]] = {}
        self._file_ids = itertools.count(1)
        self._cache: dict[tuple[int, int, str], tuple[bytes, str]] = {}
        self.app = Starlette(
            routes=[
                Route("/{prefix:path}/images/generations", self._generations, methods=["POST"]),
                Route("/{prefix:path}/images/edits", self._edits, methods=["POST"]),
                Route("/files/{file_id}", self._file, methods=["GET"]),
            ]
        )

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/v1"

    # -- knobs -----------------------------------------------------------------------------
    def fail_next(
        self,
        status: int,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next `times` image requests with `status` and `body` (JSON-encoded
        unless bytes; default: an OpenAI-shaped server error)."""
        if body is None:
            body = openai_error(
                "The server had an error processing your request.", "server_error", None
            )
        with self._lock:
            self._failures.extend(_Failure(status, body, headers or {}) for _ in range(times))

    def reset(self) -> None:
        """Forget requests, queued failures and files; restore the constructor's knobs."""
        with self._lock:
            self.requests.clear()
            self._failures.clear()
            self._files.clear()
            for name, value in self._defaults.items():
                setattr(self, name, value)

    # -- handlers --------------------------------------------------------------------------
    async def _generations(self, request: Request) -> Response:
        raw = await request.body()
        recorded = self._record(request)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        recorded.json = body if isinstance(body, dict) else None
        return await self._answer(request, recorded, recorded.json)

    async def _edits(self, request: Request) -> Response:
        raw = await request.body()
        recorded = self._record(request)
        form, files = _parse_multipart(request.headers.get("content-type", ""), raw)
        recorded.form, recorded.files = form, files
        if not (files.get("image") or files.get("image[]")):
            return _json(
                400,
                openai_error(
                    "Missing required parameter: 'image'.",
                    "invalid_request_error",
                    "missing_required_parameter",
                    "image",
                ),
            )
        fields: dict[str, Any] = dict(form)
        if "n" in fields:
            fields["n"] = int(fields["n"]) if fields["n"].isdigit() else fields["n"]
        return await self._answer(request, recorded, fields)

    async def _file(self, request: Request) -> Response:
        self._record(request)
        entry = self._files.get(request.path_params["file_id"])
        if entry is None:
            return _json(404, openai_error("No such file.", "invalid_request_error", "not_found"))
        data, media_type = entry
        if self.chunked_files:

            async def chunks() -> AsyncIterator[bytes]:
                for start in range(0, len(data), 16384):
                    yield data[start : start + 16384]

            return StreamingResponse(chunks(), media_type=media_type)
        return Response(data, media_type=media_type)

    def _record(self, request: Request) -> RecordedRequest:
        recorded = RecordedRequest(
            method=request.method,
            path=request.url.path,
            query=dict(request.query_params),
            headers={k.lower(): v for k, v in request.headers.items()},
        )
        with self._lock:
            self.requests.append(recorded)
        return recorded

    async def _answer(
        self, request: Request, recorded: RecordedRequest, body: dict[str, Any] | None
    ) -> Response:
        await self._sleep(self.latency_s)
        while self.gate is not None and not self.gate.is_set():
            await self._sleep(0.02)  # returns at once when the server stops
            if self._server is None or self._server.should_exit:
                break
        headers = recorded.headers
        presented = headers.get("authorization", "").removeprefix("Bearer ") or headers.get(
            "api-key", ""
        )
        if presented != self.api_key:
            return _json(
                401,
                openai_error(
                    f"Incorrect API key provided: {presented}. You can find your API key at "
                    "https://platform.openai.com/account/api-keys.",
                    "invalid_request_error",
                    "invalid_api_key",
                ),
            )
        with self._lock:
            failure = self._failures.popleft() if self._failures else None
            random_failure = self.fail_rate > 0 and self._rng.random() < self.fail_rate
        if failure is not None:
            content = (
                failure.body if isinstance(failure.body, bytes) else orjson.dumps(failure.body)
            )
            return Response(content, failure.status, failure.headers, media_type="application/json")
        if random_failure:
            return _json(
                500,
                openai_error(
                    "The server had an error processing your request.", "server_error", None
                ),
            )
        if body is None:
            return _json(
                400,
                openai_error(
                    "We could not parse the JSON body of your request.",
                    "invalid_request_error",
                    None,
                ),
            )
        problem = self._validate(body)
        if problem is not None:
            return problem
        return await self._success(body)

    def _validate(self, body: dict[str, Any]) -> Response | None:
        model, prompt, n = str(body.get("model", "")), body.get("prompt"), body.get("n", 1)
        gpt_image = model.startswith("gpt-image")
        if not isinstance(prompt, str) or not prompt:
            return _bad(
                "Missing required parameter: 'prompt'.", "missing_required_parameter", "prompt"
            )
        if not isinstance(n, int) or not 1 <= n <= self.max_n:
            return _bad(f"Invalid 'n': must be between 1 and {self.max_n}.", "invalid_value", "n")
        if gpt_image and "response_format" in body:
            return _bad(
                "Unknown parameter: 'response_format'.", "unknown_parameter", "response_format"
            )
        if not gpt_image and "output_format" in body:
            return _bad("Unknown parameter: 'output_format'.", "unknown_parameter", "output_format")
        if _size(body.get("size")) is None:
            return _bad(f"Invalid size '{body.get('size')}'.", "invalid_value", "size")
        if "BLOCKME" in prompt:
            if gpt_image:
                return _json(
                    400,
                    openai_error(
                        "Your request was rejected by the safety system. If you believe this is an "
                        "error, contact us at help.openai.com and include the request ID req_mock. "
                        "safety_violations=[violence].",
                        "image_generation_user_error",
                        "moderation_blocked",
                    ),
                )
            return _bad(
                "Your request was rejected as a result of our safety system.",
                "content_policy_violation",
                None,
            )
        return None

    async def _success(self, body: dict[str, Any]) -> Response:
        model, prompt, n = str(body["model"]), str(body["prompt"]), int(body.get("n", 1))
        gpt_image = model.startswith("gpt-image")
        width, height = _size(body.get("size")) or (1024, 1024)
        requested = body.get("output_format") if gpt_image else None
        fmt: ImageFormat = self.image_format or (requested if requested in _PIL_NAMES else "png")
        as_url = self.mode == "url" or (not gpt_image and body.get("response_format") != "b64_json")
        data: list[dict[str, Any]] = []
        # like GPT Image: a transparent background is an alpha channel (not in JPEG)
        transparent = gpt_image and body.get("background") == "transparent" and fmt != "jpeg"
        for index in range(n):
            image, b64 = await self._image(
                width, height, fmt, f"{prompt}\x00{index}\x00{time.time_ns()}", transparent
            )
            item: dict[str, Any] = {}
            if as_url:
                file_id = f"img-{next(self._file_ids)}"
                self._files[file_id] = (image, f"image/{fmt}")
                item["url"] = f"{self.root_url}/files/{file_id}"
            else:
                item["b64_json"] = b64
            if model == "dall-e-3":
                item["revised_prompt"] = f"A detailed rendering of: {prompt}"
            data.append(item)
        answer: dict[str, Any] = {"created": int(time.time()), "data": data}
        if gpt_image:
            quality = str(body.get("quality") or "auto")
            per_image = _TOKENS_PER_IMAGE.get(quality, 1056) * width * height // (1024 * 1024)
            text_tokens = max(1, len(prompt.split()))
            background = body.get("background") or "auto"
            answer.update(
                size=f"{width}x{height}",
                # like OpenAI, the answer names what `auto` chose
                quality=AUTO_QUALITY if quality == "auto" else quality,
                output_format=fmt,
                background="opaque" if background == "auto" else background,
                usage={
                    "input_tokens": text_tokens,
                    "output_tokens": per_image * n,
                    "total_tokens": text_tokens + per_image * n,
                    "input_tokens_details": {"text_tokens": text_tokens, "image_tokens": 0},
                    "output_tokens_details": {"image_tokens": per_image * n, "text_tokens": 0},
                },
            )
        return Response(orjson.dumps(answer), media_type="application/json")

    async def _image(
        self, width: int, height: int, fmt: str, key: str, transparent: bool = False
    ) -> tuple[bytes, str]:
        if self.fixed_png and not transparent:
            cached = self._cache.get((width, height, fmt))
            if cached is None:
                cached = await asyncio.to_thread(_render, width, height, fmt, "fixed")
                self._cache[(width, height, fmt)] = cached
            return cached
        return await asyncio.to_thread(_render, width, height, fmt, key, transparent)


def _render(
    width: int, height: int, fmt: str, key: str, transparent: bool = False
) -> tuple[bytes, str]:
    digest = hashlib.sha256(key.encode()).digest()
    if transparent:  # a clear background behind the (opaque) subject
        image = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    else:
        image = Image.new("RGB", (width, height), (digest[0], digest[1], digest[2]))
    image.paste((digest[3], digest[4], digest[5]), (0, 0, max(1, width // 2), max(1, height // 2)))
    buffer = io.BytesIO()
    image.save(buffer, _PIL_NAMES[fmt], **({"compress_level": 1} if fmt == "png" else {}))
    data = buffer.getvalue()
    return data, base64.b64encode(data).decode("ascii")


def _size(value: Any) -> tuple[int, int] | None:
    if value is None or value == "auto":
        return 1024, 1024
    if not isinstance(value, str):
        return None
    width, sep, height = value.partition("x")
    if not (sep and width.isdigit() and height.isdigit()) or not (
        0 < int(width) <= 8192 and 0 < int(height) <= 8192
    ):
        return None
    return int(width), int(height)


def _parse_multipart(
    content_type: str, raw: bytes
) -> tuple[dict[str, str], dict[str, list[bytes]]]:
    # The stdlib MIME parser reads multipart/form-data well enough for a mock (no extra deps).
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + raw
    )
    form: dict[str, str] = {}
    files: dict[str, list[bytes]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if not isinstance(name, str) or not isinstance(payload, bytes):
            continue
        if part.get_filename() is not None:
            files.setdefault(name, []).append(payload)
        else:
            form[name] = payload.decode()
    return form, files


def _bad(message: str, code: str | None, param: str | None) -> Response:
    return _json(400, openai_error(message, "invalid_request_error", code, param))


def _json(status: int, body: dict[str, Any]) -> Response:
    return Response(orjson.dumps(body), status, media_type="application/json")
