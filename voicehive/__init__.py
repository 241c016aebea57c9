"""VoiceHive: Kubernetes-native voice agents that answer hotel phone lines.

This package is the shared core: the API models behind the CRDs, the call lifecycle, and the
helpers every component (operator, orchestrator, worker) needs. Component code lives in the
``voicehive_operator``, ``voicehive_orchestrator`` and ``voicehive_worker`` packages, and the
``voicehive`` command in ``voicehive_cli``; this package imports none of them (a test checks).
"""

__version__ = "0.1.0"
