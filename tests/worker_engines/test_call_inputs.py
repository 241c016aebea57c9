"""`voicehive call` input handling: any PCM WAV is accepted, bad input is a clear error (exit 2)."""

from __future__ import annotations

import asyncio
import wave
from pathlib import Path

import numpy as np
import pytest

from voicehive.api.models import HotelLineSpec
from voicehive_worker.engines import PocketsphinxSTT
from voicehive_worker.engines.espeak_tts import EspeakOptions, synthesize_pcm
from voicehive_worker.simulate import read_wav_pcm, run_call

from .conftest import EXAMPLE_LINE


def _write(path: Path, samples: np.ndarray, rate: int, channels: int) -> None:
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(channels)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes(samples.astype("<i2").tobytes())


def test_stereo_44k_recording_is_resampled_and_still_recognised(tmp_path: Path, spec: HotelLineSpec) -> None:
    pcm22 = asyncio.run(synthesize_pcm("are pets allowed", EspeakOptions(voice="en-us+f5", words_per_minute=150, sample_rate=44100)))
    stereo = np.repeat(pcm22[:, None], 2, axis=1).reshape(-1)
    path = tmp_path / "caller.wav"
    _write(path, stereo, 44100, 2)
    pcm = read_wav_pcm(path)
    assert abs(len(pcm) / 16000 - len(pcm22) / 44100) < 0.05
    text, _ = PocketsphinxSTT.for_line(spec).transcribe_pcm(pcm.tobytes())
    assert text == "are pets allowed"


def test_bad_inputs_exit_2_with_a_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_call(tmp_path / "missing.yaml", ["hello"], [], None, False) == 2
    assert "no such file" in capsys.readouterr().err
    bad_line = tmp_path / "line.yaml"
    bad_line.write_text("kind: HotelLine\napiVersion: voicehive.io/v1alpha1\nspec:\n  hotelId: x\n")
    assert run_call(bad_line, ["hello"], [], None, False) == 2
    assert "displayName" in capsys.readouterr().err
    assert run_call(EXAMPLE_LINE, [], [], None, False) == 2
    assert "nothing to say" in capsys.readouterr().err
    assert run_call(EXAMPLE_LINE, [], [tmp_path / "nope.wav"], None, False) == 2
    assert "no such file" in capsys.readouterr().err
    not_wav = tmp_path / "noise.wav"
    not_wav.write_bytes(b"definitely not a wav file")
    assert run_call(EXAMPLE_LINE, [], [not_wav], None, False) == 2
    assert "not a readable PCM WAV" in capsys.readouterr().err
