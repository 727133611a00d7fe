"""Multi-megabyte base64 values lifted out of a JSON body before it is parsed.

A 1024 px answer from an OpenAI-style API is ~4.2 MB of JSON, almost all of it one
`"b64_json": "<base64>"` value. A JSON parser turns that value into a 4 MB `str` (a copy and
a UTF-8 pass), and the adapter then needs it as bytes again (a second copy). Instead:

    body ──lift_b64_values──▶ skeleton: the body with each `"b64_json": "<base64>"` value
                                        replaced by a short placeholder (a few hundred bytes)
                              values:   placeholder ──▶ memoryview of that value in `body`
    skeleton ──the adapter's usual pydantic parse──▶ a `b64_json` equal to a placeholder
                                                     is that memoryview (no copy, no str)

Why the skeleton parses exactly like the body. A value is lifted only when it follows
`"b64_json"`, optional JSON whitespace, `:`, optional whitespace and `"`, runs to the next
`"`, and is strict base64 (`codec.check_b64`: `A-Z a-z 0-9 + /`, `=` padding); its
placeholder (`igw-<nonce>-<n>`) uses only letters, digits and `-`. Whether a byte of a JSON
text is inside a string or not changes only at a `"` not escaped by a `\\`, and neither the
lifted text nor its placeholder contains a `"`, a `\\` or a control character, so every byte
outside the replaced regions is tokenised the same way in both texts, and each replaced
region is inside a string in one exactly when it is in the other. Outside a string, both
would follow a `"` directly with a letter, digit or `+/=`, which is never valid JSON. So the
skeleton is valid JSON exactly when the body is, with the same structure. The nonce is drawn
at random for each body, so no text of the body, escaped or not, can be made to spell a
placeholder: a parsed string equal to one is that replaced region, whose value in the body
is the lifted text.

Anything that does not fit (a value with escapes such as `\\/`, one that is not strict
base64, whitespace runs longer than `MAX_WHITESPACE`) lifts nothing, and the caller parses
the body as it is: the same answer (including its refusal of invalid base64), just slower.
Lifted values have passed `codec.check_b64`, the check a parsed `b64_json` string gets.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Final

from app.images.codec import ImageError, check_b64

KEY: Final = b'"b64_json"'
#: JSON whitespace tolerated around the colon; longer runs are left to the full parse
MAX_WHITESPACE: Final = 64
_WHITESPACE: Final = b" \t\n\r"


@dataclass(frozen=True, slots=True)
class Lifted:
    """A body with its large base64 values replaced, and those values by placeholder."""

    skeleton: bytes | bytearray
    values: dict[str, memoryview] = field(default_factory=dict)

    def value(self, text: str) -> memoryview | None:
        """The lifted value a parsed string stands for, or None if it is an ordinary one."""
        return self.values.get(text) if self.values else None


def lift_b64_values(body: bytes | bytearray) -> Lifted:
    """`body` with each non-empty `"b64_json"` value replaced by a placeholder (module docstring);
    `Lifted(body)` with nothing lifted whenever anything is unusual."""
    view = memoryview(body)
    parts: list[bytes | memoryview] = []
    values: dict[str, memoryview] = {}
    cursor = 0  # everything before it is in `parts`
    search = 0
    prefix = b"igw-" + secrets.token_hex(8).encode() + b"-"
    while (found := body.find(KEY, search)) >= 0:
        search = found + len(KEY)
        start = _value_start(body, search)
        if start is None:
            continue
        end = body.find(b'"', start)
        if end < 0:
            return Lifted(body)  # an unterminated string: the parser will say so
        search = end + 1
        if end == start:
            continue  # "": nothing to lift
        try:
            check_b64(view[start:end])
        except ImageError:
            return Lifted(body)  # escapes, or not base64: the full parse decides
        placeholder = prefix + str(len(values)).encode()
        parts += (view[cursor:start], placeholder)
        values[placeholder.decode()] = view[start:end]
        cursor = end
    if not values:
        return Lifted(body)
    parts.append(view[cursor:])
    skeleton = b"".join(parts)
    return Lifted(skeleton, values)


def _value_start(body: bytes | bytearray, index: int) -> int | None:
    """Where the string value after a key ending at `index` starts (after `: "`), if it is
    one within `MAX_WHITESPACE` bytes of whitespace on each side of the colon."""
    colon = _skip_whitespace(body, index)
    if colon is None or body[colon : colon + 1] != b":":
        return None
    quote = _skip_whitespace(body, colon + 1)
    if quote is None or body[quote : quote + 1] != b'"':
        return None
    return quote + 1


def _skip_whitespace(body: bytes | bytearray, index: int) -> int | None:
    window = body[index : index + MAX_WHITESPACE + 1]
    skipped = len(window) - len(window.lstrip(_WHITESPACE))
    return None if skipped > MAX_WHITESPACE else index + skipped
