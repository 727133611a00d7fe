"""A webhook receiver for tests: HTTPS on loopback with a certificate made for the test.

    with WebhookReceiver(tmp_path, secret_holder) as receiver:
        receiver.url            https://127.0.0.1:<port>/hooks
        receiver.ca_path        the PEM of the test CA the gateway must trust
        receiver.fail_next = 2  answer 500 to the next two deliveries, then 204
        receiver.verified       bodies whose Standard Webhooks signature checked out

The receiver verifies every delivery as a real consumer would (`app.webhooks.signing.verify`,
which implements the spec's scheme) against the secret it is given once the endpoint exists,
and keeps what it saw; a delivery with a bad signature is answered 400 and recorded as such.
It runs in its own thread (a plain `http.server`), so it serves while the test's event loop
or a gateway process does the sending.
"""

from __future__ import annotations

import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import trustme

from app.webhooks.signing import SignatureError, verify


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    status: int
    verified: bool

    @property
    def payload(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class WebhookReceiver:
    folder: Path
    secret: str | None = None
    #: answer this many deliveries with `fail_status` before succeeding
    fail_next: int = 0
    fail_status: int = 500
    #: True: every delivery fails (until switched back)
    failing: bool = False
    received: list[Received] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1")
        self.ca_path = self.folder / "webhook-ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_path))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        cert.configure_cert(context)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                status = receiver._answer(dict(self.headers.items()), body)
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self._server.server_address[1]}/hooks"

    def _answer(self, headers: dict[str, str], body: bytes) -> int:
        with self._lock:
            verified = False
            if self.secret is not None:
                try:
                    verify(self.secret, received=headers, body=body, now=int(time.time()),
                           tolerance_s=10**9)  # fmt: skip
                    verified = True
                except SignatureError:
                    verified = False
            if not verified:
                status = 400
            elif self.failing or self.fail_next > 0:
                self.fail_next = max(self.fail_next - 1, 0)
                status = self.fail_status
            else:
                status = 204
            self.received.append(Received(headers, body, status, verified))
            return status

    @property
    def delivered(self) -> list[Received]:
        """Deliveries answered 2xx (signature verified)."""
        with self._lock:
            return [r for r in self.received if 200 <= r.status < 300]

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
