"""Reloading `config/models.yaml` into a running gateway, without dropping anything in flight.

    SIGHUP ─────────────┐                     (`serve --workers N`: the supervisor forwards it
    POST /admin/v1/     ├─▶ CatalogReloader.reload()                  to every worker process)
      catalog/reload ───┘     1. load + compile the file (a thread: YAML parsing is CPU work)
                              2. build an adapter for EVERY declared provider, hidden ones too
                                 (exactly `serve`'s start-up checks, `app.preflight`)
                              3. LiveCatalog.swap(new snapshot)   ── one reference assignment

Any failure in 1 or 2 raises `CatalogReloadRefused` naming the file and field, and nothing is
swapped: the old catalog keeps serving. A request reads the snapshot once when it starts and
keeps it until it ends (`app.images.service`), so requests in flight finish on the catalog they
started with, new requests see the new one. Old adapters hold no resources of their own (they
share the process's HTTP client), so the old snapshot is simply dropped by its last request.

Secrets (`${VAR}`) are resolved from this process's environment, as at start-up: a reload
re-reads the file, not the environment. Reloads run one at a time per process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from app.adapters.base import AdapterContext, ImageAdapter
from app.adapters.registry import build_adapter
from app.catalog.errors import CatalogError
from app.catalog.live import CatalogSnapshot, LiveCatalog
from app.catalog.loader import Catalog, load_catalog

logger = logging.getLogger(__name__)


class CatalogReloadRefused(Exception):
    """The new file cannot be used; `str()` says why (file, field, problem). Nothing changed."""


@dataclass(frozen=True, slots=True)
class ReloadReport:
    """What a successful reload changed."""

    path: Path
    models: list[str]
    added: list[str]
    removed: list[str]
    warnings: list[str]

    def summary(self) -> str:
        changes = []
        if self.added:
            changes.append("added " + ", ".join(self.added))
        if self.removed:
            changes.append("removed " + ", ".join(self.removed))
        return (
            f"catalog reloaded from {self.path}: {len(self.models)} models"
            + (f" ({'; '.join(changes)})" if changes else " (no models added or removed)")
            + (f", {len(self.warnings)} warnings" if self.warnings else "")
        )


def build_snapshot(
    path: Path, env: Mapping[str, str], context: AdapterContext
) -> tuple[CatalogSnapshot, list[str]]:
    """A complete, checked snapshot of the file, and its warnings; `CatalogReloadRefused`."""
    with _muted("app.catalog.loader"):  # warnings are returned, logged once by the caller
        try:
            catalog = load_catalog(path, env)
        except CatalogError as exc:
            raise CatalogReloadRefused(str(exc)) from None
        except OSError as exc:  # unreadable (permissions, a directory): not a CatalogError
            raise CatalogReloadRefused(f"{path}: cannot read the file: {exc}") from None
    return CatalogSnapshot(catalog, build_adapters(catalog, context, path)), catalog.warnings


def build_adapters(
    catalog: Catalog, context: AdapterContext, path: Path
) -> dict[str, ImageAdapter]:
    """One adapter per usable provider, after building one for every declared provider: an
    unknown adapter name or a bad option on a hidden provider is refused too, as at start-up."""
    adapters: dict[str, ImageAdapter] = {}
    for name, provider in catalog.declared_providers.items():
        try:
            adapter = build_adapter(provider, context)
        except (ValueError, TypeError) as exc:
            raise CatalogReloadRefused(f"{path}: providers.{name}: {exc}") from None
        if name in catalog.providers:
            adapters[name] = adapter
    return adapters


class CatalogReloader:
    """Reloads one process's `LiveCatalog` from the catalog file, one reload at a time."""

    def __init__(
        self,
        live: LiveCatalog,
        *,
        path: Path,
        context: AdapterContext,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.live = live
        self.path = path
        self.context = context
        self._env = env
        self._lock = asyncio.Lock()

    async def reload(self) -> ReloadReport:
        """Swap in the file's catalog, or raise `CatalogReloadRefused` and keep the old one."""
        async with self._lock:
            env = os.environ if self._env is None else self._env
            snapshot, warnings = await asyncio.to_thread(
                build_snapshot, self.path, dict(env), self.context
            )
            previous = self.live.swap(snapshot)
        before, after = set(previous.catalog.models), list(snapshot.catalog.models)
        report = ReloadReport(
            path=self.path,
            models=after,
            added=[name for name in after if name not in before],
            removed=sorted(before - set(after)),
            warnings=warnings,
        )
        logger.info(report.summary())
        for warning in warnings:
            logger.warning("catalog: %s", warning)
        return report

    async def reload_logged(self) -> None:
        """The SIGHUP path: nobody to answer, so a refusal is logged (with the reason)."""
        try:
            await self.reload()
        except CatalogReloadRefused as exc:
            logger.error("catalog reload refused, keeping the catalog in force: %s", exc)
        except Exception:  # a bug must not kill the server from a signal handler's task
            logger.exception("catalog reload failed, keeping the catalog in force")


@contextlib.contextmanager
def reload_on_sighup(reloader: CatalogReloader) -> Iterator[bool]:
    """While open, SIGHUP to this process reloads the catalog (yields whether it could hook
    the signal: only the main thread's event loop can, so in-thread test servers cannot)."""
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()

    def on_sighup() -> None:
        logger.info("SIGHUP: reloading the catalog from %s", reloader.path)
        task = loop.create_task(reloader.reload_logged(), name="catalog-reload")
        tasks.add(task)  # keep a reference until it ends (the loop holds only a weak one)
        task.add_done_callback(tasks.discard)

    try:
        loop.add_signal_handler(signal.SIGHUP, on_sighup)
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or Windows
        yield False
        return
    try:
        yield True
    finally:
        loop.remove_signal_handler(signal.SIGHUP)


def ask_supervisor_to_reload(supervisor_pid: int | None) -> bool:
    """Under `serve --workers N`, SIGHUP the supervisor so every sibling worker reloads too
    (it forwards the signal to each worker, this one included). False when not supervised."""
    if supervisor_pid is None or supervisor_pid != os.getppid():
        return False  # a stale variable (e.g. inherited by an unrelated child): do nothing
    os.kill(supervisor_pid, signal.SIGHUP)
    return True


@contextlib.contextmanager
def _muted(logger_name: str) -> Iterator[None]:
    named = logging.getLogger(logger_name)
    was = named.disabled
    named.disabled = True
    try:
        yield
    finally:
        named.disabled = was
