"""A real HTTP server speaking fal.ai's Queue API, for adapter tests.

    with MockFalUpstream(api_key="fal-key") as fal:
        provider = ProviderConfig(adapter="fal", base_url=fal.base_url, api_key=...)
        ...                                   # fal.requests: what the gateway sent

A Starlette app served by uvicorn in a background thread on 127.0.0.1 (ephemeral port):

    POST /{model_id}                                  submit: the model's JSON input
    GET  /{owner}/{alias}/requests/{id}/status        {"status", "queue_position", ...}
    GET  /{owner}/{alias}/requests/{id}               the model's output (or its error)
    PUT  /{owner}/{alias}/requests/{id}/cancel        {"status": "CANCELLATION_REQUESTED"}
    GET  /files/{id}                                  result images (a CDN stand-in)

Contract followed (sources: fal's Queue API docs, docs.fal.ai/model-apis/model-endpoints/queue
and docs.fal.ai/documentation/model-apis/inference/queue; the official Python client,
fal-ai/fal `projects/fal_client/src/fal_client/client.py`: `submit`, `AsyncRequestHandle`
(`status`, `get`, `cancel` = PUT, `from_request_id` URLs on owner/alias), `_raise_for_status`
reading `detail`; model errors, fal.ai/docs/errors: `{"detail": [{loc, msg, type, url,
input}]}` with `type: content_policy_violation` as 422; model schemas, e.g.
fal.ai/models/fal-ai/flux/dev/api: `prompt`, `image_size` (named enum or {width, height},
default landscape_4_3), `num_images`, `seed`, `output_format` (jpeg|png),
`enable_safety_checker`, `sync_mode`; output `{images: [{url, width, height,
content_type}], seed, has_nsfw_concepts, prompt, timings}`):
- Auth: `Authorization: Key <key>`, otherwise 401 `{"detail": ...}`. Unlike fal, the message
  echoes the presented key, so tests prove the gateway never passes it on.
- A job answers IN_QUEUE for `queued_polls` status calls, then IN_PROGRESS for
  `running_polls`, then COMPLETED (`stall=True`: never completes).
- Input problems (bad `num_images`, `image_size`, `output_format`, missing `prompt`) are
  422 validation details at submission. A prompt containing `BLOCKME` completes, but its
  result is a 422 `content_policy_violation`, as fal reports checker refusals.
- `nsfw_indexes`: the images flagged in `has_nsfw_concepts`; `sync_mode: true` in the input
  (or the `data_uris` knob) answers data URIs instead of file URLs.
- Endpoints ending in `/edit` require `image_urls` (list) or `image_url`: data URIs are
  decoded and recorded in `RecordedRequest.images`.

Knobs (attributes): `queued_polls`, `running_polls`, `stall`, `nsfw_indexes`, `data_uris`,
`fail_next(status, body, headers=...)` (next submission), `fail_status(status, times=)`
(the next status polls answer an nginx error page), `fail_result(status, body)`
(the result of the next completed job), `job_status` (report this status, e.g. `FAILED`,
instead of COMPLETED), `foreign_urls` (answer status/response URLs on another host).
"""

from __future__ import annotations

import base64
import hashlib
import io
import itertools
import threading
import time
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

NAMED_SIZES = {
    "square_hd": (1024, 1024),
    "square": (512, 512),
    "portrait_4_3": (768, 1024),
    "portrait_16_9": (576, 1024),
    "landscape_4_3": (1024, 768),
    "landscape_16_9": (1024, 576),
}
_PIL = {"png": "PNG", "jpeg": "JPEG"}


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    json: dict[str, Any] | None = None
    #: decoded reference images of an edit submission
    images: list[bytes] = field(default_factory=list)


@dataclass
class _Job:
    model_id: str
    input: dict[str, Any]
    polls: int = 0
    cancelled: bool = False
    result: tuple[int, Any] | None = None


def validation_error(loc: list[str], msg: str, type_: str) -> dict[str, Any]:
    return {"detail": [{"loc": ["body", *loc], "msg": msg, "type": type_}]}


class MockFalUpstream(MockServer):
    label = "fal"

    def __init__(self, *, api_key: str = "fal-mock-key") -> None:
        super().__init__()
        self.api_key = api_key
        self.requests: list[RecordedRequest] = []
        self.jobs: dict[str, _Job] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._files: dict[str, tuple[bytes, str]] = {}
        self._submit_failures: deque[tuple[int, Any, dict[str, str]]] = deque()
        self._result_failures: deque[tuple[int, Any]] = deque()
        self._status_failures: deque[int] = deque()
        self._set_defaults()
        jobs = "/{owner}/{alias}/requests/{request_id}"
        self.app = Starlette(
            routes=[
                Route("/files/{file_id}", self._file, methods=["GET"]),
                Route(jobs + "/status", self._status, methods=["GET"]),
                Route(jobs + "/cancel", self._cancel, methods=["PUT"]),
                Route(jobs, self._result, methods=["GET"]),
                Route("/{model_id:path}", self._submit, methods=["POST"]),
            ]
        )

    def _set_defaults(self) -> None:
        self.queued_polls = 1
        self.running_polls = 1
        self.stall = False
        self.nsfw_indexes: set[int] = set()
        self.data_uris = False
        self.job_status = "COMPLETED"
        self.foreign_urls = False

    # -- knobs -----------------------------------------------------------------------------
    def fail_next(self, status: int, body: Any, *, headers: dict[str, str] | None = None) -> None:
        with self._lock:
            self._submit_failures.append((status, body, headers or {}))

    def fail_status(self, status: int, *, times: int = 1) -> None:
        """Answer the next `times` status polls with `status` (an ingress-style error)."""
        with self._lock:
            self._status_failures.extend([status] * times)

    def fail_result(self, status: int, body: Any) -> None:
        with self._lock:
            self._result_failures.append((status, body))

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.jobs.clear()
            self._files.clear()
            self._submit_failures.clear()
            self._result_failures.clear()
            self._status_failures.clear()
            self._ids = itertools.count(1)
            self._set_defaults()

    def by_method(self, method: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == method]

    # -- handlers --------------------------------------------------------------------------
    async def _submit(self, request: Request) -> Response:
        recorded = self._record(request)
        denied = self._check_auth(recorded)
        if denied is not None:
            return denied
        with self._lock:
            failure = self._submit_failures.popleft() if self._submit_failures else None
        if failure is not None:
            status, body, headers = failure
            return Response(orjson.dumps(body), status, headers, media_type="application/json")
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            return _json(422, validation_error([], "Input should be an object", "model_type"))
        recorded.json = body
        model_id = request.path_params["model_id"]
        problem = _validate(model_id, body, recorded)
        if problem is not None:
            return problem
        request_id = f"req-{next(self._ids):04d}"
        self.jobs[request_id] = _Job(model_id, body)
        owner_alias = "/".join(model_id.split("/")[:2])
        root = "http://elsewhere.invalid" if self.foreign_urls else self.base_url
        base = f"{root}/{owner_alias}/requests/{request_id}"
        return _json(
            200,
            {
                "request_id": request_id,
                "response_url": base,
                "status_url": f"{base}/status",
                "cancel_url": f"{base}/cancel",
            },
        )

    async def _status(self, request: Request) -> Response:
        recorded = self._record(request)
        job, problem = self._job(request, recorded)
        if job is None:
            return problem
        with self._lock:
            failure = self._status_failures.popleft() if self._status_failures else None
        if failure is not None:
            return Response(b"<html>502 Bad Gateway - nginx</html>", failure)
        job.polls += 1
        if self.stall or job.polls <= self.queued_polls:
            status: dict[str, Any] = {"status": "IN_QUEUE", "queue_position": 0}
        elif job.polls <= self.queued_polls + self.running_polls:
            status = {"status": "IN_PROGRESS", "logs": None}
        else:
            status = {"status": self.job_status, "logs": None, "metrics": {}}
        status["response_url"] = f"{self.base_url}{request.url.path.removesuffix('/status')}"
        return _json(200, status)

    async def _cancel(self, request: Request) -> Response:
        recorded = self._record(request)
        job, problem = self._job(request, recorded)
        if job is None:
            return problem
        job.cancelled = True
        return _json(202, {"status": "CANCELLATION_REQUESTED"})

    async def _result(self, request: Request) -> Response:
        recorded = self._record(request)
        job, problem = self._job(request, recorded)
        if job is None:
            return problem
        if job.result is None:
            with self._lock:
                failure = self._result_failures.popleft() if self._result_failures else None
            job.result = failure or self._output(job)
        status, body = job.result
        return _json(status, body)

    async def _file(self, request: Request) -> Response:
        self._record(request)
        entry = self._files.get(request.path_params["file_id"])
        if entry is None:
            return _json(404, {"detail": "File not found"})
        return Response(entry[0], media_type=entry[1])

    # -- helpers ---------------------------------------------------------------------------
    def _record(self, request: Request) -> RecordedRequest:
        recorded = RecordedRequest(
            request.method, request.url.path, {k.lower(): v for k, v in request.headers.items()}
        )
        with self._lock:
            self.requests.append(recorded)
        return recorded

    def _check_auth(self, recorded: RecordedRequest) -> Response | None:
        presented = recorded.headers.get("authorization", "")
        if presented == f"Key {self.api_key}":
            return None
        return _json(401, {"detail": f"Invalid credentials: {presented!r} is not a valid key"})

    def _job(self, request: Request, recorded: RecordedRequest) -> tuple[_Job | None, Response]:
        denied = self._check_auth(recorded)
        if denied is not None:
            return None, denied
        job = self.jobs.get(request.path_params["request_id"])
        if job is None:
            return None, _json(404, {"detail": "Request not found"})
        return job, Response()

    def _output(self, job: _Job) -> tuple[int, Any]:
        body = job.input
        if "BLOCKME" in str(body["prompt"]):
            return 422, {
                "detail": [
                    {
                        "loc": ["body", "prompt"],
                        "msg": "The content was flagged by a content checker.",
                        "type": "content_policy_violation",
                        "url": "https://docs.fal.ai/errors#content_policy_violation",
                        "input": body["prompt"],
                    }
                ]
            }
        width, height = _dimensions(body.get("image_size", "landscape_4_3"))
        fmt = str(body.get("output_format", "jpeg"))
        inline = self.data_uris or body.get("sync_mode") is True
        images = []
        for index in range(int(body.get("num_images", 1))):
            data = _render(width, height, fmt, f"{body['prompt']}\x00{index}\x00{time.time_ns()}")
            if inline:
                url = f"data:image/{fmt};base64,{base64.b64encode(data).decode()}"
            else:
                file_id = f"f{next(self._ids)}.{fmt}"
                self._files[file_id] = (data, f"image/{fmt}")
                url = f"{self.base_url}/files/{file_id}"
            images.append(
                {"url": url, "width": width, "height": height, "content_type": f"image/{fmt}"}
            )
        return 200, {
            "images": images,
            "seed": body.get("seed", 42),
            "prompt": body["prompt"],
            "timings": {"inference": 0.01},
            "has_nsfw_concepts": [i in self.nsfw_indexes for i in range(len(images))],
        }


def _validate(model_id: str, body: dict[str, Any], recorded: RecordedRequest) -> Response | None:
    if not isinstance(body.get("prompt"), str) or not body["prompt"]:
        return _json(422, validation_error(["prompt"], "Field required", "missing"))
    num = body.get("num_images", 1)
    if not isinstance(num, int) or not 1 <= num <= 4:
        return _json(
            422, validation_error(["num_images"], "Input should be between 1 and 4", "range")
        )
    if _dimensions(body.get("image_size", "landscape_4_3")) is None:
        return _json(422, validation_error(["image_size"], "Invalid image size", "value_error"))
    if body.get("output_format", "jpeg") not in _PIL:
        return _json(
            422,
            validation_error(["output_format"], "Input should be 'jpeg' or 'png'", "enum"),
        )
    if model_id.endswith("/edit"):
        refs = body.get("image_urls", [body["image_url"]] if "image_url" in body else None)
        if not isinstance(refs, list) or not refs:
            return _json(422, validation_error(["image_urls"], "Field required", "missing"))
        for ref in refs:
            header, _, payload = str(ref).partition(",")
            if not header.startswith("data:image/"):
                return _json(
                    422, validation_error(["image_urls"], "Expected a data URI", "value_error")
                )
            recorded.images.append(base64.b64decode(payload))
    return None


def _dimensions(value: Any) -> tuple[int, int] | None:
    if isinstance(value, str):
        return NAMED_SIZES.get(value)
    if isinstance(value, dict):
        width, height = value.get("width"), value.get("height")
        if isinstance(width, int) and isinstance(height, int) and 0 < width * height <= 4e7:
            return width, height
    return None


def _render(width: int, height: int, fmt: str, key: str) -> bytes:
    digest = hashlib.sha256(key.encode()).digest()
    image = Image.new("RGB", (width, height), (digest[0], digest[1], digest[2]))
    buffer = io.BytesIO()
    image.save(buffer, _PIL[fmt])
    return buffer.getvalue()


def _json(status: int, body: Any) -> Response:
    return Response(orjson.dumps(body), status, media_type="application/json")
