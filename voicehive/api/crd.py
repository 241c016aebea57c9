"""Generate the CustomResourceDefinitions from the pydantic models.

Pydantic emits JSON Schema; Kubernetes wants a *structural* OpenAPI v3 schema: every ``$ref``
inlined, no ``anyOf`` for optionals, no ``title``, no ``additionalProperties: false`` next to
``properties``. This module performs exactly those rewrites and nothing else, so the models stay
the one source of truth (``make crds`` writes ``crds/``; ``tests/test_crds.py`` proves no drift).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import yaml
from pydantic import BaseModel

from voicehive import contract
from voicehive.api import models

CATEGORY = "voicehive"


def _inline(schema: Any, defs: dict[str, Any]) -> Any:
    """Resolve ``$ref`` and flatten ``Optional[X]`` (``anyOf [X, null]``) into ``X``."""
    if isinstance(schema, list):
        return [_inline(item, defs) for item in schema]
    if not isinstance(schema, dict):
        return schema
    node = dict(schema)
    if "$ref" in node:
        target = copy.deepcopy(defs[node.pop("$ref").split("/")[-1]])
        # Field-level keys (description, default) win over the referenced type's docstring.
        target.update(node)
        node = target
    if "anyOf" in node:
        variants = [v for v in node.pop("anyOf") if v.get("type") != "null"]
        if len(variants) != 1:
            raise ValueError(f"cannot express union {variants!r} in a structural schema")
        merged = dict(variants[0])
        merged.update(node)
        node = merged
        if "$ref" in node:
            return _inline(node, defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in {"title", "$defs"}:
            continue
        if key == "default" and value is None:
            continue
        if key == "additionalProperties" and value is False:
            continue
        if key == "patternProperties":  # not structural: the values' schema, the keys by CEL
            (pattern, sub), = value.items()
            out["additionalProperties"] = _inline(sub, defs)
            out.setdefault("x-kubernetes-validations", []).append(
                {"rule": f"self.all(k, k.matches('{pattern}'))", "message": f"every key must match {pattern}"})
        elif key == "properties":
            out[key] = {name: _inline(sub, defs) for name, sub in value.items()}
        elif key in {"items", "additionalProperties"}:
            out[key] = _inline(value, defs)
        else:
            out[key] = value
    rules = node.get("x-voicehive-cel")
    if rules:
        out.pop("x-voicehive-cel", None)
        out["x-kubernetes-validations"] = out.get("x-kubernetes-validations", []) + [
            {"rule": rule[0], "message": rule[1], **({"fieldPath": rule[2]} if len(rule) > 2 else {})}
            for rule in rules
        ]
    return out


def _add_cel_markers(model: type[BaseModel], schema: dict[str, Any]) -> None:
    """Carry each model's ``cel_rules`` into its ``$defs`` entry (inlined later)."""
    defs = schema.get("$defs", {})
    seen: set[type[BaseModel]] = set()

    def visit(cls: type[BaseModel]) -> None:
        if cls in seen:
            return
        seen.add(cls)
        rules = getattr(cls, "cel_rules", ())
        if rules:
            target = defs.get(cls.__name__) if cls is not model else schema
            if target is not None:
                target["x-voicehive-cel"] = list(rules)
        for field in cls.model_fields.values():
            for sub in _model_types(field.annotation):
                visit(sub)

    visit(model)


def _model_types(annotation: Any) -> list[type[BaseModel]]:
    found: list[type[BaseModel]] = []
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        found.append(annotation)
    for arg in getattr(annotation, "__args__", ()) or ():
        found.extend(_model_types(arg))
    return found


def _object_defaults(schema: dict[str, Any], model: type[BaseModel]) -> None:
    """Give object-valued fields with a default factory ``default: {}`` so nested defaults apply.

    The apiserver only defaults a nested field when its parent object exists; ``default: {}`` on
    ``workers``/``retention`` is what makes "retention 30/7 days, warm pool 1" true for a
    HotelLine that omits those blocks entirely.
    """
    props = schema.get("properties", {})
    for name, field in model.model_fields.items():
        key = field.alias or name
        sub_models = _model_types(field.annotation)
        if key not in props or not sub_models:
            continue
        sub_schema = props[key]
        if field.default_factory is not None and sub_schema.get("type") == "object":
            # The whole defaulted object, not {}: a real apiserver checks a default against the
            # CEL rules without applying nested defaults first, so {} fails e.g. warmPool <= max.
            factory = cast(Callable[[], BaseModel], field.default_factory)
            sub_schema.setdefault("default", factory().model_dump(by_alias=True, mode="json", exclude_none=True))
        if sub_schema.get("type") == "object":
            _object_defaults(sub_schema, sub_models[0])
        elif sub_schema.get("type") == "array" and isinstance(sub_schema.get("items"), dict):
            _object_defaults(sub_schema["items"], sub_models[0])


def structural_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of ``model`` (its wire form, camelCase)."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    _add_cel_markers(model, raw)
    defs = raw.get("$defs", {})
    schema: dict[str, Any] = _inline(raw, defs)
    _object_defaults(schema, model)
    return schema


def _resource_schema(spec: type[BaseModel], status: type[BaseModel], description: str) -> dict[str, Any]:
    return {
        "type": "object",
        "description": description,
        "required": ["spec"],
        "properties": {
            "apiVersion": {
                "type": "string",
                "description": f"Versioned schema of this object; {models.API_VERSION}.",
            },
            "kind": {"type": "string", "description": "REST resource this object represents."},
            # A real apiserver rejects anything but `type` here (ObjectMeta is documented already).
            "metadata": {"type": "object"},
            "spec": structural_schema(spec),
            "status": structural_schema(status),
        },
    }


def _crd(
    *,
    kind: str,
    plural: str,
    short_name: str,
    description: str,
    spec: type[BaseModel],
    status: type[BaseModel],
    columns: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{models.GROUP}",
            "labels": {contract.LABEL_PART_OF: contract.PART_OF},
            # CRDs must exist before anything that uses them (Argo CD sync wave).
            "annotations": {"argocd.argoproj.io/sync-wave": "-10"},
        },
        "spec": {
            "group": models.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": [short_name],
                "categories": [CATEGORY],
            },
            "versions": [
                {
                    "name": models.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {"openAPIV3Schema": _resource_schema(spec, status, description)},
                }
            ],
        },
    }


def _age() -> dict[str, Any]:
    return {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}


def hotelline_crd() -> dict[str, Any]:
    return _crd(
        kind=models.HOTELLINE_KIND,
        plural=models.HOTELLINES,
        short_name="hl",
        description="One hotel phone line: numbers, SIP access, speech models and the agent's knowledge.",
        spec=models.HotelLineSpec,
        status=models.HotelLineStatus,
        columns=[
            {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
            {"name": "Region", "type": "string", "jsonPath": ".spec.region"},
            {"name": "Numbers", "type": "string", "jsonPath": ".spec.phoneNumbers"},
            {"name": "Active", "type": "integer", "jsonPath": ".status.activeCalls"},
            {"name": "Warm", "type": "integer", "jsonPath": ".status.warmWorkers", "priority": 1},
            _age(),
        ],
    )


def voicesession_crd() -> dict[str, Any]:
    return _crd(
        kind=models.VOICESESSION_KIND,
        plural=models.VOICESESSIONS,
        short_name="vs",
        description="One call on a HotelLine, served by its own worker pod. Holds no personal data in clear.",
        spec=models.VoiceSessionSpec,
        status=models.VoiceSessionStatus,
        columns=[
            {"name": "Line", "type": "string", "jsonPath": ".spec.lineRef.name"},
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            {"name": "Worker", "type": "string", "jsonPath": ".status.workerPod"},
            {"name": "Turns", "type": "integer", "jsonPath": ".status.turns", "priority": 1},
            _age(),
        ],
    )


CRD_FILES: dict[str, Any] = {
    f"{models.HOTELLINES}.{models.GROUP}.yaml": hotelline_crd,
    f"{models.VOICESESSIONS}.{models.GROUP}.yaml": voicesession_crd,
}

HEADER = "# Generated from voicehive/api/models.py by `make crds`. Do not edit by hand.\n"


def render(document: dict[str, Any]) -> str:
    return HEADER + yaml.safe_dump(document, sort_keys=False, width=110, allow_unicode=True)


def rendered_crds() -> dict[str, str]:
    """File name -> YAML text of every generated CRD."""
    return {name: render(build()) for name, build in CRD_FILES.items()}


def write_crds(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in rendered_crds().items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    import sys

    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("crds")
    for path in write_crds(target):
        print(f"wrote {path}")
