"""Log lines: the scrubber, the JSON and console formats, and the level floors."""

from __future__ import annotations

import io
import json
import logging
import sys
import time
from collections.abc import Iterator

import pytest

from app.observability.facts import RequestFacts, close_facts, open_facts
from app.observability.logs import (
    ACCESS_LOGGER,
    LEVEL_FLOORS,
    ConsoleFormatter,
    JsonFormatter,
    Scrubber,
    configure_logging,
)

ADMIN = "admin-token-0123456789-abcdefghijklmnop"
API_KEY = "sk-" + "A1b2C3d4" * 5 + "xyz"  # 43 characters after the prefix
BASE64 = "iVBORw0KGgo" + "QUJD" * 100


def test_scrubber_removes_secrets_keys_bearers_and_base64() -> None:
    scrub = Scrubber([ADMIN, None, "short"])
    line = scrub(
        f"token={ADMIN} key={API_KEY} header='Authorization: Bearer abc.def' image={BASE64} end"
    )
    assert ADMIN not in line and "[redacted]" in line
    assert API_KEY not in line and API_KEY[:11] + "…[redacted]" in line
    assert "abc.def" not in line and "Bearer [redacted]" in line
    assert BASE64[:20] not in line and f"[{len(BASE64)} base64 characters elided]" in line
    assert line.endswith(" end")


def test_scrubber_keeps_ordinary_text() -> None:
    text = "POST /v1/images/generations 200 req_0123456789abcdef " + "ab" * 90
    assert Scrubber([ADMIN])(text) == text


def record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("app.test", logging.WARNING, __file__, 1, message, args, None)
    for key, value in extra.items():
        setattr(made, key, value)
    return made


def test_json_lines_carry_fields_request_id_and_scrubbed_tracebacks() -> None:
    formatter = JsonFormatter(Scrubber([ADMIN]))
    token = open_facts(RequestFacts("req_1", None, "POST", "/v1/x", "other"))
    try:
        try:
            raise RuntimeError(f"statement failed with parameters ({BASE64!r}, {ADMIN!r})")
        except RuntimeError:
            entry = record("settle of %s failed", "req_1", model="tiny", cost_usd=0.25)
            entry.exc_info = sys.exc_info()
            line = formatter.format(entry)
    finally:
        close_facts(token)
    parsed = json.loads(line)
    assert parsed["level"] == "warning"
    assert parsed["logger"] == "app.test"
    assert parsed["msg"] == "settle of req_1 failed"
    assert parsed["request_id"] == "req_1"
    assert parsed["model"] == "tiny" and parsed["cost_usd"] == 0.25
    assert parsed["ts"].endswith("Z")
    assert "RuntimeError" in parsed["exc"]
    assert ADMIN not in line and BASE64[:20] not in line


def test_console_lines_are_readable() -> None:
    entry = record("GET /v1/models 200 3ms", event="access", status=200, model=None, key_id="k1")
    line = ConsoleFormatter(Scrubber()).format(entry)
    assert "WARNING app.test: GET /v1/models 200 3ms key_id=k1" in line
    assert "model=" not in line and "event=" not in line


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    names = [*LEVEL_FLOORS, ACCESS_LOGGER]
    levels = {name: logging.getLogger(name).level for name in names}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, saved in levels.items():
        logging.getLogger(name).setLevel(saved)


@pytest.mark.usefixtures("restore_logging")
def test_console_time_stamps_follow_each_line_across_seconds() -> None:
    """The date and time are formatted once a second, never left behind by a later line."""
    formatter = ConsoleFormatter(Scrubber())
    lines = []
    for created in (1_700_000_000.25, 1_700_000_000.75, 1_700_000_001.5, 1_700_003_601.0):
        entry = record("tick")
        entry.created, entry.msecs = created, (created % 1) * 1000
        lines.append(formatter.format(entry))
    expected = [
        time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(int(t))) + f".{int(t % 1 * 1000):03d}"
        for t in (1_700_000_000.25, 1_700_000_000.75, 1_700_000_001.5, 1_700_003_601.0)
    ]
    assert [line.split(" WARNING ")[0] for line in lines] == expected


def test_configure_logging_floors_noisy_libraries_even_at_debug() -> None:
    stream = io.StringIO()
    configure_logging(
        level="debug", log_format="json", access_log=False, secrets=[ADMIN], stream=stream
    )
    configure_logging(
        level="debug", log_format="json", access_log=True, secrets=[ADMIN], stream=stream
    )
    ours = [h for h in logging.getLogger().handlers if getattr(h, "_image_gateway_handler", 0)]
    assert len(ours) == 1  # configuring again replaces, never stacks
    assert logging.getLogger("sse_starlette").getEffectiveLevel() == logging.WARNING
    assert logging.getLogger("sqlalchemy.engine.Engine").getEffectiveLevel() == logging.WARNING
    assert logging.getLogger("app.ledger").isEnabledFor(logging.DEBUG)

    logging.getLogger("sse_starlette.sse").debug("chunk: %s", BASE64)
    logging.getLogger("app.test").debug("token %s", ADMIN)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["msg"] for line in lines] == ["token [redacted]"]


@pytest.mark.usefixtures("restore_logging")
def test_access_lines_follow_the_setting_not_the_level() -> None:
    stream = io.StringIO()
    configure_logging(level="warning", log_format="console", access_log=True, stream=stream)
    assert logging.getLogger(ACCESS_LOGGER).isEnabledFor(logging.INFO)
    configure_logging(level="debug", log_format="console", access_log=False, stream=stream)
    assert not logging.getLogger(ACCESS_LOGGER).isEnabledFor(logging.INFO)
