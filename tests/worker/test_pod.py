"""The pod end to end: `run_pod` warms up, is bound to a call by a VoiceSession label, joins the
real LiveKit room (rig livekit-server), answers the caller, records the call, and exits 0 when
the caller hangs up. Providers are the loopback fakes; Kubernetes is the kube fixture.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from typing import Any

import pytest
from livekit import rtc

from tests.fixtures.kube import KubeAPI
from tests.fixtures.rig import rig_livekit, skip_or_fail
from tests.worker.callrig import line_spec, provider_fakes
from tests.worker.speech import espeak_available, speak
from tests.worker.test_real_room import Ear, _token, _wait
from voicehive import contract
from voicehive.api.models import API_VERSION, GROUP, VERSION
from voicehive.callmanager import CallEvent, CallManager, EventKind
from voicehive.callstore import CallStore
from voicehive.lifecycle import CallPhase
from voicehive.privacy import Privacy, generate_key_b64
from voicehive_worker.entrypoint import run_pod

pytestmark = [pytest.mark.rig, pytest.mark.slow]

POD = "worker-0"
CALLER = "caller-1"
QUESTION = "Do you have parking"


async def test_pod_serves_one_call_and_exits(
    kube: KubeAPI, namespace: str, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    found = rig_livekit()
    if found is None:
        skip_or_fail("livekit-server")
    assert found is not None
    if not espeak_available():
        pytest.skip("espeak-ng is needed")
    import kubernetes

    lk = found.env
    room = f"vh-test-pod-{int(time.time() * 1000)}"
    pii, transcript = generate_key_b64(), generate_key_b64()
    privacy = Privacy.from_keys(base64.b64decode(pii), base64.b64decode(transcript))

    async with provider_fakes([QUESTION], lambda m, t: "Yes, underground parking is available.") as fakes:
        spec = fakes.spec_for(line_spec())
        env = {
            "KUBECONFIG": str(kube.kubeconfig),
            contract.ENV_NAMESPACE: namespace,
            contract.ENV_POD_NAME: POD,
            contract.ENV_REDIS_URL: redis_url,
            contract.ENV_PII_KEY: pii,
            contract.ENV_TRANSCRIPT_KEY: transcript,
            contract.ENV_RIVA_SERVER: fakes.riva.address,
            contract.ENV_AZURE_OPENAI_API_KEY: fakes.azure.api_key,
            contract.ENV_ELEVEN_API_KEY: fakes.eleven.api_key,
            "VOICEHIVE_LLM_ENDPOINT": fakes.azure.endpoint,
            "VOICEHIVE_TTS_ENDPOINT": fakes.eleven.url,
            contract.ENV_LIVEKIT_URL: lk["LIVEKIT_URL"],
            contract.ENV_LIVEKIT_API_KEY: lk["LIVEKIT_API_KEY"],
            contract.ENV_LIVEKIT_API_SECRET: lk["LIVEKIT_API_SECRET"],
            contract.ENV_LINE_SPEC: json.dumps(spec.model_dump(by_alias=True, mode="json")),
            "VOICEHIVE_READY_HOST": "127.0.0.1",
            "VOICEHIVE_READY_PORT": "0",
        }
        for key, value in env.items():
            monkeypatch.setenv(key, value)

        # the caller is in the room before the worker is bound (as with a SIP call)
        caller = rtc.Room()
        ear = Ear()

        @caller.on("track_subscribed")
        def _subscribed(track: rtc.Track, *_: Any) -> None:
            if track.kind == rtc.TrackKind.KIND_AUDIO:
                ear.listen(track)

        await caller.connect(lk["LIVEKIT_URL"], _token(lk, CALLER, room))
        source = rtc.AudioSource(16000, 1)
        await caller.local_participant.publish_track(
            rtc.LocalAudioTrack.create_audio_track("mic", source),
            rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE),
        )
        pod = asyncio.ensure_future(run_pod(None))
        store = CallStore.from_url(redis_url)
        try:
            # what the orchestrator does when the SIP participant joins: call record + VoiceSession
            manager = CallManager(store=store, privacy=privacy)
            await manager.handle(CallEvent(room, EventKind.SIP_JOINED, "livekit", line="lindenhof-main",
                                           namespace=namespace, caller_number="+4915112345678",
                                           participant_identity=CALLER))
            custom = kubernetes.client.CustomObjectsApi(kube.api_client())
            vs_name = contract.session_name(privacy.hasher.room(room))
            await asyncio.to_thread(custom.create_namespaced_custom_object, GROUP, VERSION, namespace, "voicesessions", {
                "apiVersion": API_VERSION, "kind": "VoiceSession",
                "metadata": {"name": vs_name, "labels": {contract.LABEL_WORKER: POD}},
                "spec": {"lineRef": {"name": "lindenhof-main"}, "roomHash": privacy.hasher.room(room),
                         "callerHash": privacy.hasher.phone("+4915112345678"),
                         "sealedCallRef": privacy.seal_call_ref(room, CALLER)},
            })
            started = time.monotonic()
            await _wait(lambda: ear.heard_since(started), 40, "the worker's greeting in the room")
            await _wait(lambda: time.monotonic() - ear.voiced_at[-1] > 1.0, 30, "the greeting to finish")
            pcm = speak(QUESTION)
            for i in range(0, len(pcm), 640):
                await source.capture_frame(rtc.AudioFrame(pcm[i : i + 640].ljust(640, b"\x00"), 16000, 1, 320))
            spoken_at = time.monotonic()
            silence = rtc.AudioFrame(b"\x00" * 640, 16000, 1, 320)
            while not ear.heard_since(spoken_at):
                await source.capture_frame(silence)
                if time.monotonic() - spoken_at > 10:
                    raise TimeoutError("no reply in the room")
            await _wait(lambda: time.monotonic() - ear.voiced_at[-1] > 1.0, 30, "the reply to finish")
            await caller.disconnect()  # the caller hangs up
            assert await asyncio.wait_for(pod, 30) == 0
            vs: Any = await asyncio.to_thread(
                custom.get_namespaced_custom_object, GROUP, VERSION, namespace, "voicesessions", vs_name
            )
            status = vs["status"]
            assert status["phase"] == CallPhase.ENDED.value and status["endReason"] == "caller_hangup"
            assert status["workerPod"] == POD and status["turns"] == 1
            record = await manager.get(room)
            assert record is not None and record.phase is CallPhase.ENDED
        finally:
            if not pod.done():
                pod.cancel()
            await caller.disconnect()
            await store.close()
    assert os.environ.get(contract.ENV_POD_NAME) == POD  # monkeypatch restores it after the test
