"""Issue 12 on the installed chart: every component running on the rig is scraped as Prometheus
would (HTTP GET /metrics on the Pod IP and the port the chart's PodMonitor/ServiceMonitor names),
and every metric the Grafana dashboard queries is found in those scrapes."""

from __future__ import annotations

import http.client
import json
import re
import ssl
from pathlib import Path
from typing import Any

import pytest

from rig.nodeagent.netns import connect_socket, netns_prefix
from tests.cluster.conftest import Cluster
from tests.observability.registered import names_in_exposition
from tests.observability.test_dashboard import DASHBOARD, metric_names, queries
from tests.rig.conftest import eventually

pytestmark = pytest.mark.rig

# The port each component's monitor scrapes (charts/voicehive/templates/monitoring.yaml).
METRICS_PORTS = {"operator": ("metrics",), "orchestrator": ("https", "http"), "worker": ("probes",)}


class _PodConnection(http.client.HTTPConnection):
    """HTTP to a Pod IP through the rig's node network (a socket made inside its netns)."""

    def __init__(self, netns: str, host: str, port: int, tls: ssl.SSLContext | None) -> None:
        super().__init__(host, port, timeout=10)
        self.netns, self.tls = netns, tls

    def connect(self) -> None:
        sock = connect_socket(self.netns, self.host, self.port)
        sock.setblocking(True)
        sock.settimeout(10)
        self.sock = self.tls.wrap_socket(sock, server_hostname=self.host) if self.tls else sock


def _port(pod: Any, names: tuple[str, ...]) -> tuple[str, int]:
    ports = {p.name: p.container_port for c in pod.spec.containers for p in c.ports or []}
    name = next(n for n in names if n in ports)
    return name, ports[name]


def _scrape(cluster: Cluster, pod: Any, component: str) -> str:
    name, port = _port(pod, METRICS_PORTS[component])
    tls = None
    if name == "https":  # verified against the release's CA; a Pod IP is not among the cert's names
        tls = ssl.create_default_context(cafile=cluster.env["VOICEHIVE_CLUSTER_CA"])
        tls.check_hostname = False
    netns = netns_prefix(Path(cluster.env["VOICEHIVE_CLUSTER_LOGS"]).parent) + "-node"
    conn = _PodConnection(netns, pod.status.pod_ip, port, tls)
    try:
        conn.request("GET", "/metrics", headers={"Accept": "text/plain"})
        response = conn.getresponse()
        body = response.read().decode()
    finally:
        conn.close()
    assert response.status == 200, (component, pod.metadata.name, response.status, body[:200])
    return body


def _running(cluster: Cluster, namespace: str, component: str) -> list[Any]:
    """The component's Pods once all are Ready (an earlier test may have just replaced one)."""

    def settled() -> list[Any] | None:
        pods = [p for p in cluster.pods(namespace, f"app.kubernetes.io/component={component}")
                if not p.metadata.deletion_timestamp]
        ready = [p for p in pods if p.status.pod_ip and any(c.type == "Ready" and c.status == "True"
                                                              for c in p.status.conditions or [])]
        return ready if ready and len(ready) == len(pods) else None

    return list(eventually(settled, timeout=180, what=f"every {component} Pod Ready"))


def test_every_dashboard_metric_is_in_a_scrape_of_the_running_components(cluster: Cluster) -> None:
    scraped: dict[str, set[str]] = {}
    for component, namespace in (("operator", cluster.release_ns), ("orchestrator", cluster.release_ns),
                                 ("worker", cluster.hotel_ns)):
        pods = _running(cluster, namespace, component)
        assert pods, f"no running {component} Pod to scrape"
        scraped[component] = set().union(*(names_in_exposition(_scrape(cluster, p, component)) for p in pods))
        assert scraped[component], component
    found = set().union(*scraped.values())
    used = set().union(*(metric_names(q) for q in queries(json.loads(DASHBOARD.read_text()))))
    assert used, "the dashboard queries no metric"
    assert used - found == set(), f"dashboard metrics no running component exposes: {sorted(used - found)}"


def test_scraped_label_values_name_no_call_room_or_caller(cluster: Cluster) -> None:
    """Low cardinality on the real exposition: no label value carries a room, a call reference or a
    number (the rooms and hashes in the rig's Redis and VoiceSessions are the ones to look for)."""
    from prometheus_client.parser import text_string_to_metric_families

    sessions = cluster.custom.list_namespaced_custom_object("voicehive.io", "v1alpha1", cluster.hotel_ns,
                                                            "voicesessions")["items"]
    secrets = {s["metadata"]["name"] for s in sessions} | {s.get("spec", {}).get("callerHash", "") for s in sessions}
    secrets.discard("")
    values: set[str] = set()
    for component, namespace in (("operator", cluster.release_ns), ("orchestrator", cluster.release_ns),
                                 ("worker", cluster.hotel_ns)):
        for pod in _running(cluster, namespace, component):
            for family in text_string_to_metric_families(_scrape(cluster, pod, component)):
                values.update(v for s in family.samples for v in s.labels.values())
    assert values, "no labelled sample scraped"
    number = re.compile(r"\+?\d{7,}")  # a phone number, with or without its plus
    leaks = sorted(v for v in values if v in secrets or v.startswith("vh-") or number.fullmatch(v))
    assert leaks == [], leaks


