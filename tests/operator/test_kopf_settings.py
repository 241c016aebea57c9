"""Kopf's settings as the operator runs them (pure: no API server)."""

from __future__ import annotations

from voicehive_operator.main import kopf_settings


def test_a_namespaced_operator_does_not_scan_the_cluster() -> None:
    """Scanning lists every namespace and CRD: forbidden to the namespaced Roles the chart grants."""
    assert kopf_settings(clusterwide=False).scanning.disabled is True


def test_a_cluster_wide_operator_follows_new_namespaces() -> None:
    assert kopf_settings(clusterwide=True).scanning.disabled is False
