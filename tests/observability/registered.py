"""Every metric family our components register, by the names Prometheus scrapes (with the
``_total``/``_bucket``/``_sum``/``_count`` suffixes prometheus_client exposes)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from voicehive_operator.metrics import OperatorMetrics
from voicehive_orchestrator.metrics import Metrics as OrchestratorMetrics
from voicehive_worker.metrics import WorkerMetrics


def registries() -> dict[str, CollectorRegistry]:
    return {
        "operator": OperatorMetrics().registry,
        "orchestrator": OrchestratorMetrics().registry,
        "worker": WorkerMetrics().registry,
    }


def exposed_names(registry: CollectorRegistry) -> set[str]:
    return names_in_exposition(generate_latest(registry).decode())


def names_in_exposition(text: str) -> set[str]:
    """Sample names as a scrape shows them (families with no sample yet still count via their type)."""
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
        if family.type == "counter":
            names.add(family.name + "_total")
        if family.type == "histogram":
            names.update(family.name + suffix for suffix in ("_bucket", "_sum", "_count"))
    return names


def all_exposed_names() -> set[str]:
    return set().union(*(exposed_names(r) for r in registries().values()))
