"""The benchmark: S1-S8 against image-gateway, the LiteLLM proxy and the mock directly.

    .venv/bin/python -m bench.run            # the full run (~15 min), writes bench/RESULTS.md
    .venv/bin/python -m bench.run --smoke    # seconds: tiny counts, no LiteLLM, for the tests

One mock upstream serves everyone. For each of `--runs` rounds, every scenario is run against
every target in turn (interleaved: a slow minute on the shared machine hits all of them, not
one), and the table reports the median of the rounds. See bench/README.md for what each
scenario means and how to read the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from bench import report
from bench.procs import (
    QUIET_CORES,
    Sampler,
    Target,
    machine_busy_cores,
    process_tree,
    raise_fd_limit,
    rss_bytes,
    stopping,
)
from bench.targets import (
    OPENING_BALANCE_USD,
    ROOT,
    database_url,
    drop_database,
    litellm_available,
    start_gateway,
    start_litellm,
    start_mock,
)

Metrics = dict[str, Any]


#: how long a target sits idle after a burst before its resident size is read
BURST_SETTLE_S = 5.0


@dataclass(frozen=True)
class Scenario:
    id: str
    title: str
    px: int
    concurrency: int
    requests: int
    targets: tuple[str, ...]
    delay_ms: int = 0
    stream: bool = False
    warmup: bool = True
    #: many requests at once: run after every round of the rest (see `main`)
    burst: bool = False


def scenarios(smoke: bool, scale: float) -> list[Scenario]:

    def n(count: int) -> int:
        return max(4, int(count * scale))

    every = ("direct", "litellm", "gateway", "sqlite")
    s5 = 20 if smoke else 2000
    return [
        Scenario("S1", "64x64, c=1: added p50", 64, 1, n(400), every),
        Scenario("S2", "64x64, c=32: req/s", 64, 32, n(4000), every),
        # c=1 at 1024 px: ~10 ms a request; 240 (120 at --scale 0.5) keep the p50 out of the noise
        Scenario("S3", "1024x1024 (4.2 MB JSON), c=1: added p50", 1024, 1, n(240), every),
        Scenario("S4", "1024x1024, c=8: req/s; peak RSS", 1024, 8, n(320), every),
        Scenario(
            "S5",
            f"{'0.2' if smoke else '5'} s upstream, {s5} concurrent: wall",
            64,
            s5,
            s5,
            ("direct", "litellm", "gateway"),
            delay_ms=200 if smoke else 5000,
            warmup=False,
            burst=True,
        ),
        Scenario("S6", "one hot account, 2 processes: charged/s", 64, 64, n(4000), ("gateway2",)),
        Scenario(
            "S7",
            "1024x1024 streamed, c=1: completed event",
            1024,
            1,
            n(240),
            ("gateway",),
            stream=True,
        ),
        Scenario("S8", "64x64, c=32, 2 workers vs 1: req/s", 64, 32, n(4000), ("gateway2",)),
    ]


def load(target: Target, scenario: Scenario) -> Metrics:
    prompt = f"px={scenario.px} delay_ms={scenario.delay_ms} a lighthouse at dusk"
    body: dict[str, Any] = {"model": "gpt-image-1", "prompt": prompt, "n": 1, "size": "1024x1024"}
    if scenario.stream:
        body["stream"] = True
    spec = {
        "url": target.url,
        "key": target.key,
        "body": body,
        "requests": scenario.requests,
        "concurrency": scenario.concurrency,
        "stream": scenario.stream,
        "warmup": scenario.warmup,
        "timeout_s": 300,
    }
    with Sampler(target.pid) as sampler:
        done = subprocess.run(
            [sys.executable, str(ROOT / "bench" / "load.py"), json.dumps(spec)],
            capture_output=True,
            text=True,
            check=True,
        )
    metrics: Metrics = json.loads(done.stdout)
    served = metrics["ok"] + metrics["errors"]
    if target.pid is not None and served:
        metrics["cpu_ms_per_req"] = sampler.usage.cpu_s * 1000 / served
        metrics["peak_rss_mb"] = sampler.usage.peak_rss / 2**20
    return metrics


def idle_rss_mb(target: Target, settle_s: float) -> float | None:
    """The target's resident size once a burst is over and it has sat idle for `settle_s`."""
    if target.pid is None:
        return None
    time.sleep(settle_s)
    return rss_bytes(process_tree(target.pid)) / 2**20


async def _books(database: str, account_id: str) -> Metrics:
    connection = await asyncpg.connect(database.replace("+asyncpg", ""), timeout=5)
    try:
        row = await connection.fetchrow(
            """SELECT a.balance_micros,
                      (SELECT COALESCE(sum(amount_micros), 0) FROM ledger_entries
                       WHERE account_id = a.id) AS ledger,
                      (SELECT COALESCE(sum(cost_micros), 0) FROM request_log
                       WHERE account_id = a.id AND state = 'settled') AS spent,
                      (SELECT count(*) FROM request_log
                       WHERE account_id = a.id AND state = 'pending') AS pending
               FROM accounts a WHERE a.id = $1""",
            account_id,
        )
    finally:
        await connection.close()
    assert row is not None
    opening = OPENING_BALANCE_USD * 1_000_000
    exact = row["balance_micros"] == row["ledger"] == opening - row["spent"]
    return {"exact": bool(exact and row["pending"] == 0), "pending": row["pending"]}


def books(target: Target) -> Metrics:
    if target.database is None or not target.database.startswith("postgres"):
        return {}
    assert target.account_id is not None
    return asyncio.run(_books(target.database, target.account_id))


@dataclass
class Results:
    #: scenario id -> target name -> one Metrics per round
    runs: dict[str, dict[str, list[Metrics]]] = field(default_factory=dict)

    def add(self, scenario: str, target: str, metrics: Metrics) -> None:
        self.runs.setdefault(scenario, {}).setdefault(target, []).append(metrics)

    def median(self, scenario: str, target: str, metric: str) -> float | None:
        values = [
            m[metric]
            for m in self.runs.get(scenario, {}).get(target, [])
            if isinstance(m.get(metric), int | float)
        ]
        return statistics.median(values) if values else None


def start_targets(
    args: argparse.Namespace, workdir: Path, say: Callable[[str], None]
) -> list[Target]:
    mock = start_mock(workdir)
    targets = [mock]
    upstream = mock.url.rsplit("/images/", 1)[0]
    try:
        say("starting image-gateway (Postgres, 1 worker, 2 workers) and (SQLite) ...")
        for name, db, workers in (
            ("gateway", "postgres", 1),
            ("gateway2", "postgres", 2),
            ("sqlite", "sqlite", 1),
        ):
            url = database_url(db, args.postgres, workdir, name)
            targets.append(
                start_gateway(
                    name=name, upstream=upstream, database=url, workers=workers, workdir=workdir
                )
            )
        if args.litellm:
            say("starting the LiteLLM proxy (first use installs it: minutes) ...")
            targets.append(start_litellm(upstream=upstream, workdir=workdir))
    except BaseException:
        for target in reversed(targets):
            target.stop()
        raise
    return targets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="image-gateway benchmark (bench/README.md)")
    parser.add_argument("--smoke", action="store_true", help="tiny counts, one round, no LiteLLM")
    parser.add_argument("--runs", type=int, default=None, help="rounds (default 3; smoke 1)")
    parser.add_argument(
        "--scale", type=float, default=None, help="request counts x this (default 1; smoke 0.01)"
    )
    parser.add_argument("--no-plot", dest="plot", action="store_false", help="skip ratios.png")
    parser.add_argument("--only", default="", help="comma-separated scenario ids, e.g. S1,S2")
    parser.add_argument("--no-litellm", dest="litellm", action="store_false", default=None)
    parser.add_argument(
        "--postgres",
        default="postgresql://postgres@127.0.0.1:5432/test",
        help="a database to connect to for creating/dropping the bench databases",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench", help="RESULTS.md goes here")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp") / "igw-bench")
    args = parser.parse_args(argv)
    if args.litellm is None:
        args.litellm = not args.smoke and litellm_available()
    rounds = args.runs or (1 if args.smoke else 3)
    raise_fd_limit()
    workdir = args.workdir / str(int(time.time()))
    workdir.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    scale = args.scale or (0.01 if args.smoke else 1.0)
    chosen = [
        s for s in scenarios(args.smoke, scale) if not args.only or s.id in args.only.split(",")
    ]
    results = Results()
    started = time.time()
    loadavg = Path("/proc/loadavg").read_text().split()[:3]
    busy = machine_busy_cores()
    if busy > QUIET_CORES:
        say(
            f"WARNING: other work on this machine is using {busy:.2f} cores before the run: "
            "every target's figures will be inflated (RESULTS.md says so)"
        )
    with stopping(start_targets(args, workdir, say)) as targets:
        by_name = {t.name: t for t in targets}
        # S5's burst (2,000 requests at once) leaves every target larger for good (allocator
        # fragmentation, measured in docs/decisions.md): run before S4 it would be read as S4's
        # memory. So the bursts come after every round of the rest, and what they leave is
        # reported on its own (`rss_after_mb`).
        settle_s = 0.2 if args.smoke else BURST_SETTLE_S
        steady = [s for s in chosen if not s.burst]
        bursts = [s for s in chosen if s.burst]
        for round_no, scenario in [
            (r, s) for batch in (steady, bursts) for r in range(1, rounds + 1) for s in batch
        ]:
            names = [n for n in scenario.targets if n in by_name]
            if scenario.id == "S7":
                plain = Scenario(**{**scenario.__dict__, "stream": False})
                results.add("S7", "plain", load(by_name["gateway"], plain))
            if scenario.id == "S8":
                results.add("S8", "gateway", load(by_name["gateway"], scenario))
            for name in names:
                metrics = load(by_name[name], scenario)
                if scenario.burst:
                    metrics["rss_after_mb"] = idle_rss_mb(by_name[name], settle_s)
                if scenario.id == "S6":
                    metrics.update(books(by_name[name]))
                results.add(scenario.id, name, metrics)
                say(
                    f"round {round_no} {scenario.id} {name:9} ok={metrics['ok']} "
                    f"err={metrics['errors']} rps={metrics['rps']:.1f} "
                    f"p50={metrics['p50_ms']:.2f}ms"
                    + (f" first error: {metrics['first_error']}" if metrics["errors"] else "")
                )
        for target in targets:
            if target.database and target.database.startswith("postgres"):
                asyncio.run(drop_database(args.postgres, target.database.rsplit("/", 1)[1]))
    machine = {
        "cpu": _cpu_model(),
        "cores": _cores(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg": loadavg,
        "busy_cores_before": round(busy, 3),
        "commit": _git_commit(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
        "duration_s": round(time.time() - started),
        "rounds": rounds,
        "smoke": args.smoke,
    }
    table = report.build_table(results, chosen, cores=_cores())
    print(report.render_text(table))
    (args.out / "results.json").write_text(
        json.dumps({"machine": machine, "runs": results.runs}, indent=1)
    )
    (args.out / "RESULTS.md").write_text(report.render_markdown(table, machine, chosen))
    if args.plot:
        ensure_matplotlib(say)
        report.plot(table, args.out / "ratios.png")
    return 0


def ensure_matplotlib(say: Callable[[str], None]) -> None:
    """The plot's one dependency, pinned in bench/requirements.txt, installed on first use."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        say("installing bench/requirements.txt (matplotlib) ...")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "-q",
                "-r",
                str(ROOT / "bench/requirements.txt"),
            ],
            check=False,
        )


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0))


def _git_commit() -> str:
    done = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    )
    return done.stdout.strip() or "unknown"


if __name__ == "__main__":
    raise SystemExit(main())
