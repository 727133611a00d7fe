"""A real HTTP server speaking the Black Forest Labs (FLUX) API, for adapter tests.

    with MockBflUpstream(api_key="bfl-key") as upstream:
        provider = ProviderConfig(adapter="bfl", base_url=upstream.base_url, api_key=...)
        ...                                   # upstream.requests: what the gateway sent

A Starlette app served by uvicorn in a background thread on 127.0.0.1 (ephemeral port):

    POST /v1/{model}           submit a job (JSON) -> {"id", "polling_url"}
    GET  /v1/get_result?id=    poll -> {"id", "status", "result": {"sample", ...}, "details"}
    GET  /delivery/{id}        the signed result URL (a stand-in for BFL's delivery CDN)

Contract followed (sources: the BFL API reference, docs.bfl.ai "Using the API" / "Integration
guidelines"; BFL's own agent skills, black-forest-labs/skills `skills/bfl-api/SKILL.md`,
`references/endpoints.md` (paths, `x-key`, request fields, `input_image`..`input_image_8`,
Pending/Ready/Error states, 400/401/402/429/500) and `references/rate-limiting.md` (429 body
`{"error", "message", "retry_after"}`); the official black-forest-labs/flux `src/flux/api.py`
(FLUX1.1 [pro] width/height multiples of 32 in 256..1440, FastAPI error bodies
`{"detail": str | [{"loc", "msg", "type"}]}`, non-Ready/non-Pending statuses are failures); the
full status enum `Task not found | Pending | Request Moderated | Content Moderated | Ready |
Error` as generated from BFL's OpenAPI document in public SDKs):
- Auth: `x-key: <key>` on submit and poll, else 401 `{"detail": ...}`. Unlike BFL, the
  message echoes the presented key, so tests prove the gateway never passes it on.
- Sizing: pixel endpoints validate `width`/`height` (32-grid in 256..1440 for flux-pro-1.1,
  16-grid from 64 for flux-2-*), else 422 with a FastAPI validation body; aspect endpoints
  (`flux-pro-1.1-ultra`, `flux-kontext-*`) take `aspect_ratio` "W:H" between 21:9 and 9:21
  (rendered with a 1 MP area). `output_format` is jpeg (default) or png.
- Moderation: a prompt containing `BLOCKME` ends as `Request Moderated`, `NSFWOUT` as
  `Content Moderated` (with `details: {"Moderation Reasons": [...]}`), `FAILME` as `Error`.
- The delivery URL carries a signature query and refuses any request bearing `x-key`
  (403), so a test fails if the gateway ever sends its key there.

Knobs (attributes, changeable while running): `pending_polls` (Pending answers before the
job settles), `fail_next(status, body, headers=, times=)` (the next submissions),
`foreign_polling_host` (answer polling URLs on `localhost` instead of 127.0.0.1: the same
server under another host name), `image_bytes` (pad delivered images: size limits),
`poll_failures` (the next polls answer 502).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import itertools
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import orjson
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.mocks.server import MockServer

_ASPECT_ENDPOINTS = ("flux-pro-1.1-ultra", "flux-kontext")
_PIL_NAMES = {"png": "PNG", "jpeg": "JPEG"}


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: dict[str, Any] | None = None


@dataclass
class _Job:
    model: str
    body: dict[str, Any]
    width: int
    height: int
    polls: int = 0
    image: bytes | None = None


@dataclass
class _Failure:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


class MockBflUpstream(MockServer):
    label = "BFL"

    def __init__(self, *, api_key: str = "bfl-mock-key") -> None:
        super().__init__()
        self.api_key = api_key
        self.pending_polls = 1
        self.foreign_polling_host = False
        self.image_bytes = 0
        self.poll_failures = 0
        self.requests: list[RecordedRequest] = []
        self._jobs: dict[str, _Job] = {}
        self._ids = itertools.count(1)
        self._failures: deque[_Failure] = deque()
        self._lock = threading.Lock()
        self.app = Starlette(
            routes=[
                Route("/v1/get_result", self._get_result, methods=["GET"]),
                Route("/v1/{model}", self._submit, methods=["POST"]),
                Route("/delivery/{job_id}", self._delivery, methods=["GET"]),
            ]
        )

    # -- knobs -----------------------------------------------------------------------------
    def fail_next(
        self, status: int, body: Any, *, headers: dict[str, str] | None = None, times: int = 1
    ) -> None:
        with self._lock:
            self._failures.extend(_Failure(status, body, headers or {}) for _ in range(times))

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self._jobs.clear()
            self._failures.clear()
        self.pending_polls = 1
        self.foreign_polling_host = False
        self.image_bytes = 0
        self.poll_failures = 0

    def submissions(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == "POST"]

    # -- handlers --------------------------------------------------------------------------
    async def _submit(self, request: Request) -> Response:
        recorded = self._record(request)
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            body = None
        recorded.json = body if isinstance(body, dict) else None
        if (denied := self._auth(recorded)) is not None:
            return denied
        with self._lock:
            failure = self._failures.popleft() if self._failures else None
        if failure is not None:
            return _json(failure.status, failure.body, failure.headers)
        if recorded.json is None:
            return _invalid([], "Input should be a valid dictionary", "dict_type")
        model = request.path_params["model"]
        size = _validate(model, recorded.json)
        if isinstance(size, Response):
            return size
        job_id = f"job-{next(self._ids)}"
        self._jobs[job_id] = _Job(model, recorded.json, *size)
        host = "localhost" if self.foreign_polling_host else "127.0.0.1"
        polling_url = f"http://{host}:{self.port}/v1/get_result?id={job_id}"
        return _json(200, {"id": job_id, "polling_url": polling_url})

    async def _get_result(self, request: Request) -> Response:
        recorded = self._record(request)
        if (denied := self._auth(recorded)) is not None:
            return denied
        with self._lock:
            failing, self.poll_failures = self.poll_failures > 0, max(0, self.poll_failures - 1)
        if failing:
            return _json(502, {"detail": "Bad Gateway"})
        job_id = request.query_params.get("id", "")
        job = self._jobs.get(job_id)
        if job is None:
            return _json(200, _status(job_id, "Task not found"))
        job.polls += 1
        if job.polls <= self.pending_polls:
            return _json(200, {**_status(job_id, "Pending"), "progress": 0.5})
        prompt = str(job.body.get("prompt", ""))
        if "BLOCKME" in prompt:
            return _json(200, _status(job_id, "Request Moderated"))
        if "NSFWOUT" in prompt:
            reasons = {"Moderation Reasons": ["NSFW"]}
            return _json(200, {**_status(job_id, "Content Moderated"), "details": reasons})
        if "FAILME" in prompt:
            return _json(200, {**_status(job_id, "Error"), "details": "generation crashed"})
        if job.image is None:
            fmt = str(job.body.get("output_format", "jpeg"))
            job.image = await asyncio.to_thread(_render, job.width, job.height, fmt, job_id)
        sample = f"{self.base_url}/delivery/{job_id}?se=2026-11-24T00%3A00Z&sig=c2lnbmVk"
        result = {"sample": sample, "prompt": prompt, "seed": job.body.get("seed", 42)}
        return _json(200, {**_status(job_id, "Ready"), "result": result})

    async def _delivery(self, request: Request) -> Response:
        recorded = self._record(request)
        if "x-key" in recorded.headers:
            return Response(b"<Error>AuthenticationFailed</Error>", 403)
        job = self._jobs.get(request.path_params["job_id"])
        if job is None or job.image is None or "sig" not in recorded.query:
            return Response(b"<Error>BlobNotFound</Error>", 404)
        fmt = str(job.body.get("output_format", "jpeg"))
        return Response(job.image + b"\0" * self.image_bytes, media_type=f"image/{fmt}")

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

    def _auth(self, recorded: RecordedRequest) -> Response | None:
        presented = recorded.headers.get("x-key", "")
        if presented == self.api_key:
            return None
        return _json(401, {"detail": f"Invalid API key: {presented}"})


def _status(job_id: str, status: str) -> dict[str, Any]:
    return {"id": job_id, "status": status, "result": None, "progress": None, "details": None}


def _validate(model: str, body: dict[str, Any]) -> tuple[int, int] | Response:
    """The (width, height) to render, or BFL's 422 for a field it would refuse."""
    if not isinstance(body.get("prompt"), str):
        return _invalid(["body", "prompt"], "Field required", "missing")
    if body.get("output_format", "jpeg") not in _PIL_NAMES:
        return _invalid(["body", "output_format"], "Input should be 'jpeg' or 'png'", "enum")
    if model.startswith(_ASPECT_ENDPOINTS):
        w, _, h = str(body.get("aspect_ratio", "16:9" if "ultra" in model else "1:1")).partition(
            ":"
        )
        if not (w.isdigit() and h.isdigit() and 9 / 21 <= int(w) / max(1, int(h)) <= 21 / 9):
            return _invalid(
                ["body", "aspect_ratio"],
                "Aspect ratio must be between 21:9 and 9:21",
                "value_error",
            )
        scale = (1024 * 1024 / (int(w) * int(h))) ** 0.5
        return max(16, round(int(w) * scale / 16) * 16), max(16, round(int(h) * scale / 16) * 16)
    multiple, low, high = (32, 256, 1440) if model == "flux-pro-1.1" else (16, 64, 4096)
    dims = (body.get("width", 1024), body.get("height", 768))
    for name, value in zip(("width", "height"), dims, strict=True):
        if not isinstance(value, int) or value % multiple or not low <= value <= high:
            message = f"Input should be a multiple of {multiple} between {low} and {high}"
            return _invalid(["body", name], message, "value_error")
    return dims[0], dims[1]


def _invalid(loc: list[str], msg: str, type_: str) -> Response:
    return _json(422, {"detail": [{"loc": loc, "msg": msg, "type": type_}]})


def _render(width: int, height: int, fmt: str, key: str) -> bytes:
    digest = hashlib.sha256(key.encode()).digest()
    image = Image.new("RGB", (width, height), (digest[0], digest[1], digest[2]))
    buffer = io.BytesIO()
    image.save(buffer, _PIL_NAMES[fmt])
    return buffer.getvalue()


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return Response(content, status, headers, media_type="application/json")
