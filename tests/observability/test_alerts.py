"""The chart's PrometheusRule, unit-tested by `promtool test rules` (Debian's `prometheus`
package, in the Makefile's APT_PACKAGES): the rule groups are taken from the rendered chart, so
the test checks what users install. Every alert has a firing and a non-firing case."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.delivery.test_chart_and_manifests import HOTELS
from tests.fixtures.rig import ROOT

CHART = ROOT / "charts" / "voicehive"
ALERT_TESTS = Path(__file__).with_name("alerts_test.yaml")


def rendered_rule_groups(helm: str) -> list[dict[str, object]]:
    result = subprocess.run(
        [helm, "template", "voicehive", str(CHART), "--namespace", "voicehive", *HOTELS,
         "--set", "monitoring.prometheusRule.enabled=true"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr
    rules = [d for d in yaml.safe_load_all(result.stdout) if d and d["kind"] == "PrometheusRule"]
    assert len(rules) == 1
    groups: list[dict[str, object]] = rules[0]["spec"]["groups"]
    return groups


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool is not installed (make system-deps installs Debian's prometheus package)")
    return found


def test_promtool_unit_tests_pass_on_the_rendered_rules(helm_bin: str, promtool: str, tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rendered_rule_groups(helm_bin)}, sort_keys=False))
    shutil.copy(ALERT_TESTS, tmp_path / "alerts_test.yaml")
    check = subprocess.run([promtool, "check", "rules", "rules.yaml"], cwd=tmp_path, capture_output=True, text=True,
                           timeout=120, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    result = subprocess.run([promtool, "test", "rules", "alerts_test.yaml"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_quiet_case(helm_bin: str) -> None:
    alerts = {r["alert"] for g in rendered_rule_groups(helm_bin) for r in g["rules"]}  # type: ignore[attr-defined]
    assert len(alerts) == 6
    fires: set[str] = set()
    quiet: set[str] = set()
    for case in yaml.safe_load(ALERT_TESTS.read_text())["tests"]:
        for check in case["alert_rule_test"]:
            (fires if check["exp_alerts"] else quiet).add(check["alertname"])
    assert fires == alerts and quiet == alerts


def test_rules_are_off_by_default(helm_bin: str) -> None:
    result = subprocess.run([helm_bin, "template", "voicehive", str(CHART), "--namespace", "voicehive", *HOTELS],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    kinds = {d["kind"] for d in yaml.safe_load_all(result.stdout) if d}
    assert "Deployment" in kinds
    assert not kinds & {"PrometheusRule", "ServiceMonitor", "PodMonitor"}


def test_every_alert_names_registered_metrics(helm_bin: str) -> None:
    from tests.observability.registered import all_exposed_names
    from tests.observability.test_dashboard import metric_names

    exposed = all_exposed_names()
    for group in rendered_rule_groups(helm_bin):
        for rule in group["rules"]:  # type: ignore[attr-defined]
            names = metric_names(rule["expr"])
            assert names and names <= exposed, (rule["alert"], names - exposed)
