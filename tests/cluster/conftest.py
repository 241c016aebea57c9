"""The installed product: `make cluster-up` (rig/cluster.py) — the chart's Pods run by the rig's
node agent (test infrastructure standing in for the kubelet), each on its own ServiceAccount.

The `cluster` fixture uses a cluster that is already up, or brings one up for this package, and
takes it down after it (so the rest of the suite never has nodes that would run its Pods).
Without the rig it skips (or fails under VOICEHIVE_RIG=1, as the rig tests do).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from tests.fixtures.rig import ROOT, Rig, parse_env_file, skip_or_fail

CLUSTER_ENV = ROOT / ".rig" / "cluster" / "env"


@dataclass(frozen=True)
class Cluster:
    env: dict[str, str]
    api: kubernetes.client.ApiClient

    @property
    def release_ns(self) -> str:
        return self.env["VOICEHIVE_CLUSTER_RELEASE_NS"]

    @property
    def hotel_ns(self) -> str:
        return self.env["VOICEHIVE_CLUSTER_HOTEL_NS"]

    @property
    def core(self) -> kubernetes.client.CoreV1Api:
        return kubernetes.client.CoreV1Api(self.api)

    @property
    def apps(self) -> kubernetes.client.AppsV1Api:
        return kubernetes.client.AppsV1Api(self.api)

    @property
    def custom(self) -> kubernetes.client.CustomObjectsApi:
        return kubernetes.client.CustomObjectsApi(self.api)

    def log(self, namespace: str, pod: str, container: str) -> str:
        path = Path(self.env["VOICEHIVE_CLUSTER_LOGS"]) / f"{namespace}_{pod}_{container}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def pods(self, namespace: str, selector: str = "") -> list[Any]:
        return list(self.core.list_namespaced_pod(namespace, label_selector=selector).items)


def _up(rig: Rig) -> bool:
    if CLUSTER_ENV.exists():
        return False
    result = subprocess.run([sys.executable, "-m", "rig.cluster", "up"], cwd=ROOT, timeout=1500, check=False,
                            env={**os.environ, "VOICEHIVE_RIG_STATE": str(ROOT / ".rig")})
    if result.returncode != 0:
        # a half-up cluster (node agent, release) would run the Pods of every later test's objects
        subprocess.run([sys.executable, "-m", "rig.cluster", "down"], cwd=ROOT, timeout=600, check=False)
        pytest.fail("make cluster-up failed (its output is above; logs in .rig/cluster/ and .rig/nodeagent/logs/)")
    return True


@pytest.fixture(scope="package")
def cluster(rig: Rig) -> Iterator[Cluster]:
    if os.geteuid() != 0:
        skip_or_fail("root for the node agent (network namespaces)")
    _up(rig)
    env = parse_env_file(CLUSTER_ENV)
    api: kubernetes.client.ApiClient = kubernetes.config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=env["KUBECONFIG"]
    )
    yield Cluster(env, api)
    api.close()  # type: ignore[no-untyped-call]
    # test_upgrade_and_uninstall takes the installation down, so finish the job even when the
    # cluster was up before (VOICEHIVE_CLUSTER_KEEP=1 keeps it, e.g. to look at it afterwards)
    if os.environ.get("VOICEHIVE_CLUSTER_KEEP") != "1":
        subprocess.run([sys.executable, "-m", "rig.cluster", "down"], cwd=ROOT, timeout=600, check=False)
