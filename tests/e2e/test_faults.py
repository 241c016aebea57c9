"""Issue 10, faults during live calls on the installed product: no live call is dropped, no
acknowledged event is lost (the scenario and its counts: tests/e2e/faults.py)."""

from __future__ import annotations

from tests.e2e.faults import FAULTS, FaultReport, run_faults
from tests.e2e.scenario import E2E_MARKS, Installed

pytestmark = E2E_MARKS


async def test_live_calls_survive_the_platforms_faults(installed: Installed) -> None:
    report = await run_faults(installed, FaultReport())
    assert [f["fault"] for f in report.faults] == list(FAULTS)
    assert report.calls_dropped == 0, report.as_json()
    assert report.transcript_events_acknowledged > 0
    assert report.events_lost == 0, report.as_json()
