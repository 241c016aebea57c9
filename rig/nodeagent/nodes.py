"""The Node and Lease objects the agent keeps, as pure builders."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

GPU_RESOURCE = "nvidia.com/gpu"
# The taint GPU node pools commonly carry, and the one the operator tolerates
# (operator/voicehive_operator/builders.py, riva_deployment).
GPU_TAINT = {"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}
LEASE_NAMESPACE = "kube-node-lease"
LEASE_SECONDS = 40


@dataclass(frozen=True)
class NodeSpec:
    """One node from ``--node NAME:region:zone[:gpu=N]``."""

    name: str
    region: str
    zone: str
    gpus: int = 0
    cpu: str = "8"
    memory: str = "32Gi"
    pods: str = "110"


def parse_node(value: str) -> NodeSpec:
    """``rig-gpu:europe-west4:europe-west4-b:gpu=1``; the zone may be a bare letter (``b``)."""
    parts = value.split(":")
    if len(parts) < 3 or not all(parts[:3]):
        raise ValueError(f"--node {value!r}: expected NAME:REGION:ZONE[:gpu=N]")
    name, region, zone = parts[:3]
    if len(zone) == 1:
        zone = f"{region}-{zone}"
    gpus = 0
    for extra in parts[3:]:
        key, _, number = extra.partition("=")
        if key != "gpu" or not number.isdigit():
            raise ValueError(f"--node {value!r}: unknown option {extra!r} (only gpu=N)")
        gpus = int(number)
    return NodeSpec(name=name, region=region, zone=zone, gpus=gpus)


def now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def build_node(spec: NodeSpec) -> dict[str, Any]:
    """The Node as registered: labels a scheduler and the operator's affinity read, GPU taint."""
    labels = {
        "kubernetes.io/hostname": spec.name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "topology.kubernetes.io/region": spec.region,
        "topology.kubernetes.io/zone": spec.zone,
        "node.voicehive.io/rig-node-agent": "true",
    }
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": spec.name, "labels": labels},
        "spec": {},
    }
    if spec.gpus:
        labels["nvidia.com/gpu.present"] = "true"
        body["spec"]["taints"] = [dict(GPU_TAINT)]
    return body


def build_node_status(spec: NodeSpec, host_ip: str = "127.0.0.1") -> dict[str, Any]:
    """Capacity, allocatable, a Ready condition (heartbeat now), addresses."""
    capacity = {"cpu": spec.cpu, "memory": spec.memory, "pods": spec.pods, "ephemeral-storage": "100Gi"}
    if spec.gpus:
        capacity[GPU_RESOURCE] = str(spec.gpus)
    now = now_rfc3339()
    condition = {
        "type": "Ready",
        "status": "True",
        "reason": "KubeletReady",
        "message": "voicehive rig node agent (test infrastructure, not a kubelet) is posting ready status",
        "lastHeartbeatTime": now,
        "lastTransitionTime": now,
    }
    return {
        "status": {
            "capacity": capacity,
            "allocatable": dict(capacity),
            "conditions": [condition],
            "addresses": [{"type": "InternalIP", "address": host_ip}, {"type": "Hostname", "address": spec.name}],
            "nodeInfo": {
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
                "kernelVersion": "",
                "osImage": "voicehive rig",
                "containerRuntimeVersion": "voicehive-nodeagent://0",
                "kubeletVersion": "v0.0.0-rig-node-agent",
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        }
    }


def build_lease(node: str, node_uid: str) -> dict[str, Any]:
    """The node's heartbeat Lease (kube-node-lease), owned by its Node as the kubelet does."""
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": node,
            "namespace": LEASE_NAMESPACE,
            "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": node, "uid": node_uid}],
        },
        "spec": {"holderIdentity": node, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": now_micro()},
    }
