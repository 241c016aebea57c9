"""Keypad 0 reaches the front desk at any point; caller hang-up ends the call cleanly."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest
from livekit import api as lkapi

from tests.fakes.livekit_twirp import LiveKitFake
from tests.worker.callrig import Call, line_spec, provider_fakes, running_call
from tests.worker.speech import espeak_available
from tests.worker.test_call_flow import _sip_call
from voicehive.callmanager import CallEvent, CallManager, EventKind
from voicehive.callstore import CallStore
from voicehive.lifecycle import CallPhase, EndReason
from voicehive.privacy import Privacy
from voicehive_worker.entrypoint import CallRunner
from voicehive_worker.state import CallState, WorkerCallActions

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not espeak_available(), reason="espeak-ng needed")]

NEVER_OPEN = {"transferTo": "tel:+493012345600", "hours": [{"days": ["Mon"], "open": "00:00", "close": "00:01"}]}


@dataclass
class Rig:
    call: Call
    runner: CallRunner
    state: CallState
    manager: CallManager
    room: str
    lk: LiveKitFake


@asynccontextmanager
async def _call(redis_url: str, lk: LiveKitFake, **spec_overrides: object) -> AsyncIterator[Rig]:
    privacy = Privacy.from_keys(os.urandom(32), os.urandom(32))
    room, identity = await _sip_call(lk)
    store = CallStore.from_url(redis_url)
    manager = CallManager(store=store, privacy=privacy)
    await manager.handle(CallEvent(room, EventKind.SIP_JOINED, "livekit", line="l", namespace="ns",
                                   caller_number="+4915112345678", participant_identity=identity))
    state = CallState(manager=manager, call_sid=room, line="l", namespace="ns", worker_pod="w")
    spec = line_spec(**spec_overrides)
    async with (
        provider_fakes([], lambda m, t: "Sure.") as fakes,
        lkapi.LiveKitAPI(url=lk.url, api_key=lk.api_key, api_secret=lk.api_secret) as livekit,
    ):
        actions = WorkerCallActions(state=state, livekit=livekit, room=room, sip_identity=identity)
        async with running_call(fakes, spec, actions=actions) as call:
            runner = CallRunner(session=call.session, agent=call.agent, state=state,  # type: ignore[arg-type]
                                turn_stats=call.stats).attach()
            actions.hangup = runner.finish
            await state.answered()
            yield Rig(call, runner, state, manager, room, lk)
    await store.close()


async def test_keypad_zero_transfers_to_the_front_desk(redis_url: str, livekit_fake: LiveKitFake) -> None:
    async with _call(redis_url, livekit_fake) as rig:
        await rig.call.wait_for(lambda: rig.call.sink.segments, 10, "the greeting")
        rig.runner.on_dtmf("0")  # mid-greeting: any point
        await rig.call.wait_for(lambda: rig.runner.ended.is_set(), 15, "the transfer")
        assert [t.transfer_to for t in livekit_fake.transfers] == ["tel:+493012345600"]
        assert rig.call.sink.segments[0].interrupted  # the greeting was cut for the transfer
        record = await rig.manager.get(rig.room)
        assert record is not None and record.phase is CallPhase.ENDED and record.reason is EndReason.TRANSFERRED


async def test_keypad_zero_after_hours_offers_a_message(redis_url: str, livekit_fake: LiveKitFake) -> None:
    async with _call(redis_url, livekit_fake, frontDesk=NEVER_OPEN) as rig:
        await rig.call.wait_for(lambda: rig.call.sink.segments, 10, "the greeting")
        await rig.call.wait_quiet()
        rig.runner.on_dtmf("0")
        await rig.call.wait_for(lambda: len(rig.call.sink.segments) >= 2, 10, "the after-hours answer")
        assert livekit_fake.transfers == []
        assert "speak_to_human" in rig.state.intents and not rig.runner.ended.is_set()


async def test_caller_hang_up_ends_the_call(redis_url: str, livekit_fake: LiveKitFake) -> None:
    async with _call(redis_url, livekit_fake) as rig:
        await rig.call.wait_for(lambda: rig.call.sink.segments, 10, "the greeting")
        rig.runner.on_caller_left()
        await rig.call.wait_for(lambda: rig.runner.ended.is_set(), 5, "the end of the call")
        record = await rig.manager.get(rig.room)
        assert record is not None and record.phase is CallPhase.ENDED
        assert record.reason is EndReason.CALLER_HANGUP
        # a late duplicate (e.g. the session closing afterwards) changes nothing
        await rig.runner.finish(EndReason.PIPELINE_ERROR)
        again = await rig.manager.get(rig.room)
        assert again is not None and again.reason is EndReason.CALLER_HANGUP
