"""The deterministic hotel policy as a livekit-agents LLM: the same Agent and tools run on it.

WHY an LLM subclass: AgentSession, the HotelAgent's @function_tool tools, interruptions and
the tool loop all stay exactly as with Azure OpenAI; only the "model" differs. The stream
yields text chunks word by word (so the TTS starts on the first sentence) and
FunctionToolCall chunks when a tool fits; after the tool ran, the framework calls again with
the tool's output in the context and the policy turns it into the reply.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from livekit.agents import llm
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, APIConnectOptions, NotGivenOr

from voicehive.api.models import HotelLineSpec

from .policy import Decision, HotelPolicy, Turn


def conversation_from(chat_ctx: llm.ChatContext) -> list[Turn]:
    """The chat context as the policy's turns (system prompts and handoffs are ignored)."""
    turns: list[Turn] = []
    for item in chat_ctx.items:
        if item.type == "message":
            if item.role in ("user", "assistant"):
                turns.append(Turn(item.role, item.text_content or ""))
        elif item.type == "function_call":
            try:
                arguments = json.loads(item.arguments or "{}")
            except json.JSONDecodeError:
                arguments = {}
            turns.append(Turn("tool_call", "", tool=item.name, arguments=arguments if isinstance(arguments, dict) else {}))
        elif item.type == "function_call_output":
            turns.append(Turn("tool_output", item.output, tool=item.name, is_error=item.is_error))
    return turns


def tool_names(tools: list[Any]) -> frozenset[str]:
    names: set[str] = set()
    for tool in tools:
        info = getattr(tool, "info", None)
        name = getattr(info, "name", None) or getattr(tool, "id", None)
        if isinstance(name, str):
            names.add(name)
    return frozenset(names)


class HotelPolicyLLM(llm.LLM[Any]):
    """``HotelPolicyLLM(spec)``; ``last_decision`` is the most recent decision (intent, language)."""

    reads_tool_names_only = True  # the policy picks tools by name: no schemas needed (tool_schemas.py)

    def __init__(self, spec: HotelLineSpec, *, policy: HotelPolicy | None = None) -> None:
        super().__init__()
        self.policy = policy or HotelPolicy(spec)
        self.last_decision: Decision | None = None
        self.decisions: list[Decision] = []

    @property
    def model(self) -> str:
        return "voicehive-hotel-policy"

    @property
    def provider(self) -> str:
        return "voicehive-local"

    def chat(
        self,
        *,
        chat_ctx: llm.ChatContext,
        tools: list[Any] | None = None,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
        parallel_tool_calls: NotGivenOr[bool] = NOT_GIVEN,
        tool_choice: NotGivenOr[Any] = NOT_GIVEN,
        extra_kwargs: NotGivenOr[dict[str, Any]] = NOT_GIVEN,
    ) -> PolicyStream:
        return PolicyStream(self, chat_ctx=chat_ctx, tools=tools or [], conn_options=conn_options)

    def prewarm(self, *, loop: Any = None) -> None:
        """One decision at start-up (~0.2 s cold: patterns, number words), not in the first fallback turn."""
        self.policy.decide([Turn("user", "What time is check in? Vorrei una camera per due notti.")])

    def decide(self, chat_ctx: llm.ChatContext, tools: list[Any]) -> Decision:
        decision = self.policy.decide(conversation_from(chat_ctx), tool_names(tools))
        self.last_decision = decision
        self.decisions.append(decision)
        return decision


class PolicyStream(llm.LLMStream):
    def __init__(
        self, policy_llm: HotelPolicyLLM, *, chat_ctx: llm.ChatContext, tools: list[Any], conn_options: APIConnectOptions
    ) -> None:
        super().__init__(policy_llm, chat_ctx=chat_ctx, tools=tools, conn_options=conn_options)
        self._policy_llm = policy_llm

    async def _run(self) -> None:
        started = time.perf_counter()
        decision = self._policy_llm.decide(self._chat_ctx, self._tools)
        request_id = uuid.uuid4().hex
        words = decision.text.split(" ") if decision.text else []
        for index, word in enumerate(words):
            self._event_ch.send_nowait(
                llm.ChatChunk(
                    id=request_id,
                    delta=llm.ChoiceDelta(role="assistant", content=word if index == 0 else " " + word),
                )
            )
        if decision.tool is not None:
            self._event_ch.send_nowait(
                llm.ChatChunk(
                    id=request_id,
                    delta=llm.ChoiceDelta(
                        role="assistant",
                        tool_calls=[
                            llm.FunctionToolCall(
                                name=decision.tool.name,
                                arguments=json.dumps(decision.tool.arguments),
                                call_id=f"call_{uuid.uuid4().hex[:12]}",
                            )
                        ],
                    ),
                )
            )
        self._event_ch.send_nowait(
            llm.ChatChunk(
                id=request_id,
                usage=llm.CompletionUsage(
                    completion_tokens=len(words) + (1 if decision.tool else 0),
                    prompt_tokens=len(self._chat_ctx.items),
                    total_tokens=len(words) + len(self._chat_ctx.items),
                ),
            )
        )
        del started
