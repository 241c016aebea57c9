"""A backstop for HotelLines Kopf never handed to a handler: touch them so it looks again.

WHY: two peered replicas both run for a moment at start-up (Kopf resumes each before it has
seen the other's priority). Both then add the finalizer to a new line with a JSON patch tested
on the same resourceVersion; one loses, and its replica waits for "the next cycle", an event
that in about one start in seven never comes (tests/operator/test_ha.py reproduces it on the
rig). Nothing is reconciled, not even by the line's timers, until the line changes again. So
every resync interval the operator looks for lines that no replica has ever reconciled
(``status.observedGeneration`` unset) some time after their creation and changes an annotation
on them. Any replica may do it: the touch is harmless, and the active replica handles it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from voicehive import contract
from voicehive_operator.runtime import Runtime

log = logging.getLogger(__name__)


def _time(value: str | None) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None
    except ValueError:
        return None


def due(lines: Iterable[Mapping[str, Any]], now: dt.datetime, grace_s: float) -> list[tuple[str, str]]:
    """(namespace, name) of lines never reconciled ``grace_s`` after their creation and not
    nudged within the last ``grace_s`` (pure)."""
    found = []
    for line in lines:
        meta = line.get("metadata") or {}
        if meta.get("deletionTimestamp") or (line.get("status") or {}).get("observedGeneration"):
            continue
        since = max(filter(None, (_time(meta.get("creationTimestamp")),
                                  _time((meta.get("annotations") or {}).get(contract.ANNOTATION_NUDGED)))),
                    default=None)
        if since is not None and (now - since).total_seconds() >= grace_s:
            found.append((meta.get("namespace", ""), meta.get("name", "")))
    return found


async def nudge(runtime: Runtime, grace_s: float) -> list[tuple[str, str]]:
    """Touch the lines :func:`due` names; returns them."""
    kube = runtime.kube
    if runtime.namespaces:
        lines = [line for ns in runtime.namespaces for line in await kube.list_custom(ns, contract.HOTELLINES)]
    else:
        lines = await kube.list_custom_everywhere(contract.HOTELLINES)
    now = runtime.settings.clock.now()
    stuck = due(lines, now, grace_s)
    for namespace, name in stuck:
        log.warning("hotelline %s/%s: not reconciled %.0f s after it was created; asking Kopf to look again",
                    namespace, name, grace_s)
        await kube.patch_custom(namespace, contract.HOTELLINES, name,
                                {"metadata": {"annotations": {contract.ANNOTATION_NUDGED: now.isoformat()}}})
    return stuck


def grace_seconds(resync_interval_s: float) -> float:
    """Long enough for a normal first reconcile (provider checks included) to have written status."""
    return max(10.0, 2 * resync_interval_s)


async def run(runtime: Runtime) -> None:
    """Every resync interval, until cancelled (``Runtime.close``); errors are logged, not fatal."""
    interval = runtime.settings.resync_interval_s
    while True:
        await asyncio.sleep(interval)
        try:
            await nudge(runtime, grace_seconds(interval))
        except Exception as exc:  # the API may be briefly unavailable; the next pass retries
            log.warning("backstop pass failed: %s %s", type(exc).__name__, getattr(exc, "status", ""))
