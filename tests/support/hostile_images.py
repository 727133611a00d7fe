"""Worst-case images an attacker would send, built cheaply (streamed, never decoded here)."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image


def _chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


def sparse_png(width: int, height: int) -> bytes:
    """A valid RGBA PNG of `width` x `height` transparent pixels: a few hundred KB that
    decode to width * height * 4 bytes (a decompression bomb within the pixel limit)."""
    compressor = zlib.compressobj(9)
    row = b"\x00" * (1 + 4 * width)  # filter byte + RGBA
    parts = [compressor.compress(row) for _ in range(height)]
    parts.append(compressor.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", b"".join(parts))
        + _chunk(b"IEND", b"")
    )


def segmented_jpeg(total_bytes: int) -> bytes:
    """A JPEG whose header is `total_bytes` of empty 4-byte APP0 segments before a real
    64x64 frame: every header walker that visits segments one by one pays for all of them."""
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 20, 30)).save(buffer, "JPEG")
    real = buffer.getvalue()
    return real[:2] + b"\xff\xe0\x00\x02" * (total_bytes // 4) + real[2:]
