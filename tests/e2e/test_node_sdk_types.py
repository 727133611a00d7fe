"""Every kind of body the gateway produces type-checks against openai-node's own declarations.

The Python side (`tests.support.sdk_contract`) validates each response at run time; openai-node's
types are TypeScript, so they are checked by the TypeScript compiler: the test drives a live
gateway through every kind of answer (model list and entry, JSON images with tokens and
without, URL form, edits, streamed partial and completed events of both families, JSON errors
and an error event), writes the bodies the checker kept into a `.ts` file that states each with
`satisfies` against `tests/node/gateway_types.ts` (the SDK types plus exactly our documented
additions; any other field is an excess-property error) and assigns it to the plain SDK type,
and runs `tsc --noEmit --strict`. TypeScript is pinned in `tests/node/package-lock.json`.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Final

import openai
import pytest
from PIL import Image

from tests.e2e.conftest import Env
from tests.e2e.helpers import PREVIEW_PARTIALS_MODEL
from tests.e2e.test_node_sdk import NODE_DIR, node_ready

TSC: Final = NODE_DIR / "node_modules" / "typescript" / "bin" / "tsc"

#: kind of body (as `ContractCheckedApp.samples` names it) -> (our type, the SDK's type)
TYPES: Final = {
    "images": ("GatewayImagesResponse", "ImagesResponse"),
    "models": ("GatewayModelList", "{ object: 'list'; data: Model[] }"),
    "model": ("GatewayModel", "Model"),
    "error": ("GatewayErrorBody", "{ error: ErrorObject }"),
    "event:image_generation.partial_image": ("ImageGenPartialImageEvent", "ImageGenStreamEvent"),
    "event:image_generation.completed": ("GatewayImageGenCompletedEvent", "ImageGenStreamEvent"),
    "event:image_edit.partial_image": ("ImageEditPartialImageEvent", "ImageEditStreamEvent"),
    "event:image_edit.completed": ("GatewayImageEditCompletedEvent", "ImageEditStreamEvent"),
    "event:error": ("GatewayErrorEvent", "{ type: 'error'; error: ErrorObject }"),
}

PREAMBLE: Final = """\
import type {
  ImageEditPartialImageEvent,
  ImageEditStreamEvent,
  ImageGenPartialImageEvent,
  ImageGenStreamEvent,
  ImagesResponse,
} from 'openai/resources/images';
import type { Model } from 'openai/resources/models';
import type { ErrorObject } from 'openai/resources/shared';
import type {
  GatewayErrorBody,
  GatewayErrorEvent,
  GatewayImageEditCompletedEvent,
  GatewayImageGenCompletedEvent,
  GatewayImagesResponse,
  GatewayModel,
  GatewayModelList,
} from '../gateway_types.js';
"""

TSCONFIG: Final = {
    "compilerOptions": {
        "strict": True,
        "noEmit": True,
        "target": "es2022",
        "module": "nodenext",
        "moduleResolution": "nodenext",
        "skipLibCheck": True,
        "lib": ["es2022", "dom"],
        "types": [],
    },
    "files": ["samples.ts"],
}


def typescript_source(samples: dict[str, list[Any]]) -> str:
    lines = [PREAMBLE]
    for kind, bodies in sorted(samples.items()):
        ours, sdks = TYPES[kind]
        for index, body in enumerate(bodies):
            name = f"{kind.replace(':', '_').replace('.', '_')}_{index}"
            lines.append(f"// {kind} #{index}")
            lines.append(f"const {name} = {json.dumps(body)} satisfies {ours};")
            lines.append(f"export const {name}_sdk: {sdks} = {name};")
    return "\n".join(lines) + "\n"


def type_check(source: str) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(dir=NODE_DIR, prefix=".types-") as folder:
        (Path(folder) / "samples.ts").write_text(source)
        (Path(folder) / "tsconfig.json").write_text(json.dumps(TSCONFIG))
        return subprocess.run(
            ["node", str(TSC), "-p", folder],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )


@pytest.fixture
def typescript() -> None:
    problem = node_ready() or (None if TSC.is_file() else "TypeScript is not installed")
    if problem:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but {problem}", pytrace=False)
        pytest.skip(problem)


def png(width: int = 96, height: int = 64) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buffer, "PNG")
    return buffer.getvalue()


def produce_every_kind_of_body(env: Env) -> None:
    client = env.client()
    client.models.list()
    client.models.retrieve("local-preview")
    client.images.generate(model="local-preview", prompt="a fox", size="64x64", n=2)
    client.images.generate(
        model="local-preview", prompt="a fox", size="64x64", response_format="url"
    )
    client.images.generate(model="gpt-image-1", prompt="a lamp", quality="low")
    client.images.edit(model="local-preview", image=("a.png", png()), prompt="warmer")
    list(
        client.images.generate(
            model="preview-partials", prompt="a", size="64x64", partial_images=1, stream=True
        )
    )
    list(
        client.images.edit(
            model="preview-partials",
            image=("a.png", png()),
            prompt="b",
            size="64x64",
            partial_images=1,
            stream=True,
        )
    )
    list(client.images.generate(model="gpt-image-1", prompt="a lamp", quality="low", stream=True))
    with pytest.raises(openai.BadRequestError):
        client.images.generate(model="no-such-model", prompt="x")
    with pytest.raises(openai.AuthenticationError):
        env.client("sk-wrong").models.list()
    env.upstream.latency_s = 0.3  # the stream has started when the upstream fails
    env.upstream.fail_next(500, {"error": {"message": "boom", "type": "server_error"}})
    with pytest.raises(openai.APIError):
        list(client.images.generate(model="gpt-image-1", prompt="x", stream=True))


@pytest.mark.gateway(models=PREVIEW_PARTIALS_MODEL)
def test_every_body_type_checks_against_openai_node(env: Env, typescript: None) -> None:
    produce_every_kind_of_body(env)
    samples = env.gateway.contract.samples
    # the SDK raises on the error event as it arrives: the server may still be ending that
    # response, and it is checked (and kept) once it has
    deadline = time.monotonic() + 10
    while set(samples) != set(TYPES) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert set(samples) == set(TYPES), "some kind of body was not produced"
    result = type_check(typescript_source(samples))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_type_check_refuses_what_openai_node_refuses(typescript: None) -> None:
    usage = {"input_tokens": 0, "input_tokens_details": {"image_tokens": 0, "text_tokens": 0}}
    good = {
        "created": 1,
        "model": "m",
        "data": [{"b64_json": "x", "index": 0}],
        "usage": {**usage, "output_tokens": 0, "total_tokens": 0, "cost": {"total_cost": 0.1}},
    }
    bad = {
        "images": [
            {**good, "quality": "auto"},  # not an ImagesResponse quality
            {
                **good,
                "usage": {**usage, "output_tokens": 0, "cost": {"total_cost": 0.1}},
            },  # no total
            {**good, "created": "1"},
            {**good, "surprise": True},  # an addition nobody declared
        ],
        "error": [{"error": {"message": "m", "type": "t", "code": "C"}}],  # param is required
    }
    result = type_check(typescript_source({"images": [good]}))
    assert result.returncode == 0, result.stdout
    source = typescript_source(bad)
    result = type_check(source)
    failing = {
        int(m.group(1)) for m in re.finditer(r"samples\.ts\((\d+),\d+\): error", result.stdout)
    }
    stated = [number for number, line in enumerate(source.splitlines(), 1) if " satisfies " in line]
    assert len(stated) == 5 and set(stated) <= failing, result.stdout
