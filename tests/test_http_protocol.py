"""`app.http_protocol`: a response's head goes out with its body, in one write, and only then."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import uvicorn

from app.http_protocol import HeadWithBodyProtocol, _HeadWithBody
from app.server import uvicorn_config
from app.settings import Settings

HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n"


class _Transport:
    def __init__(self) -> None:
        self.writes: list[bytes | tuple[bytes, ...]] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def writelines(self, chunks: tuple[bytes, ...]) -> None:
        self.writes.append(tuple(chunks))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


class _Loop:
    def __init__(self) -> None:
        self.soon: list[Callable[[], None]] = []

    def call_soon(self, callback: Callable[[], None]) -> None:
        self.soon.append(callback)

    def end_of_iteration(self) -> None:
        for callback in self.soon:
            callback()
        self.soon.clear()


def _held(
    *, chunked: bool | None = False, length: int = 4, method: str = "POST"
) -> tuple[_HeadWithBody, _Transport, _Loop, Any]:
    transport, loop = _Transport(), _Loop()
    cycle = SimpleNamespace(
        response_started=False,
        chunked_encoding=chunked,
        expected_content_length=length,
        scope={"method": method},
    )
    return _HeadWithBody(transport, cycle, loop), transport, loop, cycle  # type: ignore[arg-type]


def test_a_fixed_length_response_is_one_write_of_head_and_body() -> None:
    held, transport, loop, cycle = _held()
    cycle.response_started = True
    held.write(HEAD)
    assert transport.writes == []
    held.write(b"body")
    loop.end_of_iteration()
    assert transport.writes == [(HEAD, b"body")]


def test_a_head_whose_body_does_not_follow_goes_out_at_the_end_of_the_iteration() -> None:
    held, transport, loop, cycle = _held()
    cycle.response_started = True
    held.write(HEAD)
    loop.end_of_iteration()
    assert transport.writes == [HEAD]
    held.write(b"body")
    assert transport.writes == [HEAD, b"body"]


@pytest.mark.parametrize(
    "shape",
    [
        {"chunked": True, "length": 0},  # a stream: its head must not wait for an event
        {"chunked": False, "length": 0},  # no body will follow
        {"chunked": False, "length": 4, "method": "HEAD"},
    ],
    ids=["chunked", "empty", "HEAD"],
)
def test_heads_without_a_body_right_behind_are_written_at_once(shape: dict[str, Any]) -> None:
    held, transport, _, cycle = _held(**shape)
    cycle.response_started = True
    held.write(HEAD)
    assert transport.writes == [HEAD]


def test_writes_before_the_response_starts_are_not_held() -> None:
    held, transport, _, cycle = _held()
    held.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert transport.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]
    cycle.response_started = True
    held.write(HEAD)  # the response's head is still the one held
    assert transport.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]


def test_closing_writes_a_held_head_first_and_the_rest_is_the_transports() -> None:
    held, transport, loop, cycle = _held()
    cycle.response_started = True
    held.write(HEAD)
    held.close()
    loop.end_of_iteration()
    assert transport.writes == [HEAD]
    assert transport.closed
    assert held.get_extra_info("peername") == "info:peername"


def test_a_held_head_is_dropped_when_the_connection_is_already_closing() -> None:
    held, transport, loop, cycle = _held()
    cycle.response_started = True
    held.write(HEAD)
    transport.closed = True
    loop.end_of_iteration()
    assert transport.writes == []


# a real server ---------------------------------------------------------------------------


#: set by the client once it has read a streamed response's head
HEAD_SEEN = threading.Event()


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await receive()
    if scope["path"] == "/stream":  # the head, then the body only once the client has it
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(500):
            if HEAD_SEEN.is_set():
                break
            await asyncio.sleep(0.01)
        body = b"late" if HEAD_SEEN.is_set() else b"head never seen"
        await send({"type": "http.response.body", "body": body, "more_body": False})
        return
    body = b"hello"
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    config = uvicorn.Config(
        _app, host="127.0.0.1", port=0, http=HeadWithBodyProtocol, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline
        time.sleep(0.01)
    yield server.servers[0].sockets[0].getsockname()[1]
    server.should_exit = True
    thread.join(timeout=10)


def _read_until(sock: socket.socket, end: bytes) -> bytes:
    data = b""
    while not data.endswith(end):
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    return data


def test_keep_alive_responses_arrive_whole_one_after_another(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        for _ in range(2):
            sock.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            response = _read_until(sock, b"hello")
            assert response.startswith(b"HTTP/1.1 200 OK\r\n")
            assert b"content-length: 5\r\n" in response
        sock.sendall(b"HEAD / HTTP/1.1\r\nhost: x\r\n\r\n")
        assert b"content-length: 5\r\n" in _read_until(sock, b"\r\n\r\n")


def test_a_streamed_head_reaches_the_client_before_its_body(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /stream HTTP/1.1\r\nhost: x\r\n\r\n")
        head = _read_until(sock, b"\r\n\r\n")
        HEAD_SEEN.set()
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"transfer-encoding: chunked" in head
        assert b"late" in _read_until(sock, b"0\r\n\r\n")


def test_the_server_runs_this_protocol() -> None:
    assert uvicorn_config(Settings(), "127.0.0.1", 8000).http is HeadWithBodyProtocol
