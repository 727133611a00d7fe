"""From the rounds' raw figures to one table (terminal, RESULTS.md) and a plot of the ratios.

Every cell is the median over rounds. "added p50" is a target's p50 minus the direct-to-mock
p50 of the same round set: the latency the proxy itself adds. Ratios compare image-gateway
with the LiteLLM proxy (higher is better for image-gateway), except S7 (stream / plain) and
S8 (2 workers / 1 worker).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.procs import QUIET_CORES

if TYPE_CHECKING:
    from bench.run import Results, Scenario

COLUMNS = ("direct", "litellm", "gateway", "sqlite")
HEADINGS = {
    "direct": "direct to mock",
    "litellm": "LiteLLM 1.100.5",
    "gateway": "image-gateway (Postgres)",
    "sqlite": "image-gateway (SQLite)",
}


@dataclass
class Row:
    id: str
    title: str
    cells: dict[str, str] = field(default_factory=dict)
    ratio: float | None = None
    ratio_text: str = ""
    target: str = ""
    met: bool | None = None
    #: said instead of "-" when the target cannot be judged on this machine, and why
    unjudged: str = ""


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} ms"


def _num(value: float | None, unit: str = "", digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}{unit}"


def _cpu(results: Results, sid: str, name: str) -> str:
    cpu = results.median(sid, name, "cpu_ms_per_req")
    return "" if cpu is None else f"; CPU {cpu:.2f} ms/req"


def _rss(results: Results, sid: str, name: str) -> str:
    rss = results.median(sid, name, "peak_rss_mb")
    return "" if rss is None else f"; {rss:.0f} MB"


def _all_ok(results: Results, sid: str, name: str) -> bool:
    runs = results.runs.get(sid, {}).get(name, [])
    return bool(runs) and all(m["errors"] == 0 for m in runs)


#: S8's 1.6x needs the 2 workers on cores of their own, apart from the load and Postgres
OWN_CORES_FOR_S8 = 4


def build_table(results: Results, chosen: list[Scenario], *, cores: int) -> list[Row]:
    rows: list[Row] = []
    for scenario in chosen:
        sid = scenario.id
        row = Row(sid, scenario.title)
        med = results.median
        if sid in ("S1", "S3"):
            base = med(sid, "direct", "p50_ms")
            row.cells["direct"] = _ms(base)
            added: dict[str, float | None] = {}
            for name in ("litellm", "gateway", "sqlite"):
                p50 = med(sid, name, "p50_ms")
                added[name] = None if p50 is None or base is None else p50 - base
                if p50 is not None:
                    row.cells[name] = f"+{_ms(added[name])}{_cpu(results, sid, name)}"
            limit = 2.0 if sid == "S1" else 10.0
            gw, ll = added["gateway"], added["litellm"]
            if gw is not None and ll is not None and gw > 0:
                row.ratio = ll / gw
                row.ratio_text = f"{row.ratio:.1f}x less added"
            row.target = f"added p50 <= {limit:g} ms"
            row.met = None if gw is None else gw <= limit and _all_ok(results, sid, "gateway")
        elif sid in ("S2", "S4"):
            for name in COLUMNS:
                rps = med(sid, name, "rps")
                if rps is not None:
                    extra = _cpu(results, sid, name) + (
                        _rss(results, sid, name) if sid == "S4" else ""
                    )
                    row.cells[name] = f"{_num(rps, ' req/s')}{extra}"
            gw, ll = med(sid, "gateway", "rps"), med(sid, "litellm", "rps")
            if gw is not None and ll:
                row.ratio = gw / ll
                row.ratio_text = f"{row.ratio:.2f}x LiteLLM"
            if sid == "S2":
                cpu = med(sid, "gateway", "cpu_ms_per_req")
                row.target = ">= 5x LiteLLM; CPU <= 1.5 ms/req"
                row.met = (
                    None if row.ratio is None or cpu is None else row.ratio >= 5 and cpu <= 1.5
                )
            else:
                rss = med(sid, "gateway", "peak_rss_mb")
                row.target = ">= 3x LiteLLM; peak RSS <= 250 MB"
                row.met = (
                    None if row.ratio is None or rss is None else row.ratio >= 3 and rss <= 250
                )
        elif sid == "S5":
            for name in ("direct", "litellm", "gateway"):
                wall = med(sid, name, "wall_s")
                if wall is not None:
                    ok = med(sid, name, "ok") or 0
                    share = 100 * ok / scenario.requests
                    after = med(sid, name, "rss_after_mb")
                    idle = "" if after is None else f" ({after:.0f} MB idle after)"
                    row.cells[name] = (
                        f"{wall:.1f} s, {share:.0f}% ok{_rss(results, sid, name)}{idle}"
                    )
            gw, ll = med(sid, "gateway", "wall_s"), med(sid, "litellm", "wall_s")
            if gw and ll:
                row.ratio = ll / gw
                row.ratio_text = f"{row.ratio:.1f}x faster"
            rss = med(sid, "gateway", "peak_rss_mb")
            limit_s = 7.0 if scenario.delay_ms == 5000 else scenario.delay_ms / 1000 * 1.4
            row.target = f"100% ok, wall <= {limit_s:g} s, peak RSS <= 400 MB"
            row.met = (
                None
                if gw is None or rss is None
                else _all_ok(results, sid, "gateway") and gw <= limit_s and rss <= 400
            )
        elif sid == "S6":
            rps = med(sid, "gateway2", "rps")
            runs = results.runs.get(sid, {}).get("gateway2", [])
            exact = bool(runs) and all(m.get("exact") for m in runs)
            row.cells["gateway"] = f"{_num(rps, ' charged/s')}, {'exact' if exact else 'NOT EXACT'}"
            row.target = ">= 800 charged/s, exact"
            row.met = None if rps is None else rps >= 800 and exact
        elif sid == "S7":
            stream, plain = med(sid, "gateway", "p50_ms"), med(sid, "plain", "p50_ms")
            row.cells["gateway"] = f"stream {_ms(stream)} vs plain {_ms(plain)}"
            if stream and plain:
                row.ratio = stream / plain
                row.ratio_text = f"{row.ratio:.2f}x plain"
            row.target = "stream <= 1.1x plain"
            row.met = None if row.ratio is None else row.ratio <= 1.1
        elif sid == "S8":
            two, one = med(sid, "gateway2", "rps"), med(sid, "gateway", "rps")
            row.cells["gateway"] = (
                f"2 workers {_num(two, ' req/s')}{_cpu(results, sid, 'gateway2')}; "
                f"1 worker {_num(one, ' req/s')}{_cpu(results, sid, 'gateway')}"
            )
            if two and one:
                row.ratio = two / one
                row.ratio_text = f"{row.ratio:.2f}x one worker"
            row.target = ">= 1.6x (cores not shared with load/Postgres), else CPU/req"
            if cores >= OWN_CORES_FOR_S8:
                row.met = None if row.ratio is None else row.ratio >= 1.6
            else:
                row.unjudged = f"CPU/req reported ({cores} cores shared by all)"
        rows.append(row)
    return rows


def _met(row: Row) -> str:
    if row.met is None and row.unjudged:
        return row.unjudged
    return {True: "yes", False: "no", None: "-"}[row.met]


def render_text(rows: list[Row]) -> str:
    lines = []
    for row in rows:
        lines.append(
            f"{row.id} {row.title}  [{row.ratio_text or '-'}; target {row.target}: {_met(row)}]"
        )
        for name in COLUMNS:
            if name in row.cells:
                lines.append(f"    {HEADINGS[name]:28} {row.cells[name]}")
    return "\n".join(lines)


def render_markdown(rows: list[Row], machine: dict[str, Any], chosen: list[Scenario]) -> str:
    head = "| scenario | " + " | ".join(HEADINGS[c] for c in COLUMNS) + " | ratio | target | met |"
    rule = "| --- " * (len(COLUMNS) + 4) + "|"
    body = [
        f"| {r.id} {r.title} | "
        + " | ".join(r.cells.get(c, "") for c in COLUMNS)
        + f" | {r.ratio_text} | {r.target} | {_met(r)} |"
        for r in rows
    ]
    smoke = " (SMOKE RUN: tiny counts, figures meaningless)" if machine["smoke"] else ""
    return "\n".join(
        [
            "# Benchmark results" + smoke,
            "",
            "Written by `python -m bench.run` (see bench/README.md); medians of "
            f"{machine['rounds']} interleaved rounds.",
            "",
            f"- machine: {machine['cpu']}, {machine['cores']} cores, Linux {machine['kernel']}, "
            f"Python {machine['python']}",
            _quietness(machine),
            f"- commit {machine['commit']}, {machine['date']}, took {machine['duration_s']} s",
            "",
            head,
            rule,
            *body,
            "",
            "![ratios](ratios.png)",
            "",
        ]
    )


def plot(rows: list[Row], path: Path) -> None:
    """A bar per ratio (log scale); skipped with a note when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed (pip install -r bench/requirements.txt): no plot")
        return
    shown = [r for r in rows if r.ratio is not None]
    if not shown:
        return
    figure, axes = plt.subplots(figsize=(8, 4))
    colours = ["tab:green" if r.met else "tab:red" if r.met is False else "tab:grey" for r in shown]
    axes.bar([r.id for r in shown], [r.ratio or 0 for r in shown], color=colours)
    axes.set_yscale("log")
    axes.axhline(1, color="black", linewidth=0.8)
    for index, r in enumerate(shown):
        axes.annotate(r.ratio_text, (index, r.ratio or 0), ha="center", va="bottom", fontsize=7)
    axes.set_title("image-gateway ratios (green: target met)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _quietness(machine: dict[str, Any]) -> str:
    """The line that says whether the run had the machine to itself."""
    load = " ".join(machine["loadavg"])
    busy = machine.get("busy_cores_before")
    if busy is None:  # results.json written before the check existed
        return f"- load average at start: {load}"
    verdict = (
        "quiet"
        if busy <= QUIET_CORES
        else "NOT QUIET: other work took CPU from every target, so every figure is inflated"
    )
    return (
        f"- other work on the machine before the run: {busy:.2f} cores busy over 5 s "
        f"({verdict}); load average at start: {load}"
    )
