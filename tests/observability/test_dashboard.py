"""The Grafana dashboard: shipped as a sidecar ConfigMap by the chart, every panel query is valid
PromQL (promtool parses it) and names only metrics our components register. A scrape of the
running components on the rig comes from tests that run them; this checks the registries."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures.rig import ROOT
from tests.observability.registered import all_exposed_names

CHART = ROOT / "charts" / "voicehive"
DASHBOARD = CHART / "dashboards" / "voicehive.json"
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
                "offset", "inf", "nan"}


def queries(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: strip strings, label matchers, grouping clauses and
    ranges; what remains that is not a function call, keyword or number is a metric name."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = match.group(0)
        following = text[match.end():].lstrip()
        if following.startswith("(") or word.lower() in PROMQL_WORDS:
            continue
        names.add(word)
    return names


def test_metric_names_parser() -> None:
    expr = 'histogram_quantile(0.95, sum by (le, stage) (rate(a_seconds_bucket{x="y", z=~"1|2"}[5m]))) / on () b_total'
    assert metric_names(expr) == {"a_seconds_bucket", "b_total"}


def test_every_panel_names_registered_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exposed = all_exposed_names()
    used: set[str] = set()
    for expr in queries(dashboard):
        names = metric_names(expr)
        assert names, expr
        used |= names
    assert used - exposed == set(), "the dashboard queries metrics nobody registers"
    prefixes = {n.split("_")[1] for n in used}
    assert prefixes == {"operator", "orchestrator", "worker"}  # every component is on the dashboard


def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (make system-deps)")
    dashboard = json.loads(DASHBOARD.read_text())
    rules = [{"record": f"voicehive:dashboard:{i}", "expr": e.replace("$__rate_interval", "5m")}
             for i, e in enumerate(queries(dashboard))]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run([promtool, "check", "rules", str(tmp_path / "rules.yaml")], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_chart_ships_the_dashboard_for_the_grafana_sidecar(helm_bin: str) -> None:
    result = subprocess.run([helm_bin, "template", "voicehive", str(CHART), "--namespace", "voicehive",
                             "--set", "operator.watchNamespaces={hotels}", "--set", "monitoring.grafanaDashboard.enabled=true"],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    maps = [d for d in yaml.safe_load_all(result.stdout) if d and d["kind"] == "ConfigMap"]
    assert len(maps) == 1 and maps[0]["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(maps[0]["data"]["voicehive.json"]) == json.loads(DASHBOARD.read_text())
