"""Key 0 when the front desk's line fails: the caller hears it and is offered a message (found by
tests/e2e: the failure phrase was returned to nobody, since no LLM turn follows a key press)."""

from __future__ import annotations

from tests.fakes.livekit_twirp import LiveKitFake
from tests.worker.test_call_events import _call


async def test_keypad_zero_with_a_failing_transfer_says_so_and_keeps_the_call(
    redis_url: str, livekit_fake: LiveKitFake
) -> None:
    livekit_fake.transfer_failure = (486, "Busy Here")
    async with _call(redis_url, livekit_fake) as rig:
        await rig.call.wait_for(lambda: rig.call.sink.segments, 10, "the greeting")
        await rig.call.wait_quiet()
        before = len(rig.call.sink.segments)
        rig.runner.on_dtmf("0")
        # "connecting you to the front desk", then "could not reach the front desk ... a message"
        await rig.call.wait_for(lambda: len(rig.call.sink.segments) >= before + 2, 20, "the failure notice")
        assert len(livekit_fake.transfers) == 1
        assert not rig.runner.ended.is_set()
