"""Issue 11 on the installed chart: the operator's managed Riva pool serves only TLS.

The chart's defaults (riva.tls.enabled) on the rig: the operator issues the pool's certificate,
the node agent runs the pool's Pod (the Riva fake on NIM_GRPC_API_PORT behind the host's real
nginx, standing in for NGINX's image), the pool's Service is dialled from the node network with
the CA the line's worker Pods get, and the example HotelLine is Ready because the operator's own
provider check passed over that TLS.
"""

from __future__ import annotations

import base64
import datetime as dt
from pathlib import Path

import pytest

from rig.nodeagent.netns import netns_prefix
from tests.cluster.conftest import Cluster
from tests.cluster.test_installed_chart import LINE
from tests.fixtures.riva_tls_probe import probe_riva_tls
from tests.rig.conftest import eventually
from voicehive import contract
from voicehive.contract import GROUP, VERSION
from voicehive_operator import builders, riva_tls

pytestmark = pytest.mark.rig


def _text(data: dict[str, str], key: str) -> str:
    return base64.b64decode(data[key]).decode()


def test_the_riva_pool_serves_only_tls_with_the_operators_ca_and_the_line_is_ready_through_it(
    cluster: Cluster, tmp_path: Path
) -> None:
    ns = cluster.hotel_ns
    deployments = cluster.apps.list_namespaced_deployment(
        ns, label_selector=f"{contract.LABEL_COMPONENT}={contract.COMPONENT_ASR}").items
    assert len(deployments) == 1, [d.metadata.name for d in deployments]
    dep = deployments[0]
    name = dep.metadata.name
    assert [c.name for c in dep.spec.template.spec.containers] == ["riva", builders.RIVA_PROXY_CONTAINER]
    nim_env = {e.name: e.value for e in dep.spec.template.spec.containers[0].env}
    assert nim_env["NIM_GRPC_API_PORT"] == str(builders.NIM_INTERNAL_GRPC_PORT)

    # the pool's certificate: a kubernetes.io/tls Secret owned by the Deployment, its CA in the line Secret
    secret = cluster.core.read_namespaced_secret(f"{name}-tls", ns)  # builders.riva_tls_secret_name
    assert secret.type == "kubernetes.io/tls"
    assert [(o.kind, o.name, o.uid) for o in secret.metadata.owner_references] == [("Deployment", name, dep.metadata.uid)]
    pool_ca = _text(secret.data, "ca.crt")
    line_secret = cluster.core.read_namespaced_secret(builders.line_secret_name(LINE), ns)
    assert _text(line_secret.data, builders.LINE_SECRET_RIVA_CA) == pool_ca

    # worker Pods are told to dial with TLS and trust that CA (mounted from the line Secret)
    workers = eventually(lambda: cluster.pods(ns, contract.worker_pod_selector()), timeout=120, what="warm workers")
    for pod in workers:
        env = {e.name: e.value for e in pod.spec.containers[0].env}
        assert env[contract.ENV_RIVA_CA_FILE] == f"{contract.RIVA_CA_DIR}/ca.crt", pod.metadata.name
        assert any(m.mount_path == contract.RIVA_CA_DIR for m in pod.spec.containers[0].volume_mounts)

    # the Service: one port, TLS 1.3 with ALPN h2, verified for <pool>.<ns>.svc against the pool CA
    svc = cluster.core.read_namespaced_service(name, ns)
    assert [(p.port, p.target_port) for p in svc.spec.ports] == [(50051, builders.RIVA_GRPC_PORT_NAME)]
    ca, stranger = tmp_path / "ca.crt", tmp_path / "stranger.crt"
    ca.write_text(pool_ca)
    stranger.write_text(riva_tls.issue(name, ns, dt.datetime.now(dt.UTC)).ca_pem)
    netns = netns_prefix(Path(cluster.env["VOICEHIVE_CLUSTER_LOGS"]).parent) + "-node"
    seen = probe_riva_tls(netns, svc.spec.cluster_ip, f"{name}.{ns}.svc", ca, stranger, 50051)
    assert isinstance(seen["with_pool_ca"], list) and seen["with_pool_ca"], seen
    assert seen["tls"] == ["TLSv1.3", "h2"], seen
    assert isinstance(seen["with_another_ca"], str) and isinstance(seen["plaintext_to_tls_port"], str), seen

    # the operator's provider check reached the model through the same TLS: the line is Ready
    line = cluster.custom.get_namespaced_custom_object(GROUP, VERSION, ns, "hotellines", LINE)
    conditions = {c["type"]: c for c in line["status"]["conditions"]}
    assert (conditions["AsrReady"]["status"], conditions["AsrReady"]["reason"]) == ("True", "RivaModelServed")
    assert conditions["Ready"]["status"] == "True"
    assert line["status"]["asrService"] == f"{name}.{ns}.svc:50051"
