"""The hotel's side of staff delivery: a webhook receiver (HTTPS, checks the HMAC) and an SMTP server.

``WebhookReceiver`` verifies every POST with ``voicehive.delivery.verify`` and answers 401 on a
bad signature; it keeps each body under its ``Idempotency-Key`` (a repeat is counted, not
stored twice), as a real receiver should. ``SmtpSink`` is aiosmtpd with STARTTLS required.
"""

from __future__ import annotations

import json
import ssl
import time
from collections import Counter
from email import message_from_bytes
from email.message import Message
from typing import Any

from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.fakes._http import AiohttpFake
from voicehive.delivery import IDEMPOTENCY_HEADER, verify


class WebhookReceiver(AiohttpFake):
    def __init__(self, secret: bytes, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.secret = secret
        self.received: dict[str, dict[str, Any]] = {}
        self.raw: list[bytes] = []
        self.hits: Counter[str] = Counter()
        self.rejected = 0
        self.status = 200  # set to 5xx to simulate a failing receiver that is up

    def build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/hooks/voicehive", self._receive)
        return app

    @property
    def hook_url(self) -> str:
        return f"{self.url}/hooks/voicehive"

    async def _receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        if not verify(self.secret, request.headers, body, now=time.time()):
            self.rejected += 1
            return web.json_response({"error": "bad signature"}, status=401)
        if self.status != 200:
            return web.json_response({"error": "busy"}, status=self.status)
        key = request.headers[IDEMPOTENCY_HEADER]
        self.hits[key] += 1
        self.raw.append(body)
        self.received.setdefault(key, json.loads(body))
        return web.json_response({"ok": True})


class _Handler:
    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.raw: list[bytes] = []
        self.tls_seen: list[bool] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        self.raw.append(content)
        self.messages.append(message_from_bytes(content))
        self.tls_seen.append(session.ssl is not None)
        return "250 OK"


class SmtpSink:
    """aiosmtpd on 127.0.0.1 that refuses mail before STARTTLS."""

    def __init__(self, tls: ssl.SSLContext, port: int) -> None:
        self.handler = _Handler()
        self.port = port
        self.controller = Controller(
            self.handler, hostname="127.0.0.1", port=port, tls_context=tls, require_starttls=True, ready_timeout=10
        )

    @property
    def messages(self) -> list[Message]:
        return self.handler.messages

    def start(self) -> None:
        self.controller.start()

    def stop(self) -> None:
        self.controller.stop()
