"""Pure builders: a HotelLine spec in, Kubernetes objects and LiveKit requests out.

WHY pure: everything the operator creates is decided here without I/O, so the shape of a worker
Pod, a Riva Deployment or a SIP trunk is unit-tested directly, and the handlers only move these
objects over the wire (the mysql-operator / dask-kubernetes split).
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import secrets
from dataclasses import dataclass
from typing import Any

from google.protobuf.duration_pb2 import Duration
from livekit.protocol import sip as lk_sip

from voicehive import contract, privacy, rbac, recording_store
from voicehive.api.models import HotelLineSpec, MediaEncryption
from voicehive.contract import API_VERSION, GROUP, HOTELLINE_KIND, VOICESESSION_KIND
from voicehive_operator.riva_tls import PoolTls
from voicehive_operator.settings import OperatorSettings, SecretRef

REGION_LABEL = "topology.kubernetes.io/region"
GPU_RESOURCE = "nvidia.com/gpu"
RIVA_GRPC_PORT_NAME = "speech-grpc"
METADATA_MANAGED_BY = "managedBy"
METADATA_LINE = "line"
ANNOTATION_ASR_MODEL = f"{GROUP}/asr-model"
# Seconds a worker gets after SIGTERM on top of the call cap: say goodbye, flush state.
# (A worker draining on SIGTERM lets its call run until this margin minus its goodbye time.)
TERMINATION_MARGIN_S = 30


def worker_grace_seconds(spec: HotelLineSpec) -> int:
    """A worker pod's terminationGracePeriodSeconds: long enough for a whole call, so SIGTERM
    (rollout, upgrade, drain) lets a live call finish (voicehive_worker.drain)."""
    return spec.workers.max_call_duration_seconds + TERMINATION_MARGIN_S


def _short_hash(*parts: str, length: int = 16) -> str:
    digest = hashlib.sha256("\x00".join(parts).encode()).hexdigest()
    return digest[:length]


def common_labels(component: str) -> dict[str, str]:
    return {
        contract.LABEL_PART_OF: contract.PART_OF,
        contract.LABEL_COMPONENT: component,
        contract.LABEL_MANAGED_BY: contract.MANAGER,
    }


def owner_reference(api_version: str, kind: str, name: str, uid: str, *, controller: bool = True) -> dict[str, Any]:
    return {
        "apiVersion": api_version,
        "kind": kind,
        "name": name,
        "uid": uid,
        "controller": controller,
        "blockOwnerDeletion": True,
    }


def line_owner(name: str, uid: str) -> dict[str, Any]:
    return owner_reference(API_VERSION, HOTELLINE_KIND, name, uid)


def session_owner(name: str, uid: str) -> dict[str, Any]:
    return owner_reference(API_VERSION, VOICESESSION_KIND, name, uid)


# --------------------------------------------------------------------------- Riva


@dataclass(frozen=True)
class RivaPool:
    """One shared Riva Deployment: lines that agree on region, model and GPU pool share it."""

    namespace: str
    region: str
    model: str
    gpus_per_replica: int
    node_selector: tuple[tuple[str, str], ...]
    tolerations: tuple[str, ...]  # canonical JSON of each toleration, sorted

    @property
    def key(self) -> str:
        return _short_hash(
            self.namespace,
            self.region,
            self.model,
            str(self.gpus_per_replica),
            json.dumps(self.node_selector),
            json.dumps(self.tolerations),
        )

    @property
    def name(self) -> str:
        return f"riva-{self.key[:12]}"

    def address(self, settings: OperatorSettings) -> str:
        return f"{self.name}.{self.namespace}.svc:{settings.riva_port}"


def riva_pool_for(namespace: str, spec: HotelLineSpec, settings: OperatorSettings) -> RivaPool | None:
    """The shared Riva pool a line uses, or ``None`` when it brings its own Riva endpoint."""
    if spec.asr.endpoint:
        return None
    tolerations = tuple(sorted(json.dumps(t.to_wire(), sort_keys=True) for t in spec.asr.tolerations))
    return RivaPool(
        namespace=settings.riva_namespace or namespace,
        region=str(spec.region),
        model=spec.asr.model,
        gpus_per_replica=spec.asr.gpus_per_replica,
        node_selector=tuple(sorted(spec.asr.node_selector.items())),
        tolerations=tolerations,
    )


def asr_address(namespace: str, spec: HotelLineSpec, settings: OperatorSettings) -> str:
    pool = riva_pool_for(namespace, spec, settings)
    return spec.asr.endpoint if pool is None else pool.address(settings)  # type: ignore[return-value]


def managed_riva_tls(namespace: str, spec: HotelLineSpec, settings: OperatorSettings) -> bool:
    """The line dials an operator-managed pool, and that pool serves TLS with the pool's own CA."""
    return settings.riva_tls and riva_pool_for(namespace, spec, settings) is not None


def asr_uses_tls(namespace: str, spec: HotelLineSpec, settings: OperatorSettings) -> bool:
    """TLS to the line's Riva: the line's ``asr.useTls`` for its own endpoint, the operator's
    ``riva_tls`` for a managed pool."""
    if riva_pool_for(namespace, spec, settings) is None:
        return spec.asr.use_tls
    return settings.riva_tls


def riva_replicas(total_calls: int, streams_per_gpu: int, gpus_per_replica: int) -> int:
    """Replicas that carry ``total_calls`` concurrent streams; at least one."""
    per_replica = max(1, streams_per_gpu * gpus_per_replica)
    return max(1, math.ceil(total_calls / per_replica))


def _node_affinity(region: str, selector: tuple[tuple[str, str], ...] = ()) -> dict[str, Any]:
    expressions = [{"key": REGION_LABEL, "operator": "In", "values": [region]}]
    expressions += [{"key": key, "operator": "In", "values": [value]} for key, value in selector]
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": expressions}]}
        }
    }


# The `restricted` Pod Security level (hotel namespaces enforce it): non-root, no privilege
# escalation, every capability dropped, the runtime's seccomp profile.
RESTRICTED_CONTAINER: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
# NVIDIA's Riva/NIM containers run as uid 1000; the model volume is made writable for it.
RIVA_POD_SECURITY: dict[str, Any] = {
    "runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def riva_labels(pool: RivaPool) -> dict[str, str]:
    return {**common_labels(contract.COMPONENT_ASR), contract.LABEL_ASR_POOL: pool.key}


# NVIDIA's Riva ASR NIM (docs.nvidia.com/nim/riva/asr, "Getting Started" and "Deploying with Helm"):
# the model is chosen by the container and NIM_TAGS_SELECTOR, the key comes as NGC_API_KEY, models
# are cached in /opt/nim/.cache, gRPC on NIM_GRPC_API_PORT, health on NIM_HTTP_API_PORT.
NIM_HTTP_PORT = 9000
NIM_CACHE_PATH = "/opt/nim/.cache"
NIM_HEALTH_READY = "/v1/health/ready"
NIM_HEALTH_LIVE = "/v1/health/live"
NIM_SHM = "8Gi"  # NVIDIA runs the ASR NIM with --shm-size=8GB


def _http_probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": "http"}, "periodSeconds": period, "failureThreshold": failures,
            "timeoutSeconds": 5}


# TLS for a managed pool (riva_tls): NGINX's official image terminates TLS on the Service's port
# and passes the bytes to the NIM's gRPC on a Pod-internal port (the NIM has no TLS setting we
# could verify). The NIM still listens on every address of the Pod on that port: the chart's
# NetworkPolicy admits only riva_port to Riva Pods (docs/tenant-isolation.md).
NIM_INTERNAL_GRPC_PORT = 50052  # behind the proxy: no containerPort, not in the Service
RIVA_PROXY_CONTAINER = "riva-tls-proxy"
RIVA_PROXY_UID = 101  # the nginx user of NGINX's official images
RIVA_PROXY_TLS_DIR = "/etc/voicehive/riva-tls"
NGINX_CONF = "/etc/nginx/nginx.conf"  # the official image's main configuration file
# The image's CMD plus `-e stderr` (the error log before the configuration is read goes to the
# log, not to a file on a read-only root); run directly, without the image's entrypoint hooks,
# which only edit the default configuration we replace.
RIVA_PROXY_COMMAND = ("nginx", "-e", "stderr", "-g", "daemon off;")
ANNOTATION_RIVA_CERT = f"{GROUP}/riva-tls-cert"  # fingerprint of the served certificate (public)
ANNOTATION_RIVA_PROXY_CONFIG = f"{GROUP}/riva-proxy-config"  # hash of the nginx configuration


def riva_tls_secret_name(pool: RivaPool) -> str:
    return f"{pool.name}-tls"


def riva_proxy_config_name(pool: RivaPool) -> str:
    return f"{pool.name}-tls-proxy"


def riva_proxy_config(settings: OperatorSettings) -> str:
    """nginx.conf of the TLS sidecar: a TCP (stream) proxy, so gRPC's HTTP/2 passes unchanged.

    ALPN h2 is required by gRPC clients (nginx stream ``ssl_alpn``, since 1.21.4); the pid file
    lives in the writable /tmp because the root filesystem is read-only; no http block, so
    nginx needs none of its http temp directories.
    """
    return f"""# Rendered by the VoiceHive operator (builders.riva_proxy_config); do not edit.
worker_processes 1;
pid /tmp/nginx.pid;
error_log stderr warn;

events {{
    worker_connections 4096;
}}

stream {{
    server {{
        listen {settings.riva_port} ssl;
        ssl_certificate {RIVA_PROXY_TLS_DIR}/tls.crt;
        ssl_certificate_key {RIVA_PROXY_TLS_DIR}/tls.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_alpn h2;
        proxy_pass 127.0.0.1:{NIM_INTERNAL_GRPC_PORT};
    }}
}}
"""


def riva_nim_grpc_port(settings: OperatorSettings) -> int:
    """Where the NIM serves gRPC: behind the proxy with TLS, on the Service's port without."""
    return NIM_INTERNAL_GRPC_PORT if settings.riva_tls else settings.riva_port


def _riva_container(pool: RivaPool, settings: OperatorSettings) -> dict[str, Any]:
    gpus = str(pool.gpus_per_replica)
    period = 10
    ngc = settings.riva_ngc_key_ref
    ports = [{"name": "http", "containerPort": NIM_HTTP_PORT, "protocol": "TCP"}]
    if not settings.riva_tls:
        ports.insert(0, {"name": RIVA_GRPC_PORT_NAME, "containerPort": settings.riva_port, "protocol": "TCP"})
    return {
        "name": "riva",
        "image": settings.riva_image,
        "env": [
            {"name": "NGC_API_KEY", "valueFrom": {"secretKeyRef": {"name": ngc.name, "key": ngc.key}}},
            {"name": "NIM_TAGS_SELECTOR", "value": settings.riva_tags_selector},
            {"name": "NIM_HTTP_API_PORT", "value": str(NIM_HTTP_PORT)},
            {"name": "NIM_GRPC_API_PORT", "value": str(riva_nim_grpc_port(settings))},
            {"name": "NIM_CACHE_PATH", "value": NIM_CACHE_PATH},
        ],
        "ports": ports,
        "resources": {
            "requests": {GPU_RESOURCE: gpus, "cpu": settings.riva_cpu, "memory": settings.riva_memory},
            "limits": {GPU_RESOURCE: gpus, "memory": settings.riva_memory},
        },
        # A first start downloads and optimises the model (minutes; NVIDIA: up to 30 min or more).
        "startupProbe": _http_probe(NIM_HEALTH_READY, period, math.ceil(settings.riva_startup_budget_s / period)),
        "readinessProbe": _http_probe(NIM_HEALTH_READY, period, 3),
        "livenessProbe": _http_probe(NIM_HEALTH_LIVE, 20, 3),
        "securityContext": RESTRICTED_CONTAINER,
        "volumeMounts": [{"name": "nim-cache", "mountPath": NIM_CACHE_PATH}, {"name": "shm", "mountPath": "/dev/shm"}],  # noqa: S108 (a volume)
    }


def riva_proxy_container(settings: OperatorSettings) -> dict[str, Any]:
    """The TLS sidecar: restricted, read-only root, its key only from the Secret volume."""
    return {
        "name": RIVA_PROXY_CONTAINER,
        "image": settings.riva_tls_proxy_image,
        "command": list(RIVA_PROXY_COMMAND),
        "ports": [{"name": RIVA_GRPC_PORT_NAME, "containerPort": settings.riva_port, "protocol": "TCP"}],
        "resources": {"requests": {"cpu": "100m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}},
        "readinessProbe": {"tcpSocket": {"port": RIVA_GRPC_PORT_NAME}, "periodSeconds": 10, "failureThreshold": 3},
        "livenessProbe": {"tcpSocket": {"port": RIVA_GRPC_PORT_NAME}, "periodSeconds": 20, "failureThreshold": 3},
        "securityContext": {**RESTRICTED_CONTAINER, "readOnlyRootFilesystem": True,
                            "runAsUser": RIVA_PROXY_UID, "runAsGroup": RIVA_PROXY_UID},
        "volumeMounts": [
            {"name": "proxy-tmp", "mountPath": "/tmp"},  # noqa: S108 (an emptyDir: the pid file)
            {"name": "proxy-config", "mountPath": NGINX_CONF, "subPath": "nginx.conf", "readOnly": True},
            {"name": "riva-tls", "mountPath": RIVA_PROXY_TLS_DIR, "readOnly": True},
        ],
    }


def _riva_proxy_volumes(pool: RivaPool) -> list[dict[str, Any]]:
    # 0440 with the Pod's fsGroup as group: the sidecar reads the key through that group.
    tls_items = [{"key": "tls.crt", "path": "tls.crt"}, {"key": "tls.key", "path": "tls.key"}]
    return [
        {"name": "proxy-tmp", "emptyDir": {"sizeLimit": "16Mi"}},
        {"name": "proxy-config", "configMap": {"name": riva_proxy_config_name(pool)}},
        {"name": "riva-tls", "secret": {"secretName": riva_tls_secret_name(pool), "items": tls_items,
                                        "defaultMode": 0o440}},
    ]


def riva_deployment(pool: RivaPool, replicas: int, settings: OperatorSettings, cert_fingerprint: str = "") -> dict[str, Any]:
    """The pool's Deployment; with TLS, the sidecar and the certificate's fingerprint (a renewed
    certificate rolls the Pods, so nginx serves it)."""
    labels = riva_labels(pool)
    tolerations = [json.loads(t) for t in pool.tolerations]
    # GPU node pools are commonly tainted nvidia.com/gpu:NoSchedule.
    default_gpu = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
    if default_gpu not in tolerations:
        tolerations.append(default_gpu)
    cache: dict[str, Any] = (
        {"name": "nim-cache", "persistentVolumeClaim": {"claimName": settings.riva_model_pvc}}
        if settings.riva_model_pvc
        else {"name": "nim-cache", "emptyDir": {}}
    )
    containers = [_riva_container(pool, settings)]
    volumes = [cache, {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": NIM_SHM}}]
    template_meta: dict[str, Any] = {"labels": labels}
    if settings.riva_tls:
        containers.append(riva_proxy_container(settings))
        volumes += _riva_proxy_volumes(pool)
        template_meta["annotations"] = {
            ANNOTATION_RIVA_CERT: cert_fingerprint,
            ANNOTATION_RIVA_PROXY_CONFIG: _short_hash(riva_proxy_config(settings)),
        }
    pod: dict[str, Any] = {
        "affinity": _node_affinity(pool.region, pool.node_selector),
        "tolerations": tolerations,
        "automountServiceAccountToken": False,
        "securityContext": RIVA_POD_SECURITY,
        "containers": containers,
        "volumes": volumes,
    }
    if settings.riva_image_pull_secret:
        pod["imagePullSecrets"] = [{"name": settings.riva_image_pull_secret}]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": pool.name,
            "namespace": pool.namespace,
            "labels": labels,
            "annotations": {ANNOTATION_ASR_MODEL: pool.model, REGION_LABEL: pool.region},
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {contract.LABEL_ASR_POOL: pool.key, contract.LABEL_COMPONENT: contract.COMPONENT_ASR}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {"metadata": template_meta, "spec": pod},
        },
    }


def riva_container_names(deployment: dict[str, Any]) -> list[str]:
    """Container names of a pool Deployment as stored (a TLS switch changes them)."""
    pod = deployment.get("spec", {}).get("template", {}).get("spec", {})
    return [c.get("name", "") for c in pod.get("containers", [])]


def deployment_owner(deployment: dict[str, Any]) -> dict[str, Any]:
    """Owner reference to a stored pool Deployment: its Secret and ConfigMap go with it (GC)."""
    meta = deployment["metadata"]
    return owner_reference("apps/v1", "Deployment", meta["name"], meta["uid"])


def riva_tls_secret(pool: RivaPool, tls: PoolTls, owner: dict[str, Any] | None) -> dict[str, Any]:
    """The pool's ``kubernetes.io/tls`` Secret: server certificate and key, the CA certificate,
    and the CA key (only the operator reads it, to renew; the sidecar mounts tls.crt/tls.key)."""
    meta: dict[str, Any] = {"name": riva_tls_secret_name(pool), "namespace": pool.namespace, "labels": riva_labels(pool)}
    if owner is not None:
        meta["ownerReferences"] = [owner]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": meta,
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in sorted(tls.secret_data().items())},
    }


def riva_proxy_configmap(pool: RivaPool, settings: OperatorSettings, owner: dict[str, Any] | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": riva_proxy_config_name(pool), "namespace": pool.namespace, "labels": riva_labels(pool)}
    if owner is not None:
        meta["ownerReferences"] = [owner]
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"nginx.conf": riva_proxy_config(settings)}}


def riva_service(pool: RivaPool, settings: OperatorSettings) -> dict[str, Any]:
    """The pool's only door: ``riva_port`` (TLS when ``riva_tls``); the NIM's own port is not in it."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": pool.name, "namespace": pool.namespace, "labels": riva_labels(pool)},
        "spec": {
            "type": "ClusterIP",
            "selector": {contract.LABEL_ASR_POOL: pool.key, contract.LABEL_COMPONENT: contract.COMPONENT_ASR},
            "ports": [
                {
                    "name": "grpc",
                    "port": settings.riva_port,
                    "targetPort": RIVA_GRPC_PORT_NAME,
                    "protocol": "TCP",
                    "appProtocol": "grpc",
                }
            ],
        },
    }


# --------------------------------------------------------------------------- workers


# The per-line Secret the operator maintains in the line's namespace: what a worker of this line
# needs and nothing of another line (issue 11). Keys derive from the master keys per line, so a
# compromised worker can open only its own line's transcripts and call tokens.
LINE_SECRET_TRANSCRIPT_KEY = "transcript-key"  # noqa: S105 (key names inside the Secret)
LINE_SECRET_TOKEN_KEY = "token-key"  # noqa: S105
LINE_SECRET_RECORDING_KEY = "recording-key"  # noqa: S105 (wraps the line's recording data keys)
LINE_SECRET_REDIS_URL = "redis-url"  # noqa: S105
LINE_SECRET_REDIS_CA = "redis-ca.crt"  # noqa: S105 (a CA certificate: public, kept with the URL)
LINE_SECRET_RIVA_CA = "riva-ca.crt"  # noqa: S105 (the managed Riva pool's CA certificate: public)
PURPOSE_TOKEN = "livekit-token"  # noqa: S105


def line_secret_name(line_name: str) -> str:
    return f"{line_name[:200].rstrip('-')}-voicehive-line"


def line_secret_data(namespace: str, name: str, settings: OperatorSettings, riva_ca: str | None = None) -> dict[str, str]:
    """The per-line Secret's values (plain text; :func:`line_secret` base64-encodes them).

    ``riva_ca``: the CA certificate of the line's managed Riva pool (TLS), when there is one.
    """
    data: dict[str, str] = {}
    if settings.transcript_key is not None:
        key = privacy.derive_line_key(settings.transcript_key, namespace, name, privacy.TRANSCRIPT_PURPOSE)
        data[LINE_SECRET_TRANSCRIPT_KEY] = base64.b64encode(key).decode()
        # the same key `voicehive recording key` hands the line's staff (recording_store.RECORDING_PURPOSE)
        rec = privacy.derive_line_key(settings.transcript_key, namespace, name, recording_store.RECORDING_PURPOSE)
        data[LINE_SECRET_RECORDING_KEY] = base64.b64encode(rec).decode()
    if settings.pii_key is not None:
        data[LINE_SECRET_TOKEN_KEY] = base64.b64encode(line_token_key(namespace, name, settings.pii_key)).decode()
    if settings.redis_url:
        data[LINE_SECRET_REDIS_URL] = settings.redis_url
    if settings.redis_url and settings.redis_ca_pem:
        data[LINE_SECRET_REDIS_CA] = settings.redis_ca_pem
    if riva_ca:
        data[LINE_SECRET_RIVA_CA] = riva_ca
    return data


def line_token_key(namespace: str, name: str, pii_key: bytes) -> bytes:
    return privacy.derive_line_key(pii_key, namespace, name, PURPOSE_TOKEN)


def line_secret(namespace: str, name: str, uid: str, settings: OperatorSettings,
                riva_ca: str | None = None) -> dict[str, Any]:
    """The line's Secret, owned by the HotelLine (garbage-collected with it)."""
    data = line_secret_data(namespace, name, settings, riva_ca)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": line_secret_name(name),
            "namespace": namespace,
            "labels": {**common_labels(contract.COMPONENT_WORKER), contract.LABEL_LINE: name},
            "ownerReferences": [line_owner(name, uid)],
        },
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in sorted(data.items())},
    }


def worker_spec_hash(namespace: str, name: str, spec: HotelLineSpec, settings: OperatorSettings) -> str:
    """Hash of everything a warm pod was built from; a change replaces idle pods."""
    relevant = {
        "spec": spec.to_wire(),
        "riva": asr_address(namespace, spec, settings),
        "riva_tls": managed_riva_tls(namespace, spec, settings),
        "livekit": settings.url_workers_dial,
        "sa": settings.worker_service_account,
        # Which keys the line Secret holds (never their values: those stay out of labels).
        "secrets": [repr(settings.pii_key_ref), repr(settings.transcript_key_ref), settings.pii_key is not None,
                    settings.transcript_key is not None, bool(settings.redis_url), bool(settings.redis_ca_pem)],
        "pull": settings.worker_image_pull_policy,
        "otlp": settings.tracing.endpoint if settings.tracing else None,
    }
    return _short_hash(json.dumps(relevant, sort_keys=True), length=16)


def worker_pod_name(line_name: str) -> str:
    """``<line>-w-<8 hex>``; generated here because not every API server honours generateName."""
    return f"{line_name[:50].rstrip('-')}-w-{secrets.token_hex(4)}"


def _secret_env(name: str, ref: SecretRef) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}


def _resources(spec: HotelLineSpec) -> dict[str, Any]:
    res = spec.workers.resources
    return {
        "requests": {k: v for k, v in res.requests.to_wire().items() if v},
        "limits": {k: v for k, v in res.limits.to_wire().items() if v},
    }


def backoffice_env(spec: HotelLineSpec) -> list[dict[str, Any]]:
    """PMS credentials, webhook secret and SMTP credentials from the line's Secrets (never inline)."""
    env: list[dict[str, Any]] = []
    creds = spec.pms.credentials
    if spec.pms.kind != "builtin" and creds is not None:
        env.append(_secret_env(contract.ENV_PMS_ID, SecretRef(creds.secret_name, creds.id_key)))
        env.append(_secret_env(contract.ENV_PMS_SECRET, SecretRef(creds.secret_name, creds.secret_key)))
    hook = spec.staff_delivery.webhook
    if hook is not None:
        env.append(_secret_env(contract.ENV_WEBHOOK_SECRET, SecretRef(hook.secret_ref.name, hook.secret_ref.key)))
    email = spec.staff_delivery.email
    if email is not None and email.credentials is not None:
        env.append(_secret_env(contract.ENV_SMTP_USER, SecretRef(email.credentials.secret_name, email.credentials.id_key)))
        env.append(_secret_env(contract.ENV_SMTP_PASSWORD, SecretRef(email.credentials.secret_name, email.credentials.secret_key)))
    return env


def worker_env(namespace: str, name: str, spec: HotelLineSpec, settings: OperatorSettings) -> list[dict[str, Any]]:
    """What one call needs, secrets only by reference (issue 11).

    Not here: the LiveKit API key and secret (the operator mints a room-scoped token per call),
    the orchestrator's agent token (workers do not call it), a Redis URL in clear. Still global:
    the PII key, because call references are HMAC(PII key, room) shared with the orchestrator
    (docs/operator.md "Tenant isolation").
    """
    line_keys = line_secret_data(namespace, name, settings)
    line = line_secret_name(name)
    env: list[dict[str, Any]] = [
        {"name": contract.ENV_LINE_NAME, "value": name},
        {"name": contract.ENV_NAMESPACE, "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": contract.ENV_POD_NAME, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": contract.ENV_TERMINATION_GRACE_SECONDS, "value": str(worker_grace_seconds(spec))},
        {"name": contract.ENV_LINE_SPEC, "value": json.dumps(spec.to_wire(), separators=(",", ":"), sort_keys=True)},
        {"name": contract.ENV_READY_PORT, "value": str(contract.WORKER_PROBE_PORT)},
        {"name": contract.ENV_RIVA_SERVER, "value": asr_address(namespace, spec, settings)},
        {"name": contract.ENV_LIVEKIT_URL, "value": settings.url_workers_dial},
        _secret_env(contract.ENV_PII_KEY, settings.pii_key_ref),
        _secret_env(contract.ENV_TRANSCRIPT_KEY, SecretRef(line, LINE_SECRET_TRANSCRIPT_KEY)
                    if LINE_SECRET_TRANSCRIPT_KEY in line_keys else settings.transcript_key_ref),
        _secret_env(
            contract.ENV_AZURE_OPENAI_API_KEY,
            SecretRef(spec.llm.api_key_secret_ref.name, spec.llm.api_key_secret_ref.key),
        ),
        _secret_env(
            contract.ENV_ELEVEN_API_KEY, SecretRef(spec.tts.api_key_secret_ref.name, spec.tts.api_key_secret_ref.key)
        ),
    ]
    env += backoffice_env(spec)
    if LINE_SECRET_TOKEN_KEY in line_keys:
        env.append(_secret_env(contract.ENV_LINE_TOKEN_KEY, SecretRef(line, LINE_SECRET_TOKEN_KEY)))
    if LINE_SECRET_REDIS_URL in line_keys:
        env.append(_secret_env(contract.ENV_REDIS_URL, SecretRef(line, LINE_SECRET_REDIS_URL)))
    if spec.recording is not None and spec.recording.enabled:
        if LINE_SECRET_RECORDING_KEY in line_keys:
            env.append(_secret_env(contract.ENV_RECORDING_LINE_KEY, SecretRef(line, LINE_SECRET_RECORDING_KEY)))
        rec = spec.recording
        for var, ref in ((recording_store.ENV_ACCESS_KEY_ID, rec.access_key_id_secret_ref),
                         (recording_store.ENV_SECRET_ACCESS_KEY, rec.secret_access_key_secret_ref)):
            env.append(_secret_env(var, SecretRef(ref.name, ref.key)))
    if settings.tracing is not None:  # the worker exports its call's spans where the operator does
        env.append({"name": contract.ENV_OTLP_TRACES_ENDPOINT, "value": settings.tracing.endpoint})
    if managed_riva_tls(namespace, spec, settings):
        env.append({"name": contract.ENV_RIVA_CA_FILE, "value": f"{contract.RIVA_CA_DIR}/ca.crt"})
    return env


def _redis_ca(settings: OperatorSettings, line_name: str = "") -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Mount and volume for the Redis CA from the line Secret (TLS to Redis), or nothing."""
    if not (settings.redis_url and settings.redis_ca_pem):
        return [], []
    mount = {"name": "redis-ca", "mountPath": contract.REDIS_CA_DIR, "readOnly": True}
    volume = {"name": "redis-ca", "secret": {"secretName": line_secret_name(line_name),
                                             "items": [{"key": LINE_SECRET_REDIS_CA, "path": "ca.crt"}]}}
    return [mount], [volume]


def _riva_ca(namespace: str, line_name: str, spec: HotelLineSpec,
             settings: OperatorSettings) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Mount and volume for the managed Riva pool's CA from the line Secret, or nothing."""
    if not managed_riva_tls(namespace, spec, settings):
        return [], []
    mount = {"name": "riva-ca", "mountPath": contract.RIVA_CA_DIR, "readOnly": True}
    volume = {"name": "riva-ca", "secret": {"secretName": line_secret_name(line_name),
                                            "items": [{"key": LINE_SECRET_RIVA_CA, "path": "ca.crt"}]}}
    return [mount], [volume]


def worker_labels(line_name: str, spec_hash: str) -> dict[str, str]:
    return {
        **common_labels(contract.COMPONENT_WORKER),
        contract.LABEL_LINE: line_name,
        contract.LABEL_WORKER_STATE: contract.WORKER_IDLE,
        contract.LABEL_SPEC_HASH: spec_hash,
    }


# Ready means the worker's /readyz answered 200 (warm: VAD loaded, providers configured,
# fallback voice rendered): the operator claims pods by readiness. Warm-up may take a minute.
WORKER_PROBES: dict[str, Any] = {
    "startupProbe": {"httpGet": {"path": "/healthz", "port": "probes"}, "periodSeconds": 1, "failureThreshold": 120},
    "readinessProbe": {"httpGet": {"path": "/readyz", "port": "probes"}, "periodSeconds": 1, "failureThreshold": 1},
    "livenessProbe": {"httpGet": {"path": "/healthz", "port": "probes"}, "periodSeconds": 10, "failureThreshold": 3},
}


def worker_pod(
    *,
    namespace: str,
    line_name: str,
    line_uid: str,
    spec: HotelLineSpec,
    settings: OperatorSettings,
    pod_name: str | None = None,
) -> dict[str, Any]:
    """An idle worker pod of a line, owned by the line until a call claims it."""
    spec_hash = worker_spec_hash(namespace, line_name, spec, settings)
    riva_mounts, riva_volumes = _riva_ca(namespace, line_name, spec, settings)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name or worker_pod_name(line_name),
            "namespace": namespace,
            "labels": worker_labels(line_name, spec_hash),
            "ownerReferences": [line_owner(line_name, line_uid)],
        },
        "spec": {
            "serviceAccountName": settings.worker_service_account,
            "restartPolicy": "Never",  # one call per pod: a crashed worker is replaced, not restarted
            "terminationGracePeriodSeconds": worker_grace_seconds(spec),
            "enableServiceLinks": False,
            "affinity": _node_affinity(str(spec.region)),
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 10001,
                "runAsGroup": 10001,
                "fsGroup": 10001,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "worker",
                    "image": spec.workers.image,
                    "imagePullPolicy": settings.worker_image_pull_policy,
                    "env": worker_env(namespace, line_name, spec, settings),
                    "resources": _resources(spec),
                    "ports": [{"name": "probes", "containerPort": contract.WORKER_PROBE_PORT, "protocol": "TCP"}],
                    **WORKER_PROBES,
                    "securityContext": {**RESTRICTED_CONTAINER, "readOnlyRootFilesystem": True},
                    "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, *_redis_ca(settings)[0], *riva_mounts],  # noqa: S108
                }
            ],
            "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}, *_redis_ca(settings, line_name)[1],
                        *riva_volumes],
        },
    }


def worker_rbac(namespace: str, settings: OperatorSettings) -> list[dict[str, Any]]:
    """ServiceAccount, Role and RoleBinding of worker pods: read sessions, patch their status."""
    labels = common_labels(contract.COMPONENT_WORKER)
    sa = settings.worker_service_account
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": sa, "namespace": namespace, "labels": labels},
            "automountServiceAccountToken": True,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": sa, "namespace": namespace, "labels": labels},
            "rules": rbac.worker_rules(),
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": sa, "namespace": namespace, "labels": labels},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": sa},
            "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": namespace}],
        },
    ]


# --------------------------------------------------------------------------- LiveKit SIP

_ENCRYPTION = {
    MediaEncryption.DISABLE.value: lk_sip.SIP_MEDIA_ENCRYPT_DISABLE,
    MediaEncryption.ALLOW.value: lk_sip.SIP_MEDIA_ENCRYPT_ALLOW,
    MediaEncryption.REQUIRE.value: lk_sip.SIP_MEDIA_ENCRYPT_REQUIRE,
}


def livekit_name(namespace: str, name: str) -> str:
    return f"voicehive:{contract.line_key(namespace, name)}"


def livekit_metadata(namespace: str, name: str) -> str:
    """Metadata that marks a LiveKit object as ours and names its line (found after a restart)."""
    return json.dumps(
        {METADATA_MANAGED_BY: contract.MANAGER, METADATA_LINE: contract.line_key(namespace, name)},
        separators=(",", ":"),
        sort_keys=True,
    )


def line_of_metadata(metadata: str) -> str | None:
    """The ``namespace/name`` a LiveKit object belongs to, if VoiceHive made it."""
    try:
        data = json.loads(metadata or "{}")
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get(METADATA_MANAGED_BY) != contract.MANAGER:
        return None
    line = data.get(METADATA_LINE)
    return line if isinstance(line, str) else None


def inbound_trunk(
    namespace: str, name: str, spec: HotelLineSpec, auth: tuple[str, str] | None
) -> lk_sip.SIPInboundTrunkInfo:
    """The line's inbound trunk; LiveKit's own call cap is a backstop behind the worker's."""
    trunk = lk_sip.SIPInboundTrunkInfo(
        name=livekit_name(namespace, name),
        metadata=livekit_metadata(namespace, name),
        numbers=list(spec.phone_numbers),
        allowed_addresses=list(spec.sip.allowed_addresses),
        media=lk_sip.SIPMediaConfig(encryption=_ENCRYPTION[str(spec.sip.media_encryption)]),
    )
    if auth is not None:
        trunk.auth_username, trunk.auth_password = auth
    trunk.max_call_duration.CopyFrom(Duration(seconds=spec.workers.max_call_duration_seconds + TERMINATION_MARGIN_S))
    return trunk


def dispatch_rule(namespace: str, name: str, trunk_id: str) -> lk_sip.SIPDispatchRuleInfo:
    """Individual rule: one room per caller, prefixed per line, tagged with the line's key."""
    return lk_sip.SIPDispatchRuleInfo(
        name=livekit_name(namespace, name),
        metadata=livekit_metadata(namespace, name),
        trunk_ids=[trunk_id],
        # False: LiveKit omits sip.phoneNumber when it is set (livekit/protocol attrs.go), and the
        # orchestrator needs the number for the caller hash; it hashes it on arrival, never stores it.
        hide_phone_number=False,
        attributes={contract.ATTRIBUTE_LINE: contract.line_key(namespace, name)},
        rule=lk_sip.SIPDispatchRule(
            dispatch_rule_individual=lk_sip.SIPDispatchRuleIndividual(room_prefix=contract.room_prefix(namespace, name))
        ),
    )


def mask_number(number: str) -> str:
    """``+4930123456`` -> ``+49…``: enough for a person to recognise which line, no more."""
    return number[:3] + "…"
