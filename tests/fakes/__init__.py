"""Loopback fakes that speak the real wire protocols of VoiceHive's providers.

Each fake binds 127.0.0.1 on port 0, is an async context manager, records what it
received, has fixed latencies measured on ``time.monotonic`` and supports fault
injection. They import nothing from pytest so benchmarks can use them too; the
pytest fixtures live in ``tests.fakes.plugin``. See docs/fakes.md.
"""
