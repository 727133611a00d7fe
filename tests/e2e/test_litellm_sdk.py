"""The LiteLLM Python SDK as a third real client: `litellm.image_generation` / `image_edit`
with `model="openai/<id>"` and `api_base=<gateway>/v1`, against a live gateway.

LiteLLM validates every answer into its own `ImageResponse` (built on openai-python's types),
so a body missing an SDK field fails here even though openai-python itself would not notice
(the bug this file guards: `usage` carried only `cost`, and every edit failed with
`usage.input_tokens Field required`). Pydantic serializer warnings are errors in this suite,
except the one about `usage.cost` (below), which no body that keeps SPEC's cost object avoids.

No traffic leaves the machine: LiteLLM's remote model-cost map is switched off before the
import, and while these tests run, resolving any host that is not loopback raises.
"""

from __future__ import annotations

import io
import ipaddress
import os
import socket
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image

from tests.e2e.conftest import Env
from tests.e2e.helpers import balance, decode

# before the import: LiteLLM fetches its model-cost map from the internet unless told not to
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
import litellm

pytestmark = [
    # LiteLLM's own TypedDicts trip a pydantic UserWarning when its schemas are built
    pytest.mark.filterwarnings("ignore:Items? .* using the `ReadOnly` qualifier:UserWarning"),
    pytest.mark.gateway(
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
    ),
]


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        try:
            loopback = name == "localhost" or ipaddress.ip_address(name).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise OSError(f"test refused to resolve {name!r}: loopback only")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield


#: LiteLLM's cost calculator copies `usage` into its chat `Usage`, whose `cost` is a float
#: (OpenRouter's convention); ours is SPEC's `{"total_cost": ...}` object, so pydantic warns
#: when LiteLLM dumps it. Only that warning is let through; the value reaches the caller
#: intact (asserted below). See docs/decisions.md, "Responses valid against the SDK types".
COST_WARNING = (
    r"Pydantic serializer warnings:\s+PydanticSerializationUnexpectedValue"
    r"\(Expected `float`[^\n]*field_name='cost'[^\n]*\)\s*$"
)


def generate(**kwargs: Any) -> Any:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=COST_WARNING, category=UserWarning)
        return litellm.image_generation(**kwargs)


def edit(**kwargs: Any) -> Any:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=COST_WARNING, category=UserWarning)
        return litellm.image_edit(**kwargs)


def options(env: Env) -> dict[str, Any]:
    return {"api_base": env.gateway.base_url, "api_key": env.secret, "num_retries": 0}


def png(width: int = 96, height: int = 64, colour: tuple[int, int, int] = (255, 0, 0)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, "PNG")
    return buffer.getvalue()


def named(data: bytes, name: str) -> io.BytesIO:
    upload = io.BytesIO(data)
    upload.name = name
    return upload


def test_generation_with_n_2(env: Env) -> None:
    before = balance(env)
    result = generate(
        model="openai/local-preview", prompt="a red fox", size="320x256", n=2, **options(env)
    )
    assert isinstance(result, litellm.ImageResponse)
    assert result.data is not None and len(result.data) == 2
    for item in result.data:
        assert decode(item.b64_json).size == (320, 256)
    assert result.data[0].b64_json != result.data[1].b64_json
    assert (result.size, result.output_format, result.background) == ("320x256", "png", "opaque")
    usage = result.usage
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (0, 0, 0)
    assert usage.cost == {"total_cost": 0.002}  # type: ignore[attr-defined]
    assert balance(env) == before - 2000


def test_generation_through_the_openai_route_carries_token_usage(env: Env) -> None:
    result = generate(
        model="openai/gpt-image-1", prompt="a lamp", size="1024x1024", quality="low", **options(env)
    )
    assert result.quality == "low"
    assert result.usage.output_tokens > 0
    assert result.usage.total_tokens == result.usage.input_tokens + result.usage.output_tokens
    details = result.usage.output_tokens_details  # LiteLLM keeps it as a dict
    assert details == {"image_tokens": result.usage.output_tokens, "text_tokens": 0}
    assert env.upstream.requests[-1].json["size"] == "1024x1024"


def test_edit_with_one_image(env: Env) -> None:
    before = balance(env)
    result = edit(
        model="openai/local-preview",
        image=named(png(colour=(255, 0, 0)), "ref.png"),
        prompt="make it warmer",
        size="320x256",
        **options(env),
    )
    assert result.data is not None and len(result.data) == 1
    image = decode(result.data[0].b64_json).convert("RGB")
    assert image.size == (320, 256)
    # local-preview blends 70% of the reference into its render: the red shows through
    reddish = sum(1 for r, g, b in image.get_flattened_data() if r >= 178 and g <= 77 and b <= 77)
    assert reddish > 0.3 * 320 * 256
    # LiteLLM's edit `ImageUsage` keeps the details as a dict
    assert result.usage.input_tokens_details == {"image_tokens": 0, "text_tokens": 0}
    assert result.usage.cost == {"total_cost": 0.001}
    assert balance(env) == before - 1000


def test_edit_with_several_images_and_n_2(env: Env) -> None:
    first, second = png(colour=(1, 2, 3)), png(colour=(4, 5, 6))
    result = edit(
        model="openai/gpt-image-edit",
        image=[named(first, "a.png"), named(second, "b.png")],
        prompt="add a hat",
        n=2,
        size="1024x1536",
        **options(env),
    )
    assert result.data is not None and len(result.data) == 2
    assert result.size == "1024x1536"
    [sent] = env.upstream.requests
    assert sent.files["image[]"] == [first, second]  # both references reached the provider
    assert (sent.form["n"], sent.form["size"]) == ("2", "1024x1536")
    assert result.usage.output_tokens > 0


@pytest.mark.parametrize(
    ("model", "fields", "upstream_size"),
    [
        ("pixel-model", {"width": 512, "height": 256}, "512x256"),
        ("vendor/tier-model", {"aspect_ratio": "16:9", "resolution": "1K"}, "1024x576"),
        ("aspect-model", {"aspect_ratio": "9:16"}, None),
        ("gpt-image-1", {"image_size": "1536x1024"}, "1536x1024"),
    ],
    ids=["pixel", "tier", "aspect", "preset"],
)
@pytest.mark.parametrize("via", ["extra_body", "kwargs"])
def test_each_sizing_style_through_model_fields(
    env: Env, model: str, fields: dict[str, Any], upstream_size: str | None, via: str
) -> None:
    extra = {"extra_body": fields} if via == "extra_body" else fields
    result = generate(model=f"openai/{model}", prompt="a hill", **extra, **options(env))
    assert result.data is not None and len(result.data) == 1
    sent = env.upstream.requests[-1].json
    assert not set(fields) & set(sent), "model fields must be translated, not forwarded"
    if upstream_size is not None:
        assert sent["size"] == upstream_size
        assert result.size == upstream_size
    else:  # aspect style: the nearest OpenAI size of that ratio
        width, height = (int(side) for side in sent["size"].split("x"))
        assert width < height


def test_an_error_reaches_litellm_with_our_code(env: Env) -> None:
    before = balance(env)
    with pytest.raises(litellm.BadRequestError) as refused:
        litellm.image_generation(model="openai/no-such-model", prompt="x", **options(env))
    assert refused.value.status_code == 400
    assert "MODEL_NOT_FOUND" in str(refused.value) or "does not exist" in str(refused.value)
    with pytest.raises(litellm.BadRequestError) as invalid:
        generate(model="openai/pixel-model", prompt="x", extra_body={"width": 100}, **options(env))
    assert "width" in str(invalid.value)
    assert balance(env) == before
