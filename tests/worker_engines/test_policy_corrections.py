"""The dialogue policy uses the corrected slot: "no, not Friday, Saturday" checks Saturday.

Runs the deterministic policy inside a real AgentSession (text mode) with the HotelAgent's
tools, as test_policy.py does, and reads the arguments of the tool the policy called.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest
from livekit.agents import AgentSession

from voicehive.api.models import HotelLineSpec
from voicehive.intents import Intent
from voicehive_worker.agent import HotelAgent, LocalCallActions
from voicehive_worker.engines import HotelPolicy, HotelPolicyLLM

CASES = {
    "en": ("Do you have a double room on Friday for two nights for two guests?", "No, not Friday, Saturday."),
    "de": ("Haben Sie ein Doppelzimmer am Freitag für zwei Nächte für zwei Personen frei?", "Nein, nicht Freitag, Samstag."),
    "fr": ("Avez-vous une chambre double disponible vendredi pour deux nuits pour deux personnes ?", "Non, pas vendredi, samedi."),
    "es": ("¿Tienen una habitación doble disponible el viernes por dos noches para dos personas?", "No, el viernes no, el sábado."),
    "it": ("Avete una camera doppia disponibile venerdì per due notti per due persone?", "No, non venerdì, sabato."),
}


async def _tool_calls(spec: HotelLineSpec, utterances: list[str], today: dt.date) -> list[list[tuple[str, dict[str, Any]]]]:
    llm = HotelPolicyLLM(spec, policy=HotelPolicy(spec, today=today))
    clock = lambda: dt.datetime.combine(today, dt.time(10, 0)).astimezone()  # noqa: E731
    calls: list[list[tuple[str, dict[str, Any]]]] = []
    async with AgentSession(llm=llm) as session:
        await session.start(HotelAgent(spec, LocalCallActions(), greet=False, clock=clock))
        for text in utterances:
            result = await session.run(user_input=text)
            import json

            calls.append([(ev.item.name, json.loads(ev.item.arguments)) for ev in result.events if ev.type == "function_call"])
    return calls


@pytest.mark.parametrize("language", sorted(CASES))
def test_correction_replaces_the_date(spec: HotelLineSpec, today: dt.date, language: str) -> None:
    ask, correction = CASES[language]
    calls = asyncio.run(_tool_calls(spec, [ask, correction], today))
    friday = today + dt.timedelta(days=(4 - today.weekday()) % 7)
    assert calls[0] == [("check_availability", {"check_in": friday.isoformat(), "nights": 2, "guests": 2, "room_type": calls[0][0][1].get("room_type")})]
    assert calls[1] and calls[1][0][0] == "check_availability"
    assert calls[1][0][1]["check_in"] == (friday + dt.timedelta(days=1)).isoformat()
    assert calls[1][0][1]["nights"] == 2


def test_do_not_cancel_cancels_nothing(spec: HotelLineSpec, today: dt.date) -> None:
    llm = HotelPolicyLLM(spec, policy=HotelPolicy(spec, today=today))
    from voicehive_worker.engines.policy import Turn

    decision = llm.policy.decide([Turn("user", "Please do not cancel my booking, my name is Anna Schmidt")], frozenset({"capture_booking_request"}))
    assert decision.intent is not Intent.CANCEL_BOOKING and decision.tool is None
