"""Kubernetes-style conditions: merge new observations into a status without losing history.

WHY: ``lastTransitionTime`` must only move when a condition's status flips (Argo CD and
``kubectl wait`` rely on it), and every message must be plain words without secrets, so all
condition writes go through :func:`merge`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from voicehive.api.models import HOTEL_LINE_CONDITIONS, ConditionStatus

READY = "Ready"
SIP = "SipTrunkReady"
ASR = "AsrReady"
LLM = "LlmReady"
TTS = "TtsReady"
WORKERS = "WorkersReady"
COMPONENTS: tuple[str, ...] = (SIP, ASR, LLM, TTS, WORKERS)
assert set((READY, *COMPONENTS)) == set(HOTEL_LINE_CONDITIONS)


@dataclass(frozen=True)
class Observation:
    """One condition as the operator sees it now."""

    type: str
    ok: bool | None  # None = Unknown (not checked yet)
    reason: str
    message: str

    @property
    def status(self) -> str:
        if self.ok is None:
            return ConditionStatus.UNKNOWN.value
        return ConditionStatus.TRUE.value if self.ok else ConditionStatus.FALSE.value


def rfc3339(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def merge(
    existing: Iterable[Mapping[str, Any]] | None,
    observations: Iterable[Observation],
    *,
    generation: int | None,
    now: dt.datetime,
) -> list[dict[str, Any]]:
    """New condition list: observed types replaced, others kept, transition times preserved."""
    by_type: dict[str, dict[str, Any]] = {c["type"]: dict(c) for c in existing or () if "type" in c}
    for obs in observations:
        before = by_type.get(obs.type)
        changed = before is None or before.get("status") != obs.status
        entry: dict[str, Any] = {
            "type": obs.type,
            "status": obs.status,
            "reason": obs.reason,
            "message": obs.message,
            "lastTransitionTime": rfc3339(now)
            if changed or before is None
            else before.get("lastTransitionTime", rfc3339(now)),
        }
        if generation is not None:
            entry["observedGeneration"] = generation
        by_type[obs.type] = entry
    order = {t: i for i, t in enumerate(HOTEL_LINE_CONDITIONS)}
    return sorted(by_type.values(), key=lambda c: (order.get(c["type"], len(order)), c["type"]))


def ready(observations: Mapping[str, Observation]) -> Observation:
    """Ready is the conjunction of the component conditions, naming what is missing."""
    missing = [
        observations.get(t) or Observation(t, None, "NotChecked", f"{t} was not checked yet.")
        for t in COMPONENTS
        if (obs := observations.get(t)) is None or obs.ok is not True
    ]
    if not missing:
        return Observation(READY, True, "AllComponentsReady", "The line answers calls: every component is ready.")
    names = ", ".join(obs.type for obs in missing)
    return Observation(READY, False, "ComponentsNotReady", f"Not ready: {names}. {missing[0].message}")


def changed_types(before: Iterable[Mapping[str, Any]] | None, after: Iterable[Mapping[str, Any]]) -> list[
    dict[str, Any]
]:
    """Conditions whose status or reason changed (one Kubernetes Event each)."""
    old = {c.get("type"): (c.get("status"), c.get("reason")) for c in before or ()}
    return [dict(c) for c in after if old.get(c["type"]) != (c["status"], c["reason"])]
