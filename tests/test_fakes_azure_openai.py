"""The Azure OpenAI fake, driven by the real openai SDK and livekit-plugins-openai over a socket."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest
from livekit.agents import llm as lk_llm
from livekit.plugins import openai as lk_openai

from tests.fakes.azure_openai import AzureOpenAIFake, Reply, ScriptedResponder, ToolCall

API_VERSION = "2024-10-21"

CHECK_TOOL = {
    "type": "function",
    "function": {
        "name": "check_availability",
        "description": "Check room availability",
        "parameters": {"type": "object", "properties": {"date": {"type": "string"}}, "required": ["date"]},
    },
}


def _client(fake: AzureOpenAIFake, key: str | None = None, **kw: object) -> openai.AsyncAzureOpenAI:
    return openai.AsyncAzureOpenAI(
        azure_endpoint=fake.endpoint,
        azure_deployment=fake.deployment,
        api_version=API_VERSION,
        api_key=key or fake.api_key,
        max_retries=0,
        **kw,  # type: ignore[arg-type]
    )


async def test_streaming_text_timing_and_usage(azure_fake: AzureOpenAIFake) -> None:
    azure_fake.responder.push("Welcome to the Grand Hotel, how can I help?")  # type: ignore[attr-defined]
    client = _client(azure_fake)
    t0 = time.monotonic()
    stream = await client.chat.completions.create(
        model=azure_fake.deployment,
        messages=[{"role": "user", "content": "hello"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, first_at, usage = "", None, None
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            first_at = first_at or time.monotonic()
            text += chunk.choices[0].delta.content
        if chunk.usage:
            usage = chunk.usage
    assert text == "Welcome to the Grand Hotel, how can I help?"
    assert first_at is not None and 0.19 <= first_at - t0 < 1.0  # ttft 200 ms (generous: loaded CI)
    assert usage is not None and usage.completion_tokens == 9
    rec = azure_fake.requests[0]
    assert rec.deployment == azure_fake.deployment and rec.api_version == API_VERSION
    assert rec.headers["api-key"] == "<redacted>"
    assert rec.first_token_at is not None and 0.2 <= rec.first_token_at - rec.received_at < 0.5
    await client.close()


async def test_streaming_tool_call_then_tool_result(azure_fake: AzureOpenAIFake) -> None:
    azure_fake.responder.push(ToolCall("check_availability", {"date": "2026-12-24", "room": "double"}))  # type: ignore[attr-defined]
    client = _client(azure_fake)
    messages: list[dict[str, object]] = [{"role": "user", "content": "a double on christmas eve?"}]
    stream = await client.chat.completions.create(
        model=azure_fake.deployment,
        messages=messages,
        tools=[CHECK_TOOL],
        stream=True,  # type: ignore[list-item]
    )
    calls: dict[int, dict[str, str]] = {}
    finish = None
    arg_chunks = 0
    async for chunk in stream:
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for tc in choice.delta.tool_calls or []:
                slot = calls.setdefault(tc.index, {"id": "", "name": "", "args": ""})
                slot["id"] = tc.id or slot["id"]
                if tc.function and tc.function.name:
                    slot["name"] = tc.function.name
                if tc.function and tc.function.arguments:
                    slot["args"] += tc.function.arguments
                    arg_chunks += 1
    assert finish == "tool_calls" and arg_chunks > 1
    assert calls[0]["name"] == "check_availability"
    assert json.loads(calls[0]["args"]) == {"date": "2026-12-24", "room": "double"}

    # the default responder speaks a tool's result back
    messages += [
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": calls[0]["id"],
                    "type": "function",
                    "function": {"name": "check_availability", "arguments": calls[0]["args"]},
                }
            ],
        },
        {"role": "tool", "tool_call_id": calls[0]["id"], "content": "A double room is free at 140 EUR."},
    ]
    done = await client.chat.completions.create(model=azure_fake.deployment, messages=messages)  # type: ignore[arg-type]
    assert done.choices[0].message.content == "A double room is free at 140 EUR."
    await client.close()


async def test_non_streaming_tool_call_and_rules() -> None:
    responder = ScriptedResponder(rules=[(r"\bbreakfast\b", "Breakfast is served from 7 to 10.")])
    async with AzureOpenAIFake(responder, deployments={"hotel-gpt": "gpt-4o-mini"}, ttft=0.01) as fake:
        client = _client(fake)
        for _ in range(2):  # rules are not consumed
            r = await client.chat.completions.create(
                model="hotel-gpt", messages=[{"role": "user", "content": "When is breakfast?"}]
            )
            assert r.choices[0].message.content == "Breakfast is served from 7 to 10."
        responder.push(
            Reply(text="Let me check.", tool_calls=[ToolCall("check_availability", '{"date":"x"}')])
        )
        r = await client.chat.completions.create(
            model="hotel-gpt", messages=[{"role": "user", "content": "rooms?"}], tools=[CHECK_TOOL]
        )  # type: ignore[list-item]
        assert r.choices[0].finish_reason == "tool_calls"
        assert r.choices[0].message.tool_calls[0].function.name == "check_availability"  # type: ignore[index,union-attr]
        assert r.usage is not None and r.usage.total_tokens > 0
        await client.close()


async def test_wrong_key_unknown_deployment_and_models(azure_fake: AzureOpenAIFake) -> None:
    bad = _client(azure_fake, key="not-the-key")
    with pytest.raises(openai.AuthenticationError) as auth:
        await bad.chat.completions.create(
            model=azure_fake.deployment, messages=[{"role": "user", "content": "x"}]
        )
    assert auth.value.status_code == 401
    await bad.close()

    client = openai.AsyncAzureOpenAI(
        azure_endpoint=azure_fake.endpoint,
        azure_deployment="nope",
        api_version=API_VERSION,
        api_key=azure_fake.api_key,
        max_retries=0,
    )
    with pytest.raises(openai.NotFoundError) as nf:
        await client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert nf.value.body["code"] == "DeploymentNotFound"  # type: ignore[index]
    models = await client.models.list()  # what the livekit plugin's prewarm calls
    assert [m.id for m in models.data] == ["gpt-4o-2024-11-20"]
    await client.close()


async def test_faults_500_hang_drop(azure_fake: AzureOpenAIFake) -> None:
    client = _client(azure_fake, timeout=httpx.Timeout(0.5))
    msgs = [{"role": "user", "content": "hi"}]
    azure_fake.fail_next(500)
    with pytest.raises(openai.InternalServerError):
        await client.chat.completions.create(model=azure_fake.deployment, messages=msgs)  # type: ignore[arg-type]

    azure_fake.hang_next(1.0)
    with pytest.raises(openai.APITimeoutError):
        await client.chat.completions.create(model=azure_fake.deployment, messages=msgs, stream=True)  # type: ignore[arg-type]

    azure_fake.responder.push("one two three four five six")  # type: ignore[attr-defined]
    azure_fake.drop_next(after_tokens=2)
    got = ""
    with pytest.raises((httpx.HTTPError, openai.APIError)):
        stream = await client.chat.completions.create(model=azure_fake.deployment, messages=msgs, stream=True)  # type: ignore[arg-type]
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                got += chunk.choices[0].delta.content
    assert got == "one two"
    assert [r.fault for r in azure_fake.requests] == ["status", "hang", "drop"]
    await client.close()


async def test_livekit_plugin_with_azure_tool_call(azure_fake: AzureOpenAIFake) -> None:
    azure_fake.responder.push(ToolCall("check_availability", {"date": "friday"}))  # type: ignore[attr-defined]
    model = lk_openai.LLM.with_azure(
        model="gpt-4o",
        azure_endpoint=azure_fake.endpoint,
        azure_deployment=azure_fake.deployment,
        api_version=API_VERSION,
        api_key=azure_fake.api_key,
    )

    @lk_llm.function_tool
    async def check_availability(date: str) -> str:
        """Check room availability on a date."""
        return "free"

    await model._prewarm_impl()  # GET /openai/models, as at session start
    assert azure_fake.model_list_requests == 1
    ctx = lk_llm.ChatContext()
    ctx.add_message(role="user", content="anything free on friday?")
    calls = []
    async with model.chat(chat_ctx=ctx, tools=[check_availability]) as stream:
        async for chunk in stream:
            if chunk.delta and chunk.delta.tool_calls:
                calls.extend(chunk.delta.tool_calls)
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("check_availability", {"date": "friday"})]
    body = azure_fake.requests[0].body
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["tools"][0]["function"]["name"] == "check_availability"
    assert azure_fake.requests[0].warnings == []
    await model.aclose()


async def test_one_token_probe_reports_region_and_length(azure_fake: AzureOpenAIFake) -> None:
    """What a provider check sends: a 1-token call; Azure answers with its region header."""
    azure_fake.responder.push("Hello there, how are you?")  # type: ignore[attr-defined]
    client = openai.AsyncAzureOpenAI(
        azure_endpoint=azure_fake.endpoint, api_version=API_VERSION, api_key=azure_fake.api_key, max_retries=0
    )
    raw = await client.chat.completions.with_raw_response.create(
        model=azure_fake.deployment, messages=[{"role": "user", "content": "ping"}], max_tokens=1
    )
    assert raw.headers["x-ms-region"] == "Sweden Central"
    done = raw.parse()
    assert done.choices[0].finish_reason == "length" and done.choices[0].message.content == "Hello"
    await client.close()


async def test_bad_scripted_tool_call_is_flagged(azure_fake: AzureOpenAIFake) -> None:
    azure_fake.responder.push(ToolCall("book_room", "{not json"))  # type: ignore[attr-defined]
    client = _client(azure_fake)
    r = await client.chat.completions.create(
        model=azure_fake.deployment,
        tools=[CHECK_TOOL],  # type: ignore[list-item]
        messages=[{"role": "user", "content": "book"}],
    )
    assert r.choices[0].finish_reason == "tool_calls"
    assert azure_fake.requests[0].warnings == [
        "tool 'book_room' was not offered in the request",
        "arguments of tool 'book_room' are not valid JSON",
    ]
    await client.close()
