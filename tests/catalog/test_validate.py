"""CompiledModel.validate: every rule of SPEC 1.1 (common fields, declared parameters, extras)."""

from __future__ import annotations

from typing import Any

import pytest

from app.catalog import CompiledModel
from app.errors import (
    GatewayError,
    InvalidParameter,
    InvalidRequest,
    MissingParameter,
    PromptTooLong,
)
from tests.catalog.factories import model

PIXEL = {
    "width": {"type": "integer", "min": 64, "max": 2048, "multiple_of": 8, "default": 1024},
    "height": {"type": "integer", "min": 64, "max": 2048, "multiple_of": 8, "default": 1024},
}


def rich() -> CompiledModel:
    return model(
        max_n=2,
        prompt_max_length=10,
        output_formats=["webp", "png"],
        partial_images=True,
        parameters={
            **PIXEL,
            "quality": {"type": "enum", "values": ["low", "high"], "default": "low"},
            "seed": {"type": "integer", "min": 0},
            "steps": {"type": "integer", "min": 1, "max": 50, "multiple_of": 5},
            "guidance": {"type": "number", "min": 0, "max": 10, "default": 3.5},
            "raw": {"type": "boolean", "default": False},
            "style": {"type": "string", "max_length": 5},
            "level": {"type": "enum", "values": [1, 2, 3]},
            "flag": {"type": "enum", "values": [True, "x"]},
        },
    )


def fails(m: CompiledModel, body: dict[str, Any], **kwargs: Any) -> GatewayError:
    with pytest.raises(GatewayError) as info:
        m.validate(body, **kwargs)
    return info.value


# defaults ----------------------------------------------------------------------------------
def test_minimal_body_gets_every_default() -> None:
    v = rich().validate({"prompt": "a cat"})
    r = v.request
    assert (r.prompt, r.n, r.output_format, r.sizing, r.size) == (
        "a cat",
        1,
        "webp",
        "pixel",
        "1024x1024",
    )
    assert r.params == {
        "width": 1024,
        "height": 1024,
        "quality": "low",
        "guidance": 3.5,
        "raw": False,
    }
    assert (r.quality, r.seed, r.user, r.extra, r.images, r.mask) == (
        "low",
        None,
        None,
        {},
        (),
        None,
    )
    assert (v.response_format, v.stream, v.partial_images, v.user) == ("b64_json", False, 0, None)


def test_null_means_absent_everywhere() -> None:
    body = {
        k: None
        for k in (
            "n",
            "response_format",
            "output_format",
            "quality",
            "seed",
            "stream",
            "partial_images",
            "size",
            "user",
            "width",
            "steps",
            "unknown",
        )
    }
    v = rich().validate({"prompt": "a", **body})
    assert v.request.n == 1 and v.request.size == "1024x1024" and v.request.extra == {}
    assert "steps" not in v.request.params and v.request.params["width"] == 1024
    assert isinstance(fails(rich(), {"prompt": None}), MissingParameter)


# prompt ------------------------------------------------------------------------------------
@pytest.mark.parametrize("prompt", [None, "", "   \n"])
def test_prompt_missing(prompt: Any) -> None:
    error = fails(rich(), {} if prompt is None else {"prompt": prompt})
    assert isinstance(error, MissingParameter)
    assert (error.code, error.param, error.status) == ("MISSING_PARAMETER", "prompt", 400)


def test_prompt_not_a_string() -> None:
    error = fails(rich(), {"prompt": ["a"]})
    assert (type(error), error.param) == (InvalidParameter, "prompt")


def test_prompt_length_limit_counts_characters() -> None:
    assert rich().validate({"prompt": "é" * 10}).request.prompt == "é" * 10
    error = fails(rich(), {"prompt": "x" * 11})
    assert isinstance(error, PromptTooLong)
    assert (error.code, error.param) == ("PROMPT_TOO_LONG", "prompt")
    assert "11" in error.message and "10" in error.message


# n ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [0, 3, 5, -1, True, 1.5, 2.0, "2", [1]])
def test_bad_n(n: Any) -> None:
    error = fails(rich(), {"prompt": "a", "n": n})
    assert (type(error), error.code, error.param) == (InvalidParameter, "INVALID_PARAMETER", "n")
    assert "between 1 and 2" in error.message


def test_n_limit_is_min_of_4_and_max_n() -> None:
    assert model(max_n=4).validate({"prompt": "a", "n": 4}).request.n == 4
    assert fails(model(max_n=4), {"prompt": "a", "n": 5}).param == "n"
    assert "between 1 and 1" in fails(model(), {"prompt": "a", "n": 2}).message


def test_form_strings_are_coerced_only_when_asked() -> None:
    body = {
        "prompt": "a",
        "n": "2",
        "stream": "true",
        "partial_images": "2",
        "width": "512",
        "guidance": "2.5",
        "raw": "TRUE",
        "level": "2",
        "flag": "true",
    }
    v = rich().validate(body, coerce_strings=True)
    assert (v.request.n, v.stream, v.partial_images) == (2, True, 2)
    params = v.request.params
    assert (
        params["width"],
        params["guidance"],
        params["raw"],
        params["level"],
        params["flag"],
    ) == (512, 2.5, True, 2, True)
    assert fails(rich(), {"prompt": "a", "n": "2.0"}, coerce_strings=True).param == "n"
    assert fails(rich(), {"prompt": "a", "stream": "yes"}, coerce_strings=True).param == "stream"
    assert fails(rich(), {"prompt": "a", "width": "512"}).param == "width"


# common fields ---------------------------------------------------------------------------------
def test_response_and_output_format() -> None:
    v = rich().validate({"prompt": "a", "response_format": "url", "output_format": "png"})
    assert (v.response_format, v.request.output_format) == ("url", "png")
    error = fails(rich(), {"prompt": "a", "output_format": "jpeg"})
    assert error.param == "output_format" and "webp, png" in error.message
    assert fails(rich(), {"prompt": "a", "response_format": "uri"}).param == "response_format"


def test_quality_only_where_declared() -> None:
    assert rich().validate({"prompt": "a", "quality": "high"}).request.quality == "high"
    assert fails(rich(), {"prompt": "a", "quality": "medium"}).param == "quality"
    plain = model().validate({"prompt": "a", "quality": "ultra"}).request
    assert (plain.quality, plain.params, plain.extra) == (None, {}, {})


def test_seed_kept_only_where_declared_but_always_typed() -> None:
    r = rich().validate({"prompt": "a", "seed": 42}).request
    assert (r.seed, r.params["seed"]) == (42, 42)
    assert fails(rich(), {"prompt": "a", "seed": -1}).param == "seed"
    plain = model().validate({"prompt": "a", "seed": 7}).request
    assert (plain.seed, plain.params, plain.extra) == (None, {}, {})
    assert fails(model(), {"prompt": "a", "seed": "7"}).param == "seed"


def test_stream_and_partial_images() -> None:
    v = rich().validate({"prompt": "a", "stream": True, "partial_images": 3})
    assert (v.stream, v.partial_images) == (True, 3)
    assert rich().validate({"prompt": "a", "partial_images": 3}).partial_images == 0
    no_partials = model().validate({"prompt": "a", "stream": True, "partial_images": 2})
    assert (no_partials.stream, no_partials.partial_images) == (True, 0)
    assert fails(rich(), {"prompt": "a", "partial_images": 4}).param == "partial_images"
    assert fails(rich(), {"prompt": "a", "stream": 1}).param == "stream"
    error = fails(model(supports_streaming=False), {"prompt": "a", "stream": True})
    assert (error.param, type(error)) == ("stream", InvalidParameter)
    assert (
        model(supports_streaming=False).validate({"prompt": "a", "stream": False}).stream is False
    )


def test_user() -> None:
    assert rich().validate({"prompt": "a", "user": "u" * 200}).user == "u" * 200
    assert fails(rich(), {"prompt": "a", "user": "u" * 201}).param == "user"
    assert fails(rich(), {"prompt": "a", "user": 5}).param == "user"


# declared parameters ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("field", "value", "allowed"),
    [
        ("steps", 7, "multiple of 5"),
        ("steps", 55, "between 1 and 50"),
        ("steps", 0, "between 1 and 50"),
        ("steps", True, "integer"),
        ("steps", 10.0, "integer"),
        ("width", 1000.5, "integer"),
        ("guidance", 11, "between 0 and 10"),
        ("guidance", False, "number"),
        ("guidance", "2", "number"),
        ("guidance", float("nan"), "number"),
        ("raw", 1, "boolean"),
        ("raw", "true", "boolean"),
        ("style", "toolong", "at most 5"),
        ("style", 3, "string"),
        ("level", 4, "one of: 1, 2, 3"),
        ("level", "2", "one of"),
        ("level", True, "one of"),
        ("flag", 1, "one of: True, x"),
        ("quality", ["low"], "one of: low, high"),
    ],
)
def test_bad_declared_values_name_the_field(field: str, value: Any, allowed: str) -> None:
    error = fails(rich(), {"prompt": "a", field: value})
    assert (type(error), error.param, error.status) == (InvalidParameter, field, 400)
    assert allowed in error.message


def test_good_declared_values() -> None:
    body = {
        "prompt": "a",
        "steps": 25,
        "guidance": 7,
        "raw": True,
        "style": "noir",
        "level": 2.0,
        "flag": True,
    }
    params = rich().validate(body).request.params
    assert (params["steps"], params["guidance"], params["raw"], params["style"]) == (
        25,
        7,
        True,
        "noir",
    )
    assert params["level"] == 2 and isinstance(params["level"], int)  # the declared value
    assert params["flag"] is True


# sizing fields the model lacks, unknown fields ------------------------------------------------
def test_foreign_sizing_fields_are_ignored_and_unknown_fields_forwarded() -> None:
    body = {
        "prompt": "a",
        "model": "m",
        "aspect_ratio": "16:9",
        "resolution": "8K",
        "image_size": "huge",
        "background": "transparent",
        "moderation": {"level": "low"},
        "n": 1,
        "user": "me",
        "image": "x",
        "mask": "y",
    }
    r = rich().validate(body).request
    assert r.extra == {"background": "transparent", "moderation": {"level": "low"}}
    assert "aspect_ratio" not in r.params and "resolution" not in r.params
    r2 = model().validate({"prompt": "a", "width": -5, "height": "tall"}).request
    assert (r2.params, r2.extra, r2.size) == ({}, {}, None)


# edits -------------------------------------------------------------------------------------------
def test_edit_rules() -> None:
    editable = model(edit={"supported": True, "max_reference_images": 2})
    r = editable.validate({"prompt": "a"}, images=[b"1", b"2"], mask=b"m").request
    assert (r.images, r.mask) == ((b"1", b"2"), b"m")
    too_many = fails(editable, {"prompt": "a"}, images=[b"1", b"2", b"3"])
    assert (type(too_many), too_many.code, too_many.param) == (
        InvalidRequest,
        "TOO_MANY_IMAGES",
        "image",
    )
    none = fails(editable, {"prompt": "a"}, images=[])
    assert (type(none), none.param) == (MissingParameter, "image")
    unsupported = fails(model(), {"prompt": "a"}, images=[b"1"])
    assert unsupported.code == "EDIT_NOT_SUPPORTED"
    assert fails(editable, {"prompt": "a"}, mask=b"m").param == "mask"


# the public entry --------------------------------------------------------------------------------
def test_public_entry() -> None:
    m = model(
        max_n=4,
        prompt_max_length=50000,
        owned_by="google",
        output_formats=["png", "jpeg", "webp"],
        parameters={
            "resolution": {"type": "enum", "values": ["1K", "2K", "4K"], "default": "2K"},
            "aspect_ratio": {
                "type": "enum",
                "values": ["auto", "16:9", "1:1", "9:16"],
                "default": "auto",
            },
        },
        edit={"supported": True, "max_reference_images": 14},
    )
    assert m.public == {
        "id": "m",
        "object": "model",
        "created": 1764000000,
        "owned_by": "google",
        "parameters": {
            "resolution": {"type": "enum", "values": ["1K", "2K", "4K"], "default": "2K"},
            "aspect_ratio": {
                "type": "enum",
                "values": ["auto", "16:9", "1:1", "9:16"],
                "default": "auto",
            },
        },
        "edit": {"supported": True, "max_reference_images": 14},
        "prompt_max_length": 50000,
        "max_n": 4,
        "output_formats": ["png", "jpeg", "webp"],
        "input_modalities": ["text", "image"],
        "output_modalities": ["image"],
    }
    assert model().public["input_modalities"] == ["text"]
    assert "routes" not in model().public and "pricing" not in model().public
