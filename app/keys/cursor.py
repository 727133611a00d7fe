"""Opaque keyset cursors for the admin listings (keys, accounts, the request log).

A cursor is the sort key of the last row of a page, JSON-encoded and base64url'd, so clients
treat it as an opaque token and a tampered one fails to decode (400 `param: cursor`) instead of
reaching SQL. Keyset ("WHERE (created_at, id) > (:c, :id)") rather than OFFSET pagination, so
pages stay cheap and stable while rows are inserted.

The ledger pages by its integer row id, so its cursor is that id in plain ASCII digits,
bounded by BIGINT: `decode_id_cursor` refuses anything else (Unicode digits such as "٣", a
sign, a value the column cannot hold) with the same 400, before any SQL runs.
"""

from __future__ import annotations

import base64
import binascii
import json
import re

from app.errors import InvalidParameter


def encode_cursor(*parts: str) -> str:
    raw = json.dumps(list(parts), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, *, parts: int) -> tuple[str, ...]:
    """The `parts` strings inside `cursor`, or 400 naming the `cursor` parameter."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        values = json.loads(raw)
    except (binascii.Error, ValueError, RecursionError) as exc:
        raise _invalid() from exc
    if (
        not isinstance(values, list)
        or len(values) != parts
        or not all(isinstance(value, str) and "\x00" not in value for value in values)
    ):
        raise _invalid()
    return tuple(values)


#: the largest id a BIGINT column holds
_MAX_ID = 2**63 - 1
_DIGITS = re.compile(r"[0-9]{1,19}")


def decode_id_cursor(cursor: str) -> int:
    """An integer row-id cursor: plain ASCII digits within BIGINT, or 400 naming `cursor`."""
    if not _DIGITS.fullmatch(cursor) or int(cursor) > _MAX_ID:
        raise _invalid()
    return int(cursor)


def _invalid() -> InvalidParameter:
    return InvalidParameter("Invalid pagination cursor.", param="cursor")
