"""The same control-plane script against the LiveKit fake and, when the rig runs, a real livekit-server.

A differential check of the fake's fidelity: the outcomes a caller can observe (ids, error
codes, livekit's conflict messages, grants) must match. The real-server leg skips without
the rig (``make rig``); it creates only uniquely named objects and deletes them again.
"""

from __future__ import annotations

import contextlib
import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
import pytest_asyncio
from livekit import api

from tests.fakes.livekit_twirp import LiveKitFake


@dataclass
class Target:
    url: str
    api_key: str
    api_secret: str


@pytest_asyncio.fixture(params=["fake", "real"])
async def target(request: pytest.FixtureRequest) -> AsyncIterator[Target]:
    if request.param == "fake":
        async with LiveKitFake() as fake:
            yield Target(fake.url, fake.api_key, fake.api_secret)
    else:
        server = request.getfixturevalue("livekit")  # skips when the rig's livekit-server is down
        yield Target(server.url.replace("ws://", "http://"), server.api_key, server.api_secret)


async def test_same_observable_behaviour(target: Target) -> None:
    lk = api.LiveKitAPI(url=target.url, api_key=target.api_key, api_secret=target.api_secret)
    tag = secrets.token_hex(4)
    number = "+4930" + str(secrets.randbelow(10**8)).zfill(8)
    created: list[str] = []
    rules: list[str] = []
    room = f"diff-{tag}"
    try:
        trunk = await lk.sip.create_inbound_trunk(
            api.CreateSIPInboundTrunkRequest(
                trunk=api.SIPInboundTrunkInfo(name=f"diff-{tag}", numbers=[number])
            )
        )
        created.append(trunk.sip_trunk_id)
        assert re.fullmatch(r"ST_[A-Za-z0-9]{12}", trunk.sip_trunk_id)

        with pytest.raises(api.TwirpError) as conflict:
            dup = await lk.sip.create_inbound_trunk(
                api.CreateSIPInboundTrunkRequest(
                    trunk=api.SIPInboundTrunkInfo(name=f"diff2-{tag}", numbers=[number])
                )
            )
            created.append(dup.sip_trunk_id)
        assert conflict.value.code == "invalid_argument"
        # livekit names the two trunks in its own iteration order: accept either order
        ids = (f'"<new>" and "{trunk.sip_trunk_id}"', f'"{trunk.sip_trunk_id}" and "<new>"')
        assert any(
            conflict.value.message
            == f'Conflicting inbound SIP Trunks: {pair}, using the same number(s) ["{number}"] '
            "without AllowedNumbers set"
            for pair in ids
        ), conflict.value.message

        updated = await lk.sip.update_inbound_trunk_fields(trunk.sip_trunk_id, metadata="v2")
        assert updated.metadata == "v2" and list(updated.numbers) == [number]
        listed = await lk.sip.list_inbound_trunk(
            api.ListSIPInboundTrunkRequest(trunk_ids=[trunk.sip_trunk_id])
        )
        assert [t.sip_trunk_id for t in listed.items] == [trunk.sip_trunk_id]

        rule = await lk.sip.create_dispatch_rule(
            api.CreateSIPDispatchRuleRequest(
                dispatch_rule=api.SIPDispatchRuleInfo(
                    rule=api.SIPDispatchRule(
                        dispatch_rule_individual=api.SIPDispatchRuleIndividual(room_prefix=f"d{tag}")
                    ),
                    trunk_ids=[trunk.sip_trunk_id],
                    name=f"diff-{tag}",
                )
            )
        )
        rules.append(rule.sip_dispatch_rule_id)
        assert re.fullmatch(r"SDR_[A-Za-z0-9]{12}", rule.sip_dispatch_rule_id)

        gone = await lk.sip.delete_trunk(api.DeleteSIPTrunkRequest(sip_trunk_id="ST_doesnotexist"))
        assert gone.sip_trunk_id == "ST_doesnotexist"  # success, bare id
        with pytest.raises(api.TwirpError) as nf:
            await lk.sip.delete_dispatch_rule(
                api.DeleteSIPDispatchRuleRequest(sip_dispatch_rule_id="SDR_nope")
            )
        assert (nf.value.code, nf.value.message) == (
            "not_found",
            "requested sip dispatch rule does not exist",
        )
        with pytest.raises(api.TwirpError) as dup_rule:
            extra = await lk.sip.create_dispatch_rule(
                api.CreateSIPDispatchRuleRequest(
                    dispatch_rule=api.SIPDispatchRuleInfo(
                        rule=api.SIPDispatchRule(
                            dispatch_rule_individual=api.SIPDispatchRuleIndividual(room_prefix="x")
                        ),
                        trunk_ids=[trunk.sip_trunk_id],
                    )
                )
            )
            rules.append(extra.sip_dispatch_rule_id)
        # it names one of the two rules, the new one or the existing one (order varies on the server)
        named = ('"<new>" "<blank name>"', f'"{rule.sip_dispatch_rule_id}" "diff-{tag}"')
        assert any(
            dup_rule.value.message
            == "Dispatch rule for the same trunk, inbound number, number, and PIN combination already "
            f"exists in dispatch rule {who}"
            for who in named
        ), dup_rule.value.message
        with pytest.raises(api.TwirpError) as insecure:
            await lk.sip.create_inbound_trunk(
                api.CreateSIPInboundTrunkRequest(trunk=api.SIPInboundTrunkInfo())
            )
        assert insecure.value.message.startswith("for security, one of the fields must be set")

        await lk.room.create_room(api.CreateRoomRequest(name=room))
        d = await lk.agent_dispatch.create_dispatch(
            api.CreateAgentDispatchRequest(agent_name=f"a{tag}", room=room)
        )
        assert re.fullmatch(r"AD_[A-Za-z0-9]{12}", d.id)
        assert sorted(x.agent_name for x in await lk.agent_dispatch.list_dispatch(room)) == ["", f"a{tag}"]
        with pytest.raises(api.TwirpError) as no_node:
            await lk.agent_dispatch.list_dispatch(f"nowhere-{tag}")
        assert (no_node.value.code, no_node.value.status) == ("unavailable", 503)
        assert (
            list(
                (
                    await lk.room.list_participants(api.ListParticipantsRequest(room=f"nowhere-{tag}"))
                ).participants
            )
            == []
        )

        # a token without SIP grants may not manage trunks; a bad token gets a plain-text 401
        token = api.AccessToken(target.api_key, target.api_secret).with_grants(
            api.VideoGrants(room_list=True)
        )
        async with aiohttp.ClientSession() as session:
            resp = await session.post(
                f"{target.url}/twirp/livekit.SIP/ListSIPInboundTrunk",
                json={},
                headers={"Authorization": f"Bearer {token.to_jwt()}"},
            )
            assert resp.status == 401
            assert await resp.json() == {"code": "unauthenticated", "msg": "permissions denied"}
            resp = await session.post(
                f"{target.url}/twirp/livekit.SIP/ListSIPInboundTrunk",
                json={},
                headers={"Authorization": "Bearer garbage"},
            )
            assert (resp.status, await resp.text()) == (401, "invalid authorization token")
            resp = await session.post(
                f"{target.url}/twirp/livekit.SIP/Nope",
                json={},
                headers={"Authorization": f"Bearer {token.to_jwt()}"},
            )
            assert resp.status == 404 and (await resp.json())["code"] == "bad_route"
    finally:
        for rid in rules:
            await lk.sip.delete_dispatch_rule(api.DeleteSIPDispatchRuleRequest(sip_dispatch_rule_id=rid))
        for tid in created:
            await lk.sip.delete_trunk(api.DeleteSIPTrunkRequest(sip_trunk_id=tid))
        with contextlib.suppress(api.TwirpError):
            await lk.room.delete_room(api.DeleteRoomRequest(room=room))
        await lk.aclose()
