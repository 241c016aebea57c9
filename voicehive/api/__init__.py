"""The VoiceHive API: pydantic models of the custom resources and the CRDs generated from them."""

from voicehive.api.models import (
    API_VERSION,
    GROUP,
    VERSION,
    HotelLine,
    HotelLineSpec,
    HotelLineStatus,
    VoiceSession,
    VoiceSessionSpec,
    VoiceSessionStatus,
)

__all__ = [
    "API_VERSION",
    "GROUP",
    "VERSION",
    "HotelLine",
    "HotelLineSpec",
    "HotelLineStatus",
    "VoiceSession",
    "VoiceSessionSpec",
    "VoiceSessionStatus",
]
