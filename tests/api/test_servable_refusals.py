"""Refusals only the models can make (issue 18): what the apiserver's schema cannot express.

Each case is a value the CRD lets through but the operator or the worker could not serve; the
models (which the operator parses every line with, and ``voicehive validate`` runs) refuse it
in plain words, so the operator sets a condition instead of letting calls fail.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from voicehive.api.validation import validate

ROOT = Path(__file__).resolve().parents[2]


def _line(**edits: Any) -> dict[str, Any]:
    docs = yaml.safe_load_all((ROOT / "examples/hotelline.yaml").read_text())
    line = copy.deepcopy(next(doc for doc in docs if doc and doc.get("kind") == "HotelLine"))
    for dotted, value in edits.items():
        *parents, leaf = dotted.split("__")
        node = line["spec"]
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return line


@pytest.mark.parametrize(
    ("edits", "field", "words"),
    [
        ({"asr__nodeSelector": {"gpu pool": "l4"}}, "spec.asr", "every key must be a Kubernetes label key"),
        ({"workers__resources": {"requests": {"memory": "2Gi"}}}, "spec.workers.resources", "requests.memory (2Gi) cannot exceed limits.memory (1Gi)"),
        ({"workers__resources": {"requests": {"cpu": "3"}, "limits": {"cpu": "2500m"}}}, "spec.workers.resources", "requests.cpu (3) cannot exceed limits.cpu (2500m)"),
        ({"sip__allowedAddresses": ["2001:db8::1::2"]}, "spec.sip.allowedAddresses", "must be an IP address or CIDR range"),
    ],
)
def test_the_models_refuse_what_the_schema_lets_through(edits: dict[str, Any], field: str, words: str) -> None:
    problems = validate(_line(**edits))
    assert [p.layer for p in problems] == ["model"], problems
    assert problems[0].field == field and words in problems[0].message, problems


@pytest.mark.parametrize(
    "edits",
    [
        {"asr__nodeSelector": {"voicehive.io/pool": "gpu-l4", "cloud.google.com/gke-accelerator": "nvidia-l4"}},
        {"workers__resources": {"requests": {"cpu": "2", "memory": "1Gi"}}},
        {"sip__allowedAddresses": ["2001:db8::/32", "10.0.0.1/8", "::1"]},
        {"facts": {"amenities": ["Zürich view 🏔", "sauna"], "address": "Linden 1\n10117 Berlin"}},
    ],
)
def test_servable_values_stay_accepted(edits: dict[str, Any]) -> None:
    assert validate(_line(**edits)) == []


def test_the_operator_turns_a_model_refusal_into_a_condition() -> None:
    from voicehive_operator.lines import parse_spec

    line = _line(workers__resources={"requests": {"memory": "2Gi"}})
    spec, observation = parse_spec(line["spec"])
    assert spec is None and observation is not None
    assert observation.reason == "SpecInvalid" and "requests.memory (2Gi) cannot exceed limits.memory" in observation.message
