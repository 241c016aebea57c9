"""Hypothesis strategies for HotelLines, drawn from the generated CRD schema (the API itself).

WHY from the CRD and not hand-picked values: the rule under test is "whatever the API accepts,
a call can be served on", so the generator must reach every corner the schema lets through
(every pattern via ``from_regex``, every enum, every bound). A few cross-field rules (open before
close, recordings within metadata, warm pool within capacity, sip auth or addresses, asr
language among the line's) would otherwise reject most draws, so ``hotel_line_documents``
nudges the draw towards them; the final word is still ``voicehive validate``'s (schema, CEL,
models), applied by the test.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st
from kubernetes.utils.quantity import parse_quantity

from voicehive.api import crd
from voicehive.api.models import LABEL_KEY_PATTERN
from voicehive.api.timezones import TIME_ZONES

MAX_LIST = 3  # longer lists add time per call, not new shapes
MAX_TEXT = 40


def spec_schema() -> dict[str, Any]:
    """The ``spec`` schema of the HotelLine CRD, as the apiserver enforces it."""
    root = crd.hotelline_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return dict(root["properties"]["spec"])


def _string(schema: dict[str, Any]) -> st.SearchStrategy[str]:
    low = int(schema.get("minLength", 0))
    high = int(schema.get("maxLength", MAX_TEXT))
    if "pattern" in schema:
        strategy = st.from_regex(schema["pattern"], fullmatch=True)
    else:
        strategy = st.text(min_size=low, max_size=min(high, MAX_TEXT))
    return strategy.filter(lambda value: low <= len(value.encode()) and len(value) <= high)


def _object(schema: dict[str, Any], path: str) -> st.SearchStrategy[dict[str, Any]]:
    properties = schema.get("properties")
    if properties is None:  # a map (nodeSelector): free keys, typed values
        values = from_schema(schema.get("additionalProperties", {"type": "string"}), path + ".*")
        keys = st.from_regex(LABEL_KEY_PATTERN, fullmatch=True)  # free text keys: tests/api/test_servable_refusals.py
        return st.dictionaries(keys, values, max_size=MAX_LIST)
    required = set(schema.get("required", ()))
    return st.fixed_dictionaries(
        {name: from_schema(sub, f"{path}.{name}") for name, sub in properties.items() if name in required},
        optional={name: from_schema(sub, f"{path}.{name}") for name, sub in properties.items() if name not in required},
    )


def from_schema(schema: dict[str, Any], path: str = "spec") -> st.SearchStrategy[Any]:
    """Any value the structural schema admits (bounded in size), for one property."""
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind == "string":
        return _string(schema)
    if kind == "integer":
        return st.integers(int(schema.get("minimum", -(2**31))), int(schema.get("maximum", 2**31 - 1)))
    if kind == "number":
        return st.floats(schema.get("minimum"), schema.get("maximum"), allow_nan=False, allow_infinity=False)
    if kind == "boolean":
        return st.booleans()
    if kind == "array":
        items = from_schema(schema["items"], path + "[]")
        unique = schema.get("x-kubernetes-list-type") == "set"
        low = int(schema.get("minItems", 0))
        high = max(low, min(int(schema.get("maxItems", MAX_LIST)), MAX_LIST))
        return st.lists(items, min_size=low, max_size=high, unique=unique)
    if kind == "object":
        return _object(schema, path)
    raise ValueError(f"{path}: schema type {kind!r} has no strategy")


def _coherent(spec: dict[str, Any], draw: st.DrawFn) -> dict[str, Any]:
    """Steer a draw towards the cross-field rules; the validator still decides."""
    for window in spec.get("frontDesk", {}).get("hours", []):
        window["open"], window["close"] = sorted((window["open"], window["close"]))
    retention = spec.get("retention")
    if retention and "recordingDays" in retention and "metadataDays" in retention:
        low, high = sorted((retention["recordingDays"], retention["metadataDays"]))
        retention["recordingDays"], retention["metadataDays"] = low, max(high, 1)
    workers = spec.get("workers")
    if workers and "warmPool" in workers:
        workers["warmPool"] = min(workers["warmPool"], workers.get("maxConcurrentCalls", 10))
    resources = (workers or {}).get("resources", {})
    for name in ("cpu", "memory"):
        request, limit = resources.get("requests", {}).get(name), resources.get("limits", {}).get(name)
        if request and limit:
            resources["requests"][name], resources["limits"][name] = sorted((request, limit), key=parse_quantity)
    sip = spec["sip"]
    if not sip.get("allowedAddresses") and "auth" not in sip:
        sip["auth"] = {"secretName": "keys"}
    if "language" in spec["asr"]:
        spec["asr"]["language"] = draw(st.sampled_from(spec["languages"]))
    if draw(st.integers(0, 19)) > 0:  # mostly real zones; the rest probe the refusal
        spec["timeZone"] = draw(st.sampled_from(TIME_ZONES))
    return spec


def hotel_line_documents() -> st.SearchStrategy[dict[str, Any]]:
    """HotelLine documents as a platform engineer might apply them (not yet validated)."""
    specs = from_schema(spec_schema())  # built once: strategies compile their regexes lazily

    @st.composite
    def documents(draw: st.DrawFn) -> dict[str, Any]:
        spec = _coherent(draw(specs), draw)
        return {
            "apiVersion": "voicehive.io/v1alpha1",
            "kind": "HotelLine",
            "metadata": {"name": "generated", "namespace": "hotel"},
            "spec": spec,
        }

    return documents()
