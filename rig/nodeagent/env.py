"""A container's environment, built as the kubelet builds it (pure: lookups are passed in)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rig.nodeagent.dockerfile import expand_references

Lookup = Callable[[str, str], Mapping[str, str] | None]  # (namespace, name) -> data or None


class ConfigError(Exception):
    """A missing Secret/ConfigMap/key: the kubelet's CreateContainerConfigError."""


@dataclass(frozen=True)
class PodFacts:
    """What the downward API and service links read besides the Pod itself."""

    pod_ip: str
    host_ip: str
    node_name: str


def _field_ref(pod: Mapping[str, Any], path: str, facts: PodFacts) -> str:
    meta = pod.get("metadata", {})
    spec = pod.get("spec", {})
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", facts.node_name),
        "spec.serviceAccountName": spec.get("serviceAccountName", "default"),
        "status.podIP": facts.pod_ip,
        "status.podIPs": facts.pod_ip,
        "status.hostIP": facts.host_ip,
        "status.hostIPs": facts.host_ip,
    }
    if path in simple:
        return str(simple[path])
    match = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if match:
        return str(meta.get(match.group(1), {}).get(match.group(2), ""))
    raise ConfigError(f"fieldRef {path!r} is not supported by the rig node agent")


_SUFFIX = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "m": 1e-3}


def quantity(value: str) -> float:
    """A Kubernetes quantity (``500m``, ``256Mi``, ``2``) as a number."""
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(value).strip())
    if not match or (match.group(2) and match.group(2) not in _SUFFIX):
        raise ConfigError(f"quantity {value!r} is not understood")
    return float(match.group(1)) * _SUFFIX.get(match.group(2), 1)


def _resource_ref(container: Mapping[str, Any], ref: Mapping[str, Any]) -> str:
    kind, _, name = str(ref.get("resource", "")).partition(".")
    value = container.get("resources", {}).get(kind, {}).get(name)
    if value is None:  # unset: the kubelet falls back to node allocatable; ours is nominal
        value = {"cpu": "8", "memory": "32Gi"}.get(name, "0")
    divisor = quantity(ref.get("divisor", "1") or "1")
    return str(math.ceil(quantity(value) / divisor))


def _from_source(
    src: Mapping[str, Any], namespace: str, secrets: Lookup, configmaps: Lookup, what: str
) -> str | None:
    kind, lookup = ("secretKeyRef", secrets) if "secretKeyRef" in src else ("configMapKeyRef", configmaps)
    ref = src[kind]
    data = lookup(namespace, ref["name"])
    optional = bool(ref.get("optional", False))
    noun = "secret" if kind == "secretKeyRef" else "configmap"
    if data is None:
        if optional:
            return None
        raise ConfigError(f'{noun} "{ref["name"]}" not found ({what})')
    if ref["key"] not in data:
        if optional:
            return None
        raise ConfigError(f'couldn\'t find key {ref["key"]} in {noun.capitalize()} {namespace}/{ref["name"]} ({what})')
    return data[ref["key"]]


def _env_from(
    container: Mapping[str, Any], namespace: str, secrets: Lookup, configmaps: Lookup
) -> dict[str, str]:
    env: dict[str, str] = {}
    for source in container.get("envFrom", []) or []:
        kind, lookup = ("secretRef", secrets) if "secretRef" in source else ("configMapRef", configmaps)
        ref = source[kind]
        data = lookup(namespace, ref["name"])
        if data is None:
            if ref.get("optional"):
                continue
            raise ConfigError(f'{"secret" if kind == "secretRef" else "configmap"} "{ref["name"]}" not found (envFrom)')
        prefix = source.get("prefix", "")
        env.update({f"{prefix}{key}": value for key, value in data.items()})
    return env


def build_env(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    image_env: Mapping[str, str],
    service_env: Mapping[str, str],
    facts: PodFacts,
    secrets: Lookup,
    configmaps: Lookup,
) -> dict[str, str]:
    """Image ENV < service links < envFrom < env (in order, ``$(VAR)`` from earlier entries)."""
    namespace = pod["metadata"]["namespace"]
    env = {**image_env, "HOSTNAME": pod["metadata"]["name"], **service_env}
    env.update(_env_from(container, namespace, secrets, configmaps))
    for item in container.get("env", []) or []:
        name = item["name"]
        if "value" in item or "valueFrom" not in item:
            env[name] = expand_references(str(item.get("value", "")), env)
            continue
        source = item["valueFrom"]
        if "fieldRef" in source:
            env[name] = _field_ref(pod, source["fieldRef"]["fieldPath"], facts)
        elif "resourceFieldRef" in source:
            env[name] = _resource_ref(container, source["resourceFieldRef"])
        else:
            value = _from_source(source, namespace, secrets, configmaps, f"env {name}")
            if value is not None:
                env[name] = value
    return env


def service_links(services: Sequence[Mapping[str, Any]], kubernetes_host: str, kubernetes_port: int) -> dict[str, str]:
    """``KUBERNETES_SERVICE_HOST``/``_PORT`` and ``{SVC}_SERVICE_HOST``/``_PORT`` of the namespace."""
    env = {
        "KUBERNETES_SERVICE_HOST": kubernetes_host,
        "KUBERNETES_SERVICE_PORT": str(kubernetes_port),
        "KUBERNETES_SERVICE_PORT_HTTPS": str(kubernetes_port),
        "KUBERNETES_PORT": f"tcp://{kubernetes_host}:{kubernetes_port}",
    }
    for svc in services:
        spec = svc.get("spec", {})
        ip = spec.get("clusterIP")
        ports = spec.get("ports") or []
        if not ip or ip == "None" or not ports:
            continue
        prefix = svc["metadata"]["name"].upper().replace("-", "_")
        env[f"{prefix}_SERVICE_HOST"] = ip
        env[f"{prefix}_SERVICE_PORT"] = str(ports[0]["port"])
        for port in ports:
            if port.get("name"):
                env[f"{prefix}_SERVICE_PORT_{port['name'].upper().replace('-', '_')}"] = str(port["port"])
    return env
