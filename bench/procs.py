"""Processes under measurement: start, wait until they answer, read their CPU and memory.

A `Target` is a process tree (uvicorn with `--workers 2` is a parent and two children; the
LiteLLM proxy may fork too). Its cost is read from /proc, so it is the same yardstick for every
target and needs no agent inside it:

- CPU: `utime + stime` of every live process of the tree (`/proc/<pid>/stat`, clock ticks),
  sampled before and after a run; the difference divided by the requests served is
  "CPU ms per request", a figure that stays honest on a busy shared machine where requests
  per second do not.
- Memory: a sampler thread reads `VmRSS` of the tree every 20 ms while a run is going; the
  largest sum is the run's peak RSS.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

_TICK_S = 1 / os.sysconf("SC_CLK_TCK")


def raise_fd_limit() -> None:
    """2,000 concurrent connections need ~4 descriptors each across the chain of processes."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def process_tree(root: int) -> list[int]:
    tree = _children()
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(tree.get(pid, ()))
    return found


def cpu_seconds(pids: Sequence[int]) -> float:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{pid}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total * _TICK_S


def rss_bytes(pids: Sequence[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
                    break
    return total


#: cores other work may use before a run and the run still count as taken on a quiet machine
QUIET_CORES = 0.1


def _machine_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of the whole machine since boot (`/proc/stat`, line `cpu`)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return sum(fields) - idle, sum(fields)


def machine_busy_cores(seconds: float = 5.0) -> float:
    """How many cores' worth of CPU the machine spent over `seconds`, measured while the
    bench itself is idle: what other work on the box would take away from every target.
    A quiet machine reads ~0.01; the figures of a run that starts above ~0.1 are inflated."""
    busy0, total0 = _machine_ticks()
    time.sleep(seconds)
    busy1, total1 = _machine_ticks()
    if total1 == total0:
        return 0.0
    return (busy1 - busy0) / (total1 - total0) * (os.cpu_count() or 1)


@dataclass
class Usage:
    cpu_s: float = 0.0
    peak_rss: int = 0


class Sampler:
    """Peak RSS of a process tree while a `with` block runs, plus its CPU seconds."""

    def __init__(self, root: int | None) -> None:
        self._root = root
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.usage = Usage()
        self._pids: list[int] = []
        self._cpu_before = 0.0

    def _loop(self) -> None:
        while not self._stop.wait(0.02):
            self.usage.peak_rss = max(self.usage.peak_rss, rss_bytes(self._pids))

    def __enter__(self) -> Sampler:
        if self._root is not None:
            self._pids = process_tree(self._root)
            self._cpu_before = cpu_seconds(self._pids)
            self.usage.peak_rss = rss_bytes(self._pids)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._root is None:
            return
        self._stop.set()
        self._thread.join()
        self.usage.cpu_s = cpu_seconds(self._pids) - self._cpu_before


@dataclass
class Target:
    """A started server: where to send requests, with which key, and its process."""

    name: str
    url: str
    key: str
    process: subprocess.Popen[bytes] | None = None
    #: gateways: where their books are, to check them after a run
    database: str | None = None
    account_id: str | None = None

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)


def spawn(
    argv: Sequence[str], *, env: dict[str, str] | None = None, log: Path
) -> subprocess.Popen[bytes]:
    """Start a server in its own process group (so its whole tree stops with it)."""
    handle = log.open("wb")
    return subprocess.Popen(
        list(argv), env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
    )


def wait_http(url: str, *, process: subprocess.Popen[bytes], timeout_s: float, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the server exited ({process.returncode}); see {log}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers: good enough (LiteLLM's probes may want auth)
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up within {timeout_s:.0f} s; see {log}")


@contextlib.contextmanager
def stopping(targets: list[Target]) -> Iterator[list[Target]]:
    try:
        yield targets
    finally:
        for target in reversed(targets):
            target.stop()
