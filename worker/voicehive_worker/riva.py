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
from riva.client.asr import ASRService
from riva.client.auth import Auth


def heard_language(alternative: Any) -> str | None:
    """The first language tag of a Riva alternative (``repeated string language_code``), if any."""
    codes = list(getattr(alternative, "language_code", None) or [])
    return str(codes[0]) if codes and codes[0] else None


class _TaggedStream(SpeechStream):
    def __init__(self, *, stt: RivaSTT, conn_options: APIConnectOptions, language: str) -> None:
        super().__init__(stt=stt, conn_options=conn_options, language=language)
        if stt.ca_file is not None:
            # The plugin's channel trusts only the system roots; a managed pool's TLS is signed by
            # the pool's own CA. Same server, metadata and service, a channel that trusts that CA
            # (grpc channels connect lazily: the replaced one never dialled).
            self._auth.channel.close()
            self._auth = Auth(uri=stt._opts.server, use_ssl=True, ssl_root_cert=stt.ca_file,
                              metadata_args=[list(m) for m in self._auth.metadata])
            self._asr_service = ASRService(self._auth)

    def _convert_to_speech_data(self, alternative: Any, *, is_final: bool) -> lk_stt.SpeechData:
        data: lk_stt.SpeechData = super()._convert_to_speech_data(alternative, is_final=is_final)
        heard = heard_language(alternative)
        if heard:
            data.language = LanguageCode(heard)
        return data


class RivaSTT(nvidia.STT):
    """``nvidia.STT`` whose results carry the language Riva tagged them with, and which verifies
    Riva's TLS against ``ca_file`` when given (the CA file is read for each stream, so a renewed
    CA in the mounted Secret is picked up by the next call)."""

    def __init__(self, *, ca_file: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ca_file = ca_file

    def stream(
        self,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
    ) -> lk_stt.RecognizeStream:
        effective = LanguageCode(language) if is_given(language) else self._opts.language_code
        return _TaggedStream(stt=self, conn_options=conn_options, language=effective)
