"""`image-gateway serve`: check everything, migrate, bootstrap the embedded demo, run uvicorn.

Order matters for operators: every start-up check (`app.preflight`: settings, the catalog with
an adapter per provider, the database and Redis) runs before anything is printed, so a broken
setup is one `error:` line and exit 2, never a banner followed by a traceback.

`--workers N` runs N uvicorn worker processes on one socket. SIGHUP to the parent is passed
on to every worker, each of which reloads the catalog in place (`app.catalog.reload`), instead
of uvicorn's default of restarting them. With N > 1 the workers share a Prometheus metrics
directory (`app.observability.multiproc`), created before they start and removed at exit.

Sized for thousands of slow generations in flight: the listen backlog holds a burst as large
as the upstream pool (`listen_backlog`; a connection the kernel drops is retried by the client
only after 1 s, then 3 s), and the database pool's share of Postgres's `max_connections` is
logged at start (`app.db.engine.ConnectionBudget`).

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
from app.db.engine import engine_for
from app.db.migrate import upgrade
from app.db.pool import ConnectionBudget, max_connections
from app.observability.multiproc import metrics_directory, worker_died
from app.observability.setup import configure_process_logging
from app.preflight import check_catalog, check_services
from app.settings import Settings

logger = logging.getLogger(__name__)

#: uvicorn's default listen backlog; the gateway's is at least this
UVICORN_BACKLOG = 2048

#: how long a worker may take to answer the supervisor's health ping before it is replaced
WORKER_HEALTHCHECK_S = 30


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


def listen_backlog(settings: Settings) -> int:
    """Connections the kernel may queue before they are accepted: a burst as large as the
    requests the gateway can have in flight (its upstream pool) must not meet a full queue.
    Linux caps it at `net.core.somaxconn` (4096 since 5.4)."""
    return max(UVICORN_BACKLOG, settings.upstream_max_connections)


def uvicorn_config(
    settings: Settings, host: str, port: int, workers: int = 1, access_log: bool = False
) -> uvicorn.Config:
    return uvicorn.Config(
        "app.main:serve_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        backlog=listen_backlog(settings),
        # the supervisor kills a worker that does not answer its ping in time; uvicorn's 5 s
        # kills workers that are merely slow to start on a busy host, again and again
        timeout_worker_healthcheck=WORKER_HEALTHCHECK_S,
        log_level=settings.log_level,
        access_log=access_log,
        proxy_headers=True,
        server_header=False,
        log_config=None,  # the gateway's handlers (configured above and in each worker)
    )


async def connection_budget(settings: Settings, workers: int) -> ConnectionBudget | None:
    engine = engine_for(settings, pool_size=1)
    try:
        limit = await max_connections(engine)
    finally:
        await engine.dispose()
    if limit is None:
        return None
    return ConnectionBudget(settings.db_pool_size, workers, limit)


def log_connection_budget(settings: Settings, workers: int) -> None:
    budget = asyncio.run(connection_budget(settings, workers))
    if budget is not None:
        logger.log(
            logging.WARNING if budget.replicas == 0 else logging.INFO, "%s", budget.describe()
        )


def run_server(
    settings: Settings, host: str, port: int, workers: int = 1, access_log: bool = False
) -> None:
    configure_process_logging(settings)
    preflight(settings)
    upgrade(settings.database_url)
    log_connection_budget(settings, workers)
    if workers > 1:
        # the workers inherit it: an admin catalog reload in one of them SIGHUPs this process,
        # the supervisor, which forwards that to every worker (`app.admin.catalog`)
        os.environ["GATEWAY_SUPERVISOR_PID"] = str(os.getpid())
    demo = asyncio.run(ensure_demo_key(settings))
    if demo:
        admin_enabled = bool(settings.admin_token)
        print(demo_banner(demo, host, port, admin_enabled=admin_enabled), flush=True)
    config = uvicorn_config(settings, host, port, workers, access_log)
    with metrics_directory(
        workers=workers, configured=settings.prometheus_multiproc_dir
    ) as metrics_dir:
        if workers > 1:
            supervisor = _ForwardHup(config, sockets=[config.bind_socket()])
            supervisor.metrics_dir = metrics_dir
            supervisor.run()
        else:
            uvicorn.Server(config).run()
