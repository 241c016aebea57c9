"""VoiceSession handling end to end: binding to warm pods, timeouts, pod death, retention and erasure
with a shifted clock (no sleeps), and a scan for personal data in everything the operator wrote."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from typing import Any

import pytest
import redis.asyncio as aioredis
from livekit.protocol import models as pb_models

from tests.fakes.livekit_twirp import LiveKitFake
from tests.operator.conftest import Providers
from tests.operator.helpers import spec, wait_for
from voicehive import callstore, contract, transfer
from voicehive.contract import HOTELLINES, VOICESESSIONS
from voicehive.privacy import Privacy, call_ref_of, generate_key_b64
from voicehive.redis_client import connect_url
from voicehive_operator import sessions
from voicehive_operator.kube import Kube

WORKERS = {contract.LABEL_COMPONENT: contract.COMPONENT_WORKER}


class Call:
    """One inbound call as the orchestrator would register it (room name and number are PII)."""

    def __init__(self, privacy: Privacy, line: str, caller: str | None = None) -> None:
        self.number = caller or "+4917" + "".join(secrets.choice("0123456789") for _ in range(8))
        self.room = f"{contract.room_prefix('x', line)}_{self.number}_{secrets.token_hex(3)}"
        self.room_hash = privacy.hasher.room(self.room)
        self.caller_hash = privacy.hasher.phone(self.number)
        self.name = contract.session_name(self.room_hash)
        self.sealed = privacy.seal_call_ref(self.room, "sip_" + self.number)
        self.line = line

    def body(self, namespace: str) -> dict[str, Any]:
        return {
            "apiVersion": "voicehive.io/v1alpha1",
            "kind": "VoiceSession",
            "metadata": {"name": self.name, "namespace": namespace},
            "spec": {"lineRef": {"name": self.line}, "roomHash": self.room_hash, "callerHash": self.caller_hash,
                     "sealedCallRef": self.sealed, "language": "de"},
        }


@pytest.fixture
def privacy() -> Privacy:
    import base64

    return Privacy.from_keys(base64.b64decode(generate_key_b64()), base64.b64decode(generate_key_b64()))


async def _vs(kube: Kube, ns: str, name: str) -> dict[str, Any] | None:
    return await kube.get_custom(ns, VOICESESSIONS, name)


async def _idle(kube: Kube, ns: str, line: str) -> list[dict[str, Any]]:
    pods = await kube.list_pods(ns, {**WORKERS, contract.LABEL_LINE: line, contract.LABEL_WORKER_STATE: "idle"})
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


async def _ready_line(start_operator: Any, hotelline: Any, kube: Kube, ns: str, providers: Providers,
                      warm: int = 2, **settings: Any) -> Any:
    handle = await start_operator(check_providers=False, **settings)
    workers = {**spec()["workers"], "warmPool": warm, "startTimeoutSeconds": 20, "maxCallDurationSeconds": 600}
    await hotelline("lindenhof", providers.line_spec(workers=workers, retention={"metadataDays": 30,
                                                                                 "recordingDays": 7}))
    await wait_for(lambda: _idle(kube, ns, "lindenhof"), lambda ps: len(ps) == warm, what=f"{warm} warm pods")
    return handle


async def test_session_claims_a_warm_pod_and_the_pool_is_refilled(
    start_operator: Any, hotelline: Any, kube_client: Kube, namespace: str, providers: Providers,
    line_secret: dict[str, str], privacy: Privacy, caplog: pytest.LogCaptureFixture,
) -> None:
    handle = await _ready_line(start_operator, hotelline, kube_client, namespace, providers)
    warm_before = {p["metadata"]["name"] for p in await _idle(kube_client, namespace, "lindenhof")}
    call = Call(privacy, "lindenhof")
    await kube_client.create_custom(namespace, VOICESESSIONS, call.body(namespace))

    vs = await wait_for(lambda: _vs(kube_client, namespace, call.name),
                        lambda o: bool(o and o.get("metadata", {}).get("labels", {}).get(contract.LABEL_WORKER)),
                        what="session bound")
    pod_name = vs["status"]["workerPod"]
    assert vs["status"]["phase"] == "Starting" and pod_name in warm_before
    assert vs["metadata"]["labels"][contract.LABEL_WORKER] == pod_name
    assert vs["metadata"]["labels"][contract.LABEL_CALLER_HASH] == contract.caller_label(call.caller_hash)
    pod = await kube_client._optional(kube_client.core.read_namespaced_pod, pod_name, namespace)
    assert pod is not None
    labels = pod["metadata"]["labels"]
    assert labels[contract.LABEL_WORKER_STATE] == "claimed" and labels[contract.LABEL_SESSION] == call.name
    owner = pod["metadata"]["ownerReferences"]
    assert [(o["kind"], o["name"], o["uid"]) for o in owner] == [("VoiceSession", call.name, vs["metadata"]["uid"])]
    # The worker finds its session exactly as the contract says: by label selector on its pod name.
    mine = await kube_client.list_custom(namespace, VOICESESSIONS, {contract.LABEL_WORKER: pod_name})
    assert [s["metadata"]["name"] for s in mine] == [call.name]
    assert privacy.open_call_ref(mine[0]["spec"]["sealedCallRef"]).room == call.room

    # The pool is back to two idle pods, none of them the claimed one.
    refilled = await wait_for(lambda: _idle(kube_client, namespace, "lindenhof"), lambda ps: len(ps) == 2,
                              what="pool refilled")
    assert pod_name not in {p["metadata"]["name"] for p in refilled}

    # Duplicate create events are idempotent: a resumed operator leaves the binding alone.
    again = await sessions.bind(handle.runtime, namespace=namespace, name=call.name,
                                uid=vs["metadata"]["uid"], body=vs, line_spec=None, line_uid=None)
    assert again is None

    await _assert_no_pii(kube_client, namespace, [call], caplog)


async def test_a_burst_of_calls_is_served_from_the_pool_which_refills_to_exactly_its_size(
    start_operator: Any, hotelline: Any, kube_client: Kube, namespace: str, providers: Providers,
    line_secret: dict[str, str], privacy: Privacy,
) -> None:
    """The refill after each claim counts from memory; it must neither stall nor overshoot."""
    await _ready_line(start_operator, hotelline, kube_client, namespace, providers, warm=3)
    calls = [Call(privacy, "lindenhof") for _ in range(7)]
    await asyncio.gather(*(kube_client.create_custom(namespace, VOICESESSIONS, c.body(namespace)) for c in calls))
    for call in calls:
        await wait_for(lambda call=call: _vs(kube_client, namespace, call.name),
                       lambda o: bool(o and (o.get("status") or {}).get("workerPod")), what=f"{call.name} bound")

    def settled(pods: list[dict[str, Any]]) -> bool:
        states = [p["metadata"]["labels"].get(contract.LABEL_WORKER_STATE) for p in pods]
        return states.count("idle") == 3 and states.count("claimed") == 7

    pods = await wait_for(lambda: kube_client.list_pods(namespace, {**WORKERS, contract.LABEL_LINE: "lindenhof"}),
                          settled, what="7 claimed pods and the pool back at 3")
    # every pod ever started is either serving a call or in the pool: no surplus was created
    assert len(pods) == 10, sorted(p["metadata"]["labels"].get(contract.LABEL_WORKER_STATE) for p in pods)
    # the line counts its calls in progress (from the sessions it watches, not by listing pods)
    await wait_for(lambda: kube_client.get_custom(namespace, HOTELLINES, "lindenhof"),
                   lambda o: bool(o) and (o.get("status") or {}).get("activeCalls") == 7, what="activeCalls 7")


async def test_empty_pool_starts_a_pod_for_the_session(
    start_operator: Any, hotelline: Any, kube_client: Kube, namespace: str, providers: Providers,
    line_secret: dict[str, str], privacy: Privacy,
) -> None:
    await start_operator(check_providers=False)
    await hotelline("lindenhof", providers.line_spec(workers={**spec()["workers"], "warmPool": 0}))
    call = Call(privacy, "lindenhof")
    await kube_client.create_custom(namespace, VOICESESSIONS, call.body(namespace))
    vs = await wait_for(lambda: _vs(kube_client, namespace, call.name),
                        lambda o: bool(o and (o.get("status") or {}).get("workerPod")), what="bound")
    assert vs["status"]["phase"] == "Starting"
    assert "warm pool was empty" in vs["status"]["conditions"][0]["message"]
    pods = await kube_client.list_pods(namespace, {**WORKERS, contract.LABEL_SESSION: call.name})
    assert len(pods) == 1 and pods[0]["metadata"]["labels"][contract.LABEL_WORKER_STATE] == "claimed"


async def test_start_timeout_pod_death_and_max_duration_end_sessions_with_reasons(
    start_operator: Any, hotelline: Any, kube_client: Kube, namespace: str, providers: Providers,
    line_secret: dict[str, str], privacy: Privacy,
) -> None:
    handle = await _ready_line(start_operator, hotelline, kube_client, namespace, providers, warm=3)
    stuck, dying, long_call = (Call(privacy, "lindenhof") for _ in range(3))
    for call in (stuck, dying, long_call):
        await kube_client.create_custom(namespace, VOICESESSIONS, call.body(namespace))
    bound = {}
    for call in (stuck, dying, long_call):
        vs = await wait_for(lambda c=call: _vs(kube_client, namespace, c.name),  # type: ignore[misc]
                            lambda o: bool(o and (o.get("status") or {}).get("workerPod")), what="bound")
        bound[call.name] = vs["status"]["workerPod"]

    # The worker of long_call answers (it moves the phase itself, as the real worker does).
    answered = handle.settings.clock.now().strftime("%Y-%m-%dT%H:%M:%SZ")
    await kube_client.patch_custom_status(namespace, VOICESESSIONS, long_call.name,
                                          {"status": {"phase": "Active", "answeredAt": answered}})
    # dying's pod is killed (node lost, OOM, eviction...).
    await kube_client.delete_pod(namespace, bound[dying.name])
    lost = await wait_for(lambda: _vs(kube_client, namespace, dying.name),
                          lambda o: (o or {}).get("status", {}).get("phase") == "Failed", what="worker lost")
    assert lost["status"]["endReason"].startswith("worker_lost")
    # Its caller is handed over too (here the operator has no PII key to open the call: recorded).
    lost = await wait_for(lambda: _vs(kube_client, namespace, dying.name),
                          lambda o: transfer.state((o or {}).get("status")) == transfer.FAILED, what="handed over")
    handed = next(c for c in lost["status"]["conditions"] if c["type"] == contract.CONDITION_TRANSFER)
    assert handed["message"].startswith("The call's worker stopped before the call ended.")

    # 21 s later (shifted clock), stuck has not answered: Failed with start_timeout, pod released.
    handle.settings.clock.advance(21)
    failed = await wait_for(lambda: _vs(kube_client, namespace, stuck.name),
                            lambda o: (o or {}).get("status", {}).get("phase") == "Failed", what="start timeout")
    assert failed["status"]["endReason"].startswith("start_timeout") and "20 s" in failed["status"]["endReason"]
    assert (await _vs(kube_client, namespace, long_call.name) or {})["status"]["phase"] == "Active"

    # Past the line's maximum call duration: ended (not failed), and its pod is stopped.
    handle.settings.clock.advance(600)
    ended = await wait_for(lambda: _vs(kube_client, namespace, long_call.name),
                           lambda o: (o or {}).get("status", {}).get("phase") == "Ended", what="max duration")
    assert ended["status"]["endReason"].startswith("max_duration")
    await wait_for(lambda: kube_client.list_pods(namespace, {**WORKERS, contract.LABEL_SESSION: long_call.name}),
                   lambda ps: all(p["metadata"].get("deletionTimestamp") for p in ps), what="pod stopped")
    # Terminal phases stay terminal: a late worker write of Starting is not revived by the operator.
    assert (await _vs(kube_client, namespace, stuck.name) or {})["status"]["phase"] == "Failed"


async def test_a_call_no_worker_answers_goes_to_the_front_desk_or_is_hung_up(
    start_operator: Any, hotelline: Any, kube_client: Kube, namespace: str, providers: Providers,
    line_secret: dict[str, str], livekit_fake: LiveKitFake,
) -> None:
    """Issue 10, a burst on an empty warm pool: a call whose worker does not answer within the
    line's start timeout fails, and its caller is not left in a room where nobody speaks. The
    operator transfers them to the front desk; if LiveKit refuses that, it removes them from the
    room (livekit-sip then ends the SIP call). Both are recorded on the session."""
    import base64

    pii, transcript = base64.b64decode(generate_key_b64()), base64.b64decode(generate_key_b64())
    privacy = Privacy.from_keys(pii, transcript)
    handle = await _ready_line(start_operator, hotelline, kube_client, namespace, providers, warm=1,
                               pii_key=pii, transcript_key=transcript)

    async def unanswered(call: Call, *, gives_up: bool = False) -> dict[str, Any]:
        identity = "sip_" + call.number
        await livekit_fake.join(call.room, pb_models.ParticipantInfo(identity=identity,
                                                                     kind=pb_models.ParticipantInfo.SIP))
        await kube_client.create_custom(namespace, VOICESESSIONS, call.body(namespace))
        await wait_for(lambda: _vs(kube_client, namespace, call.name),
                       lambda o: bool(o and (o.get("status") or {}).get("workerPod")), what="bound")
        if gives_up:  # the caller hangs up before the timeout
            await livekit_fake.hangup(call.room, identity)
        handle.settings.clock.advance(21)  # nobody answers (no kubelet runs the Pod here)
        return await wait_for(
            lambda: _vs(kube_client, namespace, call.name),
            lambda o: transfer.state((o or {}).get("status")) in (transfer.TRANSFERRED, transfer.FAILED),
            what="the unanswered caller handled")

    def transfer_condition(vs: dict[str, Any]) -> dict[str, Any]:
        return next(c for c in vs["status"]["conditions"] if c["type"] == contract.CONDITION_TRANSFER)

    desk = Call(privacy, "lindenhof")
    vs = await unanswered(desk)
    assert vs["status"]["phase"] == "Failed" and vs["status"]["endReason"].startswith("start_timeout")
    assert [(t.room_name, t.participant_identity, t.transfer_to) for t in livekit_fake.transfers] == [
        (desk.room, "sip_" + desk.number, "tel:+493012345600")]
    cond = transfer_condition(vs)
    assert (cond["status"], cond["reason"]) == ("True", transfer.TRANSFERRED)
    assert "No worker answered" in cond["message"]

    livekit_fake.transfer_failure = (486, "Busy Here")
    busy = Call(privacy, "lindenhof")
    vs = await unanswered(busy)
    cond = transfer_condition(vs)
    assert (cond["status"], cond["reason"]) == ("False", transfer.FAILED)
    assert "disconnected" in cond["message"] and busy.number not in json.dumps(vs)
    room = livekit_fake.rooms.get(busy.room)  # hung up, not left waiting (an empty room is closed)
    assert room is None or "sip_" + busy.number not in room.participants

    gone = Call(privacy, "lindenhof")
    cond = transfer_condition(await unanswered(gone, gives_up=True))
    assert cond["reason"] == transfer.FAILED and "already left" in cond["message"]


async def test_a_line_whose_workers_never_answer_fails_every_waiting_call(
    start_operator: Any, hotelline: Any, kube_client: Kube, namespace: str, providers: Providers,
    line_secret: dict[str, str], privacy: Privacy,
) -> None:
    """Mass start timeouts (a broken worker image): every call fails with its reason, none is skipped."""
    handle = await _ready_line(start_operator, hotelline, kube_client, namespace, providers, warm=1,
                               sweep_concurrency=3)
    calls = [Call(privacy, "lindenhof") for _ in range(10)]
    await asyncio.gather(*(kube_client.create_custom(namespace, VOICESESSIONS, c.body(namespace)) for c in calls))
    for call in calls:
        await wait_for(lambda call=call: _vs(kube_client, namespace, call.name),
                       lambda o: bool(o and (o.get("status") or {}).get("workerPod")), what=f"{call.name} bound")
    handle.settings.clock.advance(21)
    for call in calls:
        failed = await wait_for(lambda call=call: _vs(kube_client, namespace, call.name),
                                lambda o: (o or {}).get("status", {}).get("phase") == "Failed", what="start timeout")
        assert failed["status"]["endReason"].startswith("start_timeout")
    await wait_for(lambda: kube_client.list_pods(namespace, {**WORKERS, contract.LABEL_LINE: "lindenhof"}),
                   lambda ps: all(p["metadata"]["labels"].get(contract.LABEL_WORKER_STATE) == "idle"
                                  or p["metadata"].get("deletionTimestamp") for p in ps),
                   what="every claimed pod released")


async def test_retention_sweep_and_erasure_by_caller_hash(
    start_operator: Any, hotelline: Any, kube_client: Kube, namespace: str, providers: Providers,
    line_secret: dict[str, str], privacy: Privacy, call_state_url: str, caplog: pytest.LogCaptureFixture,
) -> None:
    """On a single redis-server and on a Redis Cluster (the operator builds its client from the URL)."""
    handle = await _ready_line(start_operator, hotelline, kube_client, namespace, providers, warm=1,
                               redis_url=call_state_url)
    redis = connect_url(call_state_url)
    repeat_caller = "+4917611122233"
    old, erased_a, erased_b, kept = (Call(privacy, "lindenhof"), Call(privacy, "lindenhof", repeat_caller),
                                     Call(privacy, "lindenhof", repeat_caller), Call(privacy, "lindenhof"))
    for call in (old, erased_a, erased_b, kept):
        await kube_client.create_custom(namespace, VOICESESSIONS, call.body(namespace))
        await _seed_every_key(redis, call_ref_of(call.room_hash), call.caller_hash)
    for call in (old, erased_a, erased_b, kept):
        await wait_for(lambda c=call: _vs(kube_client, namespace, c.name),  # type: ignore[misc]
                       lambda o: bool(o and (o.get("status") or {}).get("workerPod")), what="bound")
        await kube_client.patch_custom_status(namespace, VOICESESSIONS, call.name,
                                              {"status": {"phase": "Ended", "endReason": "caller_hangup"}})

    # Erasure: the annotation names the caller hash; every trace of that caller goes.
    await kube_client.patch_custom(namespace, HOTELLINES, "lindenhof", {"metadata": {"annotations": {
        contract.ANNOTATION_ERASE: erased_a.caller_hash}}})
    await wait_for(lambda: kube_client.list_custom(namespace, VOICESESSIONS),
                   lambda items: {i["metadata"]["name"] for i in items} == {old.name, kept.name}, what="erased")
    await wait_for(lambda: kube_client.get_custom(namespace, HOTELLINES, "lindenhof"),
                   lambda o: contract.ANNOTATION_ERASE not in (o or {})["metadata"].get("annotations", {}),
                   what="erase annotation removed once done")
    assert await redis.exists(callstore.caller_key(erased_a.caller_hash)) == 0
    for call in (erased_a, erased_b):
        assert await _traces(redis, call_ref_of(call.room_hash)) == []
        assert await kube_client.list_pods(namespace, {**WORKERS, contract.LABEL_SESSION: call.name}) == []
    assert await redis.exists(callstore.call_key(call_ref_of(kept.room_hash))) == 1

    # Retention: 31 days later (shifted clock) both remaining sessions are past 30 days.
    handle.settings.clock.advance(31 * 86_400)
    await wait_for(lambda: kube_client.list_custom(namespace, VOICESESSIONS), lambda items: items == [],
                   what="retention sweep")
    for call in (old, kept):
        assert await _traces(redis, call_ref_of(call.room_hash)) == []
    await redis.aclose()
    await _assert_no_pii(kube_client, namespace, [old, erased_a, erased_b, kept], caplog)


async def _seed_every_key(redis: aioredis.Redis, ref: str, caller_hash: str) -> None:
    """Write the call into every key of the Redis layout (``voicehive.callstore``), as the
    orchestrator and the worker would have by the end of a call whose VoiceSession is stuck."""
    await redis.hset(callstore.call_key(ref), mapping={"phase": "Ended", "caller_hash": caller_hash})
    await redis.xadd(callstore.events_key(ref), {"type": "call_ended"})
    await redis.sadd(callstore.seen_key(ref), "delivery-1")
    await redis.xadd(callstore.transcript_key(ref), {"text": "v1_sealed"})
    await redis.rpush(callstore.requests_key(ref), "v1_sealed")
    await redis.sadd(callstore.caller_key(caller_hash), ref)
    await redis.zadd(callstore.ACTIVE_KEY, {ref: 1.0})
    await redis.hset(callstore.PENDING_SESSIONS_KEY, ref, "{}")
    await redis.hset(callstore.ENDING_SESSIONS_KEY, ref, "{}")


async def _traces(redis: aioredis.Redis, ref: str) -> list[str]:
    """Every key named after the call, and every shared key that still lists it."""
    found = [key async for key in redis.scan_iter(match=f"*{ref}*")]
    for key in [key async for key in redis.scan_iter(match=f"{callstore.KEY_PREFIX}*")]:
        kind = await redis.type(key)
        listed = ((kind == "hash" and await redis.hexists(key, ref))
                  or (kind == "zset" and await redis.zscore(key, ref) is not None)
                  or (kind == "set" and await redis.sismember(key, ref)))
        if listed:
            found.append(key)
    return sorted(found)


async def _assert_no_pii(kube: Kube, ns: str, calls: list[Call], caplog: pytest.LogCaptureFixture) -> None:
    """No caller number or room name in any object, event or log line the operator produced."""
    await asyncio.sleep(0)
    dumps = [
        json.dumps(await kube.list_custom(ns, VOICESESSIONS)),
        json.dumps(await kube.list_custom(ns, HOTELLINES)),
        json.dumps(await kube.list_pods(ns, WORKERS)),
        json.dumps((await kube._dict(kube.core.list_namespaced_event, ns)).get("items", [])),
        "\n".join(logging.Formatter().format(r) for r in caplog.records),
    ]
    for call in calls:
        for secret in (call.number, call.number[1:], call.room):
            for text in dumps:
                assert secret not in text
