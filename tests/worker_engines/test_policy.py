"""The deterministic policy inside a real AgentSession (text mode) with the HotelAgent's tools."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest
from livekit.agents import AgentSession

from voicehive.api.models import HotelLineSpec
from voicehive_worker.agent import HotelAgent, LocalCallActions
from voicehive_worker.engines import HotelPolicy, HotelPolicyLLM
from voicehive_worker.engines.policy import Turn
from voicehive_worker.engines.slots import extract_slots


async def _converse(spec: HotelLineSpec, utterances: list[str], today: dt.date) -> tuple[list[dict[str, Any]], LocalCallActions]:
    llm = HotelPolicyLLM(spec, policy=HotelPolicy(spec, today=today))
    actions = LocalCallActions()
    clock = lambda: dt.datetime.combine(today, dt.time(10, 0)).astimezone()  # noqa: E731
    turns: list[dict[str, Any]] = []
    async with AgentSession(llm=llm) as session:
        await session.start(HotelAgent(spec, actions, greet=False, clock=clock))
        for text in utterances:
            result = await session.run(user_input=text)
            tools = [ev.item.name for ev in result.events if ev.type == "function_call"]
            replies = [ev.item.text_content for ev in result.events if ev.type == "message"]
            turns.append({"tools": tools, "reply": " ".join(r or "" for r in replies), "intent": llm.last_decision.intent.value if llm.last_decision else None})
            if actions.ended is not None:
                break
    return turns, actions


def test_booking_conversation_uses_tools_and_facts(spec: HotelLineSpec, today: dt.date) -> None:
    turns, actions = asyncio.run(
        _converse(
            spec,
            [
                "Hi, do you have a double room from the 12th of March for two nights?",
                "Yes please, book it. My name is Anna Schmidt.",
                "What time is check in?",
                "How much is the junior suite?",
                "Thank you, goodbye.",
            ],
            today,
        )
    )
    double = next(r for r in spec.facts.room_types if r.code == "DBL")
    suite = next(r for r in spec.facts.room_types if r.code == "STE")
    assert turns[0]["tools"] == ["check_availability"]
    assert f"{double.rate_from:.0f}" in turns[0]["reply"] and f"{2 * double.rate_from:.0f}" in turns[0]["reply"]
    assert turns[1]["tools"] == ["capture_booking_request"]
    kind, fields = actions.requests[0]
    assert kind == "new_booking"
    assert fields["guest_name"] == "Anna Schmidt" and fields["nights"] == "2" and fields["check_in"] == "2027-03-12"
    assert "3 p.m." in turns[2]["reply"]  # spec check-in 15:00, said as a time
    assert f"{suite.rate_from:.0f}" in turns[3]["reply"]
    assert turns[4]["tools"] == ["end_call"]
    assert actions.ended is not None


def test_missing_slots_are_asked_for_before_any_tool(spec: HotelLineSpec, today: dt.date) -> None:
    turns, actions = asyncio.run(
        _converse(spec, ["I would like to book a room.", "On the fifth of June.", "Three nights, two adults."], today)
    )
    assert turns[0]["tools"] == [] and "date" in turns[0]["reply"]
    assert turns[1]["tools"] == [] and "nights" in turns[1]["reply"]
    assert turns[2]["tools"] == ["check_availability"]
    assert actions.requests == []


def test_german_caller_gets_german_replies_from_the_facts(spec: HotelLineSpec, today: dt.date) -> None:
    turns, _ = asyncio.run(
        _converse(spec, ["Haben Sie ein Doppelzimmer frei vom 3. April für zwei Nächte?", "Wann ist der Check-in?"], today)
    )
    assert turns[0]["tools"] == ["check_availability"]
    assert "Doppel" in turns[0]["reply"] or "double room" in turns[0]["reply"]
    assert "pro Nacht" in turns[0]["reply"]
    assert "15 Uhr" in turns[1]["reply"]


def test_person_request_transfers_and_faq_is_answered(spec: HotelLineSpec, today: dt.date) -> None:
    turns, actions = asyncio.run(_converse(spec, ["Are dogs allowed?", "Can I speak to a real person please?"], today))
    assert spec.facts.faq[0].answer in turns[0]["reply"]
    assert turns[1]["tools"] == ["transfer_to_front_desk"]
    # 10:00 on a weekday: the desk is open, so the call is transferred to the line's target
    assert actions.transfers == [spec.front_desk.transfer_to]


def test_slots_from_asr_style_text(spec: HotelLineSpec, today: dt.date) -> None:
    slots = extract_slots("i'd like the junior suite from the fifth of june to the eighth of june for three people", spec.facts, today)
    assert slots.check_in == dt.date(2027, 6, 5) and slots.check_out == dt.date(2027, 6, 8)
    assert slots.guests == 3 and slots.room_code == "STE"
    assert extract_slots("vom 3. April für zwei Nächte", spec.facts, today).nights == 2
    assert extract_slots("pour trois nuits à partir du 4 mai", spec.facts, today).check_in == dt.date(2027, 5, 4)


@pytest.mark.parametrize(
    ("utterance", "language", "expected"),
    [
        ("Je voudrais réserver une chambre double pour deux nuits à partir du 4 mai", "fr", "258"),
        ("Quisiera reservar una habitación doble para tres noches desde el 5 de junio", "es", "387"),
        ("Vorrei prenotare una camera doppia per due notti dal 3 aprile", "it", "258"),
        ("A che ora è il check-in?", "it", "dalle 15"),
        ("¿A qué hora es la entrada?", "es", "las 15"),
    ],
)
def test_policy_answers_in_the_callers_language_from_the_facts(
    spec: HotelLineSpec, today: dt.date, utterance: str, language: str, expected: str
) -> None:
    five = spec.model_copy(update={"languages": ["en", "de", "fr", "es", "it"]})
    decision = HotelPolicy(five, today=today).decide([Turn("user", utterance)], frozenset())
    assert decision.language == language
    assert expected in decision.text
