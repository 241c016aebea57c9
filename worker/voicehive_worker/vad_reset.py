"""A VAD whose reset also drops what it has not judged yet.

WHY: our TurnTaker ends the caller's turn from the ASR's word times (0.3 s of silence), before
Silero (0.55 s of silence) does. livekit-agents 1.8.9 then *flushes* the VAD stream
(``AudioRecognition``: "stt end of speech received while vad is still in a speech segment,
flushing vad") so that only speech heard *after* the end of turn can interrupt the reply. But a
flush is a sentinel queued behind the frames Silero has not processed yet, and on a loaded CPU
that backlog is still "speech": its late events pause the reply (``_interrupt_by_audio_activity``
or ``_reconcile_playout_pause``), the flush then resets Silero, no VAD end of speech follows,
and nothing ever resumes the reply. The caller hears silence until they speak again (CI saw
60 s; ``tests/worker/test_lagging_vad.py`` reproduces it with Silero run 0.1 s late).

So a flush here starts a fresh stream of the wrapped VAD and discards the old one with its
backlog: the turn those frames belonged to is already over. Everything else passes through.
"""

from __future__ import annotations

import asyncio
import contextlib

from livekit import rtc
from livekit.agents import vad as lk_vad


class ResettingVAD(lk_vad.VAD):
    """Wraps a VAD (Silero in the pod) so a flush forgets the unjudged backlog too."""

    def __init__(self, inner: lk_vad.VAD) -> None:
        super().__init__(capabilities=inner.capabilities)
        self.inner = inner

    @property
    def model(self) -> str:
        return self.inner.model

    @property
    def provider(self) -> str:
        return self.inner.provider

    def stream(self) -> lk_vad.VADStream:
        return _ResettingStream(self)


def resetting(vad: lk_vad.VAD) -> ResettingVAD:
    """``vad`` wrapped once (a VAD that already resets is returned as it is)."""
    return vad if isinstance(vad, ResettingVAD) else ResettingVAD(vad)


class _ResettingStream(lk_vad.VADStream):
    def __init__(self, vad: ResettingVAD) -> None:
        self._inner_vad = vad.inner
        super().__init__(vad)

    async def _main_task(self) -> None:
        inner, relay = self._open()
        try:
            async for item in self._input_ch:
                if isinstance(item, rtc.AudioFrame):
                    inner.push_frame(item)
                    continue
                await self._discard(inner, relay)
                inner, relay = self._open()
            inner.end_input()
            await relay
        finally:
            await self._discard(inner, relay)

    def _open(self) -> tuple[lk_vad.VADStream, asyncio.Task[None]]:
        inner = self._inner_vad.stream()
        return inner, asyncio.create_task(self._relay(inner), name="vad-relay")

    async def _relay(self, inner: lk_vad.VADStream) -> None:
        async for event in inner:
            self._event_ch.send_nowait(event)

    @staticmethod
    async def _discard(inner: lk_vad.VADStream, relay: asyncio.Task[None]) -> None:
        relay.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await relay
        await inner.aclose()
