"""Room-scoped LiveKit tokens the operator mints for the worker it binds to a call.

WHY: a worker Pod used to hold the LiveKit API key and secret, with which it could join, record
or end any call of any hotel. Now the operator (which holds them anyway, for SIP trunks) mints,
when it binds a worker, a token that can join exactly one room and administer only that room
(remove the caller at hang-up), for at most the call's length; it delivers the token sealed
(AES-GCM) with a key of the call's line, which only that line's workers have (the per-line
Secret). A SIP transfer needs a grant that would let its holder dial anywhere, so the worker asks
the operator for it instead (:mod:`voicehive_operator.transfers`).
"""

from __future__ import annotations

import datetime as dt
import logging

from livekit import api as lkapi

from voicehive import contract, privacy
from voicehive.api.models import HotelLineSpec
from voicehive_operator import builders
from voicehive_operator.settings import OperatorSettings

log = logging.getLogger(__name__)


def room_token(settings: OperatorSettings, *, room: str, pod: str, ttl: dt.timedelta) -> str:
    """A token that joins ``room`` as the agent ``pod`` and administers that room only."""
    grants = lkapi.VideoGrants(room_join=True, room=room, room_admin=True, agent=True,
                               can_publish=True, can_subscribe=True, can_publish_data=True)
    return (
        lkapi.AccessToken(settings.livekit_api_key, settings.livekit_api_secret)
        .with_identity(contract.AGENT_IDENTITY_PREFIX + pod)
        .with_kind("agent")
        .with_grants(grants)
        .with_ttl(ttl)
        .to_jwt()
    )


def token_ttl(spec: HotelLineSpec) -> dt.timedelta:
    """Long enough to start and hold the longest call, no longer."""
    seconds = spec.workers.start_timeout_seconds + spec.workers.max_call_duration_seconds
    return dt.timedelta(seconds=seconds + builders.TERMINATION_MARGIN_S)


def sealed_room_token(settings: OperatorSettings, *, namespace: str, line: str, session: str, pod: str,
                      sealed_call_ref: str | None, spec: HotelLineSpec) -> str | None:
    """The annotation value for a bound session, or ``None`` when the operator cannot mint one."""
    if settings.pii_key is None or not settings.livekit_api_key or not settings.livekit_api_secret:
        return None
    if not sealed_call_ref:
        return None
    try:
        room = privacy.open_call_ref(privacy.call_ref_sealer(settings.pii_key), sealed_call_ref).room
    except privacy.SealError:
        log.warning("sealedCallRef does not open with this operator's PII key; no room token",
                    extra={"session": session})
        return None
    token = room_token(settings, room=room, pod=pod, ttl=token_ttl(spec))
    sealer = privacy.Sealer(builders.line_token_key(namespace, line, settings.pii_key))
    return sealer.seal_text(token, context=contract.sealed_token_context(namespace, session))

