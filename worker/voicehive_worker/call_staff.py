"""Staff delivery for ``voicehive call``: the line's outbox and channels, as a worker pod uses them.

WHY: a hotel tests its line with ``voicehive call``; a request the agent promises to pass on
must reach the line's webhook and e-mail exactly as from a pod. So the command wraps the call's
actions with the same :class:`~voicehive_worker.staff.NotifyingActions`, runs the same deliverer
on the line's Redis outbox (VOICEHIVE_REDIS_URL, sealed with the pod's VOICEHIVE_TRANSCRIPT_KEY)
and, after the call, waits for the outbox to drain before it exits.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import yaml

from voicehive import contract
from voicehive.api.models import HotelLineSpec
from voicehive.privacy import TRANSCRIPT_KEY_ENV, KeyConfigError, Sealer, load_key
from voicehive_worker.agent import CallActions
from voicehive_worker.staff import StaffDelivery, channels_of, start_staff_delivery

DRAIN_TIMEOUT_S = 60.0
Wrap = Callable[[CallActions], CallActions]


def line_name(line_file: Path, env: Mapping[str, str]) -> str:
    """VOICEHIVE_LINE, else the HotelLine's ``metadata.name``, else the file's stem (names the outbox)."""
    if env.get(contract.ENV_LINE_NAME):
        return env[contract.ENV_LINE_NAME]
    try:
        docs = [d for d in yaml.safe_load_all(line_file.read_text(encoding="utf-8")) if isinstance(d, dict)]
    except (OSError, yaml.YAMLError):
        docs = []
    for doc in docs:
        metadata = doc.get("metadata")
        if doc.get("kind") == contract.HOTELLINE_KIND and isinstance(metadata, dict) and metadata.get("name"):
            return str(metadata["name"])
    return line_file.stem


def _start(spec: HotelLineSpec, env: Mapping[str, str], line: str) -> StaffDelivery | None:
    """None when the line has no channel, or no Redis is given (then say so: nothing is delivered)."""
    if not channels_of(spec):
        return None
    if not env.get(contract.ENV_REDIS_URL):
        print(f"warning: the line has staffDelivery but {contract.ENV_REDIS_URL} is not set: requests taken in "
              "this call are not delivered to staff", file=sys.stderr)
        return None
    try:
        sealer = Sealer(load_key(TRANSCRIPT_KEY_ENV, env))  # the pod's key: a pod can finish what is left
    except KeyConfigError as exc:
        raise ValueError(f"staffDelivery with {contract.ENV_REDIS_URL}: {exc}") from None
    return start_staff_delivery(spec, env, sealer, env.get(contract.ENV_NAMESPACE, "default"), line)


async def _drain(staff: StaffDelivery, timeout_s: float) -> int:
    """Waits until the outbox is empty or ``timeout_s`` passed; returns what is still pending."""
    deadline = time.monotonic() + timeout_s
    pending = await staff.outbox.pending()
    while pending and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        pending = await staff.outbox.pending()
    return pending


def _unchanged(actions: CallActions) -> CallActions:
    return actions


@asynccontextmanager
async def staff_for_call(
    spec: HotelLineSpec, env: Mapping[str, str], line: str, *, drain_timeout_s: float = DRAIN_TIMEOUT_S
) -> AsyncIterator[Wrap]:
    """Yields how to wrap the call's actions; after the call, drains the outbox (bounded)."""
    staff = _start(spec, env, line)
    if staff is None:
        yield _unchanged
        return
    try:
        yield staff.wrap
        pending = await _drain(staff, drain_timeout_s)
        if pending:
            print(f"warning: {pending} staff deliveries still pending after {drain_timeout_s:.0f} s; "
                  "a worker pod of the line retries them", file=sys.stderr)
    finally:
        await staff.stop()
