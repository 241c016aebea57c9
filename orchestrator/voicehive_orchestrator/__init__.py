"""The VoiceHive orchestrator: the seed's webhook API in front of the CallManager and Redis."""
