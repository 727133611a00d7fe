"""The metrics directory shared by `serve --workers N` (prometheus-client's multiprocess mode).

With several workers on one socket, a scrape lands on any one of them, so each worker writes
its values to memory-mapped files in one directory and `/metrics` merges them all. The
directory's life is tied to the supervisor (the `serve` process):

    serve --workers N (N > 1), PROMETHEUS_MULTIPROC_DIR unset
        ─▶ a fresh private directory (mkdtemp) is created before the workers start, passed
           to them in the environment, and deleted when serve exits
    PROMETHEUS_MULTIPROC_DIR set (any N; e.g. a tmpfs volume in a container)
        ─▶ used as given; the `*.db` files of an earlier run are deleted at start, since
           prometheus-client would otherwise add the old counts to the new ones
    serve --workers 1 and unset ─▶ no directory: plain in-process metrics

A worker that dies is replaced by the supervisor; its live gauges (in flight, pools) are
dropped at once (`mark_process_dead`) while its counters and histograms stay in the totals,
as a Prometheus counter must never go down. Give every `serve` its own directory: two
gateways sharing one would wipe and double-count each other.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Final

ENV: Final = "PROMETHEUS_MULTIPROC_DIR"


def wipe(directory: Path) -> None:
    for stale in directory.glob("*.db"):
        stale.unlink(missing_ok=True)


@contextlib.contextmanager
def metrics_directory(*, workers: int, configured: Path | None) -> Iterator[Path | None]:
    """Prepare the directory for this run (see the module docstring); the workers inherit it
    through the environment, which is why this sets `os.environ` (restored on exit)."""
    if configured is None and workers <= 1:
        yield None
        return
    previous = os.environ.get(ENV)
    directory = configured or Path(tempfile.mkdtemp(prefix="image-gateway-metrics-"))
    if configured is not None:
        configured.mkdir(parents=True, exist_ok=True)
        wipe(configured)
    os.environ[ENV] = str(directory)
    try:
        yield directory
    finally:
        if previous is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = previous
        if configured is None:
            shutil.rmtree(directory, ignore_errors=True)


def worker_died(pid: int, directory: Path | None) -> None:
    """Drop a dead worker's live gauges from the merged view."""
    if directory is None:
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, str(directory))  # type: ignore[no-untyped-call]
