"""A model's parameter schema as playground form fields.

    catalog entry ─▶ ModelForm: prompt (limit), n (1..max_n), output format, stream (+ partial
                     images), reference images (edit models), then one field per parameter:
        enum    ─▶ <select>, the default preselected
        integer ─▶ <input type=number> with min, max and step (multiple_of)
        number  ─▶ <input type=number step=any> with min and max
        boolean ─▶ <input type=checkbox>
        string  ─▶ <input type=text maxlength>

Each field carries its JSON default; the browser sends a field only when its value differs
from the default, so the request (and its code snippets) say only what the operator chose.
Values of enum options travel as JSON text (`"1K"`, `2`, `true`) so a number stays a number.
Nothing is validated here: the request goes through the model's own validation like any other.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal, Required, TypedDict

from app.catalog.parameters import MAX_PARTIAL_IMAGES, CompiledModel
from app.catalog.schema import (
    BooleanParam,
    EnumParam,
    IntegerParam,
    NumberParam,
    ParameterSpec,
    StringParam,
)

Widget = Literal["select", "number", "checkbox", "text"]


@dataclass(frozen=True, slots=True)
class Option:
    json: str
    label: str


@dataclass(frozen=True, slots=True)
class FormField:
    name: str
    widget: Widget
    #: "enum", "integer", "number", "boolean" or "string": how the browser encodes the value
    type: str
    #: JSON text of the default ("null": none)
    default_json: str
    description: str | None = None
    options: list[Option] = field(default_factory=list)
    min: float | int | None = None
    max: float | int | None = None
    step: str | None = None
    max_length: int | None = None

    @property
    def default(self) -> Any:
        return json.loads(self.default_json)


@dataclass(frozen=True, slots=True)
class ModelForm:
    model_id: str
    prompt_max_length: int
    max_n: int
    output_formats: list[str]
    streams: bool
    partial_images: int
    edit: bool
    max_reference_images: int
    fields: list[FormField]
    description: str | None


def _json(value: Any) -> str:
    return json.dumps(value)


def parameter_field(name: str, spec: ParameterSpec) -> FormField:
    return FormField(
        name=name,
        default_json=_json(spec.default),
        description=spec.description,
        **_input(spec),
    )


class _Input(TypedDict, total=False):
    """What differs between kinds of parameter: the widget, the encoding and the limits."""

    widget: Required[Widget]
    type: Required[str]
    options: list[Option]
    min: float | int | None
    max: float | int | None
    step: str
    max_length: int | None


def _input(spec: ParameterSpec) -> _Input:
    if isinstance(spec, EnumParam):
        return _Input(
            widget="select",
            type="enum",
            options=[Option(_json(value), str(value)) for value in spec.values],
        )
    if isinstance(spec, IntegerParam):
        return _Input(
            widget="number",
            type="integer",
            min=spec.min,
            max=spec.max,
            step=str(spec.multiple_of or 1),
        )
    if isinstance(spec, NumberParam):
        return _Input(widget="number", type="number", min=spec.min, max=spec.max, step="any")
    if isinstance(spec, BooleanParam):
        return _Input(widget="checkbox", type="boolean")
    assert isinstance(spec, StringParam)
    return _Input(widget="text", type="string", max_length=spec.max_length)


def model_form(model: CompiledModel) -> ModelForm:
    config = model.config
    return ModelForm(
        model_id=model.id,
        prompt_max_length=config.prompt_max_length,
        max_n=config.max_n,
        output_formats=list(config.output_formats),
        streams=config.supports_streaming,
        partial_images=MAX_PARTIAL_IMAGES if config.partial_images else 0,
        edit=config.edit.supported,
        max_reference_images=config.edit.max_reference_images,
        fields=[parameter_field(name, spec) for name, spec in config.parameters.items()],
        description=config.description,
    )
