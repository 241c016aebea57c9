"""A compromised worker's view, end to end on the kube fixture and the LiveKit fake (issue 11).

The operator binds a call and writes a room-scoped LiveKit token sealed with the line's key; with
only what its Pod has (the line Secret's token key), the worker can join and administer its own
room, but cannot transfer (no SIP grant), touch another room, or open the token as another line.
The transfer happens through the operator on the worker's request. No Pod holds a secret value.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
from typing import Any

import pytest
from livekit import api as lkapi
from livekit.api.twirp_client import TwirpError
from livekit.protocol import models as pb_models

from tests.fakes.livekit_twirp import LiveKitFake
from tests.operator.conftest import Providers
from tests.operator.helpers import spec, wait_for
from voicehive import contract, transfer
from voicehive.contract import VOICESESSIONS
from voicehive.privacy import Privacy, generate_key_b64
from voicehive_operator import builders
from voicehive_operator.kube import Kube
from voicehive_worker.credentials import NoRoomToken, request_transfer, room_access

WORKERS = {contract.LABEL_COMPONENT: contract.COMPONENT_WORKER}


class StatusViaKube:
    """The worker's VoiceSessionStatus, over the test's kube client (same calls, same RBAC shape)."""

    def __init__(self, kube: Kube, namespace: str, name: str) -> None:
        self.kube, self.namespace, self.name = kube, namespace, name

    async def read(self) -> dict[str, Any]:
        found = await self.kube.get_custom(self.namespace, VOICESESSIONS, self.name)
        assert found is not None
        return found

    async def patch(self, status: dict[str, Any]) -> None:
        await self.kube.patch_custom_status(self.namespace, VOICESESSIONS, self.name, {"status": status})


async def _secret(kube: Kube, namespace: str, name: str) -> dict[str, str]:
    import asyncio

    raw = await asyncio.to_thread(kube.core.read_namespaced_secret, name, namespace)
    return {k: base64.b64decode(v).decode() for k, v in (raw.data or {}).items()}


async def test_worker_holds_a_room_token_for_its_call_only_and_the_operator_transfers(
    start_operator: Any, hotelline: Any, kube_client: Kube, namespace: str, providers: Providers,
    line_secret: dict[str, str], livekit_fake: LiveKitFake,
) -> None:
    pii, transcript = base64.b64decode(generate_key_b64()), base64.b64decode(generate_key_b64())
    redis_password = secrets.token_urlsafe(18)
    privacy = Privacy.from_keys(pii, transcript)
    await start_operator(check_providers=False, pii_key=pii, transcript_key=transcript,
                         redis_url=f"rediss://voicehive:{redis_password}@redis.example:6380/0")
    workers = {**spec()["workers"], "warmPool": 1, "startTimeoutSeconds": 20, "maxCallDurationSeconds": 600}
    await hotelline("lindenhof", providers.line_spec(workers=workers))
    await wait_for(lambda: kube_client.list_pods(namespace, {**WORKERS, contract.LABEL_LINE: "lindenhof"}),
                   lambda ps: len(ps) == 1, what="a warm pod")
    line_keys = await _secret(kube_client, namespace, builders.line_secret_name("lindenhof"))
    assert set(line_keys) == {"transcript-key", "recording-key", "token-key", "redis-url"}
    worker_env = {contract.ENV_LINE_TOKEN_KEY: line_keys["token-key"]}  # what the Pod's secretKeyRef gives it

    number = "+4917" + "".join(secrets.choice("0123456789") for _ in range(8))
    room = f"{contract.room_prefix(namespace, 'lindenhof')}_{number}_{secrets.token_hex(3)}"
    sip_identity = "sip_" + number
    await livekit_fake.join(room, pb_models.ParticipantInfo(identity=sip_identity, kind=pb_models.ParticipantInfo.SIP))
    other_room = room + "-other"
    await livekit_fake.join(other_room, pb_models.ParticipantInfo(identity="sip_x", kind=pb_models.ParticipantInfo.SIP))
    name = contract.session_name(privacy.hasher.room(room))
    await kube_client.create_custom(namespace, VOICESESSIONS, {
        "apiVersion": "voicehive.io/v1alpha1", "kind": "VoiceSession", "metadata": {"name": name, "namespace": namespace},
        "spec": {"lineRef": {"name": "lindenhof"}, "roomHash": privacy.hasher.room(room),
                 "callerHash": privacy.hasher.phone(number),
                 "sealedCallRef": privacy.seal_call_ref(room, sip_identity), "language": "de"}})
    vs = await wait_for(lambda: kube_client.get_custom(namespace, VOICESESSIONS, name),
                        lambda o: contract.LABEL_WORKER in ((o or {}).get("metadata", {}).get("labels") or {}),
                        what="session bound")
    assert vs is not None
    pod = vs["metadata"]["labels"][contract.LABEL_WORKER]
    access = room_access(worker_env, vs, room=room, pod=pod)
    assert access.api_key is None  # no API secret anywhere in the worker's reach

    async with access.api(livekit_fake.url) as lk:
        with pytest.raises(TwirpError):  # the SIP grant would let it dial anywhere: not given
            await lk.sip.transfer_sip_participant(lkapi.TransferSIPParticipantRequest(
                participant_identity=sip_identity, room_name=room, transfer_to="tel:+15555550100"))
        with pytest.raises(TwirpError):  # another call's room
            await lk.room.remove_participant(lkapi.RoomParticipantIdentity(room=other_room, identity="sip_x"))
        with pytest.raises(TwirpError):  # listing rooms (finding other calls)
            await lk.room.list_rooms(lkapi.ListRoomsRequest())
    # Another line's key does not open it; nor does this line's key for another session.
    other_line = builders.line_secret_data("resorts", "lindenhof", start_operator_settings(pii, transcript))
    with pytest.raises(NoRoomToken):
        room_access({contract.ENV_LINE_TOKEN_KEY: other_line["token-key"]}, vs, room=room, pod=pod)

    # The transfer, through the operator, to the line's front desk (not a target the worker picks).
    await request_transfer(StatusViaKube(kube_client, namespace, name), timeout_s=60)
    assert [(t.room_name, t.participant_identity, t.transfer_to) for t in livekit_fake.transfers] == [
        (room, sip_identity, "tel:+493012345600")]
    done = await kube_client.get_custom(namespace, VOICESESSIONS, name)
    assert transfer.state((done or {}).get("status")) == transfer.TRANSFERRED
    assert "WorkerBound" in {c["type"] for c in done["status"]["conditions"]}  # type: ignore[index]

    # Its own room it may administer: remove the caller at hang-up (here a second SIP leg: the first
    # was transferred away).
    await livekit_fake.join(room, pb_models.ParticipantInfo(identity="sip_second", kind=pb_models.ParticipantInfo.SIP))
    async with access.api(livekit_fake.url) as lk:
        await lk.room.remove_participant(lkapi.RoomParticipantIdentity(room=room, identity="sip_second"))

    # No Pod spec holds a secret value or a URL with a password.
    pods = json.dumps(await kube_client.list_pods(namespace, WORKERS))
    for value in (redis_password, base64.b64encode(pii).decode(), base64.b64encode(transcript).decode(),
                  livekit_fake.api_secret, line_keys["token-key"], line_keys["transcript-key"]):
        assert value not in pods
    assert re.findall(r"[a-z]+://[^/\s\"@:]*:[^/\s\"@]+@", pods) == []


def start_operator_settings(pii: bytes, transcript: bytes) -> Any:
    from voicehive_operator.settings import OperatorSettings

    return OperatorSettings(pii_key=pii, transcript_key=transcript)
