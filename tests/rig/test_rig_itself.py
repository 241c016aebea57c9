"""The rig keeps its promises: loopback only, idempotent start, an env file that describes it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.fixtures.rig import ROOT, Rig, parse_env_file

pytestmark = pytest.mark.rig

LOOPBACK = {"127.0.0.1", "::1"}


def _pids(rig: Rig) -> dict[str, int]:
    run = Path(rig.env.get("VOICEHIVE_RIG_STATE", str(ROOT / ".rig"))) / "run"
    return {p.stem: int(p.read_text()) for p in sorted(run.glob("*.pid"))}


def test_every_rig_server_listens_on_loopback_only(rig: Rig) -> None:
    psutil = pytest.importorskip("psutil")
    pids = _pids(rig)
    assert {"etcd", "kube-apiserver", "kube-controller-manager"} <= set(pids)
    exposed = []
    for name, pid in pids.items():
        for conn in psutil.Process(pid).net_connections(kind="inet"):
            if conn.status in {psutil.CONN_LISTEN, psutil.CONN_NONE} and conn.laddr and conn.laddr.ip not in LOOPBACK:
                exposed.append(f"{name} on {conn.laddr.ip}:{conn.laddr.port}")
    assert exposed == []


def test_up_again_is_a_no_op_and_env_matches(rig: Rig) -> None:
    before = _pids(rig)
    result = subprocess.run([str(ROOT / "rig" / "up.sh")], capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    assert "starting" not in result.stderr, result.stderr
    assert _pids(rig) == before
    env = parse_env_file(ROOT / ".rig" / "env")
    assert env["KUBECONFIG"] == str(rig.kubeconfig)
    for url_key in ("VOICEHIVE_RIG_KUBE_URL", "LIVEKIT_URL"):
        if url_key in env:
            assert "//127.0.0.1:" in env[url_key]
