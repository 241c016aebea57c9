"""Transcripts are de-duplicated by their sender's ``event_id`` only (issue 10, review defect 5).

The seed's transcription contract has no event id and no segment time or sequence, so two
identical segments without an id are two turns (a caller who says "yes" twice), never one.
Over a real socket, against the real redis-server.
"""

from __future__ import annotations

from typing import Any

import httpx

from tests.orchestrator.helpers import auth

SID = "vh-0123456789-_+4915112345678_DeDu"


def _yes(**extra: Any) -> dict[str, Any]:
    return {"call_sid": SID, "text": "yes", "language": "en", "confidence": 0.9, "is_final": True, **extra}


def _start(client: httpx.Client) -> None:
    ready = {"event_type": "agent_ready", "call_sid": SID, "data": {"hotel_id": "hotel-berlin"}}
    assert client.post("/v1/livekit/webhook", json=ready, headers=auth()).status_code == 200


def test_the_same_words_twice_without_an_event_id_are_two_turns(client: httpx.Client) -> None:
    _start(client)
    for _ in range(2):
        r = client.post("/v1/livekit/transcription", json=_yes(), headers=auth())
        assert r.status_code == 200 and r.json()["status"] == "processed", r.text
    state = client.get(f"/v1/calls/{SID}", headers=auth()).json()
    assert state["turns"] == 2, state  # "processed" means stored: the second "yes" is not lost


def test_a_repeated_event_id_is_stored_once(client: httpx.Client) -> None:
    _start(client)
    for _ in range(3):
        r = client.post("/v1/livekit/transcription", json=_yes(event_id="seg-7"), headers=auth())
        assert r.status_code == 200, r.text
    r = client.post("/v1/livekit/transcription", json=_yes(event_id="seg-8"), headers=auth())
    assert r.status_code == 200, r.text
    state = client.get(f"/v1/calls/{SID}", headers=auth()).json()
    assert state["turns"] == 2, state  # seg-7 once (a retry), seg-8 once
