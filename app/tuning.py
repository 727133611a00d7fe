"""Process-level tuning applied once per worker at start-up (`apply_process_tuning`).

- glibc malloc serves every block above its mmap threshold (128 KiB at first, adapting up to
  32 MiB only after frees) with a fresh `mmap`, and `free` hands it straight back. A 1024 px
  image answer is a handful of 4-6 MB buffers (the body, the base64 text, the response), so
  each request paid ~2,000 page faults zero-filling new pages. Fixing the threshold at 64 MiB
  and the trim threshold at 256 MiB keeps those blocks in the heap for reuse: -19% CPU per
  1024 px request, for a steady RSS of a few hundred MB at most (measured in bench/, S4/S5).
  Only on glibc; elsewhere a no-op.
- The price of that threshold: what a burst made free stays in the heap for good (2,000
  requests at once leave ~250 MB resident, which the next 1024 px load then counts as its own).
  A daemon thread (`_HeapTrimmer`) looks at the heap once a second and hands the free pages
  back (`malloc_trim`) only when they are idle: over `TRIM_IDLE_FREE_BYTES` free and more free
  than in use, which a steady load of big answers (buffers reused each request) does not reach.
- The open-files limit is raised to its hard limit: thousands of slow generations in flight
  hold two sockets each (client and provider), far past the usual soft limit of 1,024.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import resource
import threading
import time
from typing import Any, Final

logger = logging.getLogger(__name__)

# mallopt(3) parameter numbers (glibc malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 64 * 1024 * 1024
TRIM_THRESHOLD_BYTES = 256 * 1024 * 1024
#: free heap bytes above which (and above the bytes in use) the trimmer gives memory back
TRIM_IDLE_FREE_BYTES: Final = 32 * 1024 * 1024
TRIM_CHECK_S: Final = 1.0

_applied = False


def apply_process_tuning() -> None:
    global _applied
    if _applied:
        return
    _applied = True
    _tune_malloc()
    _raise_open_files_limit()


def _tune_malloc() -> None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return  # not glibc (musl, macOS): nothing to tune
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    if not (
        mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
        and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    ):
        logger.info("mallopt refused the gateway's thresholds; using malloc's defaults")
        return
    trimmer = _HeapTrimmer.of(libc)
    if trimmer is not None:
        trimmer.start()


class _MallInfo2(ctypes.Structure):
    """glibc's `struct mallinfo2` (2.33+): every field a size_t."""

    _fields_ = [
        (field, ctypes.c_size_t)
        for field in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


class _HeapTrimmer(threading.Thread):
    """Hands idle free heap back to the system (module docstring); glibc 2.33+ only."""

    def __init__(self, mallinfo2: Any, malloc_trim: Any) -> None:
        super().__init__(name="heap-trimmer", daemon=True)
        self._mallinfo2 = mallinfo2
        self._malloc_trim = malloc_trim
        self.trims = 0

    @classmethod
    def of(cls, libc: ctypes.CDLL) -> _HeapTrimmer | None:
        try:
            mallinfo2, malloc_trim = libc.mallinfo2, libc.malloc_trim
        except AttributeError:
            return None  # glibc before 2.33: the heap keeps what it has
        mallinfo2.argtypes, mallinfo2.restype = [], _MallInfo2
        malloc_trim.argtypes, malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
        return cls(mallinfo2, malloc_trim)

    def trim_if_idle(self) -> bool:
        info = self._mallinfo2()
        free, in_use = info.fordblks, info.uordblks
        if free <= TRIM_IDLE_FREE_BYTES or free <= in_use:
            return False
        self._malloc_trim(0)  # ctypes lets go of the GIL meanwhile
        self.trims += 1
        return True

    def run(self) -> None:  # a daemon: ends with the process
        while True:
            time.sleep(TRIM_CHECK_S)
            self.trim_if_idle()


def _raise_open_files_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1 << 20)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            logger.info("could not raise the open-files limit above %d", soft)
