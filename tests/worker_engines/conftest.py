"""Shared fixtures of the local-engine tests: the example line, eSpeak NG present."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest

from tests.spoken_replies import spoken_replies
from voicehive.api.models import HotelLineSpec
from voicehive_worker.entrypoint import load_line_spec

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_LINE = ROOT / "examples" / "hotelline.yaml"
__all__ = ["spoken_replies"]  # autouse: every spoken reply is scanned for text meant for a model
HELDOUT = ROOT / "tests" / "data" / "heldout_phrases.tsv"  # test set: never used for tuning
DEV = ROOT / "tests" / "data" / "dev_phrases.tsv"  # used while tuning the ASR


@pytest.fixture(scope="session")
def spec() -> HotelLineSpec:
    return load_line_spec(EXAMPLE_LINE)


@pytest.fixture(scope="session", autouse=True)
def _espeak() -> None:
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is missing: run `make system-deps` (apt-get install -y espeak-ng)")


@pytest.fixture
def today() -> dt.date:
    return dt.date(2026, 11, 25)


def heldout_phrases(path: Path = HELDOUT) -> list[tuple[str, str]]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            intent, text = line.split("\t", 1)
            rows.append((intent.strip(), text.strip()))
    return rows
