"""Run any fake on its own event loop in a background thread.

The fakes normally live on the loop that starts them. That loop must keep running while
a client talks to them, which a synchronous test, a client that blocks its loop, or a
component running in another thread (e.g. an operator under ``kopf.testing.KopfRunner``)
cannot guarantee. ``InThread`` gives the fake a loop of its own::

    with InThread(RivaFake(["hello"])) as riva:      # sync code
        ... riva.address ...
        runner.call(riva.kill)                       # faults run on the fake's loop

    async with InThread(AzureOpenAIFake()) as az:    # or from async code (e.g. a benchmark
        ...                                          # that keeps the fakes off its own loop)

Attributes of the fake (``url``, ``address``, records) can be read from any thread;
anything that touches its asyncio state (faults, simulated calls) goes through
:meth:`InThread.call`.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar


class StartStop(Protocol):
    async def start(self) -> Any: ...

    async def stop(self) -> None: ...


F = TypeVar("F", bound=StartStop)


class InThread(Generic[F]):
    """Starts ``fake`` on a private event loop in a daemon thread."""

    def __init__(self, fake: F, *, startup_timeout: float = 10.0) -> None:
        self.fake = fake
        self.startup_timeout = startup_timeout
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> F:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self.loop = loop
            asyncio.set_event_loop(loop)
            ready.set()
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._thread = threading.Thread(target=run, name=f"fake-{type(self.fake).__name__}", daemon=True)
        self._thread.start()
        ready.wait(self.startup_timeout)
        self.call(self.fake.start)
        return self.fake

    def stop(self) -> None:
        if self.loop is None or self._thread is None:
            return
        try:
            self.call(self.fake.stop)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(self.startup_timeout)
            self.loop = None
            self._thread = None

    def call(self, fn: Callable[[], Any], timeout_s: float = 30.0) -> Any:
        """Runs ``fn()`` on the fake's loop (awaiting it if it is async) and returns its result."""
        if self.loop is None:
            raise RuntimeError("the fake is not running")

        async def invoke() -> Any:
            result = fn()
            if inspect.isawaitable(result):
                return await result
            return result

        return asyncio.run_coroutine_threadsafe(invoke(), self.loop).result(timeout_s)

    async def acall(self, fn: Callable[[], Any], timeout_s: float = 30.0) -> Any:
        """:meth:`call` for async callers (does not block their loop)."""
        return await asyncio.to_thread(self.call, fn, timeout_s)

    def __enter__(self) -> F:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> F:
        return await asyncio.to_thread(self.start)

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.stop)

    def __repr__(self) -> str:
        return f"InThread({self.fake!r})"
