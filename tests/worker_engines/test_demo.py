"""`make demo` end to end: the README's main command, run exactly as a user runs it, with --json.

It speaks five caller turns in real time through the real AgentSession on the local engines
(~40 s). Assertions are on what was recognised and understood, not on exact reply wording.
"""

from __future__ import annotations

import json
import os
import subprocess
import wave
from pathlib import Path

import pytest

from voicehive_worker.phrases import is_model_instruction

from .conftest import ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_turns() -> list[dict[str, object]]:
    env = {**os.environ, "VOICEHIVE_CALL_ENGINES": "local"}
    done = subprocess.run(
        ["make", "-s", "--no-print-directory", "demo", "DEMO_ARGS=--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=420,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    turns = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert turns, done.stdout[-3000:]
    return turns


def test_demo_call_follows_the_booking_conversation(demo_turns: list[dict[str, object]]) -> None:
    by_turn = {t["turn"]: t for t in demo_turns}
    assert by_turn[0]["intent"] == "greeting" and "AI" in str(by_turn[0]["reply"])
    assert [by_turn[i]["intent"] for i in range(1, 6)] == [
        "check_availability",
        "book_room",
        "request_info",
        "request_info",
        "goodbye",
    ]
    assert "check_availability" in by_turn[1]["tools"]  # type: ignore[operator]
    assert "double room" in str(by_turn[1]["recognised"]) and "march" in str(by_turn[1]["recognised"])
    assert "capture_booking_request" in by_turn[2]["tools"]  # type: ignore[operator]
    assert "schmidt" in str(by_turn[2]["recognised"])
    assert "check out" in str(by_turn[3]["recognised"])
    assert by_turn[5]["ended"] is True
    for turn in demo_turns[1:]:
        assert turn["reply"], turn
        assert not is_model_instruction(str(turn["reply"])), turn
        latency = turn["latency_ms"]
        assert isinstance(latency, dict) and latency["voice_to_voice"] is not None
        assert 0 < latency["voice_to_voice"] < 3000, turn


def test_demo_writes_audible_reply_audio(demo_turns: list[dict[str, object]]) -> None:
    paths = [Path(str(t["reply_audio"])) for t in demo_turns if t.get("reply_audio")]
    assert len(paths) >= 5
    for path in paths:
        with wave.open(str(ROOT / path if not path.is_absolute() else path), "rb") as handle:
            assert handle.getframerate() == 16000 and handle.getnchannels() == 1
            assert handle.getnframes() > 16000 * 0.5
