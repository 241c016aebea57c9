"""Azure OpenAI fails, hangs or is gone: the hotel policy answers from the facts and takes messages.

Through the worker on the fakes: the provider models with the policy fallback
(``session.with_policy_fallback``, livekit-agents' ``FallbackAdapter``), the watchdog attached.
The caller must still get facts and leave a message, the watchdog's apology must not be
needed, and once Azure answers again it serves again.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.fakes.azure_openai import ScriptedResponder
from tests.worker.callrig import Call, line_spec, provider_fakes, running_call
from tests.worker.speech import espeak_available, speak

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not espeak_available(), reason="espeak-ng is needed for caller speech and the fallback"),
]

AZURE = "This answer comes from Azure."
CHECK_IN = "What time is check in"
PARKING = "Do you have parking"
CHECK_OUT = "What time is check out"
MESSAGE = "I would like to leave a message for the manager, please call me back about my invoice, my name is Anna Schmidt"


def _replies(call: Call) -> list[str]:
    return [
        item.text_content or ""
        for item in call.session.history.items
        if item.type == "message" and item.role == "assistant"
    ]


async def _turn(call: Call, text: str) -> str:
    """The caller says ``text``; returns the reply, which must start within 2 s of the caller stopping."""
    await call.wait_quiet()
    await asyncio.sleep(0.3)
    before = len(_replies(call))
    utt = call.say(speak(text), text)
    seg = await call.wait_reply(utt, timeout=8)
    assert utt.last_voiced_at is not None and seg.first_frame_at - utt.last_voiced_at <= 2.0, "dead air"
    await call.wait_quiet()
    replies = await call.wait_for(lambda: _replies(call)[before:], 5, f"the reply to {text!r} in the history")
    return " ".join(replies)


async def test_azure_500_and_hang_the_policy_answers_then_azure_serves_again() -> None:
    async with (
        provider_fakes([CHECK_IN, PARKING, CHECK_OUT], ScriptedResponder(fallback=AZURE)) as fakes,
        running_call(fakes, line_spec(), greet=False, watchdog=True) as call,
    ):
        assert call.watchdog is not None
        await asyncio.sleep(0.3)
        fakes.azure.fail_next(500)
        assert "3 p.m." in await _turn(call, CHECK_IN)  # from the facts, by the policy
        # the adapter probed Azure in the background; it answers again, so it serves again
        await call.wait_for(lambda: any(r.status == 200 for r in fakes.azure.requests), 5, "a successful probe")
        assert AZURE in await _turn(call, PARKING)
        fakes.azure.hang_next(6.0)
        assert "11 a.m." in await _turn(call, CHECK_OUT)
        assert call.watchdog.report.fallbacks == []  # nothing was left unanswered


async def test_azure_down_for_the_whole_call_facts_and_a_message() -> None:
    async with provider_fakes([CHECK_IN, MESSAGE], ScriptedResponder(fallback=AZURE)) as fakes:
        await fakes.azure.stop()
        async with running_call(fakes, line_spec(), greet=True, watchdog=True) as call:
            assert call.watchdog is not None
            await call.wait_for(lambda: call.sink.segments, 10, "the greeting")
            assert "3 p.m." in await _turn(call, CHECK_IN)
            reply = await _turn(call, MESSAGE)
            assert "reference" in reply
            assert [kind for kind, _ in call.actions.requests] == ["message"]
            _, fields = call.actions.requests[0]
            assert "invoice" in fields["message"] and fields["name"] == "Anna Schmidt"
            assert call.watchdog.report.fallbacks == [] and call.watchdog.report.gave_up is None
