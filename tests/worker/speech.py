"""Caller speech for worker tests and benches: espeak-ng, resampled to 16 kHz mono s16.

WHY real synthetic speech (not tones): Silero VAD, which drives barge-in, only fires on
speech-like audio. Results are cached per text under .cache/ so repeated runs cost nothing.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np

CACHE = Path(__file__).resolve().parents[2] / ".cache" / "caller-speech"
RATE = 16000


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def speak(text: str, *, voice: str = "en-us", words_per_minute: int = 165, max_gap: float = 0.06) -> bytes:
    """PCM (16 kHz mono s16le) of ``text`` spoken by espeak-ng, leading/trailing silence trimmed.

    Silent stretches inside the phrase are shortened to ``max_gap`` seconds, so a recogniser
    (and the Riva fake's 100 ms endpoint) hears one utterance per phrase; pauses between
    parts of a sentence are added explicitly by the tests.
    """
    key = hashlib.sha256(f"{voice}|{words_per_minute}|{max_gap}|{text}".encode()).hexdigest()[:24]
    path = CACHE / f"{key}.pcm"
    if path.exists():
        return path.read_bytes()
    binary = shutil.which("espeak-ng")
    if binary is None:
        raise RuntimeError("espeak-ng is not installed (apt-get install -y espeak-ng)")
    wav = subprocess.run(
        [binary, "-v", voice, "-s", str(words_per_minute), "--stdout", text], check=True, capture_output=True
    ).stdout
    with wave.open(io.BytesIO(wav)) as w:
        rate = w.getframerate()
        raw = w.readframes(w.getnframes())
    x = np.frombuffer(raw, dtype="<i2").astype(np.float64)
    if rate != RATE:
        n = int(len(x) * RATE / rate)
        x = np.interp(np.arange(n) * rate / RATE, np.arange(len(x)), x)
    # trim to the voiced span (-45 dBFS, the fakes' threshold) so "end of speech" is the audio's end
    step = RATE // 100
    usable = len(x) - len(x) % step
    rms = np.sqrt(np.mean(x[:usable].reshape(-1, step) ** 2, axis=1))
    voiced = np.nonzero(rms > 32768 * 10 ** (-45 / 20))[0]
    if len(voiced):
        keep = np.zeros(len(rms), dtype=bool)
        keep[voiced[0] : voiced[-1] + 1] = True
        max_frames = max(1, int(max_gap * 100))
        run = 0
        for i in range(voiced[0], voiced[-1] + 1):
            if rms[i] > 32768 * 10 ** (-45 / 20):
                run = 0
            else:
                run += 1
                if run > max_frames:
                    keep[i] = False
        x = x[:usable].reshape(-1, step)[keep].reshape(-1)
    pcm = np.clip(x, -32768, 32767).astype("<i2").tobytes()
    CACHE.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pcm)
    return pcm
