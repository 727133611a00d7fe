"""A real gateway on loopback for end-to-end tests: uvicorn in a background thread.

The official `openai` SDK talks to it over HTTP exactly as users' code does. Each `LiveGateway`
gets its own catalog file, database URL and admin token; `stop()` runs the lifespan shutdown.
Every response it serves is checked against the openai SDK's own types
(`tests.support.sdk_contract`); leaving the `with` block fails the test on any violation.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import uvicorn

from app.main import create_app
from app.settings import Settings
from tests.support.sdk_contract import ContractCheckedApp

ADMIN_TOKEN = "admin-test-token-0123456789abcdefghij"


def write_catalog(folder: Path, text: str) -> Path:
    path = folder / "models.yaml"
    path.write_text(text)
    return path


class LiveGateway:
    def __init__(self, *, database_url: str, catalog_path: Path, **settings: Any) -> None:
        self.settings = Settings(
            database_url=database_url,
            gateway_config=catalog_path,
            admin_token=ADMIN_TOKEN,
            **settings,
        )
        self.app = create_app(self.settings)
        self.contract = ContractCheckedApp(self.app)
        config = uvicorn.Config(
            self.contract,
            host="127.0.0.1",
            port=0,
            log_level="warning",
            lifespan="on",
            access_log=False,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def start(self) -> LiveGateway:
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the gateway did not start")
            time.sleep(0.01)
        sockets = self._server.servers[0].sockets
        self.port = sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def gateway(self) -> Any:
        return self.app.state.gateway

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=20)

    def __enter__(self) -> LiveGateway:
        return self.start()

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.stop()
        if exc_type is None:
            self.contract.assert_clean()
