"""Reading a JSON edit (SPEC 1.2) as the body streams in, holding it about once in memory.

    Content-Length > max_request_bytes ──────────────────────────────────▶ 413 before reading
    chunks ──_Splitter──▶ skeleton: the body, each string over 4 KiB replaced by a marker
                     └──▶ long strings: their raw bytes, one bytearray each (the data URIs)
    a string past the longest data URI an image of max_image_bytes has ───▶ 413 at that chunk
    skeleton past 2 MiB, or the body past max_request_bytes ──────────────▶ 413 at that chunk
    end ──orjson──▶ the skeleton's fields; markers at image positions ──▶ `RawText` (kept as
                    bytes, decoded only once the request is paid for: `app.images.edits`);
                    other markers ──▶ the string itself (orjson reads its escapes)

Why not hand the whole body to a JSON parser: the parsed text of a 60 MB body is a second
copy of it, and a parser's own buffer a third (orjson), for the instant it runs; a streaming
tokenizer (yajl, through ijson) re-reads a string that spans chunks from its start at every
chunk, so one 27 MB data URI costs seconds of CPU. Here the only per-byte work is C: the
splitter finds each string's end with `bytes.find` (and, inside strings with escapes, one
compiled regular expression, whose steps are bounded by counting backslashes first), so a
body costs one pass, and what it keeps is the body's bytes once: the long strings as they
arrived, the rest (at most 2 MiB) for orjson.

The marker of a long string is a string the client cannot write: it carries a random nonce
drawn for this body. A long string anywhere but at an image position (a long prompt, an
unknown field) becomes a Python `str` again, at most `MAX_FIELD_BYTES` of them in all.
"""

from __future__ import annotations

import math
import re
import secrets
from typing import Any, Final

import orjson
from starlette.requests import Request

from app.api.body import LimitedBody
from app.errors import InvalidRequest, PayloadTooLarge
from app.images.codec import MAX_DATA_URI_HEADER
from app.images.edits import RawText, RequestBody, edit_body_from_json
from app.json_depth import check_depth

#: a string up to this many bytes stays in the skeleton (short data URIs included)
INLINE_MAX: Final = 4096
#: the body without its long strings, and the long strings that are not images, each at most
MAX_FIELD_BYTES: Final = 2 * 1024 * 1024
#: escapes are read by a regular expression, one step each: a body may have this many, plus
#: one per `ESCAPE_RATIO` bytes (a data URI whose encoder writes "/" as "\/" has one per 64)
ESCAPE_ALLOWANCE: Final = 256 * 1024
ESCAPE_RATIO: Final = 32
#: a JSON string's content from where a scan starts: runs without quotes or backslashes, and
#: escape pairs; stops at the closing quote, or at a backslash that ends the chunk
_STRING_BODY: Final = re.compile(rb'[^"\\]*(?:\\.[^"\\]*)*', re.DOTALL)
_QUOTE: Final = 0x22
_BACKSLASH: Final = 0x5C


def max_data_uri_bytes(max_image_bytes: int) -> int:
    """The longest data URI an image of `max_image_bytes` can be (header included)."""
    return MAX_DATA_URI_HEADER + 4 * math.ceil(max_image_bytes / 3)


class _Splitter:
    """Splits a JSON body, chunk by chunk, into its skeleton and its long strings."""

    def __init__(self, *, max_string_bytes: int) -> None:
        self.skeleton = bytearray()
        self.long_strings: list[bytearray] = []
        self.marker = "\x00" + secrets.token_hex(12) + ":"
        self._marker_json = orjson.dumps(self.marker)[:-1]  # `"\u0000<nonce>:` (no quote)
        self._max_string = max_string_bytes
        #: the content of the string being read (None: between strings)
        self._string: bytearray | None = None
        #: the string's last byte so far is a backslash whose escaped byte has not come yet
        self._escape = False
        self._received = 0
        self._backslashes = 0

    def feed(self, chunk: bytes) -> None:
        self._received += len(chunk)
        self._backslashes += chunk.count(b"\\")
        if self._backslashes > ESCAPE_ALLOWANCE + self._received // ESCAPE_RATIO:
            raise InvalidRequest(
                "The JSON body has more escape sequences than its text and data: URIs need."
            )
        position, end = 0, len(chunk)
        view = memoryview(chunk)
        while position < end:
            if self._string is None:
                quote = chunk.find(b'"', position)
                stop = end if quote < 0 else quote
                self.skeleton += view[position:stop]
                self._check_skeleton()
                if quote < 0:
                    return
                self._string = bytearray()
                position = quote + 1
            else:
                position = self._read_string(chunk, view, position)

    def finish(self) -> None:
        if self._string is not None:
            raise InvalidRequest("The request body is not valid JSON: a string is not closed.")

    def _read_string(self, chunk: bytes, view: memoryview, position: int) -> int:
        string, end = self._string, len(chunk)
        assert string is not None
        if self._escape:  # the byte escaped by the backslash that ended the last chunk
            string += view[position : position + 1]
            position += 1
            self._escape = False
        quote = chunk.find(b'"', position)
        stop = end if quote < 0 else quote
        if chunk.find(b"\\", position, stop) >= 0:  # escapes: where does the string end?
            match = _STRING_BODY.match(chunk, position)
            assert match is not None  # the pattern matches the empty string
            stop = match.end()
            quote = stop if stop < end and chunk[stop] == _QUOTE else -1
            if stop < end and chunk[stop] == _BACKSLASH:  # a lone backslash ends the chunk
                self._escape = True
                stop = end
        string += view[position:stop]
        if len(string) > self._max_string:
            raise PayloadTooLarge(
                f"A string in the body is longer than the data: URI of the largest image "
                f"accepted ({self._max_string} bytes).",
                param=self._where(),
            )
        if quote < 0:
            return end
        self._close(string)
        return quote + 1

    def _close(self, string: bytearray) -> None:
        self._string = None
        if len(string) <= INLINE_MAX:
            self.skeleton += b'"'
            self.skeleton += string
            self.skeleton += b'"'
        else:
            self.skeleton += self._marker_json
            self.skeleton += b"%d" % len(self.long_strings)
            self.skeleton += b'"'
            self.long_strings.append(string)
        self._check_skeleton()

    def _check_skeleton(self) -> None:
        if len(self.skeleton) > MAX_FIELD_BYTES:
            raise PayloadTooLarge(
                "The JSON body, without its data: URIs, is larger than the limit of "
                f"{MAX_FIELD_BYTES} bytes."
            )

    def _where(self) -> str | None:
        """`images` or `mask`, whichever key came last before this string (a hint)."""
        images, mask = self.skeleton.rfind(b'"images"'), self.skeleton.rfind(b'"mask"')
        if images < 0 and mask < 0:
            return None
        return "images" if images > mask else "mask"


def parse_split_body(splitter: _Splitter, *, max_image_bytes: int) -> RequestBody:
    """The fields of a split body, its image positions holding `RawText` for long strings."""
    if not splitter.skeleton.strip():
        raise InvalidRequest("The request body is empty; send a JSON object.")
    try:
        body = orjson.loads(splitter.skeleton)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc.msg}.") from exc
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    check_depth(body, splitter.skeleton)
    splitter.skeleton = bytearray()
    if splitter.long_strings:
        _Resolver(splitter.marker, splitter.long_strings).resolve(body)
        splitter.long_strings = []
    return edit_body_from_json(body, max_image_bytes=max_image_bytes)


class _Resolver:
    """Puts the long strings back where their markers are."""

    def __init__(self, marker: str, long_strings: list[bytearray]) -> None:
        self.marker = marker
        self.long_strings: list[bytearray | None] = list(long_strings)
        self.text_bytes = 0

    def resolve(self, body: dict[str, Any]) -> None:
        images = body.get("images")
        if isinstance(images, list):
            for index, item in enumerate(images):
                images[index] = self._image(item)
        if "mask" in body:
            body["mask"] = self._image(body["mask"])
        if any(string is not None for string in self.long_strings):
            self._texts(body)

    def _image(self, item: Any) -> Any:
        """An image position: the item itself, `image_url`, or `image_url.url`."""
        if isinstance(item, str):
            return self._take(item, raw=True)
        if isinstance(item, dict):
            url = item.get("image_url")
            if isinstance(url, str):
                item["image_url"] = self._take(url, raw=True)
            elif isinstance(url, dict) and isinstance(url.get("url"), str):
                url["url"] = self._take(url["url"], raw=True)
        return item

    def _take(self, value: str, *, raw: bool) -> Any:
        if not value.startswith(self.marker):
            return value
        index = int(value[len(self.marker) :])
        string = self.long_strings[index]
        if string is None:  # the same marker twice: only the client's own text can be
            raise InvalidRequest("The request body is not valid JSON.")
        self.long_strings[index] = None
        if raw and _BACKSLASH not in string:
            return RawText(string)  # a data URI as it arrived, decoded once paid for
        if not raw:
            self.text_bytes += len(string)
        if self.text_bytes > MAX_FIELD_BYTES:
            raise PayloadTooLarge(
                "The JSON body, without its data: URIs, is larger than the limit of "
                f"{MAX_FIELD_BYTES} bytes."
            )
        try:  # orjson reads the escapes and checks the text as it would in a whole body
            text: str = orjson.loads(b'"' + string + b'"')
        except orjson.JSONDecodeError as exc:
            raise InvalidRequest(f"The request body is not valid JSON: {exc.msg}.") from exc
        return text

    def _texts(self, root: dict[str, Any]) -> None:
        """Every other marker, keys included, becomes its text (iterative: any depth)."""
        stack: list[Any] = [root]
        while stack:
            node = stack.pop()
            if isinstance(node, dict):
                for key in list(node):
                    value = node[key]
                    if isinstance(key, str) and key.startswith(self.marker):
                        del node[key]
                        key = self._take(key, raw=False)
                        node[key] = value
                    if isinstance(value, str):
                        node[key] = self._take(value, raw=False)
                    elif isinstance(value, dict | list):
                        stack.append(value)
            elif isinstance(node, list):
                for index, value in enumerate(node):
                    if isinstance(value, str):
                        node[index] = self._take(value, raw=False)
                    elif isinstance(value, dict | list):
                        stack.append(value)


async def read_edit_json(
    request: Request, *, max_request_bytes: int, max_image_bytes: int
) -> RequestBody:
    """A JSON edit as a `RequestBody`: fields parsed, data URIs checked but not decoded."""
    body = LimitedBody(request, max_request_bytes)
    splitter = _Splitter(max_string_bytes=max_data_uri_bytes(max_image_bytes))
    async for chunk in body:
        splitter.feed(chunk)
    splitter.finish()
    return parse_split_body(splitter, max_image_bytes=max_image_bytes)


def split_json_edit(raw: bytes, *, max_image_bytes: int) -> RequestBody:
    """`read_edit_json` for a body already in memory (tests, the console)."""
    splitter = _Splitter(max_string_bytes=max_data_uri_bytes(max_image_bytes))
    splitter.feed(raw)
    splitter.finish()
    return parse_split_body(splitter, max_image_bytes=max_image_bytes)
