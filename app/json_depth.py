"""How deep a request's JSON may nest: 64 levels of arrays and objects, for every JSON body.

Bodies are hashed for their Idempotency-Key and forwarded with orjson, which refuses to write
past 254 levels (and reads up to 1,024): a body nested between the two would parse and then be
a 500. No image request nests more than a few levels, so past `MAX_DEPTH` it is a 400.
"""

from __future__ import annotations

from typing import Any, Final

from app.errors import InvalidRequest

MAX_DEPTH: Final = 64


def check_depth(root: dict[str, Any], raw: bytes | bytearray) -> None:
    """400 when `root` (parsed from `raw`) nests deeper than `MAX_DEPTH` levels.

    A body with fewer than `MAX_DEPTH` brackets and braces in all cannot nest that deep,
    so the walk, the costly part, runs only for the rare body that has that many.
    """
    if raw.count(b"[") + raw.count(b"{") <= MAX_DEPTH:
        return
    stack: list[tuple[Any, int]] = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise InvalidRequest(f"The request body nests deeper than {MAX_DEPTH} levels.")
        for value in node.values() if isinstance(node, dict) else node:
            if isinstance(value, dict | list):
                stack.append((value, depth + 1))
