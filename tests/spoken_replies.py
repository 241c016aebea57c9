"""Every reply the worker speaks in a test is checked for text meant for a model.

WHY a fixture and not one test: the instruction texts that leaked ("offer the front desk or a
message", "(take_message)") came from tool results in flows no single test walks through. An
autouse fixture in the worker suites wraps ``AgentSession.start`` and ``AgentSession.say`` for
the duration of each test, records every assistant message and every ``say`` text, and fails
the test that produced an instruction-like one (``phrases.is_model_instruction``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from livekit.agents import AgentSession

from voicehive_worker.phrases import is_model_instruction


def _record(ev: Any, replies: list[str]) -> None:
    item = getattr(ev, "item", None)
    if getattr(item, "type", None) == "message" and getattr(item, "role", None) == "assistant":
        text = item.text_content or ""
        if text:
            replies.append(text)


@pytest.fixture(autouse=True)
def spoken_replies(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The replies spoken in this test (assistant messages and ``say`` texts), checked at teardown."""
    replies: list[str] = []
    original_start = AgentSession.start
    original_say = AgentSession.say

    async def start(self: AgentSession[Any], *args: Any, **kwargs: Any) -> Any:
        self.on("conversation_item_added", lambda ev: _record(ev, replies))
        return await original_start(self, *args, **kwargs)

    def say(self: AgentSession[Any], text: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(text, str) and text:
            replies.append(text)
        return original_say(self, text, *args, **kwargs)

    monkeypatch.setattr(AgentSession, "start", start)
    monkeypatch.setattr(AgentSession, "say", say)
    yield replies
    meant_for_a_model = [reply for reply in replies if is_model_instruction(reply)]
    assert not meant_for_a_model, f"spoken to the caller, but written for a model: {meant_for_a_model}"
