"""The e2e phone call runs on the installed product (`make cluster-up`), like tests/cluster/."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.cluster.conftest import CLUSTER_ENV, _up
from tests.e2e.scenario import Installed
from tests.fixtures.rig import ROOT, Rig, parse_env_file, skip_or_fail


@pytest.fixture(scope="package")
def installed(rig: Rig) -> Iterator[Installed]:
    if os.geteuid() != 0:
        skip_or_fail("root for the node agent (network namespaces)")
    if "LIVEKIT_WEBHOOK_PORT" not in parse_env_file(ROOT / ".rig" / "ports.env"):
        skip_or_fail("a rig started by rig/up.sh with livekit-server webhooks (restart it: rig/down.sh)")
    brought_up = _up(rig)
    assert CLUSTER_ENV.exists()
    inst = Installed.load()
    yield inst
    inst.api_client.close()
    if brought_up and os.environ.get("VOICEHIVE_CLUSTER_KEEP") != "1":
        subprocess.run([sys.executable, "-m", "rig.cluster", "down"], cwd=ROOT, timeout=600, check=False)
