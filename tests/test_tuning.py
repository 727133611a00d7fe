"""Start-up tuning: malloc thresholds (glibc) and the open-files limit, in a fresh process."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import resource
from app.tuning import apply_process_tuning
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
apply_process_tuning()
apply_process_tuning()  # idempotent
after, hard2 = resource.getrlimit(resource.RLIMIT_NOFILE)
assert after == hard2 and after >= 256, (after, hard2)
# a 8 MB block now comes from the heap, not a fresh mmap: freeing and reallocating it does
# not return its pages (minor faults stay low on the second round)
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
blocks = [bytearray(8 << 20) for _ in range(4)]
del blocks
before = faults()
for _ in range(20):
    blocks = [bytearray(8 << 20) for _ in range(4)]
    del blocks
print(faults() - before)
"""


def test_tuning_keeps_big_blocks_in_the_heap_and_raises_the_fd_limit() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True
    )
    # untuned glibc: 20 rounds x 4 x 2048 pages = ~160,000 faults; tuned: a few hundred
    assert int(done.stdout.strip()) < 20_000, done.stdout


TRIM_SCRIPT = """
import time
from app import tuning
tuning.apply_process_tuning()
trimmer = next(t for t in __import__("threading").enumerate() if t.name == "heap-trimmer")
def rss_mb():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 >> 20
blocks = [bytearray(1 << 20) for _ in range(200)]  # 200 MB of heap blocks, pages touched
busy = rss_mb()
held = blocks[::8]  # a few stay in use: the free space is not only at the heap's top
del blocks
deadline = time.monotonic() + 30
while trimmer.trims == 0 and time.monotonic() < deadline:
    time.sleep(0.1)
print(trimmer.trims, busy, rss_mb())
"""


def test_idle_free_heap_is_handed_back() -> None:
    done = subprocess.run(
        [sys.executable, "-c", TRIM_SCRIPT], capture_output=True, text=True, check=True
    )
    trims, busy, after = map(int, done.stdout.split())
    # without the trimmer the 64 MiB mmap / 256 MiB trim thresholds keep all 200 MB resident
    assert trims >= 1, done.stdout
    assert after < busy - 100, done.stdout
