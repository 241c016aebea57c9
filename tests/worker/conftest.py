"""Worker suite wiring: every spoken reply is scanned for text meant for a model."""

from tests.spoken_replies import spoken_replies

__all__ = ["spoken_replies"]
