"""Kubernetes permissions of a per-call worker: the one source of truth.

The chart's worker Role (charts/voicehive/templates/worker-rbac.yaml) and
``voicehive_operator.builders.worker_rbac`` must equal these rules; tests/delivery checks the
chart against them, and the docs point here instead of repeating them.
"""

from __future__ import annotations

from typing import Any, Final

from voicehive.api.models import GROUP, VOICESESSIONS

# What the worker calls, and nothing more: it lists and watches the VoiceSessions of its own
# namespace (label selector: its Pod's name) to learn its call, and patches that call's status.
WORKER_RULES: Final[tuple[dict[str, Any], ...]] = (
    {"apiGroups": [GROUP], "resources": [VOICESESSIONS], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [GROUP], "resources": [f"{VOICESESSIONS}/status"], "verbs": ["get", "patch"]},
)


def worker_rules() -> list[dict[str, Any]]:
    """A fresh copy of :data:`WORKER_RULES` (callers may mutate the objects they build)."""
    return [{key: list(value) for key, value in rule.items()} for rule in WORKER_RULES]
