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

#: how long a worker may take to answer the supervisor's health ping before it is replaced
WORKER_HEALTHCHECK_S = 30


class _ForwardHup(Multiprocess):
    """uvicorn's supervisor, but SIGHUP reloads each worker's catalog instead of restarting it."""

    def handle_hup(self) -> None:
        """Pass SIGHUP on to every worker that has finished starting. A worker still starting
        has no handler yet (the app's lifespan installs it) and the signal's default action
        would kill it, so it is signalled as soon as it reports ready (checked on every
        supervisor tick, `handle_signals`): no worker misses a reload, none dies of one."""
        logger.info("SIGHUP: asking %d workers to reload the catalog", len(self.processes))
        self._hup_pending = frozenset(p.pid for p in self.processes if p.pid is not None)
        self._forward_hup()

    _hup_pending: frozenset[int] = frozenset()

    def handle_signals(self) -> None:
        super().handle_signals()
        if self._hup_pending:
            self._forward_hup()

    def _forward_hup(self) -> None:
        workers = {process.pid: process for process in self.processes}
        done = set()
        for pid in self._hup_pending:
            worker = workers.get(pid)
            if worker is None:  # replaced since: its successor read the file when it started
                done.add(pid)
            elif worker.is_ready(timeout=1):
                os.kill(pid, signal.SIGHUP)
                done.add(pid)
        self._hup_pending -= done


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
        # the supervisor kills a worker that does not answer its ping in time; uvicorn's 5 s
        # kills workers that are merely slow to start on a busy host, again and again
        timeout_worker_healthcheck=WORKER_HEALTHCHECK_S,
        log_level=settings.log_level,
        access_log=access_log,
        proxy_headers=True,
        server_header=False,
    )
    if workers > 1:
        _ForwardHup(config, sockets=[config.bind_socket()]).run()
    else:
        uvicorn.Server(config).run()
