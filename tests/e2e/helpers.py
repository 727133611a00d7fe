"""Small helpers shared by the end-to-end tests of images: the balance, decoded images, and
catalog entries that several test modules add with `pytest.mark.gateway(models=...)`."""

from __future__ import annotations

import base64
import io

from PIL import Image

from tests.e2e.conftest import Env
from tests.support.books import assert_books_balance

#: a local-preview model that produces partial images when streaming (and supports edits)
PREVIEW_PARTIALS_MODEL = """
  preview-partials:
    routes: [{provider: local}]
    max_n: 2
    partial_images: true
    output_formats: [png, webp]
    parameters:
      width:  {type: integer, min: 64, max: 1024, default: 256}
      height: {type: integer, min: 64, max: 1024, default: 256}
    edit: {supported: true, max_reference_images: 2}
    pricing:
      per_image: 0.002
"""


def balance(env: Env) -> int:
    """The seeded account's balance in micro-dollars, after checking its books."""

    async def read(engine):  # type: ignore[no-untyped-def]
        return await assert_books_balance(engine, env.account_id)

    return int(env.run(read))


def decode(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))
