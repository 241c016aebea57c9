"""A loopback Azure OpenAI data-plane server (chat completions, SSE streaming, tool calls).

Speaks what ``openai.AsyncAzureOpenAI`` and ``livekit.plugins.openai.LLM.with_azure`` send:
``POST /openai/deployments/{deployment}/chat/completions?api-version=...`` with an
``api-key`` header, streaming ``chat.completion.chunk`` SSE frames (Azure's leading
``prompt_filter_results`` frame, text deltas, ``tool_calls`` deltas whose arguments are
split over chunks, a final usage chunk when ``stream_options.include_usage``, ``[DONE]``)
or a plain ``chat.completion`` body; ``GET /openai/models`` (the plugin's prewarm) and the
legacy ``GET /openai/deployments[/{deployment}]``. Errors use Azure's JSON shape.

WHAT the model answers comes from a pluggable responder ``fn(messages, tools) -> Reply | str``
(sync or async). Timing is fixed: the first token leaves ``ttft`` seconds after the request
arrived, then one token every ``token_interval`` seconds (``time.monotonic``).
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import json
import re
import secrets
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes._http import AiohttpFake

JSON = dict[str, Any]


@dataclass
class ToolCall:
    """A function call the fake model makes. ``arguments`` may be a dict (JSON-encoded)."""

    name: str
    arguments: str | Mapping[str, Any] = "{}"
    id: str = field(default_factory=lambda: "call_" + secrets.token_hex(12))

    @property
    def arguments_json(self) -> str:
        return self.arguments if isinstance(self.arguments, str) else json.dumps(self.arguments)


@dataclass
class Reply:
    """One assistant turn: text, tool calls, or both (text first, as models do)."""

    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)


ResponderResult = Reply | str | ToolCall | Sequence[ToolCall]
Responder = Callable[[list[JSON], list[JSON]], ResponderResult | Awaitable[ResponderResult]]


def as_reply(value: ResponderResult) -> Reply:
    if isinstance(value, Reply):
        return value
    if isinstance(value, str):
        return Reply(text=value)
    if isinstance(value, ToolCall):
        return Reply(tool_calls=[value])
    return Reply(tool_calls=list(value))


def last_message(messages: Sequence[JSON], role: str | None = None) -> JSON | None:
    for m in reversed(messages):
        if role is None or m.get("role") == role:
            return m
    return None


def message_text(message: JSON | None) -> str:
    """Text of a chat message whose content is a string or a list of content parts."""
    if not message:
        return ""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def tool_name_for_result(messages: Sequence[JSON], tool_call_id: str) -> str:
    for m in messages:
        for tc in m.get("tool_calls") or ():
            if tc.get("id") == tool_call_id:
                return str(tc.get("function", {}).get("name", ""))
    return ""


class ScriptedResponder:
    """Deterministic replies for dialogue tests.

    - When the last message is a tool result and ``tool_result_reply`` is set, the reply is
      that template formatted with ``result`` (the tool output) and ``name`` (the tool):
      the default speaks the tool's result verbatim, so a test can assert the caller hears
      what the tool returned.
    - Otherwise the next scripted item is consumed (a ``Reply``, text, or tool call(s)).
    - ``rules`` (regex on the last user message -> reply) are tried before the script;
      they are not consumed, which suits multi-turn flows in any order.
    - With nothing left, ``fallback`` is spoken (and counted in ``unscripted``).
    """

    def __init__(
        self,
        script: Iterable[ResponderResult] = (),
        *,
        rules: Sequence[tuple[str, ResponderResult]] = (),
        tool_result_reply: str | None = "{result}",
        fallback: str = "Sorry, could you say that again?",
    ) -> None:
        self.script: deque[ResponderResult] = deque(script)
        self.rules = [(re.compile(p, re.IGNORECASE), r) for p, r in rules]
        self.tool_result_reply = tool_result_reply
        self.fallback = fallback
        self.unscripted = 0
        self.replies: list[Reply] = []

    def push(self, *items: ResponderResult) -> None:
        self.script.extend(items)

    def __call__(self, messages: list[JSON], tools: list[JSON]) -> Reply:
        reply = self._choose(messages)
        self.replies.append(reply)
        return reply

    def _choose(self, messages: list[JSON]) -> Reply:
        last = last_message(messages)
        if last is not None and last.get("role") == "tool" and self.tool_result_reply is not None:
            name = tool_name_for_result(messages, str(last.get("tool_call_id", "")))
            return Reply(text=self.tool_result_reply.format(result=message_text(last), name=name))
        user_text = message_text(last_message(messages, "user"))
        for pattern, reply in self.rules:
            if pattern.search(user_text):
                return _fresh_ids(as_reply(reply))
        if self.script:
            return _fresh_ids(as_reply(self.script.popleft()))
        self.unscripted += 1
        return Reply(text=self.fallback)


def _fresh_ids(reply: Reply) -> Reply:
    """Rules may fire many times: give each tool call of each reply its own id."""
    return Reply(
        text=reply.text,
        tool_calls=[ToolCall(tc.name, tc.arguments) for tc in reply.tool_calls],
    )


# ---------------------------------------------------------------------------------------
# Records and faults
# ---------------------------------------------------------------------------------------


@dataclass
class RecordedChatRequest:
    deployment: str
    api_version: str
    body: JSON
    headers: dict[str, str]  # the api-key header is replaced by "<redacted>"
    received_at: float
    status: int = 200
    reply: Reply | None = None
    first_token_at: float | None = None
    done_at: float | None = None
    fault: str | None = None
    finish_reason: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def messages(self) -> list[JSON]:
        return list(self.body.get("messages") or [])

    @property
    def tools(self) -> list[JSON]:
        return list(self.body.get("tools") or [])

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream"))


@dataclass
class _Fault:
    kind: str  # status | hang | drop
    status: int = 500
    seconds: float = 0.0
    after_tokens: int = 0
    code: str = "InternalServerError"
    message: str = "The server had an error while processing your request."


def _azure_error(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.json_response(
        {"error": {"code": code, "message": message}}, status=status, headers=dict(headers or {})
    )


TOKEN_RE = re.compile(r"\s*\S+|\s+$")


def tokenize(text: str) -> list[str]:
    """Word-sized tokens with their leading whitespace (joined they give the text back)."""
    return TOKEN_RE.findall(text)


class AzureOpenAIFake(AiohttpFake):
    """Azure OpenAI on 127.0.0.1. ``async with AzureOpenAIFake(api_key=...) as az:``.

    Use ``az.endpoint`` as ``azure_endpoint`` (``AZURE_OPENAI_ENDPOINT``), a key of
    ``deployments`` as ``azure_deployment``, ``az.api_key`` as key. Records: ``requests``
    (chat), ``model_list_requests``, ``auth_failures``.
    """

    def __init__(
        self,
        responder: Responder | Iterable[ResponderResult] | None = None,
        *,
        api_key: str | None = None,
        deployments: Mapping[str, str] | None = None,
        ttft: float = 0.200,
        token_interval: float = 0.002,
        azure_filter_frames: bool = True,
        region: str | None = "Sweden Central",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(port=port, ssl_context=ssl_context)
        if responder is None:
            responder = ScriptedResponder()
        elif not callable(responder):
            responder = ScriptedResponder(responder)
        self.responder: Responder = responder
        self.api_key = api_key if api_key is not None else secrets.token_urlsafe(24)
        self.deployments: dict[str, str] = dict(deployments or {"gpt-4o": "gpt-4o-2024-11-20"})
        self.ttft = ttft
        self.token_interval = token_interval
        self.azure_filter_frames = azure_filter_frames
        self.region = region
        self.requests: list[RecordedChatRequest] = []
        self.model_list_requests = 0
        self.auth_failures = 0
        self._faults: deque[_Fault] = deque()
        self._ids = itertools.count(1)

    @property
    def endpoint(self) -> str:
        """The resource endpoint, as ``azure_endpoint``/``AZURE_OPENAI_ENDPOINT`` takes it."""
        return self.url

    @property
    def deployment(self) -> str:
        """The first configured deployment name (handy default)."""
        return next(iter(self.deployments))

    # -- faults -----------------------------------------------------------------------

    def fail_next(
        self, status: int = 500, *, count: int = 1, code: str | None = None, message: str | None = None
    ) -> None:
        """The next ``count`` chat requests get an HTTP error in Azure's JSON shape."""
        default_codes = {429: "429", 500: "InternalServerError", 503: "ServiceUnavailable"}
        for _ in range(count):
            self._faults.append(
                _Fault(
                    "status",
                    status=status,
                    code=code or default_codes.get(status, str(status)),
                    message=message or _Fault.message,
                )
            )

    def hang_next(self, seconds: float, *, count: int = 1) -> None:
        """The next ``count`` chat requests get no byte at all for ``seconds``, then a normal answer."""
        for _ in range(count):
            self._faults.append(_Fault("hang", seconds=seconds))

    def drop_next(self, *, after_tokens: int = 2, count: int = 1) -> None:
        """The next ``count`` streams are cut (TCP abort) after ``after_tokens`` content tokens."""
        for _ in range(count):
            self._faults.append(_Fault("drop", after_tokens=after_tokens))

    def clear_faults(self) -> None:
        self._faults.clear()

    # -- app --------------------------------------------------------------------------

    def build_app(self) -> web.Application:
        app = web.Application()
        app.on_response_prepare.append(self._azure_headers)
        app.router.add_post("/openai/deployments/{deployment}/chat/completions", self._chat)
        app.router.add_get("/openai/models", self._models)
        app.router.add_get("/openai/deployments", self._list_deployments)
        app.router.add_get("/openai/deployments/{deployment}", self._get_deployment)
        return app

    async def _azure_headers(self, request: web.Request, response: web.StreamResponse) -> None:
        """Headers Azure puts on every answer; x-ms-region tells where the deployment runs."""
        if self.region:
            response.headers["x-ms-region"] = self.region
        response.headers.setdefault("apim-request-id", secrets.token_hex(16))
        response.headers.setdefault("x-request-id", secrets.token_hex(16))

    def _auth(self, request: web.Request) -> web.Response | None:
        if "api-version" not in request.query:
            return _azure_error(
                400,
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
            )
        key = request.headers.get("api-key")
        bearer = request.headers.get("Authorization", "")
        if key != self.api_key and bearer != f"Bearer {self.api_key}":
            self.auth_failures += 1
            return _azure_error(
                401,
                "401",
                "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a "
                "valid key for an active subscription and use a correct regional API endpoint for your resource.",
            )
        return None

    def _deployment_json(self, name: str) -> JSON:
        return {
            "id": name,
            "model": self.deployments[name],
            "owner": "organization-owner",
            "object": "deployment",
            "status": "succeeded",
            "scale_settings": {"scale_type": "standard"},
            "created_at": 1700000000,
            "updated_at": 1700000000,
        }

    async def _models(self, request: web.Request) -> web.StreamResponse:
        if (denied := self._auth(request)) is not None:
            return denied
        self.model_list_requests += 1
        data = [
            {
                "id": m,
                "object": "model",
                "created": 1700000000,
                "owned_by": "system",
                "status": "succeeded",
                "lifecycle_status": "generally-available",
                "capabilities": {"chat_completion": True, "completion": False, "embeddings": False},
            }
            for m in sorted(set(self.deployments.values()))
        ]
        return web.json_response({"object": "list", "data": data})

    async def _list_deployments(self, request: web.Request) -> web.StreamResponse:
        if (denied := self._auth(request)) is not None:
            return denied
        return web.json_response(
            {"object": "list", "data": [self._deployment_json(d) for d in self.deployments]}
        )

    async def _get_deployment(self, request: web.Request) -> web.StreamResponse:
        if (denied := self._auth(request)) is not None:
            return denied
        name = request.match_info["deployment"]
        if name not in self.deployments:
            return _not_found()
        return web.json_response(self._deployment_json(name))

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        received = time.monotonic()
        if (denied := self._auth(request)) is not None:
            return denied
        deployment = request.match_info["deployment"]
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _azure_error(400, "BadRequest", "The request body is not valid JSON.")
        headers = {
            k: ("<redacted>" if k.lower() in ("api-key", "authorization") else v)
            for k, v in request.headers.items()
        }
        rec = RecordedChatRequest(deployment, request.query.get("api-version", ""), body, headers, received)
        self.requests.append(rec)
        if deployment not in self.deployments:
            rec.status = 404
            return _not_found()
        if not isinstance(body.get("messages"), list) or not body["messages"]:
            rec.status = 400
            return _azure_error(400, "BadRequest", "'messages' is a required property")
        fault = self._faults.popleft() if self._faults else None
        if fault is not None:
            rec.fault = fault.kind
            if fault.kind == "status":
                rec.status = fault.status
                extra = {"Retry-After": "1"} if fault.status == 429 else {}
                return _azure_error(fault.status, fault.code, fault.message, extra)
            if fault.kind == "hang":
                await asyncio.sleep(fault.seconds)

        result = self.responder(rec.messages, rec.tools)
        if inspect.isawaitable(result):
            result = await result
        reply, rec.finish_reason = _limit(
            as_reply(result), rec.body.get("max_completion_tokens") or rec.body.get("max_tokens")
        )
        rec.reply = reply
        known = {t.get("function", {}).get("name") for t in rec.tools}
        for tc in reply.tool_calls:
            if tc.name not in known:
                rec.warnings.append(f"tool {tc.name!r} was not offered in the request")
            try:
                json.loads(tc.arguments_json)
            except json.JSONDecodeError:
                rec.warnings.append(f"arguments of tool {tc.name!r} are not valid JSON")
        model = self.deployments[deployment]
        if rec.stream:
            return await self._stream(request, rec, reply, model, fault)
        return await self._complete(rec, reply, model)

    def _usage(self, rec: RecordedChatRequest, reply: Reply) -> JSON:
        prompt = max(1, len(json.dumps(rec.messages)) // 4)
        completion = len(tokenize(reply.text)) + sum(
            1 + len(tc.arguments_json) // 4 for tc in reply.tool_calls
        )
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
        }

    async def _sleep_until(self, when: float) -> None:
        delay = when - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)

    async def _complete(self, rec: RecordedChatRequest, reply: Reply, model: str) -> web.Response:
        n = len(tokenize(reply.text)) + len(reply.tool_calls)
        await self._sleep_until(rec.received_at + self.ttft + self.token_interval * max(0, n - 1))
        rec.first_token_at = rec.done_at = time.monotonic()
        message: JSON = {"role": "assistant", "content": reply.text or None, "refusal": None}
        if reply.tool_calls:
            message["tool_calls"] = [
                {
                    "id": tc.id,
                    "type": "function",
                    "function": {"name": tc.name, "arguments": tc.arguments_json},
                }
                for tc in reply.tool_calls
            ]
        return web.json_response(
            {
                "id": f"chatcmpl-{secrets.token_hex(12)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "system_fingerprint": "fp_fake",
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "logprobs": None,
                        "finish_reason": rec.finish_reason,
                        "content_filter_results": {},
                    }
                ],
                "usage": self._usage(rec, reply),
                "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}],
            }
        )

    async def _stream(
        self, request: web.Request, rec: RecordedChatRequest, reply: Reply, model: str, fault: _Fault | None
    ) -> web.StreamResponse:
        chunk_id = f"chatcmpl-{secrets.token_hex(12)}"
        created = int(time.time())
        include_usage = bool((rec.body.get("stream_options") or {}).get("include_usage"))

        def frame(delta: JSON | None, finish: str | None = None, *, usage: JSON | None = None) -> bytes:
            obj: JSON = {
                "id": chunk_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_fake",
                "choices": [],
            }
            if delta is not None:
                obj["choices"] = [
                    {
                        "index": 0,
                        "delta": delta,
                        "finish_reason": finish,
                        "logprobs": None,
                        "content_filter_results": {},
                    }
                ]
            if usage is not None:
                obj["usage"] = usage
            return b"data: " + json.dumps(obj).encode() + b"\n\n"

        # Everything after the first token is paced from the moment it is due, so the
        # pace holds even if the event loop is briefly busy.
        pieces: list[bytes] = [frame({"role": "assistant", "content": "", "refusal": None})]
        for tok in tokenize(reply.text):
            pieces.append(frame({"content": tok}))
        for i, tc in enumerate(reply.tool_calls):
            pieces.append(
                frame(
                    {
                        "tool_calls": [
                            {
                                "index": i,
                                "id": tc.id,
                                "type": "function",
                                "function": {"name": tc.name, "arguments": ""},
                            }
                        ]
                    }
                )
            )
            args = tc.arguments_json
            for j in range(0, len(args), 8):  # arguments arrive split over chunks
                pieces.append(
                    frame({"tool_calls": [{"index": i, "function": {"arguments": args[j : j + 8]}}]})
                )
        pieces.append(frame({}, rec.finish_reason))

        await self._sleep_until(rec.received_at + self.ttft)
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
                "apim-request-id": secrets.token_hex(8),
            }
        )
        await resp.prepare(request)
        first_due = time.monotonic()
        if self.azure_filter_frames:
            filt = {
                "id": "",
                "object": "",
                "created": 0,
                "model": "",
                "choices": [],
                "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}],
            }
            await resp.write(b"data: " + json.dumps(filt).encode() + b"\n\n")
        await resp.write(pieces[0])
        rec.first_token_at = time.monotonic()
        for n, piece in enumerate(pieces[1:], start=1):
            if fault is not None and fault.kind == "drop" and n > fault.after_tokens:
                rec.status = -1
                if request.transport is not None:
                    request.transport.abort()
                return resp
            await self._sleep_until(first_due + self.token_interval * (n - 1))
            await resp.write(piece)
        if include_usage:
            await resp.write(frame(None, usage=self._usage(rec, reply)))
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        rec.done_at = time.monotonic()
        return resp


def _limit(reply: Reply, max_tokens: object) -> tuple[Reply, str]:
    """Honours max_tokens / max_completion_tokens like the service: cut the text, finish 'length'."""
    finish = "tool_calls" if reply.tool_calls else "stop"
    if not isinstance(max_tokens, int) or max_tokens <= 0:
        return reply, finish
    tokens = tokenize(reply.text)
    if len(tokens) > max_tokens or (reply.tool_calls and len(tokens) >= max_tokens):
        return Reply(text="".join(tokens[:max_tokens])), "length"
    return reply, finish


def _not_found() -> web.Response:
    return _azure_error(
        404,
        "DeploymentNotFound",
        "The API deployment for this resource does not exist. If you created the deployment within the last "
        "5 minutes, please wait a moment and try again.",
    )
