"""Reading a multipart edit (SPEC 1.2) as the body streams in, refusing early past the limits.

    Content-Length > max_request_bytes ─────────────────────────────▶ 413 before reading
    chunks ──python-multipart──▶ parts ──▶ image / image[] / mask:  bytes, each <= max_image_bytes
                                       └─▶ other text parts:        str fields, each <= 1 MiB
    running total > max_request_bytes ──────────────────────────────▶ 413 mid-stream

Nothing is spooled to disk: the limits bound memory, and an image part that grows past its limit
is refused at that chunk, before the rest of the body is read. The parts' filenames and
content types are ignored (the images are sniffed afterwards, in `app.images.edits`). Images
keep their order whether they came as `image` or `image[]`, both names mixed. A text field
sent twice keeps its last value; any other file part (the SDKs' `markup`, say) is refused,
since it could not be forwarded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from app.api.body import LimitedBody
from app.errors import InvalidParameter, InvalidRequest, PayloadTooLarge
from app.images.edits import RequestBody

IMAGE_PARTS: Final = frozenset({"image", "image[]"})
MAX_FIELD_BYTES: Final = 1024 * 1024
MAX_PARTS: Final = 128
MAX_BOUNDARY_CHARS: Final = 256


@dataclass(slots=True)
class _Part:
    name: str = ""
    is_file: bool = False
    data: bytearray = field(default_factory=bytearray)


class _FormReader:
    """python-multipart callbacks collecting the parts, enforcing the per-part limits."""

    def __init__(self, *, max_image_bytes: int) -> None:
        self.max_image_bytes = max_image_bytes
        self.fields: dict[str, str] = {}
        self.images: list[bytes] = []
        self.mask: bytes | None = None
        self.finished = False
        self._parts = 0
        self._part = _Part()
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._disposition = b""

    def on_part_begin(self) -> None:
        self._parts += 1
        if self._parts > MAX_PARTS:
            raise InvalidRequest(f"The form has more than {MAX_PARTS} parts.")
        self._part = _Part()
        self._disposition = b""

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        if bytes(self._header_name).lower() == b"content-disposition":
            self._disposition = bytes(self._header_value)
        self._header_name.clear()
        self._header_value.clear()

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        name = options.get(b"name")
        if not name:
            raise InvalidRequest("A form part has no name (Content-Disposition: form-data; name=).")
        self._part.name = name.decode("utf-8", "replace")
        self._part.is_file = self._part.name in IMAGE_PARTS or self._part.name == "mask"
        if not self._part.is_file and b"filename" in options:
            raise InvalidParameter(
                f"Unexpected file part '{self._part.name}': only image, image[] and mask "
                "may be files.",
                param=self._part.name,
            )

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self._part
        part.data += data[start:end]
        limit = self.max_image_bytes if part.is_file else MAX_FIELD_BYTES
        if len(part.data) > limit:
            what = "An image" if part.name in IMAGE_PARTS else f"The '{part.name}' part"
            raise PayloadTooLarge(
                f"{what} is larger than the limit of {limit} bytes.", param=part.name
            )

    def on_part_end(self) -> None:
        part = self._part
        if part.name in IMAGE_PARTS:
            self.images.append(bytes(part.data))
        elif part.name == "mask":
            self.mask = bytes(part.data)
        else:
            try:
                self.fields[part.name] = part.data.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InvalidParameter(
                    f"The form field '{part.name}' is not UTF-8 text.", param=part.name
                ) from exc

    def on_end(self) -> None:
        self.finished = True


async def read_edit_form(
    request: Request, *, max_request_bytes: int, max_image_bytes: int
) -> RequestBody:
    """The multipart edit as a `RequestBody` (fields as strings, images as raw bytes)."""
    body = LimitedBody(request, max_request_bytes)
    _, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if not boundary:
        raise InvalidRequest("The multipart/form-data Content-Type has no boundary.")
    if len(boundary) > MAX_BOUNDARY_CHARS:  # RFC 2046 allows 70; python-multipart 256
        raise InvalidRequest(
            f"The multipart boundary is longer than {MAX_BOUNDARY_CHARS} characters."
        )
    reader = _FormReader(max_image_bytes=max_image_bytes)
    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": reader.on_part_begin,
            "on_part_data": reader.on_part_data,
            "on_part_end": reader.on_part_end,
            "on_header_field": reader.on_header_field,
            "on_header_value": reader.on_header_value,
            "on_header_end": reader.on_header_end,
            "on_headers_finished": reader.on_headers_finished,
            "on_end": reader.on_end,
        },
    )
    try:
        async for chunk in body:
            parser.write(chunk)
        parser.finalize()
    except FormParserError as exc:
        raise InvalidRequest("The multipart/form-data body is malformed.") from exc
    if not reader.finished:
        raise InvalidRequest("The multipart/form-data body ends before its closing boundary.")
    return RequestBody(reader.fields, images=reader.images, mask=reader.mask, from_form=True)
