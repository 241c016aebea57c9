"""Structured JSON audit log: one line per call state change.

WHY: the seed promises "structured JSON logs for all events" and GDPR needs an audit trail of
what happened to each call, yet a log line must never carry a phone number, transcript text or
a secret. The audit record is therefore built only from typed, non-personal fields: the call
reference (a keyed hash), the line name, the actor, the phases and an :class:`EndReason`.
There is no free-text field to leak through.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass
from typing import Any

from voicehive.lifecycle import CallPhase, EndReason

AUDIT_LOGGER_NAME = "voicehive.audit"

# Attributes every LogRecord has; anything else passed via ``extra`` is a structured field.
_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()
    | {"message", "asctime", "taskName", "color_message"}  # color_message: uvicorn's ANSI duplicate
)


class JsonFormatter(logging.Formatter):
    """Render a record as one JSON object per line: time, level, logger, message, extras."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                payload[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            # Type only: exception messages can quote input (e.g. a room name).
            payload["error"] = record.exc_info[0].__name__
        return json.dumps(payload, default=str, ensure_ascii=False, separators=(",", ":"))


def configure_json_logging(level: int = logging.INFO, stream: Any = None) -> None:
    """Route the root logger through :class:`JsonFormatter` (idempotent)."""
    root = logging.getLogger()
    for handler in root.handlers:
        if isinstance(handler.formatter, JsonFormatter):
            root.setLevel(level)
            return
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    root.setLevel(level)


@dataclass(frozen=True)
class AuditRecord:
    """One state change of one call."""

    call_ref: str
    line: str | None
    actor: str
    from_phase: CallPhase | None
    to_phase: CallPhase
    reason: EndReason | None
    event: str
    at: float

    def fields(self) -> dict[str, Any]:
        return {
            "audit": "call_transition",
            "at": self.at,
            "call_ref": self.call_ref,
            "line": self.line,
            "actor": self.actor,
            "from_phase": self.from_phase.value if self.from_phase else None,
            "to_phase": self.to_phase.value,
            "reason": self.reason.value if self.reason else None,
            "event": self.event,
        }


class AuditLog:
    """Writes :class:`AuditRecord` lines to the ``voicehive.audit`` logger."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._logger = logger or logging.getLogger(AUDIT_LOGGER_NAME)

    def transition(self, record: AuditRecord) -> None:
        self._logger.info(
            "call %s %s -> %s",
            record.call_ref,
            record.from_phase.value if record.from_phase else "new",
            record.to_phase.value,
            extra=record.fields(),
        )
