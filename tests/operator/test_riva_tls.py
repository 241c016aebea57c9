"""A managed Riva pool serves TLS by default: an nginx sidecar terminates it in front of the NIM,
with a per-pool certificate the operator issues; its callers get the pool's CA (pure builders)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.verification import PolicyBuilder, Store

from tests.operator.helpers import spec, wait_for
from voicehive import contract
from voicehive.api.models import HotelLineSpec
from voicehive_operator import builders, riva_tls
from voicehive_operator.kube import secret_text
from voicehive_operator.settings import OperatorSettings, SettingsError
from voicehive_worker.session import ProviderEndpoints

SETTINGS = OperatorSettings(streams_per_gpu=16, redis_url="redis://127.0.0.1:6379/0")
NOW = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.UTC)


def line_spec(**overrides: Any) -> HotelLineSpec:
    return HotelLineSpec.model_validate(spec(**overrides))


def pool(settings: OperatorSettings = SETTINGS) -> builders.RivaPool:
    found = builders.riva_pool_for("hotel-ns", line_spec(), settings)
    assert found is not None
    return found


def containers(dep: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in dep["spec"]["template"]["spec"]["containers"]}


def test_tls_is_on_by_default_and_a_setting() -> None:
    assert OperatorSettings().riva_tls is True
    env = {"VOICEHIVE_OPERATOR_RIVA_TLS": "false", "VOICEHIVE_OPERATOR_RIVA_TLS_PROXY_IMAGE": "mirror.example/nginx:1.28"}
    settings = OperatorSettings.from_env(env)
    assert settings.riva_tls is False and settings.riva_tls_proxy_image == "mirror.example/nginx:1.28"
    with pytest.raises(SettingsError, match="VOICEHIVE_OPERATOR_RIVA_TLS: expected true or false"):
        OperatorSettings.from_env({"VOICEHIVE_OPERATOR_RIVA_TLS": "maybe"})


def test_only_the_tls_port_is_exposed_and_the_nim_listens_behind_it() -> None:
    dep = builders.riva_deployment(pool(), 1, SETTINGS, "f" * 16)
    nim, proxy = containers(dep)["riva"], containers(dep)[builders.RIVA_PROXY_CONTAINER]
    assert list(containers(dep)) == ["riva", builders.RIVA_PROXY_CONTAINER]  # the NIM stays first
    env = {e["name"]: e.get("value") for e in nim["env"]}
    assert env["NIM_GRPC_API_PORT"] == str(builders.NIM_INTERNAL_GRPC_PORT) != str(SETTINGS.riva_port)
    assert [p["containerPort"] for p in nim["ports"]] == [builders.NIM_HTTP_PORT]  # no gRPC containerPort
    assert proxy["ports"] == [{"name": builders.RIVA_GRPC_PORT_NAME, "containerPort": 50051, "protocol": "TCP"}]
    svc = builders.riva_service(pool(), SETTINGS)
    assert [(p["port"], p["targetPort"]) for p in svc["spec"]["ports"]] == [(50051, builders.RIVA_GRPC_PORT_NAME)]
    assert str(builders.NIM_INTERNAL_GRPC_PORT) not in json.dumps(svc)


def test_tls_off_restores_the_plaintext_nim_on_the_service_port() -> None:
    settings = SETTINGS.replace(riva_tls=False)
    dep = builders.riva_deployment(pool(settings), 1, settings)
    assert list(containers(dep)) == ["riva"]
    env = {e["name"]: e.get("value") for e in containers(dep)["riva"]["env"]}
    assert env["NIM_GRPC_API_PORT"] == "50051"
    assert "annotations" not in dep["spec"]["template"]["metadata"]
    names = {v["name"] for v in dep["spec"]["template"]["spec"]["volumes"]}
    assert not names & {"riva-tls", "proxy-config", "proxy-tmp"}


def test_nginx_config_is_a_tls_stream_proxy_with_alpn_h2() -> None:
    conf = builders.riva_proxy_config(SETTINGS)
    assert re.search(r"^\s*listen 50051 ssl;$", conf, re.M)
    assert re.search(r"^\s*ssl_alpn h2;$", conf, re.M)  # gRPC clients insist on ALPN h2
    assert re.search(r"^\s*ssl_protocols TLSv1\.2 TLSv1\.3;$", conf, re.M)
    assert re.search(rf"^\s*proxy_pass 127\.0\.0\.1:{builders.NIM_INTERNAL_GRPC_PORT};$", conf, re.M)
    assert re.search(r"^pid /tmp/nginx\.pid;$", conf, re.M)  # the root filesystem is read-only
    assert f"{builders.RIVA_PROXY_TLS_DIR}/tls.key" in conf and "stream {" in conf and "http {" not in conf
    assert conf.count("{") == conf.count("}")
    assert "50053" in builders.riva_proxy_config(SETTINGS.replace(riva_port=50053))


def test_the_sidecar_is_restricted_with_a_read_only_root_and_its_key_from_the_secret_volume() -> None:
    p = pool()
    dep = builders.riva_deployment(p, 1, SETTINGS, "f" * 16)
    podspec = dep["spec"]["template"]["spec"]
    proxy = containers(dep)[builders.RIVA_PROXY_CONTAINER]
    assert proxy["image"] == SETTINGS.riva_tls_proxy_image
    assert proxy["command"] == ["nginx", "-e", "stderr", "-g", "daemon off;"]
    sc = proxy["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 101 and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert sc["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"]: m for m in proxy["volumeMounts"]}
    volumes = {v["name"]: v for v in podspec["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]  # the pid file
    conf = mounts["/etc/nginx/nginx.conf"]
    assert conf["subPath"] == "nginx.conf" and volumes[conf["name"]]["configMap"]["name"] == f"{p.name}-tls-proxy"
    tls = volumes[mounts[builders.RIVA_PROXY_TLS_DIR]["name"]]["secret"]
    assert tls["secretName"] == f"{p.name}-tls" and tls["defaultMode"] == 0o440
    assert [i["key"] for i in tls["items"]] == ["tls.crt", "tls.key"]  # never the CA key
    assert podspec["securityContext"]["fsGroup"] is not None  # the group that reads the 0440 key
    assert proxy["readinessProbe"]["tcpSocket"]["port"] == builders.RIVA_GRPC_PORT_NAME


def test_certificate_names_the_service_and_chains_to_the_pool_ca() -> None:
    p = pool()
    tls = riva_tls.issue(p.name, p.namespace, NOW)
    cert = x509.load_pem_x509_certificate(tls.cert_pem.encode())
    ca = x509.load_pem_x509_certificate(tls.ca_pem.encode())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert sans == [p.name, f"{p.name}.hotel-ns", f"{p.name}.hotel-ns.svc", f"{p.name}.hotel-ns.svc.cluster.local"]
    key = cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    # What a TLS client does: the Service DNS name the worker dials, verified against the pool CA.
    host = p.address(SETTINGS).rsplit(":", 1)[0]
    verifier = PolicyBuilder().store(Store([ca])).time(NOW).build_server_verifier(x509.DNSName(host))
    assert verifier.verify(cert, [])[0] == cert
    assert "PRIVATE KEY" not in repr(tls)


def test_material_is_reused_then_renewed_with_the_same_ca_and_replaced_when_unreadable() -> None:
    p = pool()
    first, why = riva_tls.ensure(None, p.name, p.namespace, NOW)
    assert why == "issued"
    again, why = riva_tls.ensure(first, p.name, p.namespace, NOW + dt.timedelta(days=100))
    assert why is None and again == first
    later = NOW + dt.timedelta(days=riva_tls.CERT_DAYS - riva_tls.RENEW_BEFORE_DAYS + 1)
    renewed, why = riva_tls.ensure(first, p.name, p.namespace, later)
    assert why == "the server certificate expires soon"
    assert renewed.ca_pem == first.ca_pem and renewed.cert_pem != first.cert_pem  # callers keep trusting
    assert renewed.fingerprint != first.fingerprint
    other, why = riva_tls.ensure(first, "riva-other", p.namespace, NOW)
    assert why == "the server certificate names another Service" and other.ca_pem == first.ca_pem
    swapped = riva_tls.PoolTls(ca_pem=first.ca_pem, cert_pem=first.cert_pem, ca_key_pem=first.ca_key_pem,
                               key_pem=other.key_pem)  # nginx would refuse to start with this pair
    fixed, why = riva_tls.ensure(swapped, p.name, p.namespace, NOW)
    assert why == "the server key does not match its certificate" and riva_tls.renewal_reason(
        fixed, p.name, p.namespace, NOW) is None and fixed.ca_pem == first.ca_pem
    broken = riva_tls.PoolTls(ca_pem="garbage", cert_pem="garbage", ca_key_pem="x", key_pem="x")
    fresh, why = riva_tls.ensure(broken, p.name, p.namespace, NOW)
    assert why is not None and fresh.ca_pem.startswith("-----BEGIN CERTIFICATE-----")
    assert riva_tls.from_secret({"tls.crt": "x"}) is None  # a key missing: issue anew


def test_tls_secret_is_kubernetes_tls_owned_by_the_deployment_and_no_key_is_in_the_pod_spec() -> None:
    p = pool()
    tls = riva_tls.issue(p.name, p.namespace, NOW)
    dep = builders.riva_deployment(p, 2, SETTINGS, tls.fingerprint)
    stored = {**dep, "metadata": {**dep["metadata"], "uid": "1234"}}
    owner = builders.deployment_owner(stored)
    secret = builders.riva_tls_secret(p, tls, owner)
    assert secret["type"] == "kubernetes.io/tls" and secret["metadata"]["namespace"] == "hotel-ns"
    assert set(secret["data"]) == {"tls.crt", "tls.key", "ca.crt", "ca.key"}
    assert secret["metadata"]["ownerReferences"] == [owner] and owner["uid"] == "1234" and owner["kind"] == "Deployment"
    cm = builders.riva_proxy_configmap(p, SETTINGS, owner)
    assert cm["data"]["nginx.conf"] == builders.riva_proxy_config(SETTINGS) and cm["metadata"]["ownerReferences"] == [owner]
    text = json.dumps(dep)
    assert "PRIVATE KEY" not in text and "BEGIN CERTIFICATE" not in text
    annotations = dep["spec"]["template"]["metadata"]["annotations"]
    assert annotations[builders.ANNOTATION_RIVA_CERT] == tls.fingerprint  # a renewal rolls the Pods


def test_workers_of_a_tls_pool_get_its_ca_from_the_line_secret_and_dial_with_tls() -> None:
    line = line_spec()
    env = {e["name"]: e for e in builders.worker_env("hotel-ns", "lindenhof", line, SETTINGS)}
    assert env[contract.ENV_RIVA_CA_FILE]["value"] == f"{contract.RIVA_CA_DIR}/ca.crt"
    pod = builders.worker_pod(namespace="hotel-ns", line_name="lindenhof", line_uid="u", spec=line, settings=SETTINGS)
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    mounts = {m["mountPath"]: m for m in pod["spec"]["containers"][0]["volumeMounts"]}
    ca = volumes[mounts[contract.RIVA_CA_DIR]["name"]]["secret"]
    assert ca == {"secretName": "lindenhof-voicehive-line", "items": [{"key": "riva-ca.crt", "path": "ca.crt"}]}
    data = builders.line_secret_data("hotel-ns", "lindenhof", SETTINGS, riva_ca="-----BEGIN CERTIFICATE-----\n")
    assert data[builders.LINE_SECRET_RIVA_CA].startswith("-----BEGIN CERTIFICATE-----")
    # TLS off, or the line's own Riva endpoint: nothing of the pool's CA
    own = line_spec(asr={**spec()["asr"], "endpoint": "riva.example:50051"})
    for settings, s in ((SETTINGS.replace(riva_tls=False), line), (SETTINGS, own)):
        names = {e["name"] for e in builders.worker_env("hotel-ns", "lindenhof", s, settings)}
        assert contract.ENV_RIVA_CA_FILE not in names
    assert builders.worker_spec_hash("hotel-ns", "l", line, SETTINGS) != builders.worker_spec_hash(
        "hotel-ns", "l", line, SETTINGS.replace(riva_tls=False))
    assert builders.asr_uses_tls("hotel-ns", line, SETTINGS) and not builders.asr_uses_tls("hotel-ns", own, SETTINGS)


def test_the_worker_dials_tls_with_the_ca_it_is_given(tmp_path: Any) -> None:
    from voicehive_worker.session import ProviderConfigError

    line = line_spec()
    base = {contract.ENV_RIVA_SERVER: "riva-x.hotel-ns.svc:50051", contract.ENV_AZURE_OPENAI_API_KEY: "k",
            contract.ENV_ELEVEN_API_KEY: "k"}
    plain = ProviderEndpoints.from_env(line, base)
    assert plain.riva_tls is False and plain.riva_ca_file is None
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    tls = ProviderEndpoints.from_env(line, {**base, contract.ENV_RIVA_CA_FILE: str(ca)})
    assert tls.riva_tls is True and tls.riva_ca_file == str(ca)
    with pytest.raises(ProviderConfigError, match=r"VOICEHIVE_RIVA_CA_FILE names /nowhere/ca\.crt, which cannot be read"):
        ProviderEndpoints.from_env(line, {**base, contract.ENV_RIVA_CA_FILE: "/nowhere/ca.crt"})


async def test_the_provider_check_verifies_the_pool_tls_against_the_pool_ca() -> None:
    """check_riva with the pool's CA reaches a TLS Riva whose certificate the operator issued;
    another CA, or plaintext, does not get a model list."""
    from tests.fakes.riva import RivaFake
    from voicehive_operator import providers

    tls = riva_tls.issue("localhost", "hotel-ns", dt.datetime.now(dt.UTC))  # SAN "localhost": loopback
    async with RivaFake(tls=(tls.key_pem.encode(), tls.cert_pem.encode())) as riva:
        address = f"localhost:{riva.port}"
        model = riva.models[0].name
        ok = await providers.check_riva(address, model, use_tls=True, ca_file=None, ca_pem=tls.ca_pem, timeout_s=5)
        assert (ok.status, ok.reason) == ("True", "RivaModelServed")
        stranger = riva_tls.issue("localhost", "hotel-ns", dt.datetime.now(dt.UTC))
        bad = await providers.check_riva(address, model, use_tls=True, ca_file=None, ca_pem=stranger.ca_pem, timeout_s=5)
        assert (bad.status, bad.reason) == ("False", "RivaUnreachable") and "over TLS" in bad.message
        plain = await providers.check_riva(address, model, use_tls=False, ca_file=None, timeout_s=5)
        assert plain.status == "False"


async def test_the_operator_issues_the_pool_certificate_once_and_hands_its_ca_to_the_lines(
    start_operator: Any, hotelline: Any, kube_client: Any, namespace: str, providers: Any,
    line_secret: dict[str, str], caplog: pytest.LogCaptureFixture,
) -> None:
    """Against the API (KMock, or the rig's apiserver): the pool's kubernetes.io/tls Secret and
    nginx ConfigMap are owned by its Deployment, the line Secret carries the pool CA, worker Pods
    mount it, a resync keeps the certificate, and no private key reaches a log or an Event."""
    await start_operator()
    managed = providers.line_spec(asr=spec()["asr"])  # no endpoint: operator-managed Riva
    await hotelline("a", {**managed, "workers": {**spec()["workers"], "warmPool": 1}})
    asr = {contract.LABEL_COMPONENT: contract.COMPONENT_ASR}
    deps = await wait_for(lambda: kube_client.list_deployments(namespace, asr), lambda ds: len(ds) == 1,
                          what="the shared Riva Deployment")
    dep = deps[0]
    name = dep["metadata"]["name"]
    # written first (the first replica's wins), owned by the Deployment once that exists
    secret = await wait_for(lambda: kube_client.read_secret(namespace, f"{name}-tls"),
                            lambda s: s is not None and s["metadata"].get("ownerReferences"),
                            what="the pool's TLS Secret, owned by the Deployment")
    owner = {"kind": "Deployment", "name": name, "uid": dep["metadata"]["uid"]}
    assert secret["type"] == "kubernetes.io/tls"
    assert [{k: o[k] for k in owner} for o in secret["metadata"]["ownerReferences"]] == [owner]
    config = await wait_for(lambda: kube_client._optional(kube_client.core.read_namespaced_config_map,
                                                          f"{name}-tls-proxy", namespace),
                            lambda c: c is not None, what="the nginx ConfigMap")
    assert "ssl_alpn h2;" in config["data"]["nginx.conf"]
    material = secret_text(secret)
    line_keys = await wait_for(lambda: kube_client.read_secret_key(namespace, "a-voicehive-line", "riva-ca.crt"),
                               lambda v: v is not None, what="the pool CA in the line Secret")
    assert line_keys == material["ca.crt"]
    template = dep["spec"]["template"]
    assert template["metadata"]["annotations"][builders.ANNOTATION_RIVA_CERT] == riva_tls.from_secret(
        material).fingerprint  # type: ignore[union-attr]
    pods = await wait_for(lambda: kube_client.list_pods(namespace, {contract.LABEL_LINE: "a"}), lambda ps: len(ps) >= 1,
                          what="a warm worker Pod")
    env = {e["name"]: e.get("value") for e in pods[0]["spec"]["containers"][0]["env"]}
    assert env[contract.ENV_RIVA_CA_FILE] == f"{contract.RIVA_CA_DIR}/ca.crt"
    # a few resyncs later (1 s each): the same certificate, not a new one per pass
    await asyncio.sleep(3)
    again = secret_text(await kube_client.read_secret(namespace, f"{name}-tls"))
    assert again["tls.crt"] == material["tls.crt"] and again["ca.crt"] == material["ca.crt"]
    events = await kube_client._dict(kube_client.core.list_namespaced_event, namespace)
    texts = json.dumps(events) + caplog.text + json.dumps(await kube_client.get_custom(namespace, contract.HOTELLINES, "a"))
    assert "PRIVATE KEY" not in texts and material["tls.key"].splitlines()[1] not in texts


async def test_switching_tls_on_replaces_the_pool_containers_in_place(
    start_operator: Any, hotelline: Any, kube_client: Any, namespace: str, providers: Any,
    line_secret: dict[str, str],
) -> None:
    """An install from before TLS (or the lab switch): the same Deployment gets the sidecar and the
    NIM's new port (a rolling update, not a delete: ASR stays up while the new Pods load)."""
    plain = await start_operator(riva_tls=False)
    await hotelline("a", {**providers.line_spec(asr=spec()["asr"]), "workers": {**spec()["workers"], "warmPool": 1}})
    asr = {contract.LABEL_COMPONENT: contract.COMPONENT_ASR}
    before = (await wait_for(lambda: kube_client.list_deployments(namespace, asr), lambda ds: len(ds) == 1,
                             what="a plaintext pool"))[0]
    assert builders.riva_container_names(before) == ["riva"]
    await plain.stop()
    await start_operator()
    after = (await wait_for(lambda: kube_client.list_deployments(namespace, asr),
                            lambda ds: len(ds) == 1 and len(builders.riva_container_names(ds[0])) == 2,
                            what="the sidecar added"))[0]
    assert after["metadata"]["uid"] == before["metadata"]["uid"]  # patched, not deleted
    pod = after["spec"]["template"]["spec"]
    nim = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert nim["NIM_GRPC_API_PORT"] == str(builders.NIM_INTERNAL_GRPC_PORT)
    assert [p["name"] for p in pod["containers"][0]["ports"]] == ["http"]
    assert {"riva-tls", "proxy-config", "proxy-tmp"} <= {v["name"] for v in pod["volumes"]}
    await wait_for(lambda: kube_client.read_secret_key(namespace, "a-voicehive-line", "riva-ca.crt"),
                   lambda v: v is not None, what="the pool CA in the line Secret")


async def test_two_operators_issuing_the_pool_certificate_at_once_agree_on_one(
    kube: Any, kube_client: Any, namespace: str
) -> None:
    """Rig 12-03: both operator replicas were active for ~150 ms at start-up (Kopf resumes each
    before it sees the other's priority). Both read "no TLS Secret", each issued its own
    certificate, and the second overwrote the first: the Deployment got a second revision (its
    surge Pod Pending for want of a GPU) and lines could hold the CA of the certificate that
    lost. Here replica B reads before replica A writes; the first certificate written must win."""
    from voicehive_operator import lines, riva
    from voicehive_operator.kube import Kube
    from voicehive_operator.main import build_runtime

    settings = SETTINGS.replace(redis_url="")
    a, b = (build_runtime(settings, Kube(kube.api_client())) for _ in range(2))
    raw = line_spec().model_dump(mode="json", by_alias=True, exclude_none=True)
    users = {k: [v] for k, v in (lines.pool_user(namespace, "a", "uid-a", raw, {}, a) or {}).items()}
    assert users, "the line uses a managed Riva pool"
    name = builders.riva_tls_secret_name(next(iter(users.values()))[0].pool)
    read_secret = b.kube.read_secret
    stale = [None]  # B's first read happened before A's create

    async def read_before_a_wrote(ns: str, secret: str) -> Any:
        return stale.pop() if stale and secret == name else await read_secret(ns, secret)

    b.kube.read_secret = read_before_a_wrote  # type: ignore[method-assign]
    try:
        await riva.reconcile_namespace(a, namespace, users)
        first = secret_text(await kube_client.read_secret(namespace, name))
        await riva.reconcile_namespace(b, namespace, users)
        stored = secret_text(await kube_client.read_secret(namespace, name))
        assert (stored["ca.crt"], stored["tls.crt"]) == (first["ca.crt"], first["tls.crt"]), (
            "the second replica replaced the certificate the first one issued")
        [dep] = await kube_client.list_deployments(namespace, {contract.LABEL_COMPONENT: contract.COMPONENT_ASR})
        fingerprint = riva_tls.from_secret(stored).fingerprint  # type: ignore[union-attr]
        assert dep["spec"]["template"]["metadata"]["annotations"][builders.ANNOTATION_RIVA_CERT] == fingerprint
        pool_key = f"{namespace}/{dep['metadata']['name']}"
        assert a.riva_cas[pool_key] == b.riva_cas[pool_key] == stored["ca.crt"]  # what lines are given
    finally:
        for runtime in (a, b):
            await runtime.close()
