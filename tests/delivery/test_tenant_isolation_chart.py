"""The chart's side of tenant isolation (issue 11), on `helm template` renders.

- the hotel namespaces are required; every namespaced right is a Role there; cluster-wide rules
  are only those docs/delivery.md justifies (the matrix on a real authoriser: tests/rig);
- NetworkPolicies, evaluated by a small NetworkPolicy evaluator (no CNI enforces them here):
  each Pod reaches what its job needs and nothing else we can name;
- no Pod spec the chart renders, or the operator builds, holds a secret value or a URL with a
  password.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.delivery.test_chart_and_manifests import CHART, ROOT, by_kind, helm_template, run
from voicehive.api.models import HotelLineSpec
from voicehive.privacy import generate_key_b64
from voicehive_operator import builders
from voicehive_operator.settings import OperatorSettings

# Every cluster-wide (ClusterRole) rule the chart may grant, and the words docs/delivery.md uses
# to justify it. A new cluster-wide rule fails here until it is justified there.
JUSTIFIED_CLUSTER_RULES = {
    ("apiextensions.k8s.io", "customresourcedefinitions"): "customresourcedefinitions",
}
JUSTIFIED_ONLY_CLUSTER_WIDE = {("", "namespaces"): "namespaces", ("kopf.dev", "clusterkopfpeerings"): "ClusterKopfPeering"}
API_SERVER = "192.0.2.10/32"  # a documentation address standing in for the API server


def test_hotel_namespaces_are_required(helm_bin: str) -> None:
    result = run(helm_bin, "template", "voicehive", str(CHART), "--namespace", "voicehive")
    assert result.returncode != 0
    assert "operator.watchNamespaces (or operator.namespaceSelector) must name the hotel namespaces" in result.stderr


def _cluster_rules(docs: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(g, r) for d in docs if d["kind"] == "ClusterRole" for rule in d["rules"]
            for g in rule["apiGroups"] for r in rule["resources"]}


def test_no_cluster_wide_rule_the_docs_do_not_justify(helm_bin: str) -> None:
    delivery = (ROOT / "docs" / "delivery.md").read_text()
    namespaced = helm_template(helm_bin, "--set", "operator.watchNamespaces={hotels,resorts}")
    assert _cluster_rules(namespaced) == set(JUSTIFIED_CLUSTER_RULES)
    assert not by_kind(namespaced, "ClusterRoleBinding").keys() - {"voicehive-operator-cluster"}
    for words in JUSTIFIED_CLUSTER_RULES.values():
        assert words in delivery
    roles = [d for d in namespaced if d["kind"] == "Role"]
    assert {r["metadata"]["namespace"] for r in roles if "orchestrator" in r["metadata"]["name"]} == {"hotels", "resorts"}
    assert {r["metadata"]["namespace"] for r in roles if "operator" in r["metadata"]["name"]} == {"hotels", "resorts"}
    # The orchestrator lists lines only where it has Roles.
    orch = by_kind(namespaced, "Deployment")["voicehive-orchestrator"]["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "VOICEHIVE_HOTEL_NAMESPACES", "value": "hotels,resorts"} in orch["env"]
    # Cluster-wide only on explicit opt-in, and then only the justified extra rules.
    wide = helm_template(helm_bin, "--set", "operator.watchNamespaces=null", "--set", "operator.clusterWide=true")
    extra = _cluster_rules(wide) - set(JUSTIFIED_CLUSTER_RULES)
    assert set(JUSTIFIED_ONLY_CLUSTER_WIDE) <= extra
    for words in JUSTIFIED_ONLY_CLUSTER_WIDE.values():
        assert words in delivery


def test_allow_lists_reach_the_operator(helm_bin: str) -> None:
    docs = helm_template(helm_bin, "--set", "worker.allowedImages={registry.example.eu/worker:2.0}",
                         "--set", "providers.ttsHosts={api.eu.residency.elevenlabs.io,tts.example.eu}")
    env = {e["name"]: e.get("value") for e in
           by_kind(docs, "Deployment")["voicehive-operator"]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["VOICEHIVE_OPERATOR_WORKER_IMAGES"] == "ghcr.io/voicehive/worker:0.1.0,registry.example.eu/worker:2.0"
    assert env["VOICEHIVE_OPERATOR_TTS_ALLOWED_HOSTS"] == "api.eu.residency.elevenlabs.io,tts.example.eu"
    files = {"VOICEHIVE_OPERATOR_REDIS_CA_FILE"}  # a mounted file, not here
    settings = OperatorSettings.from_env({k: v for k, v in env.items() if v is not None and k not in files})
    assert settings.worker_images == ("ghcr.io/voicehive/worker:0.1.0", "registry.example.eu/worker:2.0")
    assert settings.llm_allowed_hosts == ("*.openai.azure.com", "*.cognitiveservices.azure.com")
    assert settings.asr_allowed_hosts == ()


# --------------------------------------------------------------------------- NetworkPolicy


@dataclass(frozen=True)
class Peer:
    """One end of a connection: a Pod (namespace, labels) or an outside address."""

    namespace: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    ip: str = "198.51.100.7"
    namespace_labels: dict[str, str] = field(default_factory=dict)


def _selects(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    wanted = (selector or {}).get("matchLabels") or {}
    return all(labels.get(k) == v for k, v in wanted.items())


def _peer_matches(entry: dict[str, Any], peer: Peer, policy_ns: str) -> bool:
    if "ipBlock" in entry:
        if peer.namespace is not None:  # Pod IPs are not what ipBlock is for (CNIs differ): off
            return False
        block = entry["ipBlock"]
        address = ipaddress.ip_address(peer.ip)
        return address in ipaddress.ip_network(block["cidr"]) and not any(
            address in ipaddress.ip_network(e) for e in block.get("except", []))
    if peer.namespace is None:
        return False
    ns_labels = {"kubernetes.io/metadata.name": peer.namespace, **peer.namespace_labels}
    if "namespaceSelector" in entry:
        if not _selects(entry["namespaceSelector"], ns_labels):
            return False
    elif peer.namespace != policy_ns:
        return False
    return _selects(entry.get("podSelector"), peer.labels)


def _port_matches(ports: list[dict[str, Any]] | None, port: int, protocol: str) -> bool:
    if not ports:
        return True
    return any(p.get("protocol", "TCP") == protocol and
               (p["port"] == port or p["port"] <= port <= p.get("endPort", p["port"])) for p in ports)


def allowed(policies: list[dict[str, Any]], src: Peer, dst: Peer, port: int, protocol: str = "TCP") -> bool:
    """Kubernetes semantics: a Pod selected by a policy of a direction allows only what one rule lists."""
    def verdict(pod: Peer, other: Peer, direction: str) -> bool:
        if pod.namespace is None:
            return True
        chosen = [p for p in policies if p["metadata"]["namespace"] == pod.namespace
                  and direction.capitalize() in p["spec"]["policyTypes"] and _selects(p["spec"]["podSelector"], pod.labels)]
        if not chosen:
            return True
        key = "to" if direction == "egress" else "from"
        return any(
            (not rule.get(key) or any(_peer_matches(e, other, p["metadata"]["namespace"]) for e in rule[key]))
            and _port_matches(rule.get("ports"), port, protocol)
            for p in chosen for rule in p["spec"].get(direction) or [])
    return verdict(src, dst, "egress") and verdict(dst, src, "ingress")


WORKER = {"app.kubernetes.io/component": "worker", "app.kubernetes.io/managed-by": "voicehive-operator"}
ASR = {"app.kubernetes.io/component": "asr", "app.kubernetes.io/managed-by": "voicehive-operator"}


def _component(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": "voicehive", "app.kubernetes.io/instance": "voicehive",
            "app.kubernetes.io/component": name}


@pytest.fixture(scope="module")
def policies(helm_bin: str) -> list[dict[str, Any]]:
    docs = helm_template(helm_bin, "--set", "operator.watchNamespaces={hotels,resorts}",
                         "--set", f"networkPolicy.apiServer.cidrs={{{API_SERVER}}}",
                         "--set", "networkPolicy.livekit.cidrs={203.0.113.0/24}",
                         "--set", "networkPolicy.livekit.webhookCIDRs={203.0.113.0/24}")
    return [d for d in docs if d["kind"] == "NetworkPolicy"]


def test_worker_egress_only_to_what_a_call_needs(policies: list[dict[str, Any]]) -> None:
    worker = Peer("hotels", WORKER)
    dns = Peer("kube-system", {"k8s-app": "kube-dns"})
    redis = Peer("voicehive", {"app.kubernetes.io/name": "redis"})
    riva = Peer("hotels", ASR)
    assert allowed(policies, worker, dns, 53, "UDP")
    assert allowed(policies, worker, Peer(ip="192.0.2.10"), 6443)  # the API server: its VoiceSession
    assert allowed(policies, worker, redis, 6380)  # rediss://
    assert allowed(policies, worker, riva, 50051)
    assert allowed(policies, worker, Peer(ip="203.0.113.5"), 7881)  # LiveKit signalling
    assert allowed(policies, worker, Peer(ip="203.0.113.5"), 50123, "UDP")  # LiveKit media
    assert allowed(policies, worker, Peer(ip="20.50.2.9"), 443)  # Azure OpenAI / ElevenLabs (public HTTPS)
    denied = [
        ("cloud metadata", Peer(ip="169.254.169.254"), 80, "TCP"),
        ("private HTTPS", Peer(ip="10.0.0.5"), 443, "TCP"),
        ("the orchestrator", Peer("voicehive", _component("orchestrator")), 8443, "TCP"),
        ("another line's worker", Peer("resorts", WORKER), 8081, "TCP"),
        ("Redis on another port", redis, 16379, "TCP"),
        ("public non-HTTPS", Peer(ip="20.50.2.9"), 25, "TCP"),
        ("a pod posing as kube-dns", Peer("hotels", {"k8s-app": "kube-dns"}), 53, "UDP"),
    ]
    assert [what for what, dst, port, proto in denied if allowed(policies, worker, dst, port, proto)] == []


def test_ingress_to_workers_riva_orchestrator_and_operator(policies: list[dict[str, Any]]) -> None:
    other = Peer("hotels", {"app": "hotel-website"})
    assert not allowed(policies, other, Peer("hotels", WORKER), 8081)
    assert allowed(policies, Peer("hotels", WORKER), Peer("hotels", ASR), 50051)
    assert allowed(policies, Peer("voicehive", _component("operator")), Peer("resorts", ASR), 50051)
    assert not allowed(policies, other, Peer("hotels", ASR), 50051)
    orchestrator = Peer("voicehive", _component("orchestrator"))
    assert allowed(policies, Peer(ip="203.0.113.9"), orchestrator, 8443)  # LiveKit's webhooks
    assert allowed(policies, Peer("anywhere", {"a": "b"}), orchestrator, 8443)  # the cluster
    assert not allowed(policies, Peer(ip="198.51.100.1"), orchestrator, 8443)  # the internet
    assert not allowed(policies, Peer(ip="203.0.113.9"), Peer("voicehive", _component("operator")), 8080)
    assert not allowed(policies, orchestrator, Peer(ip="20.50.2.9"), 443)  # no provider egress


def test_riva_pods_admit_only_the_tls_port_the_operator_serves(helm_bin: str, policies: list[dict[str, Any]]) -> None:
    """One port to Riva Pods: riva.port, which the operator's Services (and, with TLS, the nginx
    sidecar) use; the NIM's plaintext gRPC behind the sidecar and its HTTP port stay closed."""
    worker, operator = Peer("hotels", WORKER), Peer("voicehive", _component("operator"))
    asr = Peer("hotels", ASR)
    tls_port = OperatorSettings().riva_port
    assert allowed(policies, worker, asr, tls_port) and allowed(policies, operator, asr, tls_port)
    for closed in (builders.NIM_INTERNAL_GRPC_PORT, builders.NIM_HTTP_PORT):
        assert not allowed(policies, worker, asr, closed) and not allowed(policies, operator, asr, closed), closed
    docs = helm_template(helm_bin, "--set", "operator.watchNamespaces={hotels}", "--set", "riva.port=50443",
                         "--set", "riva.tls.enabled=false", "--set", "riva.tls.proxyImage=mirror.example/nginx:1.28")
    env = {e["name"]: e.get("value") for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "voicehive-operator"
           for e in d["spec"]["template"]["spec"]["containers"][0]["env"]}
    riva_env = {k: v for k, v in env.items() if k.startswith("VOICEHIVE_OPERATOR_RIVA_") and isinstance(v, str)}
    settings = OperatorSettings.from_env(riva_env)
    assert (settings.riva_port, settings.riva_tls, settings.riva_tls_proxy_image) == (
        50443, False, "mirror.example/nginx:1.28")
    moved = [d for d in docs if d["kind"] == "NetworkPolicy"]
    assert allowed(moved, worker, asr, 50443) and not allowed(moved, worker, asr, tls_port)
    assert OperatorSettings.from_env({}).riva_tls is True  # on unless the chart says otherwise


# --------------------------------------------------------------------------- secret scan

URL_WITH_PASSWORD = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s\"'@:]*:[^/\s\"'@]+@")


def scan(objects: Any, values: list[str]) -> list[str]:
    text = json.dumps(objects)
    return [v[:4] + "…" for v in values if v in text] + URL_WITH_PASSWORD.findall(text)


def _pod_specs(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d["spec"]["template"]["spec"] for d in docs if d["kind"] in {"Deployment", "StatefulSet", "DaemonSet"}]


def test_no_pod_spec_holds_a_secret_value_or_a_url_with_a_password(helm_bin: str) -> None:
    password = secrets.token_urlsafe(24)  # URL-safe, as a password in a URL must be (or %-encoded)
    for variant in ([], ["--set", "redis.urlSecret.name=redis-url", "--set", "orchestrator.tls.enabled=false"]):
        assert scan(_pod_specs(helm_template(helm_bin, *variant)), [password]) == []
    refused = run(helm_bin, "template", "voicehive", str(CHART), "--set", "operator.watchNamespaces={hotels}",
                  "--set", f"redis.url=rediss://voicehive:{password}@redis:6380/0")
    assert refused.returncode != 0 and "redis.urlSecret" in refused.stderr and password not in refused.stderr
    # The operator's worker pods: master keys and a password-bearing Redis URL in the operator only.
    settings = OperatorSettings(
        livekit_api_key="APIkey", livekit_api_secret=generate_key_b64(), pii_key=base64.b64decode(generate_key_b64()),
        transcript_key=base64.b64decode(generate_key_b64()), redis_url=f"rediss://vh:{password}@redis:6380/0")
    from tests.operator.helpers import spec

    pod = builders.worker_pod(namespace="hotels", line_name="lindenhof", line_uid="u", settings=settings,
                              spec=HotelLineSpec.model_validate(spec()))
    assert settings.pii_key and settings.transcript_key
    values = [password, settings.livekit_api_secret, base64.b64encode(settings.pii_key).decode(),
              base64.b64encode(settings.transcript_key).decode()]
    assert scan(pod, values) == []
