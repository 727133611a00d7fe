"""The one typed interface every provider adapter implements.

The image service validates and prices a request, then hands each route's adapter an
`ImageRequest`: the prompt, `n`, the validated model parameters (defaults applied, sizing
translated), and the fields the model did not declare (`extra`, forwarded unchanged). The
adapter reshapes that into its provider's own wire format, performs the call(s) through the
shared upstream client it was built with, and returns raw image bytes as an
`AdapterResult`. Decoding base64, downloading result URLs (size-limited), polling async jobs
and fanning `n` out into concurrent calls are the adapter's business; transcoding to the
requested `output_format` and reading the real size are the service's (done once, for every
provider alike).

Adapters never read the environment: credentials arrive in the `ProviderConfig`. Provider
failures are translated into `app.errors` classes (`UpstreamError`, `UpstreamTimeout`,
`UpstreamUnavailable`, `ContentBlocked`, ...) inside the adapter, chained with `from exc`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import pybase64

from app.catalog.schema import OutputFormat, ProviderConfig
from app.images.work import ImageWorkPool, default_image_work
from app.upstream_client import UpstreamHttp

SizingStyle = Literal["pixel", "tier", "aspect", "preset", "none"]


@dataclass(frozen=True, slots=True)
class ImageRequest:
    prompt: str
    n: int
    output_format: OutputFormat
    #: the model's sizing style, from its declared parameters
    sizing: SizingStyle
    #: what an OpenAI-style upstream should get as `size`: "WxH" (pixel/tier/aspect styles),
    #: the preset value (preset style), or None (let the upstream decide)
    size: str | None
    #: validated, declared model parameters, defaults applied (sizing fields included)
    params: dict[str, Any]
    quality: str | None = None
    seed: int | None = None
    #: fields the model does not declare, forwarded unchanged
    extra: dict[str, Any] = field(default_factory=dict)
    user: str | None = None
    #: edits: reference images (raw bytes, already sniffed) and an optional mask
    images: tuple[bytes, ...] = ()
    mask: bytes | None = None
    #: streaming: how many partial images the client asked for (0 = none; already 0 unless
    #: the model declares `partial_images: true`)
    partial_images: int = 0


class UpstreamImage:
    """One image from a provider: its bytes, or the base64 text the provider sent.

    A provider that answers base64 (OpenAI-style `b64_json`) is given as `b64` and is decoded
    only if someone needs the bytes: when the format already is the one the client asked for,
    the service sniffs and measures a decoded prefix (`head`) and passes the base64 through
    to the response unchanged, saving a 4 MB decode and re-encode per 1024 px image. The
    adapter has checked the text is strict base64 (`codec.check_b64`) before building this;
    it may be a `memoryview` into the provider's answer (`app.adapters.b64_fields`), so the
    text is never copied on its way to the response.
    """

    __slots__ = ("_b64", "_data", "revised_prompt")

    def __init__(
        self,
        data: bytes | None = None,
        revised_prompt: str | None = None,
        *,
        b64: bytes | memoryview | None = None,
    ) -> None:
        if (data is None) == (b64 is None):
            raise ValueError("give exactly one of data and b64")
        self._data = data
        self._b64 = b64
        self.revised_prompt = revised_prompt

    @property
    def data(self) -> bytes:
        if self._data is None:
            assert self._b64 is not None
            self._data = pybase64.b64decode(self._b64)
        return self._data

    @property
    def b64(self) -> bytes | memoryview:
        """The standard base64 of the image (the provider's own text when it sent one)."""
        if self._b64 is None:
            assert self._data is not None
            self._b64 = pybase64.b64encode(self._data)
        return self._b64

    def head(self, size: int) -> bytes:
        """At least the first `size` bytes of the image (all of it if shorter), decoding
        only that much of a base64 answer."""
        if self._data is not None:
            return self._data[:size]
        assert self._b64 is not None
        chars = -(-size // 3) * 4  # whole base64 quanta covering `size` bytes
        return pybase64.b64decode(self._b64[:chars])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, UpstreamImage):
            return NotImplemented
        return self.data == other.data and self.revised_prompt == other.revised_prompt

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        size = len(self._data) if self._data is not None else f"b64:{len(self._b64 or b'')}"
        return f"UpstreamImage({size}, revised_prompt={self.revised_prompt!r})"


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """Token counts as the provider reported them; the details map `<modality>_tokens`
    (`text_tokens`, `image_tokens`, ...) to counts."""

    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    input_tokens_details: dict[str, int] | None = None
    output_tokens_details: dict[str, int] | None = None


@dataclass(frozen=True, slots=True)
class AdapterResult:
    images: list[UpstreamImage]
    usage: TokenUsage | None = None
    #: the settings the provider says it used (OpenAI-style answers resolve `quality: auto`
    #: and `background: auto` to what was chosen); None where it does not say
    quality: str | None = None
    background: str | None = None


@dataclass(frozen=True, slots=True)
class AdapterContext:
    """What every adapter is built with at start-up: the shared client and the limits."""

    http: UpstreamHttp
    max_download_bytes: int
    #: where decoding, resizing and rendering run (bounded threads, megapixel budget)
    image_work: ImageWorkPool = field(default_factory=default_image_work)


#: where an adapter hands a partial image (raw bytes, any format) while it works on a stream
PartialSink = Callable[[bytes], Awaitable[None]]


class ImageAdapter(Protocol):
    """One provider's adapter, built once per catalog provider."""

    async def generate(
        self,
        request: ImageRequest,
        *,
        upstream_model: str,
        on_partial: PartialSink | None = None,
    ) -> AdapterResult:
        """Produce up to `request.n` images; fewer is allowed (the caller bills what came).

        `on_partial` is given when the client streams and asked for `request.partial_images`
        previews; an adapter whose provider has none simply never calls it.
        """
        ...


class AdapterFactory(Protocol):
    def __call__(self, provider: ProviderConfig, context: AdapterContext) -> ImageAdapter: ...
