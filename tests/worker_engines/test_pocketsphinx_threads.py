"""One PocketsphinxSTT used from several threads at once (the Riva stand-in's streams, the e2e
callers' listeners): pocketsphinx fails to create two decoders at the same moment
("RuntimeError: Failed to initialize PocketSphinx", found with eight e2e calls at once)."""

from __future__ import annotations

import threading

import numpy as np

from voicehive.api.models import HotelLineSpec
from voicehive_worker.engines import PocketsphinxSTT


def test_a_fresh_engine_decodes_from_eight_threads_at_once(spec: HotelLineSpec) -> None:
    engine = PocketsphinxSTT.for_line(spec)
    pcm = (np.random.default_rng(7).standard_normal(16000) * 2000).astype("<i2").tobytes()
    start = threading.Barrier(8)
    errors: list[BaseException] = []
    results: list[str] = []

    def decode() -> None:
        start.wait()
        try:
            results.append(engine.transcribe_pcm(pcm)[0])
        except BaseException as exc:  # collected: the assertion names them
            errors.append(exc)

    threads = [threading.Thread(target=decode) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == [] and len(results) == 8, errors
    assert len(set(results)) == 1  # the same audio decodes to the same words on every decoder
