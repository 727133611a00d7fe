"""`image-gateway serve`: check everything, migrate, bootstrap the embedded demo, run uvicorn.

Order matters for operators: every start-up check (`app.preflight`: settings, the catalog with
an adapter per provider, the database and Redis) runs before anything is printed, so a broken
setup is one `error:` line and exit 2, never a banner followed by a traceback.

`--workers N` runs N uvicorn worker processes on one socket. SIGHUP to the parent is passed
on to every worker, each of which reloads the catalog in place (`app.catalog.reload`), instead
of uvicorn's default of restarting them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal

import uvicorn
from uvicorn.supervisors import Multiprocess

from app.bootstrap import demo_banner, ensure_demo_key
from app.db.migrate import upgrade
from app.preflight import check_catalog, check_services
from app.settings import Settings

logger = logging.getLogger(__name__)


class _ForwardHup(Multiprocess):
    """uvicorn's supervisor, but SIGHUP reloads each worker's catalog instead of restarting it."""

    def handle_hup(self) -> None:
        logger.info("SIGHUP: asking %d workers to reload the catalog", len(self.processes))
        for process in self.processes:
            if process.process.pid is not None and process.is_alive(timeout=1):
                os.kill(process.process.pid, signal.SIGHUP)


def preflight(settings: Settings) -> None:
    """Everything `serve` checks before printing; raises `app.preflight.SetupError`."""
    check_catalog(settings)
    check_services(settings)


def run_server(
    settings: Settings, host: str, port: int, workers: int = 1, access_log: bool = False
) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(levelname)s %(name)s: %(message)s"
    )
    preflight(settings)
    upgrade(settings.database_url)
    if workers > 1:
        # the workers inherit it: an admin catalog reload in one of them SIGHUPs this process,
        # the supervisor, which forwards that to every worker (`app.admin.catalog`)
        os.environ["GATEWAY_SUPERVISOR_PID"] = str(os.getpid())
    demo = asyncio.run(ensure_demo_key(settings))
    if demo:
        admin_enabled = bool(settings.admin_token)
        print(demo_banner(demo, host, port, admin_enabled=admin_enabled), flush=True)
    config = uvicorn.Config(
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
    if workers > 1:
        _ForwardHup(config, sockets=[config.bind_socket()]).run()
    else:
        uvicorn.Server(config).run()
