"""The code's layout promises: one source for each fact, checked where a type cannot hold it."""

from __future__ import annotations

from voicehive import contract
from voicehive.api import models


def test_model_literals_match_the_api_names() -> None:
    """Pydantic needs literal kinds and apiVersion; they must say what ``contract`` says."""
    assert models.HotelLine.model_fields["kind"].default == contract.HOTELLINE_KIND
    assert models.VoiceSession.model_fields["kind"].default == contract.VOICESESSION_KIND
    for model in (models.HotelLine, models.VoiceSession):
        assert model.model_fields["api_version"].default == contract.API_VERSION
