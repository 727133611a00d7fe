"""`image-gateway serve` itself as a subprocess: the supervisor, its workers and its logging
exactly as an operator runs them (unlike `GatewayProcess`, which starts uvicorn directly).

    with ServeCommand(database_url=..., catalog=..., log_dir=tmp_path, workers=2) as gw:
        httpx.get(f"{gw.url}/metrics")
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Self

from tests.support.processes import GatewayProcess

CLI = "import sys; from app.cli import main; sys.argv[0] = 'image-gateway'; main()"


class ServeCommand(GatewayProcess):
    def __init__(
        self, *, database_url: str, catalog: Path, log_dir: Path, workers: int = 1, **env: str
    ) -> None:
        super().__init__(database_url=database_url, catalog=catalog, log_dir=log_dir, **env)
        self.workers = workers

    def start(self) -> Self:
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                CLI,
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                str(self.workers),
            ],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        return self

    def __enter__(self) -> Self:
        self.start()
        try:
            self.wait_ready(timeout_s=60)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")
