"""The anchor for bench/webhooks.py: a bare-bones handler of the seed's transcription endpoint.

WHY: a rate only means something next to what the same machine, server stack and Redis do
with the least code that still serves the contract. This is that least code: FastAPI + a
pydantic model, a bearer check, and one MULTI pipeline (XADD + HSET + 2x EXPIRE). No
idempotency, no encryption, no audit, no intents, no metrics. Never shipped; the bench only.

Usage (the bench starts it): ``python bench/bare_handler.py --port P --redis-url URL`` with the
bearer token in ``VOICEHIVE_AGENT_TOKEN``.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import os
import time
from typing import Any

import uvicorn
from fastapi import FastAPI, Header, HTTPException
from pydantic import BaseModel, Field
from redis.asyncio import Redis

TTL_SECONDS = 30 * 86_400


class Transcription(BaseModel):
    """The seed's transcription body."""

    call_sid: str = Field(min_length=1, max_length=256)
    text: str = Field(max_length=10_000)
    language: str | None = None
    confidence: float = Field(ge=0, le=1)
    is_final: bool
    event_id: str | None = None


def create_app(redis: Redis, token: str) -> FastAPI:
    app = FastAPI()
    expected = f"Bearer {token}".encode()

    @app.post("/v1/livekit/transcription")
    async def transcription(body: Transcription, authorization: str = Header("")) -> dict[str, Any]:
        if not hmac.compare_digest(authorization.encode(), expected):
            raise HTTPException(401, "bearer token required")
        stream, record = f"bare:{body.call_sid}:transcript", f"bare:{body.call_sid}"
        async with redis.pipeline(transaction=True) as pipe:
            pipe.xadd(stream, {"text": body.text, "language": body.language or "", "event_id": body.event_id or "",
                               "confidence": str(body.confidence), "final": str(int(body.is_final))})
            pipe.hset(record, mapping={"updated_at": str(time.time()), "language": body.language or ""})
            pipe.expire(stream, TTL_SECONDS)
            pipe.expire(record, TTL_SECONDS)
            await pipe.execute()
        return {"status": "processed", "call_sid": body.call_sid}

    @app.get("/readyz")
    async def ready() -> dict[str, str]:
        return {"status": "ok"}

    return app


async def serve(port: int, redis_url: str, token: str) -> None:
    redis = Redis.from_url(redis_url, decode_responses=True, max_connections=128)
    config = uvicorn.Config(create_app(redis, token), host="127.0.0.1", port=port, log_config=None,
                            access_log=False, server_header=False, limit_concurrency=2048)
    await uvicorn.Server(config).serve()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis-url", required=True)
    args = parser.parse_args()
    token = os.environ["VOICEHIVE_AGENT_TOKEN"]
    try:  # the same event loop the orchestrator uses when present
        import uvloop
    except ImportError:
        asyncio.run(serve(args.port, args.redis_url, token))
    else:
        uvloop.run(serve(args.port, args.redis_url, token))


if __name__ == "__main__":
    main()
