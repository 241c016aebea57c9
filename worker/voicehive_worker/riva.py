"""Riva ASR with the language Riva heard: the nvidia plugin, plus the results' language tags.

WHY: livekit-plugins-nvidia labels every result with the language the stream was *opened*
with and drops Riva's own ``language_code`` of the alternative. A multilingual Riva model
(``language_code="multi"``) tags each result with the language it recognised; the worker's
language tracker takes that tag as evidence (see ``language.py``). Everything else is the
plugin's own code path; only the conversion of one alternative is extended.
"""

from __future__ import annotations

from typing import Any

from livekit.agents import DEFAULT_API_CONNECT_OPTIONS, APIConnectOptions, LanguageCode
from livekit.agents import stt as lk_stt
from livekit.agents.types import NOT_GIVEN, NotGivenOr
from livekit.agents.utils import is_given
from livekit.plugins import nvidia
from livekit.plugins.nvidia.stt import SpeechStream


def heard_language(alternative: Any) -> str | None:
    """The first language tag of a Riva alternative (``repeated string language_code``), if any."""
    codes = list(getattr(alternative, "language_code", None) or [])
    return str(codes[0]) if codes and codes[0] else None


class _TaggedStream(SpeechStream):
    def _convert_to_speech_data(self, alternative: Any, *, is_final: bool) -> lk_stt.SpeechData:
        data: lk_stt.SpeechData = super()._convert_to_speech_data(alternative, is_final=is_final)
        heard = heard_language(alternative)
        if heard:
            data.language = LanguageCode(heard)
        return data


class RivaSTT(nvidia.STT):
    """``nvidia.STT`` whose results carry the language Riva tagged them with."""

    def stream(
        self,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
    ) -> lk_stt.RecognizeStream:
        effective = LanguageCode(language) if is_given(language) else self._opts.language_code
        return _TaggedStream(stt=self, conn_options=conn_options, language=effective)
