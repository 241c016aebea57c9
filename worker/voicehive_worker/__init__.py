"""The per-call VoiceHive worker: livekit-agents AgentSession (Riva -> Azure OpenAI -> ElevenLabs)
with the hotel agent, our turn taking, a never-dead-air watchdog and in-process call state.

Entry points: ``voicehive_worker.session`` (session factory, used by ``voicehive call`` too) and
``voicehive_worker.entrypoint`` (``voicehive worker``, the pod).
"""
