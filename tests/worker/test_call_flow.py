"""A whole multi-turn call through AgentSession on the provider fakes, with real state.

Caller speech (espeak-ng) goes in as 20 ms frames; the nvidia plugin talks gRPC to the Riva
fake, the openai plugin SSE to the Azure fake (which answers with tool calls), the elevenlabs
plugin WebSocket to the ElevenLabs fake. The worker records the call through the CallManager
into a real redis-server and patches the VoiceSession in the kube API; the transfer goes
through the real livekit-api client to the LiveKit Twirp fake.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from typing import Any

import pytest
from livekit import api as lkapi
from livekit.agents import llm as lk_llm

from tests.fakes.azure_openai import ScriptedResponder, ToolCall
from tests.fakes.livekit_twirp import LiveKitFake
from tests.fixtures.kube import KubeAPI
from tests.worker.callrig import line_spec, provider_fakes, running_call
from tests.worker.speech import espeak_available, speak
from voicehive import contract
from voicehive.api.models import API_VERSION, GROUP, VERSION
from voicehive.audit import JsonFormatter
from voicehive.callmanager import CallEvent, CallManager, EventKind
from voicehive.callstore import CallStore, requests_key
from voicehive.lifecycle import CallPhase
from voicehive.privacy import Privacy
from voicehive_worker.agent import HotelAgent
from voicehive_worker.entrypoint import CallRunner, DropLiveKitPii
from voicehive_worker.state import CallState, VoiceSessionStatus, WorkerCallActions

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not espeak_available(), reason="espeak-ng is needed for caller speech"),
]

CALLER = "+4915112345678"
LINE_NUMBER = "+493012345670"
GUEST = "Anna Schmidt"
BOOK = "I would like to book a double room for two nights for two guests"
QUESTION = "What time is check in"
TRANSFER = "Can I speak to the front desk please"


async def _sip_call(lk: LiveKitFake) -> tuple[str, str]:
    """A caller in a LiveKit room, as livekit-sip would create it: (room name, SIP identity)."""
    async with lk.api() as api:
        trunk = await api.sip.create_inbound_trunk(
            lkapi.CreateSIPInboundTrunkRequest(
                trunk=lkapi.SIPInboundTrunkInfo(name="t", numbers=[LINE_NUMBER], allowed_addresses=["127.0.0.1"])
            )
        )
        await api.sip.create_dispatch_rule(
            lkapi.CreateSIPDispatchRuleRequest(
                dispatch_rule=lkapi.SIPDispatchRuleInfo(
                    rule=lkapi.SIPDispatchRule(
                        dispatch_rule_individual=lkapi.SIPDispatchRuleIndividual(room_prefix="vh-test-")
                    ),
                    trunk_ids=[trunk.sip_trunk_id],
                )
            )
        )
    sim = await lk.simulate_inbound_call(CALLER, LINE_NUMBER)
    return sim.room.name, sim.participant.identity


def _voice_session(privacy: Privacy, room: str, identity: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "VoiceSession",
        "metadata": {"name": name, "labels": {contract.LABEL_WORKER: "worker-0"}},
        "spec": {
            "lineRef": {"name": "lindenhof-main"},
            "roomHash": privacy.hasher.room(room),
            "callerHash": privacy.hasher.phone(CALLER),
            "sealedCallRef": privacy.seal_call_ref(room, identity),
            "language": "en",
        },
    }


async def test_booking_question_transfer_recorded_without_personal_data(
    call_state_url: str, kube: KubeAPI, namespace: str, livekit_fake: LiveKitFake, caplog: pytest.LogCaptureFixture
) -> None:
    """A whole call through the worker, on a single redis-server and on a Redis Cluster."""
    import kubernetes

    caplog.set_level(logging.INFO)  # the pod's level; every record is checked for personal data below

    privacy = Privacy.from_keys(os.urandom(32), os.urandom(32))
    room, identity = await _sip_call(livekit_fake)
    assert CALLER[1:] in room  # LiveKit names the room after the number: PII

    api_client = kube.api_client()
    custom = kubernetes.client.CustomObjectsApi(api_client)
    vs_name = contract.session_name(privacy.hasher.room(room))
    custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, "voicesessions", _voice_session(privacy, room, identity, vs_name)
    )

    store = CallStore.from_url(call_state_url)
    manager = CallManager(store=store, privacy=privacy)
    await manager.handle(
        CallEvent(room, EventKind.SIP_JOINED, "livekit", line="lindenhof-main", namespace=namespace,
                  caller_number=CALLER, participant_identity=identity)
    )
    state = CallState(
        manager=manager, call_sid=room, line="lindenhof-main", namespace=namespace, worker_pod="worker-0",
        status=VoiceSessionStatus(api_client, namespace, vs_name),
    )

    arrival = (dt.date.today() + dt.timedelta(days=30)).isoformat()
    responder = ScriptedResponder(
        rules=[
            ("book", ToolCall("capture_booking_request", {
                "kind": "new_booking", "guest_name": GUEST, "check_in": arrival,
                "nights": 2, "guests": 2, "room_type": "double room"})),
            ("check in", ToolCall("answer_question", {"question": "What time is check-in?"})),
            ("front desk", ToolCall("transfer_to_front_desk", {"reason": "caller asked"})),
        ],
    )
    async with (
        provider_fakes([BOOK, QUESTION, TRANSFER], responder) as fakes,
        lkapi.LiveKitAPI(url=livekit_fake.url, api_key=livekit_fake.api_key,
                         api_secret=livekit_fake.api_secret) as livekit,
    ):
        actions = WorkerCallActions(state=state, livekit=livekit, room=room, sip_identity=identity)
        async with running_call(fakes, line_spec(), actions=actions) as call:
            runner = CallRunner(session=call.session, agent=call.agent, state=state,  # type: ignore[arg-type]
                                turn_stats=call.stats).attach()
            actions.hangup = runner.finish
            await state.answered()
            await call.wait_for(lambda: call.sink.segments, 15, "the greeting")
            await call.wait_quiet()

            u1 = call.say(speak(BOOK), "booking")
            await call.wait_reply(u1)
            await call.wait_quiet()
            u2 = call.say(speak(QUESTION), "question")
            await call.wait_reply(u2)
            await call.wait_quiet()
            u3 = call.say(speak(TRANSFER), "transfer")
            await call.wait_reply(u3)
            await call.wait_for(lambda: runner.ended.is_set(), 20, "the call to end")

        # the LLM saw the tool results: the booking reference and the facts answer
        tool_results = [m for r in fakes.azure.requests for m in r.messages if m.get("role") == "tool"]
        assert any("Request recorded with reference" in str(m.get("content")) for m in tool_results)
        assert any("Check-in is from 15:00" in str(m.get("content")) for m in tool_results)
        # every request carried the tools' schemas as a fresh build has them, built once for the call
        assert isinstance(call.agent, HotelAgent)
        fresh = lk_llm.ToolContext(call.agent.tools).parse_function_tools("openai", strict=True)
        assert len(fakes.azure.requests) >= 4 and all(r.body.get("tools") == fresh for r in fakes.azure.requests)
        assert call.agent.tool_schemas.builds == len(fresh)

    # transfer via the real livekit-api client
    assert [t.transfer_to for t in livekit_fake.transfers] == ["tel:+493012345600"]
    assert livekit_fake.transfers[0].participant_identity == identity

    # VoiceSession status
    vs: Any = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "voicesessions", vs_name)
    status = vs["status"]
    assert status["phase"] == CallPhase.ENDED.value
    assert status["endReason"] == "transferred"
    assert status["turns"] == 3
    assert {"book_room", "request_info", "speak_to_human"} <= set(status["intents"])
    assert status["latency"]["turns"] >= 2 and status["latency"]["p50Ms"] > 0

    # Redis: the call ended, the booking sealed, nothing personal in clear anywhere
    record = await manager.get(room)
    assert record is not None and record.phase is CallPhase.ENDED
    sealed = await store.redis.lrange(requests_key(record.ref), 0, -1)
    assert len(sealed) == 1
    opened = json.loads(privacy.transcripts.open_text(sealed[0].decode() if isinstance(sealed[0], bytes) else sealed[0],
                                                       context=record.ref))
    assert opened["kind"] == "new_booking" and opened["fields"]["guest_name"] == GUEST

    dump: list[str] = [json.dumps(status)]
    async for key in store.redis.scan_iter("*"):
        key_s = key.decode() if isinstance(key, bytes) else key
        dump.append(key_s)
        kind = await store.redis.type(key)
        kind = kind.decode() if isinstance(kind, bytes) else kind
        if kind == "hash":
            dump.append(str(await store.redis.hgetall(key)))
        elif kind == "list":
            dump.append(str(await store.redis.lrange(key, 0, -1)))
        elif kind == "stream":
            dump.append(str(await store.redis.xrange(key)))
        elif kind == "set":
            dump.append(str(await store.redis.smembers(key)))
        elif kind == "zset":
            dump.append(str(await store.redis.zrange(key, 0, -1)))
    # the log lines as the pod writes them (JSON formatter + the worker's lk.pii filter)
    formatter, pii_filter = JsonFormatter(), DropLiveKitPii()
    for log_record in caplog.records:
        pii_filter.filter(log_record)
        dump.append(formatter.format(log_record))
    assert len(caplog.records) > 0
    blob = "\n".join(dump)
    for secret in (CALLER, CALLER[1:], room, GUEST, "double room for two nights", "check in", "front desk please"):
        assert secret not in blob, f"{secret!r} found in clear"
    await store.close()
