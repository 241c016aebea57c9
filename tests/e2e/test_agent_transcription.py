"""An agent's transcription through the installed orchestrator is sealed with the line's key
(issue 11), proven on the installed chart.

A SIP caller dials the example line (the signed participant_joined names the line); an agent
posts a final segment to the orchestrator's Service (`/v1/livekit/transcription`, the seed's
contract, bearer agent token, TLS with the cluster's CA). Every stored segment of the call opens
with the transcript key the operator put in the line's Secret, the key the line's workers and
staff hold, and none opens with the master key.
"""

from __future__ import annotations

import base64
import json
import ssl

import httpx

from tests.e2e.scenario import E2E_MARKS, Installed, wait
from tests.fixtures.rig import ROOT, parse_env_file
from voicehive.callstore import CallStore
from voicehive.privacy import Sealer, SealError
from voicehive_operator import builders

pytestmark = E2E_MARKS
CALLER = "+4915112349876"
SAID = "Is breakfast served on Sunday mornings"


def _line_key(inst: Installed) -> bytes:
    """The transcript key in the line's Secret, as the kubelet hands it to the line's workers."""
    name = builders.line_secret_name(inst.line()["metadata"]["name"])
    data = inst.core.read_namespaced_secret(name, inst.hotel_ns).data
    return base64.b64decode(base64.b64decode(data[builders.LINE_SECRET_TRANSCRIPT_KEY]))


async def _post_transcription(room: str) -> httpx.Response:
    port = parse_env_file(ROOT / ".rig" / "ports.env")["LIVEKIT_WEBHOOK_PORT"]  # forwarded to the Service
    keys = json.loads((ROOT / ".rig" / "cluster" / "keys.json").read_text())
    trust = ssl.create_default_context(cafile=str(ROOT / ".rig" / "cluster" / "tls" / "ca.pem"))
    async with httpx.AsyncClient(verify=trust, timeout=30) as client:
        return await client.post(
            f"https://127.0.0.1:{port}/v1/livekit/transcription",
            headers={"Authorization": f"Bearer {keys['agent-token']}"},
            json={"call_sid": room, "text": SAID, "language": "en-US", "confidence": 0.93, "is_final": True,
                  "event_id": "e2e-agent-transcription-1"},
        )


async def test_an_agents_transcription_is_sealed_with_the_lines_key(installed: Installed) -> None:
    call = await installed.sim().dial(installed.inbound_call(CALLER))
    room = call.dispatch.room
    ref = installed.hasher().call_ref(room)
    store = CallStore.from_url(installed.cluster["VOICEHIVE_CLUSTER_REDIS_URL"])
    try:
        await wait(lambda: [e for e in installed.orchestrator_audit(ref) if e.get("event") == "sip_participant_joined"],
                   60, "participant_joined applied (the call's line is known)", interval=0.5)
        response = await _post_transcription(room)
        assert response.status_code == 200, response.text
        segments = [s["text"] for s in await store.transcript(ref)]
        assert segments, "no transcript segment stored for the call"
        line = Sealer(_line_key(installed))
        assert SAID in [line.open_text(s, context=ref) for s in segments]
        master = Sealer(base64.b64decode(json.loads((ROOT / ".rig" / "cluster" / "keys.json").read_text())[
            "transcript-key"]))
        for sealed in segments:
            try:
                master.open_text(sealed, context=ref)
            except SealError:
                continue
            raise AssertionError("a segment of the call opens with the master transcript key")
    finally:
        await call.hang_up()
        await store.close()
    await wait(lambda: (installed.session_for(room) or {}).get("status", {}).get("phase") in ("Ended", "Failed"),
               120, "the call's VoiceSession ended", interval=1)
