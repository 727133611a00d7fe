"""The benchmark harness cannot rot: a smoke run of `python -m bench.run --smoke`.

Tiny request counts, one round, no LiteLLM: this proves the mock, the load generator, the
gateway start-up (Postgres 1 and 2 workers, SQLite), every scenario, the books check and the
report all still work. Nothing here asserts a timing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import report
from bench.procs import QUIET_CORES, machine_busy_cores
from bench.report import _quietness
from bench.run import Results, scenarios
from tests.support import databases

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.postgres
def test_smoke_run_serves_every_scenario_and_writes_the_report(
    tmp_path: Path, postgres_session_url: str
) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.run",
            "--smoke",
            "--no-plot",
            "--postgres",
            databases.ADMIN_URL,
            "--out",
            str(tmp_path),
            "--workdir",
            str(tmp_path / "work"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    raw = json.loads((tmp_path / "results.json").read_text())
    runs = raw["runs"]
    assert sorted(runs) == [f"S{i}" for i in range(1, 9)]
    for scenario, targets in runs.items():
        for target, rounds in targets.items():
            for metrics in rounds:
                assert metrics["ok"] > 0 and metrics["errors"] == 0, (scenario, target, metrics)
    assert runs["S6"]["gateway2"][0]["exact"] is True  # the books of the hot account balance
    # the burst runs after the rest, and what it leaves resident is read once it is over
    assert runs["S5"]["gateway"][0]["rss_after_mb"] > 0
    assert {"direct", "gateway", "sqlite"} <= set(runs["S2"])
    results = (tmp_path / "RESULTS.md").read_text()
    assert "SMOKE RUN" in results and "| S8 " in results
    assert raw["machine"]["smoke"] is True
    assert isinstance(raw["machine"]["busy_cores_before"], float)
    assert "other work on the machine before the run" in results


def test_a_machine_busy_before_the_run_is_measured_and_flagged() -> None:
    # a child spinning one core: whatever else runs, the machine is at least that busy
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        busy = machine_busy_cores(seconds=1.0)
    finally:
        spinner.kill()
        spinner.wait()
    assert QUIET_CORES < 0.4 <= busy <= (os.cpu_count() or 1) + 0.01
    base = {"loadavg": ["1.00", "0.50", "0.20"]}
    assert "(quiet)" in _quietness({**base, "busy_cores_before": 0.02})
    assert "NOT QUIET" in _quietness({**base, "busy_cores_before": busy})


def test_s8_is_judged_only_where_the_workers_can_have_cores_of_their_own() -> None:
    s8 = [s for s in scenarios(False, 1.0) if s.id == "S8"]
    results = Results()
    results.add("S8", "gateway", {"ok": 10, "errors": 0, "rps": 100.0, "cpu_ms_per_req": 1.0})
    results.add("S8", "gateway2", {"ok": 10, "errors": 0, "rps": 150.0, "cpu_ms_per_req": 1.1})
    (shared,) = report.build_table(results, s8, cores=2)
    assert shared.met is None and "CPU/req reported (2 cores shared" in report.render_text([shared])
    (own,) = report.build_table(results, s8, cores=8)
    assert own.met is False and own.ratio == 1.5
