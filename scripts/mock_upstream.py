"""Run the mock OpenAI Images upstream (tests/mocks/openai_upstream.py) as its own process.

    python scripts/mock_upstream.py --port 9100 [--fixed-png] [--latency-ms 0]

Prints its base URL and serves until killed. Used by the benchmark, so the mock does not share
a GIL with the load generator.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.mocks.openai_upstream import MockOpenAIUpstream


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--api-key", default="sk-upstream")
    parser.add_argument("--fixed-png", action="store_true")
    parser.add_argument("--latency-ms", type=float, default=0)
    args = parser.parse_args()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with MockOpenAIUpstream(
        api_key=args.api_key, fixed_png=args.fixed_png, latency_s=args.latency_ms / 1000
    ) as upstream:
        print(upstream.base_url, flush=True)
        stop.wait()


if __name__ == "__main__":
    main()
