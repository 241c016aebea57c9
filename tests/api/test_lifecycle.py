"""The call lifecycle: forward-only, terminal phases final, and the CRD enforces the same rule."""

from __future__ import annotations

import itertools

from voicehive.api import crd
from voicehive.lifecycle import ALLOWED_TRANSITIONS, TERMINAL_PHASES, CallPhase, can_transition, is_terminal


def test_terminal_phases_never_change() -> None:
    for phase in TERMINAL_PHASES:
        assert is_terminal(phase)
        assert ALLOWED_TRANSITIONS[phase] == frozenset()
        assert not any(can_transition(phase, target) for target in CallPhase)


def test_no_transition_goes_backwards() -> None:
    order = [CallPhase.PENDING, CallPhase.STARTING, CallPhase.ACTIVE]
    for earlier, later in itertools.combinations(order, 2):
        assert can_transition(earlier, later)
        assert not can_transition(later, earlier)
    for phase in CallPhase:
        assert not can_transition(phase, phase)  # a duplicate is not a transition


def test_a_late_operator_does_not_block_the_call() -> None:
    """The worker may report Active before the operator's Starting lands; both orders converge."""
    assert can_transition(CallPhase.PENDING, CallPhase.ACTIVE)
    assert not can_transition(CallPhase.ACTIVE, CallPhase.STARTING)


def test_every_live_phase_can_end_or_fail() -> None:
    for phase in set(CallPhase) - TERMINAL_PHASES:
        assert {CallPhase.ENDED, CallPhase.FAILED} <= ALLOWED_TRANSITIONS[phase]
    assert can_transition(None, CallPhase.ENDED)  # an end that arrives before anything else


def test_crd_enforces_terminal_phases_and_immutable_spec() -> None:
    version = crd.voicesession_crd()["spec"]["versions"][0]
    schema = version["schema"]["openAPIV3Schema"]["properties"]
    status_rules = [r["rule"] for r in schema["status"]["x-kubernetes-validations"]]
    assert any("Ended" in rule and "Failed" in rule and "oldSelf" in rule for rule in status_rules)
    assert {"Ended", "Failed"} == {str(p) for p in TERMINAL_PHASES}
    assert [r["rule"] for r in schema["spec"]["x-kubernetes-validations"]] == ["self == oldSelf"]
