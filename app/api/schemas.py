"""The public API's wire shapes as pydantic models, for `/openapi.json` (SPEC 1, 2).

The image routes read their bodies themselves (each model validates its own parameters from
the catalog, `app.catalog.parameters`), so these models are not what parses a request: they
describe it, in the terms the gateway really enforces, so a client generator or a fuzzer
knows what is accepted. `null` means absent everywhere, and unknown fields are forwarded to
the model, hence `extra="allow"` on the request bodies. Responses forbid unknown fields: the
fuzz test (`tests/e2e/test_openapi_fuzz.py`) checks every answer against these schemas, so a
change to what the gateway sends that is not made here too fails there.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema

from app.catalog.parameters import MAX_N, MAX_PARTIAL_IMAGES, MAX_USER_LENGTH

#: an optional form part: left out, never sent as null (the form has no null)
_Absent = SkipJsonSchema[None]


# errors (SPEC 2) ------------------------------------------------------------------------
class ErrorObject(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: str
    type: str = Field(examples=["invalid_request_error"])
    param: str | None = Field(description="the offending field, or null")
    code: str = Field(examples=["INVALID_PARAMETER"])


class ErrorResponse(BaseModel):
    """Every error the gateway answers, whatever its status."""

    model_config = ConfigDict(extra="forbid", title="Error")

    error: ErrorObject


# requests -------------------------------------------------------------------------------
class ImageGenerationRequest(BaseModel):
    """`POST /v1/images/generations`. Model-specific fields (`width`, `aspect_ratio`, ...)
    are validated by the model's own `parameters` (`GET /v1/models/{id}`); any other field is
    passed to the model unchanged."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(description="a model id from GET /v1/models")
    prompt: str = Field(min_length=1, description="the model's prompt_max_length applies")
    n: Annotated[int, Field(ge=1, le=MAX_N)] | None = Field(
        default=None, description="1 by default; at most the model's max_n"
    )
    size: str | None = Field(
        default=None,
        description="WxH or auto, translated to the model's sizing",
        examples=["1024x1024"],
    )
    response_format: Literal["b64_json", "url"] | None = Field(
        default=None, description="url answers an inline data: URI"
    )
    output_format: Literal["png", "jpeg", "webp"] | None = Field(
        default=None, description="restricted per model (output_formats)"
    )
    quality: Any = Field(
        default=None,
        description="one of the model's quality values where it declares quality; "
        "ignored by other models",
    )
    seed: int | None = None
    stream: bool | None = Field(default=None, description="text/event-stream when true")
    partial_images: Annotated[int, Field(ge=0, le=MAX_PARTIAL_IMAGES)] | None = None
    user: Annotated[str, Field(max_length=MAX_USER_LENGTH)] | None = None


class ImageUrl(BaseModel):
    url: str = Field(description="a data:image/...;base64,... URI")


class ImageReference(BaseModel):
    image_url: str | ImageUrl = Field(
        description="a data:image/...;base64,... URI; links are refused, never fetched"
    )


class ImageEditJsonRequest(ImageGenerationRequest):
    """`POST /v1/images/edits` as JSON: reference images inline as data URIs."""

    images: list[ImageReference | str] = Field(
        description="1 to the model's edit.max_reference_images"
    )
    mask: ImageReference | str | None = None


class ImageEditForm(BaseModel):
    """`POST /v1/images/edits` as multipart/form-data, the way the OpenAI SDKs send it:
    numbers and booleans as text, images as files (`image` and `image[]` may be mixed)."""

    model_config = ConfigDict(extra="allow")

    model: str
    prompt: str = Field(min_length=1)
    image: bytes | _Absent = Field(default=None, description="a PNG, JPEG or WebP file")
    images: list[bytes] | _Absent = Field(
        default=None, alias="image[]", description="several reference images"
    )
    mask: bytes | _Absent = None
    n: str | _Absent = Field(default=None, description="an integer, 1..4", examples=["1"])
    size: str | _Absent = None
    response_format: Literal["b64_json", "url"] | _Absent = None
    output_format: Literal["png", "jpeg", "webp"] | _Absent = None
    quality: str | _Absent = None
    seed: str | _Absent = Field(default=None, description="an integer", examples=["42"])
    stream: str | _Absent = Field(default=None, description="true or false", examples=["false"])
    partial_images: str | _Absent = Field(default=None, description="an integer, 0..3")
    user: str | _Absent = None


# responses ------------------------------------------------------------------------------
class UsageCost(BaseModel):
    model_config = ConfigDict(extra="forbid")

    total_cost: float = Field(description="USD taken from the balance for this request")


class TokenDetails(BaseModel):
    """Tokens by modality; the SDK's two are always there, others the provider reports
    (Gemini's audio, video...) ride along."""

    model_config = ConfigDict(extra="allow")

    image_tokens: int
    text_tokens: int


class ImageUsage(BaseModel):
    """`usage` of an image response: openai's `Usage` (every token field, zeros when the
    provider reports none) plus the cost (`app.images.results.usage_block`)."""

    model_config = ConfigDict(extra="forbid")

    input_tokens: int
    input_tokens_details: TokenDetails
    output_tokens: int
    output_tokens_details: TokenDetails | _Absent = Field(
        default=None, description="only where the provider reports it"
    )
    total_tokens: int
    cost: UsageCost


class ImageData(BaseModel):
    model_config = ConfigDict(extra="forbid")

    b64_json: str | None = Field(default=None, description="response_format b64_json")
    url: str | None = Field(default=None, description="response_format url: a data: URI")
    revised_prompt: str | None = None
    index: int


class ImagesResponse(BaseModel):
    """The answer of generations and edits (without `stream`)."""

    model_config = ConfigDict(extra="forbid")

    created: int
    model: str
    size: str = Field(description="the actual size of the images, WxH")
    output_format: Literal["png", "jpeg", "webp"] = Field(description="of the delivered bytes")
    background: Literal["transparent", "opaque"] = Field(
        description="opaque unless the delivered image has an alpha channel"
    )
    quality: Literal["low", "medium", "high", "xhigh", "max"] | _Absent = Field(
        default=None,
        description="what the provider used (OpenAI resolves auto), else the requested value; "
        "absent for models without one of these values",
    )
    data: list[ImageData]
    usage: ImageUsage


class EditSupport(BaseModel):
    supported: bool
    max_reference_images: int


class ModelEntry(BaseModel):
    """One model of `GET /v1/models` (`app.catalog.parameters.public_entry`)."""

    model_config = ConfigDict(extra="forbid")

    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    parameters: dict[str, dict[str, Any]] = Field(
        description="the model's own fields: type (enum, integer, number, boolean, string) "
        "with values, min, max, multiple_of, max_length, default"
    )
    edit: EditSupport
    prompt_max_length: int
    max_n: int
    output_formats: list[Literal["png", "jpeg", "webp"]]
    input_modalities: list[str]
    output_modalities: list[str]


class ModelList(BaseModel):
    model_config = ConfigDict(extra="forbid")

    object: Literal["list"]
    data: list[ModelEntry]
