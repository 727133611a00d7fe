"""`image-gateway serve`: check everything, migrate, bootstrap the embedded demo, run uvicorn.

Order matters for operators: every start-up check (`app.preflight`: settings, the catalog with
an adapter per provider, the database and Redis) runs before anything is printed, so a broken
setup is one `error:` line and exit 2, never a banner followed by a traceback.

`--workers N` runs N uvicorn worker processes on one socket. SIGHUP to the parent is passed
on to every worker, each of which reloads the catalog in place (`app.catalog.reload`), instead
of uvicorn's default of restarting them. With N > 1 the workers share a Prometheus metrics
directory (`app.observability.multiproc`), created before they start and removed at exit.

Logging is the gateway's own (`app.observability.logs`), in the supervisor and in every worker;
uvicorn's log config and access log are off (the gateway writes one access line per request).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path

import uvicorn
from uvicorn.supervisors import Multiprocess

from app.bootstrap import demo_banner, ensure_demo_key
from app.db.migrate import upgrade
from app.observability.multiproc import metrics_directory, worker_died
from app.observability.setup import configure_process_logging
from app.preflight import check_catalog, check_services
from app.settings import Settings

logger = logging.getLogger(__name__)


class _ForwardHup(Multiprocess):
    """uvicorn's supervisor, but SIGHUP reloads each worker's catalog instead of restarting it,
    and a worker that is gone has its live metrics gauges dropped."""

    metrics_dir: Path | None = None

    def keep_subprocess_alive(self) -> None:
        before = {process.pid for process in self.processes}
        super().keep_subprocess_alive()
        for pid in before - {process.pid for process in self.processes}:
            if pid is not None:
                worker_died(pid, self.metrics_dir)

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
    configure_process_logging(settings)
    preflight(settings)
    upgrade(settings.database_url)
    demo = asyncio.run(ensure_demo_key(settings))
    if demo:
        admin_enabled = bool(settings.admin_token)
        print(demo_banner(demo, host, port, admin_enabled=admin_enabled), flush=True)
    config = uvicorn.Config(
        "app.main:serve_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=settings.log_level,
        access_log=access_log,
        proxy_headers=True,
        server_header=False,
        log_config=None,  # the gateway's handlers (configured above and in each worker)
    )
    with metrics_directory(
        workers=workers, configured=settings.prometheus_multiproc_dir
    ) as metrics_dir:
        if workers > 1:
            supervisor = _ForwardHup(config, sockets=[config.bind_socket()])
            supervisor.metrics_dir = metrics_dir
            supervisor.run()
        else:
            uvicorn.Server(config).run()
