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
