"""A real HTTP server speaking Replicate's predictions API, for adapter tests.

    with MockReplicateUpstream(api_key="r8_mock") as upstream:
        provider = ProviderConfig(adapter="replicate", base_url=upstream.base_url, api_key=...)
        ...                                   # upstream.requests: what the gateway sent

A Starlette app served by uvicorn in a background thread on 127.0.0.1 (ephemeral port):

    POST /v1/models/{owner}/{name}/predictions   {"input": {...}}          official models
    POST /v1/predictions                         {"version": id, "input"}  pinned versions
    GET  /v1/predictions/{id}                    the prediction, as it is now
    POST /v1/predictions/{id}/cancel             cancels a running prediction
    GET  /files/{id}                             outputs (a replicate.delivery stand-in, no auth)

Contract followed (sources: Replicate's HTTP API reference, `models.predictions.create`,
`predictions.create`, `predictions.get`, `predictions.cancel`, https://replicate.com/docs/
reference/http; "Create a prediction", https://replicate.com/docs/topics/predictions/
create-a-prediction (sync mode: `Prefer: wait[=n]` holds the request up to n seconds, then
answers the prediction as it is, `starting`/`processing` if unfinished; file outputs may come
while the status is still `processing`); the official client replicate/replicate-python,
`replicate/prediction.py` (Prediction fields, `urls.get`/`urls.cancel`, statuses
starting/processing/succeeded/failed/canceled, `Prefer: wait=n`) and `replicate/exceptions.py`
(errors are RFC 7807 problem bodies: `type`, `title`, `status`, `detail`); model output and
NSFW messages as replicate/cog-flux `predict.py` produces them, and Replicate's E005
"flagged as sensitive" failures):
- Auth: `Authorization: Bearer <token>`, else 401 `{"title": "Unauthenticated", ...}`.
- Input validation (a flux-schnell-like schema): `prompt` required, `num_outputs` 1-4,
  `aspect_ratio` one of ASPECT_RATIOS (`custom` uses `width`/`height`), `output_format`
  webp/jpg/png (default webp); otherwise 422 "Input validation failed". Unknown inputs are
  ignored, as Cog does.
- A prompt containing `NSFWME` fails like cog-flux's safety checker, `SENSITIVEME` like
  Replicate's E005, `FAILME` with a model crash; the prediction `status` is `failed`.
- Outputs: a list of URLs (`output_list=True`, flux-schnell) or one URL (flux-1.1-pro).

Knobs (attributes): `processing_polls` (GETs answered `processing` before the result; with
0 and `Prefer: wait` the create answer is already `succeeded`; None = never finishes),
`early_output` (the sync answer carries the output while still `processing`),
`output_list`, `long_side` (pixels of the long side for aspect-ratio sizing),
`fail_next(status, body, headers=..., method=...)` (the next API requests, or the next
ones of that method, answer that).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import itertools
import threading
from dataclasses import dataclass, field
from typing import Any

import orjson
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.mocks.server import MockServer

ASPECT_RATIOS = ("1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21")
_PIL_NAMES = {"png": "PNG", "jpg": "JPEG", "webp": "WEBP"}


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    json: dict[str, Any] | None = None


@dataclass
class _Failure:
    status: int
    body: Any
    headers: dict[str, str]
    method: str | None


@dataclass
class _Job:
    id: str
    model: str
    input: dict[str, Any]
    status: str = "starting"
    polls: int = 0
    output: Any = None
    error: str | None = None
    files: list[str] = field(default_factory=list)


def problem(status: int, title: str, detail: str) -> dict[str, Any]:
    return {"type": None, "title": title, "status": status, "detail": detail}


class MockReplicateUpstream(MockServer):
    label = "Replicate"

    def __init__(self, *, api_key: str = "r8_mock-upstream-token") -> None:
        super().__init__()
        self.api_key = api_key
        self.processing_polls: int | None = 0
        self.early_output = False
        self.output_list = True
        self.long_side = 256
        self.requests: list[RecordedRequest] = []
        self.jobs: dict[str, _Job] = {}
        self._failures: list[_Failure] = []
        self._files: dict[str, tuple[bytes, str]] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.app = Starlette(
            routes=[
                Route("/v1/models/{owner}/{name}/predictions", self._create, methods=["POST"]),
                Route("/v1/predictions", self._create, methods=["POST"]),
                Route("/v1/predictions/{id}", self._get, methods=["GET"]),
                Route("/v1/predictions/{id}/cancel", self._cancel, methods=["POST"]),
                Route("/files/{file_id}", self._file, methods=["GET"]),
            ]
        )

    # -- knobs -----------------------------------------------------------------------------
    def fail_next(
        self,
        status: int,
        body: Any,
        *,
        headers: dict[str, str] | None = None,
        times: int = 1,
        method: str | None = None,
    ) -> None:
        """Answer the next `times` API requests (only `method` ones, if given) this way."""
        with self._lock:
            self._failures.extend(
                _Failure(status, body, headers or {}, method) for _ in range(times)
            )

    def reset(self) -> None:
        with self._lock:
            self.processing_polls, self.early_output, self.output_list = 0, False, True
            self.long_side = 256
            self.requests.clear()
            self.jobs.clear()
            self._failures.clear()
            self._files.clear()

    def api_requests(self, method: str, prefix: str = "/v1/") -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == method and r.path.startswith(prefix)]

    # -- handlers --------------------------------------------------------------------------
    async def _create(self, request: Request) -> Response:
        recorded, refusal = await self._admit(request)
        if refusal is not None:
            return refusal
        body = recorded.json or {}
        owner, name = request.path_params.get("owner"), request.path_params.get("name")
        if owner is None and not isinstance(body.get("version"), str):
            return _json(422, problem(422, "Invalid version", "version is required"))
        model = f"{owner}/{name}" if owner else str(body["version"])
        payload = body.get("input")
        invalid = _validate(payload)
        if invalid is not None:
            return _json(422, problem(422, "Input validation failed", invalid))
        assert isinstance(payload, dict)
        job = _Job(id=f"pred{next(self._ids):04d}", model=model, input=payload)
        self.jobs[job.id] = job
        if recorded.headers.get("prefer", "").startswith("wait"):
            if self.processing_polls == 0:
                await self._finish(job)
            elif self.early_output:
                await self._finish(job)
                if job.status == "succeeded":
                    job.status = "processing"
        return _json(201, self._view(job))

    async def _get(self, request: Request) -> Response:
        _, refusal = await self._admit(request)
        if refusal is not None:
            return refusal
        job = self.jobs.get(request.path_params["id"])
        if job is None:
            return _json(404, problem(404, "Not found", "Prediction not found"))
        if job.status in ("starting", "processing"):
            job.polls += 1
            if self.processing_polls is not None and job.polls > self.processing_polls:
                await self._finish(job)
            else:
                job.status = "processing"
        return _json(200, self._view(job))

    async def _cancel(self, request: Request) -> Response:
        _, refusal = await self._admit(request)
        if refusal is not None:
            return refusal
        job = self.jobs.get(request.path_params["id"])
        if job is None:
            return _json(404, problem(404, "Not found", "Prediction not found"))
        if job.status in ("starting", "processing"):
            job.status = "canceled"
        return _json(200, self._view(job))

    async def _file(self, request: Request) -> Response:
        self._record(request, None)
        entry = self._files.get(request.path_params["file_id"])
        if entry is None:
            return Response(b"not found", 404)
        return Response(entry[0], media_type=entry[1])

    async def _admit(self, request: Request) -> tuple[RecordedRequest, Response | None]:
        raw = await request.body()
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = None
        recorded = self._record(request, body if isinstance(body, dict) else None)
        if recorded.headers.get("authorization") != f"Bearer {self.api_key}":
            detail = "You did not pass a valid authentication token"
            return recorded, _json(401, problem(401, "Unauthenticated", detail))
        with self._lock:
            failure = next((f for f in self._failures if f.method in (None, request.method)), None)
            if failure is not None:
                self._failures.remove(failure)
        if failure is not None:
            body = failure.body if isinstance(failure.body, bytes) else orjson.dumps(failure.body)
            return recorded, Response(
                body, failure.status, failure.headers, media_type="application/json"
            )
        return recorded, None

    def _record(self, request: Request, body: dict[str, Any] | None) -> RecordedRequest:
        recorded = RecordedRequest(
            request.method, request.url.path, {k.lower(): v for k, v in request.headers.items()}
        )
        recorded.json = body
        with self._lock:
            self.requests.append(recorded)
        return recorded

    async def _finish(self, job: _Job) -> None:
        prompt = str(job.input["prompt"])
        for marker, message in (
            ("NSFWME", "All generated images contained NSFW content. Try a different prompt."),
            ("SENSITIVEME", "The input or output was flagged as sensitive. Please try again "
             "with different inputs. (E005)"),
            ("FAILME", "CUDA out of memory. Tried to allocate 20.00 MiB"),
        ):  # fmt: skip
            if marker in prompt:
                job.status, job.error = "failed", message
                return
        fmt = str(job.input.get("output_format", "webp"))
        width, height = self._dimensions(job.input)
        urls = []
        for index in range(int(job.input.get("num_outputs", 1))):
            key = f"{job.id}-{index}"
            data = await asyncio.to_thread(_render, width, height, fmt, f"{prompt}{key}")
            self._files[key] = (data, f"image/{fmt}")
            urls.append(f"{self.base_url}/files/{key}")
        job.status = "succeeded"
        job.output = urls if self.output_list else urls[0]

    def _dimensions(self, payload: dict[str, Any]) -> tuple[int, int]:
        ratio = str(payload.get("aspect_ratio", "1:1"))
        if ratio == "custom":
            return int(payload.get("width", 1024)), int(payload.get("height", 1024))
        w, h = (int(part) for part in ratio.split(":"))
        scale = self.long_side / max(w, h)
        return round(w * scale), round(h * scale)

    def _view(self, job: _Job) -> dict[str, Any]:
        get = f"{self.base_url}/v1/predictions/{job.id}"
        done = job.status in ("succeeded", "failed", "canceled")
        return {
            "id": job.id,
            "model": job.model,
            "version": "hidden",
            "input": job.input,
            "logs": "",
            "output": job.output,
            "data_removed": False,
            "error": job.error,
            "status": job.status,
            "created_at": "2026-11-23T22:00:00.000Z",
            "completed_at": "2026-11-23T22:00:01.000Z" if done else None,
            "urls": {
                "get": get,
                "cancel": f"{get}/cancel",
                "web": f"https://replicate.com/p/{job.id}",
            },
            "metrics": {"predict_time": 0.01} if done else {},
        }


def _validate(payload: Any) -> str | None:
    if not isinstance(payload, dict):
        return "input is required"
    if not isinstance(payload.get("prompt"), str) or not payload["prompt"]:
        return "- input: prompt is required"
    n = payload.get("num_outputs", 1)
    if not isinstance(n, int) or not 1 <= n <= 4:
        return "- input.num_outputs: Must be less than or equal to 4"
    ratio = payload.get("aspect_ratio", "1:1")
    if ratio != "custom" and ratio not in ASPECT_RATIOS:
        return f"- input.aspect_ratio: aspect_ratio must be one of: {', '.join(ASPECT_RATIOS)}"
    if payload.get("output_format", "webp") not in _PIL_NAMES:
        return '- input.output_format: output_format must be one of: "webp", "jpg", "png"'
    return None


def _render(width: int, height: int, fmt: str, key: str) -> bytes:
    digest = hashlib.sha256(key.encode()).digest()
    image = Image.new("RGB", (width, height), (digest[0], digest[1], digest[2]))
    buffer = io.BytesIO()
    image.save(buffer, _PIL_NAMES[fmt])
    return buffer.getvalue()


def _json(status: int, body: dict[str, Any]) -> Response:
    return Response(orjson.dumps(body), status, media_type="application/json")
