"""A burst of 5,000 events with redis-server restarted in the middle.

Senders behave like agents: a 503 (Redis down) is retried after ``Retry-After``. Afterwards
every event that got a 2xx must be in its call's Redis event stream exactly once; no stream
holds an event twice; nothing acknowledged was lost across the restart (AOF on, as deployed).
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter

import aiohttp

from tests.fixtures.redis import RedisServer
from tests.orchestrator.helpers import RunningServer, auth
from voicehive.callstore import CallStore
from voicehive_orchestrator.settings import Settings

CALLS = 1000
CONCURRENCY = 64


def _events(call: int) -> list[tuple[str, str, dict[str, object]]]:
    sid = f"vh-burst00000-_+49301{call:06d}_r{call}"
    base = f"burst-{call}"
    return [
        ("/v1/livekit/webhook", f"{base}-ready",
         {"event_type": "agent_ready", "call_sid": sid, "data": {"hotel_id": "h1"}}),
        ("/v1/livekit/webhook", f"{base}-start",
         {"event_type": "call_started", "call_sid": sid, "data": {"is_sip": True}}),
        ("/v1/livekit/transcription", f"{base}-t1",
         {"call_sid": sid, "text": "I want to book a room", "language": "en", "confidence": 0.9, "is_final": True}),
        ("/v1/livekit/transcription", f"{base}-t2",
         {"call_sid": sid, "text": "thanks, bye", "language": "en", "confidence": 0.9, "is_final": True}),
        ("/v1/livekit/webhook", f"{base}-end",
         {"event_type": "call_ended", "call_sid": sid, "data": {"reason": "participant_disconnected"}}),
    ]


async def _burst(url: str, server: RedisServer) -> tuple[dict[str, int], Counter[int], bool]:
    acked: dict[str, int] = {}  # event id -> status of the 2xx
    statuses: Counter[int] = Counter()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for call in range(CALLS):
        queue.put_nowait(call)
    restarted = threading.Event()
    restart_after = CALLS * 5 * 2 // 5  # ~40 % through the burst

    async def restart() -> None:
        await asyncio.to_thread(server.restart)
        restarted.set()

    restart_task: asyncio.Task[None] | None = None
    # aiohttp: a light client, so 64 senders do not starve the server of the shared cores.
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(url, connector=connector, headers=auth(),
                                     timeout=aiohttp.ClientTimeout(total=60)) as session:

        async def sender() -> None:
            nonlocal restart_task
            while not queue.empty():
                call = queue.get_nowait()
                for path, event_id, payload in _events(call):
                    body = {**payload, "event_id": event_id}
                    give_up = asyncio.get_running_loop().time() + 120  # an agent retries for minutes
                    while asyncio.get_running_loop().time() < give_up:
                        try:
                            async with session.post(path, json=body) as r:
                                text = await r.text()
                                status, retry_after = r.status, r.headers.get("Retry-After")
                        except (TimeoutError, aiohttp.ClientError):
                            statuses[0] += 1
                            await asyncio.sleep(0.05)
                            continue
                        statuses[status] += 1
                        if status == 503:
                            assert retry_after
                            await asyncio.sleep(0.05)  # sender back-off (shortened Retry-After)
                            continue
                        assert status == 200, (status, text)
                        acked[event_id] = status
                        break
                    if len(acked) >= restart_after and restart_task is None:
                        restart_task = asyncio.create_task(restart())

        await asyncio.gather(*(sender() for _ in range(CONCURRENCY)))
        if restart_task is not None:
            await restart_task
    return acked, statuses, restarted.is_set()


def test_burst_with_redis_restart_loses_and_doubles_nothing(
    orch_server: RunningServer, orch_settings: Settings, redis_server: RedisServer
) -> None:
    acked, statuses, restarted = asyncio.run(_burst(orch_server.url, redis_server))
    assert restarted, "redis-server was not restarted during the burst"
    assert len(acked) == CALLS * 5, "every event was eventually acknowledged"
    assert statuses[503] + statuses[0] > 0, f"the restart was not felt by any request: {statuses}"

    async def verify() -> None:
        store = CallStore.from_url(redis_server.url)
        hasher = orch_settings.privacy.hasher
        try:
            for call in range(CALLS):
                events = _events(call)
                sid = str(events[0][2]["call_sid"])
                ref = hasher.call_ref(sid)
                stream = await store.events(ref)
                ids = Counter(entry["event_id"] for entry in stream)
                assert all(n == 1 for n in ids.values()), f"doubled event in {ref}"
                for _path, event_id, _payload in events:
                    assert ids[hasher.event_id(f"id:{event_id}")] == 1, f"lost acknowledged event {event_id}"
                record = await store.get(ref)
                assert record is not None and record.phase.value == "Ended" and record.turns == 2
        finally:
            await store.close()

    asyncio.run(verify())
    print(f"\nburst statuses: {dict(statuses)}")
