"""Process-level tuning applied once per worker at start-up (`apply_process_tuning`).

- glibc malloc serves every block above its mmap threshold (128 KiB at first, adapting up to
  32 MiB only after frees) with a fresh `mmap`, and `free` hands it straight back. A 1024 px
  image answer is a handful of 4-6 MB buffers (the body, the base64 text, the response), so
  each request paid ~2,000 page faults zero-filling new pages. Fixing the threshold at 64 MiB
  and the trim threshold at 256 MiB keeps those blocks in the heap for reuse: -19% CPU per
  1024 px request, for a steady RSS of a few hundred MB at most (measured in bench/, S4/S5).
  Only on glibc; elsewhere a no-op.
- The open-files limit is raised to its hard limit: thousands of slow generations in flight
  hold two sockets each (client and provider), far past the usual soft limit of 1,024.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import resource

logger = logging.getLogger(__name__)

# mallopt(3) parameter numbers (glibc malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 64 * 1024 * 1024
TRIM_THRESHOLD_BYTES = 256 * 1024 * 1024

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


def _raise_open_files_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1 << 20)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            logger.info("could not raise the open-files limit above %d", soft)
