"""HotelLine reconciliation end to end: Kopf against the kube API, LiveKit via its Twirp fake,
providers via their fakes, all over real sockets."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from tests.fakes.livekit_twirp import LiveKitFake
from tests.fixtures.kube import KubeAPI
from tests.operator.conftest import Providers, condition
from tests.operator.helpers import spec, wait_for
from voicehive import contract
from voicehive.contract import HOTELLINES
from voicehive_operator import builders
from voicehive_operator.kube import Kube

WORKERS = {contract.LABEL_COMPONENT: contract.COMPONENT_WORKER}


async def _line(kube: Kube, ns: str, name: str) -> dict[str, Any] | None:
    return await kube.get_custom(ns, HOTELLINES, name)


async def _events(kube: Kube, ns: str) -> list[dict[str, Any]]:
    data = await kube._dict(kube.core.list_namespaced_event, ns)
    return list(data.get("items", []))


async def test_line_create_update_delete_round_trip(
    start_operator: Any, hotelline: Any, kube_client: Kube, namespace: str, livekit_fake: LiveKitFake,
    providers: Providers, line_secret: dict[str, str],
) -> None:
    await start_operator()
    await hotelline("lindenhof", providers.line_spec())

    ready = await wait_for(lambda: _line(kube_client, namespace, "lindenhof"),
                           lambda obj: condition(obj, "Ready").get("status") == "True", what="Ready=True")
    status = ready["status"]
    # LiveKit: one trunk + one individual dispatch rule, carrying the line's identity.
    assert len(livekit_fake.trunks) == 1 and len(livekit_fake.dispatch_rules) == 1
    trunk = livekit_fake.trunks[status["sipTrunkId"]]
    assert sorted(trunk.numbers) == ["+493012345670", "+493012345671"]
    assert list(trunk.allowed_addresses) == ["203.0.113.0/28"]
    assert trunk.auth_username == line_secret["sip-username"] and trunk.auth_password == line_secret["sip-password"]
    rule = livekit_fake.dispatch_rules[status["dispatchRuleId"]]
    assert rule.rule.dispatch_rule_individual.room_prefix == contract.room_prefix(namespace, "lindenhof")
    assert dict(rule.attributes) == {contract.ATTRIBUTE_LINE: f"{namespace}/lindenhof"}
    assert list(rule.trunk_ids) == [trunk.sip_trunk_id] and not rule.hide_phone_number
    for type_ in ("SipTrunkReady", "AsrReady", "LlmReady", "TtsReady", "WorkersReady"):
        assert condition(ready, type_)["status"] == "True", condition(ready, type_)
    assert "Sweden Central" in condition(ready, "LlmReady")["message"]
    assert status["observedGeneration"] == ready["metadata"]["generation"]
    pods = await kube_client.list_pods(namespace, {**WORKERS, contract.LABEL_LINE: "lindenhof"})
    assert len(pods) == 2 and {p["metadata"]["labels"][contract.LABEL_WORKER_STATE] for p in pods} == {"idle"}

    # Update: numbers and warm pool change -> trunk updated in place, pool resized.
    new_spec = providers.line_spec(phoneNumbers=["+493012345679"], workers={**spec()["workers"], "warmPool": 3})
    await kube_client.patch_custom(namespace, HOTELLINES, "lindenhof", {"spec": new_spec})
    await wait_for(lambda: asyncio.sleep(0, livekit_fake.trunks), lambda t: [list(x.numbers) for x in t.values()] ==
                   [["+493012345679"]], what="trunk numbers updated")
    pods = await wait_for(
        lambda: kube_client.list_pods(namespace, {**WORKERS, contract.LABEL_LINE: "lindenhof"}),
        lambda ps: len([p for p in ps if not p["metadata"].get("deletionTimestamp")]) == 3
        and len({p["metadata"]["labels"][contract.LABEL_SPEC_HASH] for p in ps}) == 1,
        what="3 warm pods on the new spec",
    )
    assert len(livekit_fake.trunks) == 1 and len(livekit_fake.dispatch_rules) == 1

    events = await _events(kube_client, namespace)
    reasons = {e.get("reason") for e in events}
    assert "Reconciled" in reasons and "AllComponentsReady" in reasons

    # Delete: finalizer removes LiveKit objects and pods; nothing orphaned.
    await kube_client.delete_custom(namespace, HOTELLINES, "lindenhof")
    await wait_for(lambda: _line(kube_client, namespace, "lindenhof"), lambda obj: obj is None, what="line gone")
    assert livekit_fake.trunks == {} and livekit_fake.dispatch_rules == {}
    assert await kube_client.list_pods(namespace, WORKERS) == []


async def test_shared_riva_deployment_sized_from_lines_and_removed_when_unused(
    start_operator: Any, hotelline: Any, kube_client: Kube, namespace: str, providers: Providers,
    line_secret: dict[str, str],
) -> None:
    await start_operator()
    managed = providers.line_spec(asr=spec()["asr"])  # no endpoint: operator-managed Riva
    workers = {**spec()["workers"], "maxConcurrentCalls": 20, "warmPool": 1}
    await hotelline("a", {**managed, "workers": workers})
    await hotelline("b", {**managed, "phoneNumbers": ["+493099999990"], "workers": workers})
    asr = {contract.LABEL_COMPONENT: contract.COMPONENT_ASR}
    deps = await wait_for(lambda: kube_client.list_deployments(namespace, asr),
                          lambda ds: len(ds) == 1 and ds[0]["spec"]["replicas"] == 3,
                          what="one shared Riva deployment with ceil(40/16)=3 replicas")
    podspec = deps[0]["spec"]["template"]["spec"]
    container = podspec["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    exprs = podspec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"][0]["matchExpressions"]
    assert {"key": "topology.kubernetes.io/region", "operator": "In", "values": ["germanywestcentral"]} in exprs
    assert {"key": "voicehive.io/pool", "operator": "In", "values": ["gpu-l4"]} in exprs
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in podspec["tolerations"]
    probe = container["startupProbe"]["httpGet"]  # NVIDIA NIM; a real apiserver also defaults scheme: HTTP
    assert (probe["path"], probe["port"], probe.get("scheme", "HTTP")) == ("/v1/health/ready", "http", "HTTP")
    name = deps[0]["metadata"]["name"]
    await wait_for(lambda: kube_client.get_service(namespace, name), lambda svc: svc is not None,
                   what="Riva service (applied right after the deployment)")
    line_a = await wait_for(lambda: _line(kube_client, namespace, "a"),
                            lambda o: condition(o, "AsrReady").get("reason") == "RivaStarting", what="AsrReady")
    assert condition(line_a, "AsrReady")["status"] == "False"
    assert line_a["status"]["asrService"] == f"{name}.{namespace}.svc:50051"

    await kube_client.delete_custom(namespace, HOTELLINES, "a")
    await wait_for(lambda: kube_client.list_deployments(namespace, asr),
                   lambda ds: len(ds) == 1 and ds[0]["spec"]["replicas"] == 2, what="scaled down to 2")
    await kube_client.delete_custom(namespace, HOTELLINES, "b")
    await wait_for(lambda: kube_client.list_deployments(namespace, asr), lambda ds: ds == [], what="Riva removed")
    await wait_for(lambda: kube_client.get_service(namespace, name), lambda svc: svc is None, what="Riva service removed")


async def test_kill_mid_reconcile_and_trunk_deleted_behind_its_back_converge_to_one_trunk(
    start_operator: Any, hotelline: Any, kube_client: Kube, namespace: str, livekit_fake: LiveKitFake,
    providers: Providers, line_secret: dict[str, str],
) -> None:
    first = await start_operator()
    providers.azure.hang_next(20)  # the reconcile stalls in the LLM check, after LiveKit was written
    await hotelline("lindenhof", providers.line_spec())
    await wait_for(lambda: asyncio.sleep(0, (livekit_fake.trunks, livekit_fake.dispatch_rules)),
                   lambda v: len(v[0]) == 1 and len(v[1]) == 1, what="trunk created")
    obj = await _line(kube_client, namespace, "lindenhof")
    assert not (obj or {}).get("status", {}).get("sipTrunkId")  # the id was never recorded
    await first.kill()
    providers.azure.clear_faults()

    await start_operator()
    ready = await wait_for(lambda: _line(kube_client, namespace, "lindenhof"),
                           lambda o: condition(o, "Ready").get("status") == "True", what="Ready after restart")
    assert len(livekit_fake.trunks) == 1 and len(livekit_fake.dispatch_rules) == 1
    adopted = ready["status"]["sipTrunkId"]
    assert adopted in livekit_fake.trunks

    # Someone deletes the trunk in LiveKit: the drift check recreates exactly one.
    async with livekit_fake.api() as lk:
        from livekit.protocol import sip as lk_sip

        await lk.sip.delete_trunk(lk_sip.DeleteSIPTrunkRequest(sip_trunk_id=adopted))
    recreated = await wait_for(lambda: _line(kube_client, namespace, "lindenhof"),
                               lambda o: o["status"].get("sipTrunkId") not in (None, adopted),
                               what="trunk recreated by drift check")
    assert list(livekit_fake.trunks) == [recreated["status"]["sipTrunkId"]]
    rule = next(iter(livekit_fake.dispatch_rules.values()))
    assert list(rule.trunk_ids) == [recreated["status"]["sipTrunkId"]]


async def test_bad_inputs_become_plain_word_conditions(
    kube: KubeAPI, start_operator: Any, hotelline: Any, kube_client: Kube, namespace: str, livekit_fake: LiveKitFake,
    providers: Providers, line_secret: dict[str, str],
) -> None:
    providers.azure.region = "East US"
    await start_operator()
    # A number another trunk already takes: LiveKit's conflict, rephrased.
    async with livekit_fake.api() as lk:
        from livekit.protocol import sip as lk_sip

        await lk.sip.create_inbound_trunk(lk_sip.CreateSIPInboundTrunkRequest(
            trunk=lk_sip.SIPInboundTrunkInfo(name="someone else", numbers=["+493012345670"])))
    await hotelline("taken", providers.line_spec())
    schema_enforced = kube.backend == "apiserver"
    if schema_enforced:
        # A real apiserver already refuses it by the CRD schema; the operator's rule is the second line.
        with pytest.raises(ApiException) as refused:
            await hotelline("usa", providers.line_spec(region="us-east-1", phoneNumbers=["+12125550100"]))
        assert refused.value.status == 422 and "spec.region" in str(refused.value.body)
    else:
        await hotelline("usa", providers.line_spec(region="us-east-1", phoneNumbers=["+12125550100"]))
    await hotelline("nodeploy", providers.line_spec(phoneNumbers=["+493055555550"],
                                                    llm={**providers.line_spec()["llm"], "deployment": "missing"}))
    taken = await wait_for(lambda: _line(kube_client, namespace, "taken"),
                           lambda o: condition(o, "SipTrunkReady").get("reason") == "NumberInUse", what="conflict")
    message = condition(taken, "SipTrunkReady")["message"]
    assert "already in use" in message and "+493012345670" not in message
    assert "outside the EU" in condition(taken, "LlmReady")["message"]  # East US region header
    if not schema_enforced:
        usa = await wait_for(lambda: _line(kube_client, namespace, "usa"),
                             lambda o: condition(o, "Ready").get("reason") == "RegionNotEU", what="region refused")
        assert "us-east-1 is outside the EU" in condition(usa, "Ready")["message"]
    assert [t for t in livekit_fake.trunks.values() if builders.line_of_metadata(t.metadata) == f"{namespace}/usa"] == []
    providers.azure.region = "Sweden Central"
    nodeploy = await wait_for(lambda: _line(kube_client, namespace, "nodeploy"),
                              lambda o: condition(o, "LlmReady").get("reason") == "DeploymentNotFound",
                              what="deployment missing")
    assert "no deployment named missing" in condition(nodeploy, "LlmReady")["message"]
    assert condition(nodeploy, "Ready")["status"] == "False"
    # Plain words never carry the SIP password or API keys.
    everything = str(await kube_client.list_custom(namespace, HOTELLINES)) + str(await _events(kube_client, namespace))
    for secret_value in line_secret.values():
        assert secret_value not in everything
