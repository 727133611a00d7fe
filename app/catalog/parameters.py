"""Compiled models: one `CompiledModel` per catalog entry, built once at start-up.

`compile_model` turns a `ModelConfig` into everything the hot path needs, precomputed:

- a `Check` per declared parameter (`app.catalog.checks`) and for the common fields;
- the sizing style and its `size` translation (`app.catalog.sizing`);
- the compiled `Price` (`app.catalog.pricing`);
- the public `/v1/models` entry (`public`), a ready-to-serialise dict (treat it as read-only).

`CompiledModel.validate(body)` applies SPEC 1.1 / 1.5 to a generation or edit body and returns
a `ValidatedGeneration`: the `ImageRequest` for the adapter plus the fields that shape the
response (`response_format`, `stream`, `partial_images`). Errors are `app.errors` 400s naming
the field (`param`).

Decisions where the spec is silent:
- `null` is absent everywhere. A whitespace-only prompt counts as missing; the prompt length is
  counted in Unicode characters.
- `n`, `partial_images` and declared integers accept only integers (not `true`, not `2.0`);
  with `coerce_strings=True` (multipart edits) also their string spelling (`"2"`, `"true"`).
- `seed` is type-checked as an integer even when the model does not declare it (then dropped),
  because a malformed seed is a client bug; an undeclared `quality` is ignored unchecked, as
  the spec says other models ignore it. Declared `quality` / `seed` land in `params` too.
- `stream: true` on a model with `supports_streaming: false` is a 400 on `stream`.
  `partial_images` is validated (0..3) always but only takes effect when streaming a model with
  `partial_images: true`; otherwise it becomes 0.
- `user` is at most 200 characters.
- declaring a common field other than `quality` / `seed` as a parameter (`n`, `size`, ...) is a
  load error, as is `quality` not being an enum or `seed` not being an integer.
- edits pass the reference images as `images=`; the model must support edits
  (`EDIT_NOT_SUPPORTED`), at least one image is required and at most `max_reference_images`
  (`TOO_MANY_IMAGES`). Edit payload fields (`image`, `image[]`, `images`, `mask`) never reach
  `extra`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from app.adapters.base import ImageRequest, SizingStyle
from app.catalog.checks import (
    BooleanCheck,
    Check,
    EnumCheck,
    IntegerCheck,
    StringCheck,
    compile_check,
)
from app.catalog.errors import CatalogError, PathPart
from app.catalog.pricing import Price, compile_price
from app.catalog.schema import EnumParam, IntegerParam, ModelConfig, OutputFormat, RouteConfig
from app.catalog.sizing import SIZING_FIELDS, Sizer, build_sizer, parse_size
from app.errors import InvalidParameter, InvalidRequest, MissingParameter, PromptTooLong

ResponseFormat = Literal["b64_json", "url"]

#: request fields every model understands; never forwarded in `extra`
COMMON_FIELDS = frozenset(
    {
        "model",
        "prompt",
        "n",
        "response_format",
        "output_format",
        "quality",
        "seed",
        "stream",
        "partial_images",
        "size",
        "user",
    }
)
#: the reference images and mask of an edit, handled by the edits endpoint
EDIT_FIELDS = frozenset({"image", "image[]", "images", "mask"})
#: names a model may not declare as its own parameters
RESERVED_NAMES = (COMMON_FIELDS | EDIT_FIELDS) - {"quality", "seed"}

MAX_N = 4
MAX_USER_LENGTH = 200
MAX_PARTIAL_IMAGES = 3

_RESPONSE_FORMAT = EnumCheck.build("response_format", ["b64_json", "url"], "b64_json")
_STREAM = BooleanCheck("stream", False)
_PARTIAL_IMAGES = IntegerCheck.build("partial_images", min=0, max=MAX_PARTIAL_IMAGES, default=0)
_USER = StringCheck("user", None, MAX_USER_LENGTH)
_ANY_SEED = IntegerCheck.build("seed")


@dataclass(frozen=True, slots=True)
class ValidatedGeneration:
    """A validated generation/edit: the adapter's `ImageRequest` plus response-shaping fields.

    `user` lives on `request.user` (it is stored in the request log and may be forwarded);
    `.user` here is a shortcut. `partial_images` is already 0 unless streaming a model that
    produces partials.
    """

    request: ImageRequest
    response_format: ResponseFormat
    stream: bool
    partial_images: int

    @property
    def user(self) -> str | None:
        return self.request.user


@dataclass(frozen=True, slots=True, eq=False)
class CompiledModel:
    id: str
    #: the catalog entry; `config.routes` holds only the routes whose provider is usable
    config: ModelConfig
    sizing: SizingStyle
    checks: Mapping[str, Check]
    price: Price
    #: the `/v1/models` entry, precomputed; do not mutate
    public: dict[str, Any]
    _sizer: Sizer = field(repr=False)
    _n: IntegerCheck = field(repr=False)
    _output_format: EnumCheck = field(repr=False)
    _not_extra: frozenset[str] = field(repr=False)

    @property
    def routes(self) -> list[RouteConfig]:
        return self.config.routes

    def validate(
        self,
        body: Mapping[str, Any],
        *,
        coerce_strings: bool = False,
        images: Sequence[bytes] | None = None,
        mask: bytes | None = None,
    ) -> ValidatedGeneration:
        """Validate a request body against this model (SPEC 1.1, 1.5).

        `coerce_strings`: the body came from a multipart form, so numbers and booleans arrive
        as strings. `images`: the edit's reference images (None for a generation).
        """
        coerce = coerce_strings
        prompt = self._prompt(body.get("prompt"))
        n = self._field(body, self._n, coerce)
        response_format: ResponseFormat = self._field(body, _RESPONSE_FORMAT, coerce)
        output_format: OutputFormat = self._field(body, self._output_format, coerce)
        stream: bool = self._field(body, _STREAM, coerce)
        partial_images: int = self._field(body, _PARTIAL_IMAGES, coerce)
        user: str | None = self._field(body, _USER, coerce)
        raw_size = body.get("size")
        size = None if raw_size is None else parse_size(raw_size)

        params: dict[str, Any] = {}
        for name, check in self.checks.items():
            value = body.get(name)
            if value is not None:
                params[name] = check(value, coerce=coerce)
        explicit = len(params)
        if size is not None:
            self._sizer.apply_size(size, params)
        from_size = len(params) > explicit
        for name, check in self.checks.items():
            if name not in params and check.default is not None:
                params[name] = check.default
        self._sizer.finish(params, from_size=from_size)

        if "seed" not in self.checks:
            self._field(body, _ANY_SEED, coerce)  # type-checked, then dropped
        if stream and not self.config.supports_streaming:
            raise InvalidParameter(f"model {self.id} does not support streaming", param="stream")
        if not (stream and self.config.partial_images):
            partial_images = 0
        self._check_edit(images, mask)

        extra = {
            key: value
            for key, value in body.items()
            if key not in self._not_extra and value is not None
        }
        quality, seed = params.get("quality"), params.get("seed")
        request = ImageRequest(
            prompt=prompt,
            n=n,
            output_format=output_format,
            sizing=self.sizing,
            size=self._sizer.upstream_size(params, raw_size if isinstance(raw_size, str) else None),
            params=params,
            quality=quality if isinstance(quality, str) else None,
            seed=seed if isinstance(seed, int) else None,
            extra=extra,
            user=user,
            images=tuple(images or ()),
            mask=mask,
            partial_images=partial_images,
        )
        return ValidatedGeneration(request, response_format, stream, partial_images)

    @staticmethod
    def _field(body: Mapping[str, Any], check: Check, coerce: bool) -> Any:
        value = body.get(check.name)
        return check.default if value is None else check(value, coerce=coerce)

    def _prompt(self, prompt: Any) -> str:
        if prompt is None or (isinstance(prompt, str) and not prompt.strip()):
            raise MissingParameter("prompt is required", param="prompt")
        if not isinstance(prompt, str):
            raise InvalidParameter("prompt must be a string", param="prompt")
        limit = self.config.prompt_max_length
        if len(prompt) > limit:
            raise PromptTooLong(
                f"prompt is {len(prompt)} characters; model {self.id} allows at most {limit}",
                param="prompt",
            )
        return prompt

    def _check_edit(self, images: Sequence[bytes] | None, mask: bytes | None) -> None:
        if images is None:
            if mask is not None:
                raise InvalidParameter("mask is only allowed on edits", param="mask")
            return
        edit = self.config.edit
        if not edit.supported:
            raise InvalidRequest(
                f"model {self.id} does not support image edits",
                code="EDIT_NOT_SUPPORTED",
                param="model",
            )
        if not images:
            raise MissingParameter("an image to edit is required", param="image")
        if len(images) > edit.max_reference_images:
            raise InvalidRequest(
                f"{len(images)} images given; model {self.id} accepts at most "
                f"{edit.max_reference_images}",
                code="TOO_MANY_IMAGES",
                param="image",
            )


def public_entry(model_id: str, config: ModelConfig) -> dict[str, Any]:
    """The `/v1/models` entry (SPEC 1.3): no routes, no prices, no None fields."""
    parameters = {
        name: spec.model_dump(exclude_none=True) for name, spec in config.parameters.items()
    }
    input_modalities = config.input_modalities
    if input_modalities is None:
        input_modalities = ["text", "image"] if config.edit.supported else ["text"]
    return {
        "id": model_id,
        "object": "model",
        "created": config.created,
        "owned_by": config.owned_by,
        "parameters": parameters,
        "edit": config.edit.model_dump(),
        "prompt_max_length": config.prompt_max_length,
        "max_n": config.max_n,
        "output_formats": list(config.output_formats),
        "input_modalities": list(input_modalities),
        "output_modalities": list(config.output_modalities),
    }


def _check_declarations(config: ModelConfig, path: tuple[PathPart, ...]) -> None:
    for name, spec in config.parameters.items():
        where = (*path, "parameters", name)
        if name in RESERVED_NAMES:
            hint = " (declare image_size for preset sizes)" if name == "size" else ""
            raise CatalogError(
                f"{name!r} is a common request field, not a parameter{hint}", path=where
            )
        if name == "quality" and not isinstance(spec, EnumParam):
            raise CatalogError("quality must be an enum parameter", path=(*where, "type"))
        if name == "seed" and not isinstance(spec, IntegerParam):
            raise CatalogError("seed must be an integer parameter", path=(*where, "type"))
    if len(set(config.output_formats)) != len(config.output_formats):
        raise CatalogError("output_formats lists a format twice", path=(*path, "output_formats"))


def compile_model(
    model_id: str, config: ModelConfig, path: tuple[PathPart, ...] | None = None
) -> CompiledModel:
    """Compile one catalog entry; `CatalogError` (with a field path) if it is inconsistent."""
    path = ("models", model_id) if path is None else path
    _check_declarations(config, path)
    checks = {
        name: compile_check(name, spec, (*path, "parameters", name))
        for name, spec in config.parameters.items()
    }
    sizer = build_sizer(config, checks, path)
    static_max = sizer.max_pixels
    if static_max is None and config.max_megapixels is not None:
        static_max = int(config.max_megapixels * 1_000_000)
    price = compile_price(
        config.pricing,
        params=config.parameters,
        hold_pixels=lambda req: sizer.request_pixels(req.params),
        static_max_pixels=static_max,
        path=(*path, "pricing"),
    )
    max_n = config.max_n
    formats = list(config.output_formats)
    return CompiledModel(
        id=model_id,
        config=config,
        sizing=sizer.style,
        checks=checks,
        price=price,
        public=public_entry(model_id, config),
        _sizer=sizer,
        _n=IntegerCheck.build(
            "n",
            min=1,
            max=min(MAX_N, max_n),
            default=1,
            message=f"n must be an integer between 1 and {max_n} (max_n of model {model_id})",
        ),
        _output_format=EnumCheck.build("output_format", formats, formats[0]),
        _not_extra=COMMON_FIELDS | EDIT_FIELDS | SIZING_FIELDS | frozenset(checks),
    )
