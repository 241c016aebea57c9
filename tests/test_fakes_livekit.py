"""The LiveKit Twirp fake, driven by the real livekit-api client (protobuf and JSON bodies)."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from aiohttp import web
from livekit import api
from livekit.protocol.sip import STS_TRANSFER_SUCCESSFUL

from tests.fakes.livekit_twirp import LiveKitFake, NoDispatchMatched, encode_webhook, sign_webhook

HOTEL = "+493012345678"
CALLER = "+4915112345678"


def _trunk(numbers: list[str], **kw: object) -> api.CreateSIPInboundTrunkRequest:
    return api.CreateSIPInboundTrunkRequest(
        trunk=api.SIPInboundTrunkInfo(name="hotel", numbers=numbers, **kw)
    )


def _rule(
    trunk_id: str, prefix: str = "hotel-a", agent: str = "voicehive"
) -> api.CreateSIPDispatchRuleRequest:
    return api.CreateSIPDispatchRuleRequest(
        dispatch_rule=api.SIPDispatchRuleInfo(
            rule=api.SIPDispatchRule(
                dispatch_rule_individual=api.SIPDispatchRuleIndividual(room_prefix=prefix)
            ),
            trunk_ids=[trunk_id],
            name="hotel-a",
            metadata='{"line":"a"}',
            attributes={"voicehive.line": "a"},
            room_config=api.RoomConfiguration(agents=[api.RoomAgentDispatch(agent_name=agent, metadata="m")]),
        )
    )


async def test_trunk_and_rule_lifecycle(livekit_fake: LiveKitFake) -> None:
    lk = livekit_fake.api()
    trunk = await lk.sip.create_inbound_trunk(
        _trunk([HOTEL], allowed_addresses=["203.0.113.0/24"], auth_username="u", auth_password="p")
    )
    assert trunk.sip_trunk_id.startswith("ST_") and len(trunk.sip_trunk_id) == 15
    listed = await lk.sip.list_inbound_trunk(api.ListSIPInboundTrunkRequest())
    assert [t.sip_trunk_id for t in listed.items] == [trunk.sip_trunk_id]

    updated = await lk.sip.update_inbound_trunk_fields(
        trunk.sip_trunk_id, numbers=[HOTEL, "+493099999"], name="hotel-renamed"
    )
    assert list(updated.numbers) == [HOTEL, "+493099999"] and updated.name == "hotel-renamed"
    assert updated.auth_username == "u"  # untouched fields survive a field update

    rule = await lk.sip.create_dispatch_rule(_rule(trunk.sip_trunk_id))
    assert rule.sip_dispatch_rule_id.startswith("SDR_")
    rules = await lk.sip.list_dispatch_rule(api.ListSIPDispatchRuleRequest(trunk_ids=[trunk.sip_trunk_id]))
    assert [r.sip_dispatch_rule_id for r in rules.items] == [rule.sip_dispatch_rule_id]
    rule2 = await lk.sip.update_dispatch_rule_fields(rule.sip_dispatch_rule_id, metadata="v2")
    assert rule2.metadata == "v2" and rule2.room_config.agents[0].agent_name == "voicehive"

    await lk.sip.delete_dispatch_rule(
        api.DeleteSIPDispatchRuleRequest(sip_dispatch_rule_id=rule.sip_dispatch_rule_id)
    )
    deleted = await lk.sip.delete_trunk(api.DeleteSIPTrunkRequest(sip_trunk_id=trunk.sip_trunk_id))
    assert deleted.sip_trunk_id == trunk.sip_trunk_id
    assert livekit_fake.trunks == {} and livekit_fake.dispatch_rules == {}
    # livekit-server answers deleting an unknown trunk with success; an unknown rule is not_found
    again = await lk.sip.delete_trunk(api.DeleteSIPTrunkRequest(sip_trunk_id=trunk.sip_trunk_id))
    assert again.sip_trunk_id == trunk.sip_trunk_id and not again.name
    with pytest.raises(api.TwirpError) as nf:
        await lk.sip.delete_dispatch_rule(
            api.DeleteSIPDispatchRuleRequest(sip_dispatch_rule_id=rule.sip_dispatch_rule_id)
        )
    assert nf.value.code == "not_found" and nf.value.status == 404
    assert nf.value.message == "requested sip dispatch rule does not exist"
    await lk.aclose()


async def test_conflicting_trunks_like_livekit(livekit_fake: LiveKitFake) -> None:
    lk = livekit_fake.api()
    first = await lk.sip.create_inbound_trunk(_trunk([HOTEL]))
    with pytest.raises(api.TwirpError) as err:
        await lk.sip.create_inbound_trunk(_trunk([HOTEL]))
    assert err.value.code == "invalid_argument"
    assert err.value.message == (
        f'Conflicting inbound SIP Trunks: "<new>" and "{first.sip_trunk_id}", '
        f'using the same number(s) ["{HOTEL}"] without AllowedNumbers set'
    )
    # distinct allowed callers on the same number do not conflict
    await lk.sip.create_inbound_trunk(_trunk([HOTEL.replace("8", "7")], allowed_numbers=["+1555"]))
    await lk.aclose()


async def test_grants_and_token_checked(livekit_fake: LiveKitFake) -> None:
    wrong_secret = api.LiveKitAPI(url=livekit_fake.url, api_key=livekit_fake.api_key, api_secret="x" * 32)
    with pytest.raises(api.TwirpError) as err:
        await wrong_secret.sip.list_inbound_trunk(api.ListSIPInboundTrunkRequest())
    # livekit-server's auth middleware answers a bad token with a plain-text 401 (not Twirp JSON)
    assert err.value.status == 401 and err.value.code == "unknown"
    await wrong_secret.aclose()

    # a token with room grants only may not manage SIP: livekit answers 401 "unauthenticated"
    token = (
        api.AccessToken(livekit_fake.api_key, livekit_fake.api_secret)
        .with_grants(api.VideoGrants(room_create=True))
        .to_jwt()
    )
    async with aiohttp.ClientSession() as session:
        resp = await session.post(
            f"{livekit_fake.url}/twirp/livekit.SIP/ListSIPInboundTrunk",
            json={},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert resp.status == 401
        assert await resp.json() == {"code": "unauthenticated", "msg": "permissions denied"}
        resp = await session.post(f"{livekit_fake.url}/twirp/livekit.SIP/ListSIPInboundTrunk", json={})
        assert resp.status == 401  # no token at all: the same
        # JSON bodies work like protobuf ones (proto field names, defaults included, in the response)
        resp = await session.post(
            f"{livekit_fake.url}/twirp/livekit.RoomService/CreateRoom",
            json={"name": "r1", "emptyTimeout": 60},
            headers={"Authorization": f"Bearer {token}"},
        )
        body = await resp.json()
        assert resp.status == 200 and body["name"] == "r1" and body["empty_timeout"] == 60
        assert body["max_participants"] == 0 and isinstance(body["creation_time"], str)  # int64 as string
        resp = await session.post(
            f"{livekit_fake.url}/twirp/livekit.RoomService/CreateRoom",
            data=b"{bad",
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        assert resp.status == 400
        assert await resp.json() == {"code": "malformed", "msg": "the json request could not be decoded"}


async def test_rooms_and_agent_dispatch(livekit_fake: LiveKitFake) -> None:
    lk = livekit_fake.api()
    room = await lk.room.create_room(api.CreateRoomRequest(name="call-1"))
    assert room.sid.startswith("RM_") and room.empty_timeout == 300
    again = await lk.room.create_room(api.CreateRoomRequest(name="call-1"))
    assert again.sid == room.sid  # CreateRoom is idempotent
    d = await lk.agent_dispatch.create_dispatch(
        api.CreateAgentDispatchRequest(agent_name="w-1", room="call-1", metadata='{"session":"s"}')
    )
    assert d.id.startswith("AD_") and d.state.created_at > 0
    # a room created without agents also carries livekit's implicit dispatch for unnamed agents
    listed = await lk.agent_dispatch.list_dispatch("call-1")
    assert sorted(x.agent_name for x in listed) == ["", "w-1"] and d.id in {x.id for x in listed}
    await lk.agent_dispatch.delete_dispatch(d.id, "call-1")
    assert [x.agent_name for x in await lk.agent_dispatch.list_dispatch("call-1")] == [""]
    rooms = await lk.room.list_rooms(api.ListRoomsRequest())
    assert [r.name for r in rooms.rooms] == ["call-1"]
    await lk.room.delete_room(api.DeleteRoomRequest(room="call-1"))
    with pytest.raises(api.TwirpError) as nf:
        await lk.room.delete_room(api.DeleteRoomRequest(room="call-1"))
    assert nf.value.code == "not_found" and nf.value.message == LiveKitFake.ROOM_NOT_FOUND
    # as on livekit-server: an unknown room lists no participants; its dispatches find no server
    assert (
        list((await lk.room.list_participants(api.ListParticipantsRequest(room="call-1"))).participants) == []
    )
    with pytest.raises(api.TwirpError) as gone:
        await lk.agent_dispatch.list_dispatch("call-1")
    assert gone.value.code == "unavailable" and gone.value.status == 503
    await lk.aclose()


async def test_inbound_call_webhooks_and_transfer(livekit_fake: LiveKitFake) -> None:
    received: list[api.WebhookEvent] = []
    receiver = api.WebhookReceiver(api.TokenVerifier(livekit_fake.api_key, livekit_fake.api_secret))

    async def hook(request: web.Request) -> web.Response:
        assert request.content_type == "application/webhook+json"
        received.append(receiver.receive((await request.read()).decode(), request.headers["Authorization"]))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    livekit_fake.webhook_urls.append(f"http://127.0.0.1:{port}/hook")

    dispatched: list[str] = []
    livekit_fake.on_dispatch = lambda d: dispatched.append(d.agent_name)
    lk = livekit_fake.api()
    trunk = await lk.sip.create_inbound_trunk(_trunk([HOTEL]))
    rule = await lk.sip.create_dispatch_rule(_rule(trunk.sip_trunk_id))
    with pytest.raises(NoDispatchMatched):
        await livekit_fake.simulate_inbound_call(CALLER, "+441234")  # nobody answers that number

    call = await livekit_fake.simulate_inbound_call(CALLER, HOTEL)
    assert call.room.name.startswith(f"hotel-a_{CALLER}_")  # livekit's individual-rule room name
    p = call.participant
    assert p.identity == f"sip_{CALLER}" and p.kind == api.ParticipantInfo.SIP
    assert p.attributes["sip.phoneNumber"] == CALLER and p.attributes["sip.trunkPhoneNumber"] == HOTEL
    assert (
        p.attributes["sip.trunkID"] == trunk.sip_trunk_id
        and p.attributes["sip.ruleID"] == rule.sip_dispatch_rule_id
    )
    assert p.attributes["voicehive.line"] == "a"
    assert dispatched == ["voicehive"] and call.dispatches[0].metadata == "m"
    assert [e.event for e in received] == ["room_started", "participant_joined"]
    assert received[1].participant.attributes["sip.phoneNumber"] == CALLER

    listed = await lk.room.list_participants(api.ListParticipantsRequest(room=call.room.name))
    assert [x.identity for x in listed.participants] == [p.identity]
    resp = await lk.sip.transfer_sip_participant(
        api.TransferSIPParticipantRequest(
            participant_identity=p.identity, room_name=call.room.name, transfer_to="tel:+493000000"
        )
    )
    assert resp.status == STS_TRANSFER_SUCCESSFUL and resp.transfer_id
    assert livekit_fake.transfers[0].transfer_to == "tel:+493000000"
    await livekit_fake.webhooks_idle()
    assert [e.event for e in received][-2:] == ["participant_left", "room_finished"]
    assert all(d.status == 200 for d in livekit_fake.webhook_deliveries)
    await lk.aclose()
    await runner.cleanup()


async def test_transient_fault_and_transfer_failure(livekit_fake: LiveKitFake) -> None:
    lk = livekit_fake.api()
    livekit_fake.fail_next("unavailable", method="ListSIPInboundTrunk")
    with pytest.raises(api.TwirpError) as err:
        await lk.sip.list_inbound_trunk(api.ListSIPInboundTrunkRequest())
    assert err.value.status == 503
    assert (await lk.sip.list_inbound_trunk(api.ListSIPInboundTrunkRequest())).items == []  # transient

    trunk = await lk.sip.create_inbound_trunk(_trunk([HOTEL]))
    await lk.sip.create_dispatch_rule(_rule(trunk.sip_trunk_id))
    call = await livekit_fake.simulate_inbound_call(CALLER, HOTEL)
    livekit_fake.transfer_failure = (486, "Busy Here")
    with pytest.raises(api.TwirpError) as busy:
        await lk.sip.transfer_sip_participant(
            api.TransferSIPParticipantRequest(
                participant_identity=call.participant.identity,
                room_name=call.room.name,
                transfer_to="tel:+4930",
            )
        )
    assert busy.value.metadata["sip_status_code"] == "486"

    livekit_fake.delay = 0.2
    t0 = asyncio.get_running_loop().time()
    await lk.room.list_rooms(api.ListRoomsRequest())
    assert asyncio.get_running_loop().time() - t0 >= 0.2
    await lk.aclose()
    assert json.dumps(livekit_fake.calls[0].grants)  # recorded grants are plain data


async def test_hidden_number_and_webhook_signature_is_checked(livekit_fake: LiveKitFake) -> None:
    lk = livekit_fake.api()
    trunk = await lk.sip.create_inbound_trunk(_trunk([HOTEL]))
    req = _rule(trunk.sip_trunk_id)
    req.dispatch_rule.hide_phone_number = True
    await lk.sip.create_dispatch_rule(req)
    call = await livekit_fake.simulate_inbound_call(CALLER, HOTEL)
    assert CALLER not in call.participant.identity and call.participant.name == "Phone " + CALLER[-4:]
    assert "sip.phoneNumber" not in call.participant.attributes
    assert call.room.name.startswith("hotel-a_" + CALLER[-4:] + "_")
    await lk.aclose()

    event = api.WebhookEvent(event="room_finished", room=call.room)
    body = encode_webhook(event).decode()
    auth = sign_webhook(body.encode(), livekit_fake.api_key, livekit_fake.api_secret)
    ok = api.WebhookReceiver(api.TokenVerifier(livekit_fake.api_key, livekit_fake.api_secret))
    assert ok.receive(body, auth).event == "room_finished"
    wrong = api.WebhookReceiver(
        api.TokenVerifier(livekit_fake.api_key, "another-secret-that-is-long-enough-x")
    )
    with pytest.raises(Exception):  # noqa: B017 - the receiver raises jwt's InvalidSignatureError
        wrong.receive(body, auth)
    with pytest.raises(Exception, match="hash mismatch"):
        ok.receive(body.replace("room_finished", "room_started"), auth)


async def test_auto_join_agents_on_dispatch() -> None:
    async with LiveKitFake(auto_join_agents=True) as fake:
        lk = fake.api()
        d = await lk.agent_dispatch.create_dispatch(
            api.CreateAgentDispatchRequest(agent_name="w", room="call-2")
        )
        listed = await lk.room.list_participants(api.ListParticipantsRequest(room="call-2"))
        assert [(p.identity, p.kind) for p in listed.participants] == [
            (f"agent-{d.id}", api.ParticipantInfo.AGENT)
        ]
        await lk.aclose()
