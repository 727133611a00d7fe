"""The sample Grafana dashboard (`docs/grafana-dashboard.json`) queries only metrics the gateway
exports, and every metric the gateway exports has a panel."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import REGISTRY

import app.observability.metrics  # noqa: F401  (registers the metrics)

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana-dashboard.json"
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def exported() -> dict[str, set[str]]:
    """Family name -> the sample names it exports."""
    return {
        family.name: {family.name + suffix for suffix in SUFFIXES[family.type]}
        for family in REGISTRY.collect()
        if family.name.startswith("image_gateway_")
    }


def test_dashboard_queries_exported_metrics_and_covers_them_all() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    queried = {name for expr in expressions for name in re.findall(r"image_gateway_\w+", expr)}
    families = exported()
    samples = set().union(*families.values())
    assert queried <= samples, f"unknown metrics in the dashboard: {queried - samples}"
    uncovered = {family for family, names in families.items() if not names & queried}
    assert not uncovered, f"metrics without a panel: {uncovered}"
    assert len(families) >= 17
