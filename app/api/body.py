"""A request's body read within a size limit: the one rule every body reader applies."""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.requests import Request

from app.errors import PayloadTooLarge


class LimitedBody:
    """The body's chunks as they arrive, refused (413) past `limit` bytes.

    A declared Content-Length over the limit is refused at construction, before a byte is
    read (so before any other check of the request); the bytes actually received are
    counted as they arrive, since a client may send no length, or lie.
    """

    def __init__(self, request: Request, limit: int) -> None:
        self._request = request
        self.limit = limit
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise self.too_large()

    def too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(f"The request body exceeds the limit of {self.limit} bytes.")

    async def __aiter__(self) -> AsyncIterator[bytes]:
        size = 0
        async for chunk in self._request.stream():
            size += len(chunk)
            if size > self.limit:
                raise self.too_large()
            yield chunk
