"""Pod volumes as host directories: emptyDir, secret, configMap, downwardAPI and projected
(serviceAccountToken by TokenRequest, kube-root-ca.crt, downward API), plus the default
ServiceAccount mount the rig's apiserver would otherwise add by admission."""

from __future__ import annotations

import base64
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from rig.nodeagent.env import ConfigError, PodFacts, _field_ref

SA_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
DEFAULT_TOKEN_SECONDS = 3607  # what the ServiceAccount admission asks for


class Sources(Protocol):
    def secret(self, namespace: str, name: str) -> dict[str, bytes] | None: ...
    def configmap(self, namespace: str, name: str) -> dict[str, bytes] | None: ...
    def token(self, pod: dict[str, Any], audience: str | None, seconds: int) -> tuple[str, float]: ...
    def root_ca(self, namespace: str) -> bytes: ...


@dataclass
class TokenFile:
    """A projected token to refresh at 80 % of its lifetime, as the kubelet does."""

    path: Path
    audience: str | None
    seconds: int
    refresh_at: float


@dataclass
class PreparedVolumes:
    paths: dict[str, Path] = field(default_factory=dict)
    tokens: list[TokenFile] = field(default_factory=list)


def write_file(path: Path, data: bytes, mode: int, gid: int | None) -> None:
    """Replace atomically (rename), so a reader of a bind-mounted directory never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, mode)
    if gid is not None:
        os.chown(tmp, 0, gid)
    tmp.replace(path)


def _select(data: dict[str, bytes], items: list[dict[str, Any]] | None, what: str) -> dict[str, tuple[bytes, int | None]]:
    if not items:
        return {key: (value, None) for key, value in data.items()}
    chosen: dict[str, tuple[bytes, int | None]] = {}
    for item in items:
        if item["key"] not in data:
            raise ConfigError(f"{what}: key {item['key']!r} not found")
        chosen[item["path"]] = (data[item["key"]], item.get("mode"))
    return chosen


def _keyed(kind: str, src: dict[str, Any], namespace: str, sources: Sources) -> dict[str, tuple[bytes, int | None]]:
    name = src.get("name") or src.get("secretName") or ""
    data = sources.secret(namespace, name) if kind == "secret" else sources.configmap(namespace, name)
    if data is None and kind == "configMap" and name == "kube-root-ca.crt":
        data = {"ca.crt": sources.root_ca(namespace)}  # no root-ca publisher on the rig: the agent's CA
    if data is None:
        if src.get("optional"):
            return {}
        raise ConfigError(f'{kind} "{name}" not found')
    return _select(data, src.get("items"), f"{kind} {name}")


def _downward(items: list[dict[str, Any]], pod: dict[str, Any], facts: PodFacts) -> dict[str, tuple[bytes, int | None]]:
    out: dict[str, tuple[bytes, int | None]] = {}
    for item in items:
        if "fieldRef" not in item:
            raise ConfigError(f"downwardAPI {item.get('path')}: only fieldRef is supported by the rig node agent")
        out[item["path"]] = (_field_ref(pod, item["fieldRef"]["fieldPath"], facts).encode(), item.get("mode"))
    return out


def _write_all(directory: Path, files: dict[str, tuple[bytes, int | None]], mode: int, gid: int | None) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o755)
    for rel, (data, item_mode) in files.items():
        write_file(directory / rel, data, item_mode if item_mode is not None else mode, gid)


def _projected(
    volume: dict[str, Any], directory: Path, pod: dict[str, Any], facts: PodFacts, sources: Sources, gid: int | None
) -> list[TokenFile]:
    namespace = pod["metadata"]["namespace"]
    mode = int(volume.get("defaultMode", 0o644))
    tokens: list[TokenFile] = []
    for source in volume.get("sources", []):
        if "serviceAccountToken" in source:
            sat = source["serviceAccountToken"]
            token = TokenFile(directory / sat["path"], sat.get("audience"), int(sat.get("expirationSeconds", 3600)), 0)
            refresh_token(token, pod, sources, mode, gid)
            tokens.append(token)
        elif "configMap" in source or "secret" in source:
            kind = "configMap" if "configMap" in source else "secret"
            _write_all(directory, _keyed(kind, source[kind], namespace, sources), mode, gid)
        elif "downwardAPI" in source:
            _write_all(directory, _downward(source["downwardAPI"].get("items", []), pod, facts), mode, gid)
        else:
            raise ConfigError(f"projected source {sorted(source)} is not supported by the rig node agent")
    return tokens


def refresh_token(token: TokenFile, pod: dict[str, Any], sources: Sources, mode: int = 0o644, gid: int | None = None) -> None:
    value, expires = sources.token(pod, token.audience, token.seconds)
    write_file(token.path, value.encode(), mode, gid)
    now = time.time()
    token.refresh_at = now + 0.8 * max(60.0, expires - now)


def prepare_volume(
    volume: dict[str, Any], root: Path, pod: dict[str, Any], facts: PodFacts, sources: Sources, gid: int | None
) -> tuple[Path, list[TokenFile]]:
    """The host directory of one volume, filled; raises ConfigError for what cannot be served."""
    directory = root / volume["name"]
    namespace = pod["metadata"]["namespace"]
    if "emptyDir" in volume:
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, 0o1777)
        return directory, []
    if "secret" in volume or "configMap" in volume:
        kind = "secret" if "secret" in volume else "configMap"
        mode = int(volume[kind].get("defaultMode", 0o644))
        _write_all(directory, _keyed(kind, volume[kind], namespace, sources), mode, gid)
        return directory, []
    if "downwardAPI" in volume:
        mode = int(volume["downwardAPI"].get("defaultMode", 0o644))
        _write_all(directory, _downward(volume["downwardAPI"].get("items", []), pod, facts), mode, gid)
        return directory, []
    if "projected" in volume:
        return directory, _projected(volume["projected"], directory, pod, facts, sources, gid)
    kinds = sorted(set(volume) - {"name"})
    raise ConfigError(f"volume {volume['name']!r}: type {kinds} is not supported by the rig node agent")


def default_sa_volume() -> dict[str, Any]:
    """What ServiceAccount admission would add (kube-api-access-*): token, CA, namespace."""
    return {
        "name": "kube-api-access-rig",
        "projected": {
            "defaultMode": 0o644,
            "sources": [
                {"serviceAccountToken": {"path": "token", "expirationSeconds": DEFAULT_TOKEN_SECONDS}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
            ],
        },
    }


def needs_default_sa(pod: dict[str, Any], sa_automount: bool | None) -> bool:
    """Mount the token unless the Pod (or else its ServiceAccount) opts out, or a container
    already mounts something at the standard path."""
    spec = pod["spec"]
    automount = spec.get("automountServiceAccountToken")
    if automount is None:
        automount = sa_automount
    if automount is False:
        return False
    containers = [*spec.get("initContainers", []), *spec.get("containers", [])]
    return not any(m.get("mountPath") == SA_PATH for c in containers for m in c.get("volumeMounts", []) or [])


def decode_data(obj: dict[str, Any], secret: bool) -> dict[str, bytes]:
    data: dict[str, bytes] = {}
    for key, value in (obj.get("data") or {}).items():
        data[key] = base64.b64decode(value) if secret else str(value).encode()
    for key, value in (obj.get("binaryData") or {}).items():
        data[key] = base64.b64decode(value)
    return data
