"""The agent's tool schemas, built once per call: what the LLM gets equals a fresh build.

Correctness only (no timing: bench/pipeline.py measures the latency). The schemas are compared
through the framework's own formatter, so a stand-in is judged by what would go on the wire.
"""

from __future__ import annotations

from typing import Any

import pytest
from livekit.agents import RunContext, function_tool
from livekit.agents import llm as lk_llm
from livekit.plugins import openai

from tests.worker.callrig import line_spec
from voicehive_worker.agent import HotelAgent, LocalCallActions
from voicehive_worker.pms import FactsPms, Guest, Offer, Reservation, StayRequest
from voicehive_worker.session import with_policy_fallback
from voicehive_worker.tool_schemas import ToolSchemaCache, tool_schema_format


class _BookingFacts(FactsPms):
    """A PMS that can book, so the agent offers ``book_stay`` too (never called: schemas only)."""

    supports_hold = True

    async def book(self, request: StayRequest, guest: Guest, offer: Offer, *, hold: bool) -> Reservation:
        raise NotImplementedError


def _agent(*, booking: bool = False, language: str | None = None) -> HotelAgent:
    spec = line_spec()  # languages en, de
    pms = _BookingFacts(spec.facts) if booking else None
    return HotelAgent(spec, LocalCallActions(), pms=pms, language=language, greet=False)


def _tools(agent: HotelAgent) -> list[lk_llm.Tool]:
    return lk_llm.ToolContext(agent.tools).flatten()


def _wire(tools: list[lk_llm.Tool], *, strict: bool) -> list[dict[str, Any]]:
    """What the openai plugin sends as ``tools`` (livekit-agents' own formatter)."""
    return lk_llm.ToolContext(tools).parse_function_tools("openai", strict=strict)


def _azure(strict: bool = True) -> openai.LLM:
    model = openai.LLM.with_azure(
        model="d", azure_endpoint="http://127.0.0.1:9", azure_deployment="d", api_version="2024-10-21", api_key="k",
    )
    model._strict_tool_schema = strict  # the plugin's own switch (with_azure leaves it strict)
    return model


@pytest.mark.parametrize("booking", [False, True])
@pytest.mark.parametrize("strict", [True, False])
def test_cached_schemas_equal_a_fresh_build(booking: bool, strict: bool) -> None:
    agent = _agent(booking=booking)
    tools = _tools(agent)
    names = {t.info.name for t in tools if isinstance(t, lk_llm.FunctionTool)}
    assert ("book_stay" in names) is booking and {"answer_question", "take_message", "end_call"} <= names
    cache = ToolSchemaCache()
    described = cache.describe(tools, "strict" if strict else "legacy")
    assert described is not tools and all(isinstance(t, lk_llm.RawFunctionTool) for t in described)
    assert _wire(described, strict=strict) == _wire(tools, strict=strict)
    assert cache.builds == len(tools)


def test_built_once_per_tool_and_rebuilt_for_a_new_tool() -> None:
    agent = _agent()
    tools = _tools(agent)
    cache = ToolSchemaCache()
    first = cache.describe(tools, "strict")
    again = cache.describe(list(tools), "strict")
    assert cache.builds == len(tools) and all(a is b for a, b in zip(first, again, strict=True))

    @function_tool
    async def late_checkout(context: RunContext[Any], day: str, hour: int = 12) -> str:
        """Ask for a late check-out.

        Args:
            day: Departure day as YYYY-MM-DD.
            hour: Hour the caller wants to leave.
        """
        return "noted"

    changed = [*tools[1:], late_checkout]  # one tool gone, one new: only the new one is built
    described = cache.describe(changed, "strict")
    assert cache.builds == len(tools) + 1
    assert _wire(described, strict=True) == _wire(changed, strict=True)
    # legacy schemas for the same tools are their own entries, never the strict ones
    assert _wire(cache.describe(changed, "legacy"), strict=False) == _wire(changed, strict=False)


def test_schemas_do_not_depend_on_the_call_language() -> None:
    """Kept across a language switch: the tools' schemas are the same in every language."""
    english, german = _agent(), _agent(language="de")
    assert german.language == "de" and english.language == "en"
    cache = ToolSchemaCache()
    assert _wire(cache.describe(_tools(english), "strict"), strict=True) == _wire(_tools(german), strict=True)


def test_schema_format_of_the_worker_llms() -> None:
    spec = line_spec()
    assert tool_schema_format(_azure()) == "strict"
    assert tool_schema_format(_azure(strict=False)) == "legacy"
    assert tool_schema_format(with_policy_fallback(spec, _azure())) == "strict"  # the worker's LLM
    policy_only = lk_llm.FallbackAdapter([with_policy_fallback(spec, _azure())._llm_instances[1]])
    assert tool_schema_format(policy_only) == "names"
    assert tool_schema_format(object()) is None


def test_unknown_format_and_names_only_pass_the_tools_through() -> None:
    tools = _tools(_agent())
    cache = ToolSchemaCache()
    for fmt in (None, "names"):
        passed = cache.describe(tools, fmt)  # type: ignore[arg-type]
        assert passed == tools and passed is not tools
    assert cache.builds == 0


async def test_a_stand_in_never_runs_a_tool() -> None:
    (stand_in,) = ToolSchemaCache().describe([t for t in _tools(_agent()) if t.id == "end_call"], "strict")
    assert isinstance(stand_in, lk_llm.RawFunctionTool)
    with pytest.raises(RuntimeError, match="end_call: a schema stand-in was called"):
        await stand_in(raw_arguments={})
