"""The ``voicehive`` command, beside the components it starts (the shared core imports none of them)."""
