"""How a worker gets into its one room: the operator's sealed room token, or (lab) its own.

WHY: a worker Pod holds no LiveKit API secret in production (issue 11). The operator writes a
room-scoped token, sealed with the line's token key, on the VoiceSession it binds the worker to;
the worker opens it with ``VOICEHIVE_LINE_TOKEN_KEY`` from the line's Secret. Only when the
environment still carries an API key and secret (``voicehive-worker simulate``, a lab) does the
worker mint a token itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from voicehive import contract
from voicehive.privacy import Sealer, SealError, decode_key


class NoRoomToken(RuntimeError):
    """The worker cannot join: no sealed token it can open and no API secret (names why)."""


@dataclass(frozen=True)
class RoomAccess:
    """A token for one room, and the API client arguments that go with it."""

    token: str
    api_key: str | None = None  # lab only: a worker with the API secret
    api_secret: str | None = None

    def api(self, url: str) -> Any:
        """A ``livekit.api.LiveKitAPI`` that authenticates with the room token (or the lab secret)."""
        from livekit import api as lkapi

        if self.api_key and self.api_secret:
            return lkapi.LiveKitAPI(url=url, api_key=self.api_key, api_secret=self.api_secret)
        return lkapi.LiveKitAPI.with_token(self.token, url)


def room_access(env: Mapping[str, str], session: Mapping[str, Any], *, room: str, pod: str) -> RoomAccess:
    meta = session.get("metadata") or {}
    sealed = (meta.get("annotations") or {}).get(contract.ANNOTATION_SEALED_TOKEN)
    key_b64 = env.get(contract.ENV_LINE_TOKEN_KEY)
    if sealed and key_b64:
        sealer = Sealer(decode_key(contract.ENV_LINE_TOKEN_KEY, key_b64))
        context = contract.sealed_token_context(str(meta.get("namespace", "")), str(meta.get("name", "")))
        try:
            token = sealer.open_text(sealed, context=context)
        except SealError:
            raise NoRoomToken("the session's room token does not open with this line's key") from None
        return RoomAccess(token)
    key, secret = env.get(contract.ENV_LIVEKIT_API_KEY), env.get(contract.ENV_LIVEKIT_API_SECRET)
    if key and secret:
        from livekit import api as lkapi

        token = (
            lkapi.AccessToken(key, secret)
            .with_identity(contract.AGENT_IDENTITY_PREFIX + pod)
            .with_kind("agent")
            .with_grants(lkapi.VideoGrants(room_join=True, room=room, agent=True))
            .to_jwt()
        )
        return RoomAccess(token, key, secret)
    raise NoRoomToken(f"no {contract.ANNOTATION_SEALED_TOKEN} annotation (or no {contract.ENV_LINE_TOKEN_KEY}) "
                      "and no LiveKit API key: the operator mints room tokens only when it has the PII key")


class TransferRefused(RuntimeError):
    """The operator answered the transfer request with a failure (its message is plain words)."""


async def request_transfer(status: Any, *, timeout_s: float = 40.0, poll_s: float = 0.5) -> None:
    """Ask the operator to transfer the caller (:mod:`voicehive.transfer`) and wait for its answer.

    ``status`` is the worker's :class:`~voicehive_worker.state.VoiceSessionStatus`. The worker has
    no SIP grant (it could dial anywhere with one); the operator transfers to the line's front desk.
    """
    import asyncio
    import datetime as dt

    from voicehive import transfer

    current = (await status.read()).get("status") or {}
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    await status.patch({"conditions": transfer.with_condition(current.get("conditions"), transfer.request(now))})
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        seen = (await status.read()).get("status") or {}
        answer = transfer.state(seen)
        if answer == transfer.TRANSFERRED:
            return
        if answer == transfer.FAILED:
            raise TransferRefused("the operator could not transfer the call")
        await asyncio.sleep(poll_s)  # the operator answers through the API server; no push channel
    raise TransferRefused(f"the operator did not answer the transfer request within {timeout_s:g} s")
