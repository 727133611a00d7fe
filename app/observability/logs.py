"""The process's log lines: human-readable by default, one JSON object per line on request.

    GATEWAY_LOG_FORMAT=console (default)   2026-12-03 07:53:13.123 INFO image_gateway.access:
                                             POST /v1/images/generations 200 41ms model=... ...
    GATEWAY_LOG_FORMAT=json                {"ts": ..., "level": "info", "logger": ...,
                                             "msg": ..., "request_id": ..., "model": ...}

Every line logged while a request runs carries its `request_id` (from `facts`), so a warning
from the ledger can be matched to its access line. Access lines (`GATEWAY_ACCESS_LOG`, on by
default) are INFO on `image_gateway.access`, written whatever `GATEWAY_LOG_LEVEL` is.

Never secrets, never image bytes (SPEC 8, issue 7):
- Third-party loggers that write request content at DEBUG are held at a floor whatever the
  level: sse-starlette logs every event (a stream's images), SQLAlchemy every statement with
  its parameters (stored idempotent responses), aiosqlite every call with its arguments,
  httpx every URL (pre-signed result URLs), Pillow every PNG chunk.
- As a last line of defence, every formatted line (tracebacks included: exception texts can
  quote SQL parameters) passes through `Scrubber`: known secrets (admin token, provider keys,
  database and Redis passwords) are replaced, gateway API keys keep only their display
  prefix, `Bearer` credentials go, and any run of 200+ base64 characters is elided.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Iterable
from typing import Any, Final, Literal

import orjson

from app.keys.secrets import DISPLAY_PREFIX_LENGTH
from app.observability.facts import current

LogFormat = Literal["console", "json"]

#: third-party loggers and the lowest level they may log at (see the module docstring)
LEVEL_FLOORS: Final[dict[str, int]] = {
    "sse_starlette": logging.WARNING,
    "sqlalchemy.engine": logging.WARNING,
    "sqlalchemy.pool": logging.WARNING,
    "aiosqlite": logging.WARNING,
    "httpx": logging.WARNING,
    "httpcore": logging.WARNING,
    "hpack": logging.WARNING,
    "PIL": logging.INFO,
    "multipart": logging.INFO,
    "python_multipart": logging.INFO,
    "asyncio": logging.INFO,
}
ACCESS_LOGGER: Final = "image_gateway.access"
MIN_BASE64_RUN: Final = 200
_BASE64_RUN: Final = re.compile(rf"[A-Za-z0-9+/_-]{{{MIN_BASE64_RUN},}}=*")
_API_KEY: Final = re.compile(r"\bsk-[A-Za-z0-9_-]{20,}")
_BEARER: Final = re.compile(r"(?i)\b(bearer\s+)[^\s\"',]+")
#: attributes every LogRecord has; anything else came in through `extra=` (uvicorn adds a
#: terminal-coloured copy of its messages, `color_message`, which is no field of ours)
_STANDARD: Final = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()
    | {"message", "asctime", "color_message"}
)
_MARK: Final = "_image_gateway_handler"
#: access fields the console message already shows
_IN_MESSAGE: Final = frozenset({"event", "method", "path", "status", "code"})


class Scrubber:
    """Removes secrets and base64 runs from a formatted line."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        found = {s for s in secrets if s and len(s) >= 8}
        # the JSON-escaped form too, in case a secret has characters JSON escapes
        found |= {orjson.dumps(s).decode()[1:-1] for s in found}
        self._secrets = sorted(found, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, "[redacted]")
        if "sk-" in text:
            text = _API_KEY.sub(_key_prefix, text)
        if "earer" in text or "EARER" in text:
            text = _BEARER.sub(r"\1[redacted]", text)
        if len(text) >= MIN_BASE64_RUN:
            text = _BASE64_RUN.sub(_elide, text)
        return text


def _key_prefix(match: re.Match[str]) -> str:
    return match.group(0)[:DISPLAY_PREFIX_LENGTH] + "…[redacted]"


def _elide(match: re.Match[str]) -> str:
    return f"[{len(match.group(0))} base64 characters elided]"


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


def _timestamp(record: logging.LogRecord) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{seconds}.{int(record.msecs):03d}Z"


class JsonFormatter(logging.Formatter):
    def __init__(self, scrub: Scrubber) -> None:
        super().__init__()
        self._scrub = scrub

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        facts = current()
        if facts is not None:
            line["request_id"] = facts.request_id
        line.update(_extras(record))
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        text = orjson.dumps(line, default=str).decode()
        return self._scrub(text)


class ConsoleFormatter(logging.Formatter):
    """`time LEVEL logger: message key=value ...` (the `extra` fields, None ones left out)."""

    def __init__(self, scrub: Scrubber) -> None:
        super().__init__()
        self._scrub = scrub

    #: (second, its strftime): one assignment, so threads logging at once read a matching pair
    _stamped: tuple[int, str] = (-1, "")

    def format(self, record: logging.LogRecord) -> str:
        second, stamp = self._stamped
        if int(record.created) != second:  # strftime once a second, not once a line
            second = int(record.created)
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
            self._stamped = (second, stamp)
        text = f"{stamp}.{int(record.msecs):03d} {record.levelname} {record.name}: "
        text += record.getMessage()
        extras = _extras(record)
        facts = current()
        if facts is not None and "request_id" not in extras:
            extras["request_id"] = facts.request_id
        for key, value in extras.items():
            if value is not None and value is not False and key not in _IN_MESSAGE:
                text += f" {key}={value}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return self._scrub(text)


def configure_logging(
    *,
    level: str,
    log_format: LogFormat,
    access_log: bool,
    secrets: Iterable[str | None] = (),
    stream: Any = None,
) -> logging.Handler:
    """Install the gateway's handler on the root logger (replacing one installed before)."""
    # LogRecord looks these up for every line (a getpid system call among them) and no line
    # of ours shows them: the access line is written once per request
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _MARK, False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    scrub = Scrubber(secrets)
    handler.setFormatter(JsonFormatter(scrub) if log_format == "json" else ConsoleFormatter(scrub))
    setattr(handler, _MARK, True)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name, floor in LEVEL_FLOORS.items():
        floor_logger = logging.getLogger(name)
        floor_logger.setLevel(max(floor, root.level))
    logging.getLogger(ACCESS_LOGGER).setLevel(logging.INFO if access_log else logging.WARNING)
    return handler
