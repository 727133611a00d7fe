"""`image-gateway serve`: migrate, bootstrap the embedded demo, then run uvicorn."""

from __future__ import annotations

import asyncio
import logging

import uvicorn

from app.bootstrap import demo_banner, ensure_demo_key
from app.db.migrate import upgrade
from app.settings import get_settings


def run_server(host: str, port: int, workers: int = 1, access_log: bool = False) -> None:
    settings = get_settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(levelname)s %(name)s: %(message)s"
    )
    upgrade(settings.database_url)
    secret = asyncio.run(ensure_demo_key(settings))
    if secret:
        print(demo_banner(secret, host, port), flush=True)
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=settings.log_level,
        access_log=access_log,
        proxy_headers=True,
        server_header=False,
    )
