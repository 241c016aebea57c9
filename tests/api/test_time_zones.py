"""The time zones a HotelLine may name are exactly those the worker can build its clock from."""

from __future__ import annotations

import copy
import datetime as dt
import re
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from voicehive.api import models
from voicehive.api.timezones import TIME_ZONES, one_of_regex
from voicehive.api.validation import validate
from voicehive_worker.agent import desk_is_open

ROOT = Path(__file__).resolve().parents[2]


def _example_line() -> dict[str, Any]:
    docs = yaml.safe_load_all((ROOT / "examples/hotelline.yaml").read_text())
    return next(doc for doc in docs if doc and doc.get("kind") == "HotelLine")


def test_every_listed_zone_loads_in_the_worker() -> None:
    for name in TIME_ZONES:
        now = dt.datetime.now(ZoneInfo(name))
        assert now.utcoffset() is not None, name


def test_the_list_is_what_the_schema_pattern_admits_and_has_no_repeats() -> None:
    assert len(set(TIME_ZONES)) == len(TIME_ZONES) > 400
    pattern = re.compile(models.TIME_ZONE_PATTERN)
    assert all(pattern.match(name) for name in TIME_ZONES)
    assert {"UTC", "Europe/Berlin", "Europe/Lisbon", "Atlantic/Canary", "America/Argentina/Buenos_Aires"} <= set(TIME_ZONES)


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "Europe/Atlantis", "Etc/GMT+15", "America/Fake_City"])
def test_a_zone_outside_the_database_is_refused_by_cel_and_models(zone: str) -> None:
    line = copy.deepcopy(_example_line())
    line["spec"]["timeZone"] = zone
    problems = validate(line)  # pattern passes; the CEL rule refuses
    assert [(p.field, p.layer) for p in problems] == [("spec.timeZone", "cel")], problems
    assert "IANA" in problems[0].message
    with pytest.raises(ValueError, match="timeZone: not a time zone of the IANA database"):
        models.HotelLineSpec.model_validate(line["spec"])


@pytest.mark.parametrize("zone", ["UTC", "Pacific/Chatham", "Asia/Kathmandu", "America/St_Johns"])
def test_an_accepted_zone_runs_the_front_desk_clock(zone: str) -> None:
    line = copy.deepcopy(_example_line())
    line["spec"]["timeZone"] = zone
    assert validate(line) == []
    spec = models.HotelLineSpec.model_validate(line["spec"])
    now = dt.datetime.now(ZoneInfo(spec.time_zone))
    assert isinstance(desk_is_open(spec.front_desk.hours, now), bool)


def test_the_crd_regex_matches_exactly_the_list() -> None:
    regex = re.compile(one_of_regex())
    assert all(regex.match(name) for name in TIME_ZONES)
    near_misses = [name + "x" for name in TIME_ZONES] + [name.split("/")[0] + "/" for name in TIME_ZONES]
    assert not [name for name in near_misses if regex.match(name) and name not in TIME_ZONES]
    rule = next(rule for rule, *_ in models.HotelLineSpec.cel_rules if "timeZone" in rule)
    assert one_of_regex() in rule
