"""A line's pocketsphinx model used from several threads at once (the Riva stand-in's streams,
the e2e callers' listeners). Found with eight e2e calls at once: the callers built the line's
language model concurrently, both of its files went through one temp name, the dictionary ended
up holding the language model, and from then on every decoder on the machine failed with
"RuntimeError: Failed to initialize PocketSphinx"."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from voicehive.api.models import HotelLineSpec
from voicehive_worker.engines import PocketsphinxSTT
from voicehive_worker.engines.lm import DomainModel, build_domain_model


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


def test_models_built_at_once_for_one_line_are_whole(spec: HotelLineSpec, tmp_path: Path) -> None:
    """The language model and dictionary files are shared by every process on a machine (the rig's
    Riva stand-in and the e2e callers; threads of one process). Built by several at once, each
    file must still hold its own content: once, the dictionary held the language model, and
    every decoder made from it failed from then on."""
    start = threading.Barrier(6)
    models: list[DomainModel] = []

    def build() -> None:
        start.wait()
        models.append(build_domain_model(spec.facts, spec.display_name, cache_dir=tmp_path))

    threads = [threading.Thread(target=build) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert len(models) == 6
    model = models[0]
    arpa = model.lm_path.read_text()
    assert "\n\\data\\\n" in arpa and arpa.rstrip().endswith("\\end\\")  # ARPA: header .. \end\
    entries = model.dict_path.read_text().splitlines()
    assert entries and all(len(e.split()) >= 2 and not e.startswith("\\") for e in entries)
    assert {e.split()[0].split("(")[0] for e in entries} == set(model.vocabulary)
    assert not list(tmp_path.glob("*.tmp*"))  # nothing half-written left behind
    assert all(f.stat().st_mode & 0o044 == 0o044 for f in (model.lm_path, model.dict_path))  # shared cache
