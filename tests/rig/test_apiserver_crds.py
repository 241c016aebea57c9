"""Our CRDs on a real kube-apiserver: apply, admit the good example, reject every bad one.

KMock validates nothing, so this is where the schema, CEL rules, defaults and the /status
subresource are proven against the code users run (see notes/kopf-kmock.md).
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml

from tests.fixtures.rig import ROOT, KubectlRunner
from tests.rig.conftest import Custom

pytestmark = pytest.mark.rig

EXAMPLES = ROOT / "examples"
INVALID = sorted((EXAMPLES / "invalid").glob("*.yaml"))


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _good_hotelline() -> dict[str, Any]:
    (line,) = [d for d in _documents(EXAMPLES / "hotelline.yaml") if d["kind"] == "HotelLine"]
    return line


def _expectation(path: Path) -> tuple[str, str]:
    text = path.read_text()
    field = re.search(r"^# expect-field: (.+)$", text, re.M)
    error = re.search(r"^# expect-error: (.+)$", text, re.M)
    assert field and error, f"{path.name} must document its expected field and error"
    return field.group(1).strip(), error.group(1).strip()


def test_kubectl_apply_crds_succeeds(kubectl: KubectlRunner) -> None:
    applied = kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    assert "hotellines.voicehive.io" in applied.stdout and "voicesessions.voicehive.io" in applied.stdout
    kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/hotellines.voicehive.io",
        "crd/voicesessions.voicehive.io",
    )
    # kubectl explain reads the published OpenAPI: every property has a description there.
    explained = kubectl("explain", "hotellines.spec.retention")
    assert "metadataDays" in explained.stdout and "DESCRIPTION" in explained.stdout.upper()
    resources = kubectl("api-resources", "--api-group=voicehive.io", "-o", "name").stdout.split()
    assert sorted(resources) == ["hotellines.voicehive.io", "voicesessions.voicehive.io"]


def test_good_example_is_accepted_and_defaulted(
    rig_crds: list[str], kubectl: KubectlRunner, rig_api: kubernetes.client.ApiClient, rig_namespace: str
) -> None:
    kubectl("apply", "-n", rig_namespace, "-f", str(EXAMPLES / "hotelline.yaml"))
    line = _good_hotelline()
    stored = Custom(rig_api, rig_namespace).get("hotellines", line["metadata"]["name"])
    assert stored["spec"]["phoneNumbers"] == line["spec"]["phoneNumbers"]
    assert stored["metadata"]["generation"] == 1
    # Defaults are applied by the apiserver (structural schema), so GitOps sees no drift later.
    assert stored["spec"]["retention"]["metadataDays"] >= stored["spec"]["retention"]["recordingDays"] >= 1
    printed = kubectl("get", "hotellines", "-n", rig_namespace, "-o", "wide").stdout
    header = printed.splitlines()[0].split()
    for column in ("READY", "REGION", "NUMBERS", "ACTIVE", "AGE"):
        assert column in header, printed
    assert kubectl("get", "hl", "-n", rig_namespace, "-o", "name").stdout.strip() == (
        f"hotelline.voicehive.io/{line['metadata']['name']}"
    )


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_example_is_rejected_by_the_apiserver(
    path: Path, rig_crds: list[str], kubectl: KubectlRunner, rig_namespace: str
) -> None:
    """Both `kubectl apply` and `kubectl apply --server-side` are refused by the apiserver itself.

    The two paths word a few errors differently (an unknown field is "unknown field" client-side
    and "field not declared in schema" server-side; a duplicate set entry "Duplicate value" vs
    "duplicate entries"), so the documented message and field must appear in what they return.
    """
    field, error = _expectation(path)
    outputs = []
    for mode in ([], ["--server-side"]):
        result = kubectl("apply", *mode, "-n", rig_namespace, "-f", str(path), check=False)
        assert result.returncode != 0, f"the apiserver accepted {path.name} ({mode or 'client-side'}): {result.stdout}"
        assert "HotelLine" in result.stderr, result.stderr
        outputs.append(result.stderr)
    said = "\n".join(outputs)
    assert error in said, f"expected {error!r} in: {said}"
    assert field in said, f"expected the field {field!r} to be named in: {said}"
    # Nothing of the rejected HotelLine was stored.
    names = kubectl("get", "hotellines", "-n", rig_namespace, "-o", "name").stdout
    assert names.strip() == ""


def test_status_subresource_and_spec_are_separate(
    rig_crds: list[str], rig_api: kubernetes.client.ApiClient, rig_namespace: str
) -> None:
    api = Custom(rig_api, rig_namespace)
    line = copy.deepcopy(_good_hotelline())
    name = line["metadata"]["name"]
    line["status"] = {"activeCalls": 5}  # ignored on create: status is a subresource
    created = api.create("hotellines", line)
    assert "activeCalls" not in created.get("status", {})

    # Through /status: status changes, spec does not, generation stays.
    patched = api.patch_status(
        "hotellines",
        name,
        {"status": {"activeCalls": 2, "warmWorkers": 1}, "spec": {"displayName": "Changed via status"}},
    )
    assert patched["status"]["activeCalls"] == 2
    assert patched["spec"]["displayName"] == line["spec"]["displayName"]
    assert patched["metadata"]["generation"] == 1

    # Through the main resource: spec changes, status does not, generation bumps.
    patched = api.patch(
        "hotellines",
        name,
        {"spec": {"displayName": "Hotel Lindenhof Mitte"}, "status": {"activeCalls": 99}},
    )
    assert patched["spec"]["displayName"] == "Hotel Lindenhof Mitte"
    assert patched["status"]["activeCalls"] == 2
    assert patched["metadata"]["generation"] == 2


def test_stale_resource_version_is_a_conflict(
    rig_crds: list[str], rig_api: kubernetes.client.ApiClient, rig_namespace: str
) -> None:
    """Optimistic concurrency, which KMock does not enforce: a stale write gets 409."""
    api = Custom(rig_api, rig_namespace)
    line = copy.deepcopy(_good_hotelline())
    name = line["metadata"]["name"]
    created = api.create("hotellines", line)
    api.patch("hotellines", name, {"spec": {"displayName": "A"}})
    stale = copy.deepcopy(created)
    stale["spec"]["displayName"] = "B"
    with pytest.raises(kubernetes.client.ApiException) as caught:
        api.replace("hotellines", name, stale)
    assert caught.value.status == 409
