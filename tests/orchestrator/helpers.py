"""Helpers for orchestrator tests: keys, a uvicorn server on a loopback port, LiveKit signing."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI
from livekit import api as lkapi

from voicehive.privacy import generate_key_b64

AGENT_TOKEN = "test-agent-token-0123456789abcdef"
ADMIN_TOKEN = "test-admin-token-0123456789abcdef"
LIVEKIT_KEY = "APItestkey"
LIVEKIT_SECRET = "test-livekit-secret-0123456789abcdefghijkl"


def orchestrator_env(redis_url: str, **extra: str) -> dict[str, str]:
    """A complete orchestrator environment with keys generated now (never committed)."""
    env = {
        "VOICEHIVE_PII_KEY": generate_key_b64(),
        "VOICEHIVE_TRANSCRIPT_KEY": generate_key_b64(),
        "VOICEHIVE_AGENT_TOKEN": AGENT_TOKEN,
        "VOICEHIVE_ADMIN_TOKEN": ADMIN_TOKEN,
        "VOICEHIVE_API_DOCS": "1",  # the fuzzing test reads /openapi.json
        # Bursts of thousands of events measure the service, not the limiter (test_credentials does).
        "VOICEHIVE_RATE_LIMIT_AGENT": "1000000/second",
        "LIVEKIT_API_KEY": LIVEKIT_KEY,
        "LIVEKIT_API_SECRET": LIVEKIT_SECRET,
        "VOICEHIVE_REDIS_URL": redis_url,
        "VOICEHIVE_SESSION_RETRY_SECONDS": "0.2",
    }
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class RunningServer:
    url: str
    app: FastAPI
    server: uvicorn.Server
    loop: asyncio.AbstractEventLoop

    def call(self, coro: Any, timeout: float = 30.0) -> Any:
        """Run a coroutine on the server's loop (to inspect app state from a sync test)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


@contextmanager
def run_app(app: FastAPI) -> Iterator[RunningServer]:
    """Serve ``app`` with uvicorn in a thread on 127.0.0.1; stop it afterwards."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False,
                            limit_concurrency=4096, backlog=4096)
    server = uvicorn.Server(config)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(server.serve(),), daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("orchestrator test server did not start")
        time.sleep(0.02)  # polling for start-up
    try:
        yield RunningServer(f"http://127.0.0.1:{port}", app, server, loop)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        if thread.is_alive():
            import sys
            for task in asyncio.all_tasks(loop):
                task.print_stack(file=sys.stderr)
            raise RuntimeError("orchestrator test server did not stop")
        loop.close()


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {AGENT_TOKEN}"}


def admin_auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def sign_livekit(body: str, key: str = LIVEKIT_KEY, secret: str = LIVEKIT_SECRET) -> str:
    """The ``Authorization`` value LiveKit puts on a webhook: HS256 JWT with the body's sha256."""
    digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
    return lkapi.AccessToken(key, secret).with_sha256(digest).to_jwt()


def livekit_event(
    event: str,
    room: str,
    *,
    event_id: str,
    identity: str | None = None,
    sip: bool = True,
    attributes: dict[str, str] | None = None,
) -> str:
    """A LiveKit WebhookEvent as JSON (protobuf JSON names, as LiveKit sends them)."""
    body: dict[str, Any] = {"event": event, "id": event_id, "createdAt": str(int(time.time())),
                            "room": {"sid": "RM_test", "name": room}}
    if identity is not None:
        body["participant"] = {
            "sid": f"PA_{hashlib.sha1(identity.encode()).hexdigest()[:10]}",  # noqa: S324 - test id only
            "identity": identity,
            "kind": "SIP" if sip else "STANDARD",
            "attributes": attributes or {},
        }
    return json.dumps(body)


def post_livekit(client: httpx.Client, body: str, authorization: str | None) -> httpx.Response:
    headers = {"Content-Type": "application/webhook+json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    return client.post("/v1/livekit/webhook", content=body, headers=headers)
