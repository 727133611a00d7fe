"""Opaque keyset cursors for the admin listings (keys, accounts, the request log).

A cursor is the sort key of the last row of a page, JSON-encoded and base64url'd, so clients
treat it as an opaque token and a tampered one fails to decode (400 `param: cursor`) instead of
reaching SQL. Keyset ("WHERE (created_at, id) > (:c, :id)") rather than OFFSET pagination, so
pages stay cheap and stable while rows are inserted.
"""

from __future__ import annotations

import base64
import binascii
import json

from app.errors import InvalidParameter


def encode_cursor(*parts: str) -> str:
    raw = json.dumps(list(parts), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, *, parts: int) -> tuple[str, ...]:
    """The `parts` strings inside `cursor`, or 400 naming the `cursor` parameter."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        values = json.loads(raw)
    except (binascii.Error, ValueError) as exc:
        raise InvalidParameter("Invalid pagination cursor.", param="cursor") from exc
    if (
        not isinstance(values, list)
        or len(values) != parts
        or not all(isinstance(value, str) for value in values)
    ):
        raise InvalidParameter("Invalid pagination cursor.", param="cursor")
    return tuple(values)
