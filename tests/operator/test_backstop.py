"""The backstop touches HotelLines no replica ever reconciled (Kopf's start-up overlap), and no
other line: reconciled, being deleted, too young, or touched a moment ago."""

from __future__ import annotations

import datetime as dt
from typing import Any

from tests.operator.helpers import spec
from voicehive import contract
from voicehive_operator import backstop
from voicehive_operator.kube import Kube
from voicehive_operator.main import build_runtime
from voicehive_operator.settings import OperatorSettings

NOW = dt.datetime(2026, 12, 3, 18, 0, tzinfo=dt.UTC)


def line(name: str, age_s: float, *, status: dict[str, Any] | None = None, nudged_s: float | None = None,
         deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "hotel",
                            "creationTimestamp": (NOW - dt.timedelta(seconds=age_s)).isoformat().replace("+00:00", "Z")}
    if nudged_s is not None:
        meta["annotations"] = {contract.ANNOTATION_NUDGED: (NOW - dt.timedelta(seconds=nudged_s)).isoformat()}
    if deleting:
        meta["deletionTimestamp"] = NOW.isoformat()
    return {"metadata": meta, "status": status or {}}


def test_only_lines_never_reconciled_past_the_grace_are_due() -> None:
    lines = [
        line("stuck", 90),
        line("young", 5),
        line("reconciled", 90, status={"observedGeneration": 1}),
        line("deleting", 90, deleting=True),
        line("just-nudged", 90, nudged_s=3),
        line("nudged-long-ago", 900, nudged_s=120),
        {"metadata": {"name": "no-time", "namespace": "hotel"}},
    ]
    assert backstop.due(lines, NOW, grace_s=60) == [("hotel", "stuck"), ("hotel", "nudged-long-ago")]
    assert backstop.grace_seconds(30) == 60 and backstop.grace_seconds(1) == 10


async def test_nudge_touches_the_stuck_line_through_the_api(kube: Any, kube_client: Kube, namespace: str) -> None:
    runtime = build_runtime(OperatorSettings(redis_url=""), Kube(kube.api_client()))
    runtime.namespaces = (namespace,)
    try:
        for name in ("stuck", "fine"):
            await kube_client.create_custom(namespace, contract.HOTELLINES, {
                "apiVersion": "voicehive.io/v1alpha1", "kind": "HotelLine",
                "metadata": {"name": name, "namespace": namespace}, "spec": spec()})
        await kube_client.patch_custom_status(namespace, contract.HOTELLINES, "fine", {"status": {"observedGeneration": 1}})
        assert await backstop.nudge(runtime, grace_s=3600) == []  # both are younger than an hour
        runtime.settings.clock.advance(3600)
        assert await backstop.nudge(runtime, grace_s=3600) == [(namespace, "stuck")]
        stuck = await kube_client.get_custom(namespace, contract.HOTELLINES, "stuck")
        assert stuck is not None and contract.ANNOTATION_NUDGED in stuck["metadata"]["annotations"]
        assert await backstop.nudge(runtime, grace_s=3600) == []  # touched a moment ago
    finally:
        await runtime.close()
