"""Validate a VoiceHive resource offline, the way the apiserver and the operator will.

Three layers, each of which a real resource meets on its way in:

1. the CRD's openAPIV3Schema (types, patterns, enums, bounds) as a JSON Schema;
2. the CRD's CEL rules (``x-kubernetes-validations``), evaluated with cel-python;
3. the pydantic models the operator parses the spec with.

``voicehive validate FILE`` runs them so a platform engineer learns what is wrong before
``kubectl apply`` does, with the offending field named the same way the apiserver names it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import celpy
import jsonschema
from celpy.adapter import json_to_cel
from celpy.evaluation import CELEvalError
from pydantic import ValidationError

from voicehive.api import crd, models


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a resource: the field (apiserver notation) and plain words."""

    field: str
    message: str
    layer: str  # "schema", "cel" or "model"

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


_KINDS: dict[str, tuple[Any, type[models.HotelLine] | type[models.VoiceSession]]] = {
    models.HOTELLINE_KIND: (crd.hotelline_crd, models.HotelLine),
    models.VOICESESSION_KIND: (crd.voicesession_crd, models.VoiceSession),
}


def _field_path(parts: Iterable[Any]) -> str:
    path = ""
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


def _strict(schema: Any) -> Any:
    """Reject unknown fields, as kubectl's strict field validation does (pruning is silent)."""
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: _strict(value) for key, value in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and out.get("type") == "object"
        and "x-kubernetes-preserve-unknown-fields" not in out
    ):
        out["additionalProperties"] = False
    return out


_BOUNDS = {
    "minimum": "should be greater than or equal to",
    "maximum": "should be less than or equal to",
    "minItems": "should have at least {} items",
    "maxItems": "should have at most {} items",
    "minLength": "should be at least {} chars long",
    "maxLength": "may not be more than {} bytes",
}


def _json(value: Any) -> str:
    """A value quoted like the apiserver quotes it; control characters escaped, never sent to a terminal raw."""
    return json.dumps(value, ensure_ascii=False) if isinstance(value, str) else str(value)


def _duplicates(document: Any, schema: dict[str, Any], path: tuple[Any, ...] = ()) -> Iterator[Problem]:
    """``x-kubernetes-list-type: set`` means no repeated items; name the repeat like the apiserver."""
    if isinstance(document, list):
        if schema.get("x-kubernetes-list-type") == "set":
            seen: list[Any] = []
            for index, item in enumerate(document):
                if item in seen:
                    yield Problem(_field_path((*path, index)), f"Duplicate value: {_json(item)}", "schema")
                seen.append(item)
        if isinstance(schema.get("items"), dict):
            for index, item in enumerate(document):
                yield from _duplicates(item, schema["items"], (*path, index))
    elif isinstance(document, dict):
        for name, sub in schema.get("properties", {}).items():
            if name in document:
                yield from _duplicates(document[name], sub, (*path, name))


@lru_cache(maxsize=4)
def _schema_of(kind: str) -> tuple[dict[str, Any], jsonschema.Draft7Validator]:
    """The kind's openAPIV3Schema and its strict validator, built once (generating them is slow)."""
    schema = _KINDS[kind][0]()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema, jsonschema.Draft7Validator(_strict(schema))


def _schema_problems(document: dict[str, Any], schema: dict[str, Any], validator: jsonschema.Draft7Validator) -> Iterator[Problem]:
    for error in sorted(validator.iter_errors(document), key=lambda e: [str(p) for p in e.absolute_path]):
        parts = list(error.absolute_path)
        message = error.message
        if error.validator == "required":
            parts.append(str(error.message).split("'")[1])
            message = "Required value"
        elif error.validator == "enum":
            allowed = ", ".join(f'"{v}"' for v in error.validator_value)
            message = f"Unsupported value: {_json(error.instance)}: supported values: {allowed}"
        elif error.validator == "additionalProperties":
            extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
            parts.append(extra[0] if extra else "?")
            message = "field not declared in schema"
        elif error.validator == "pattern":
            message = f"Invalid value: {_json(error.instance)}: should match '{error.validator_value}'"
        elif error.validator in _BOUNDS:
            template = _BOUNDS[str(error.validator)]
            bound = template.format(error.validator_value) if "{}" in template else f"{template} {error.validator_value}"
            message = f"Invalid value: {_json(error.instance) if not isinstance(error.instance, list) else len(error.instance)}: {bound}"
        elif error.validator == "type":
            message = f"Invalid value: {_json(error.instance)}: must be of type {error.validator_value}"
        yield Problem(_field_path(parts), message, "schema")
    yield from _duplicates(document, schema)


def _cel_rules(
    schema: dict[str, Any], path: tuple[Any, ...] = ()
) -> Iterator[tuple[tuple[Any, ...], str, str, tuple[str, ...]]]:
    for rule in schema.get("x-kubernetes-validations", []):
        field_path = tuple(filter(None, rule.get("fieldPath", "").split(".")))
        yield path, rule["rule"], rule["message"], field_path
    for name, sub in schema.get("properties", {}).items():
        yield from _cel_rules(sub, (*path, name))
    if isinstance(schema.get("items"), dict):
        yield from _cel_rules(schema["items"], (*path, "*"))


def _resolve(document: Any, path: tuple[Any, ...]) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """Every value at ``path`` (``*`` fans out over a list), with its concrete path."""
    if not path:
        yield (), document
        return
    head, rest = path[0], path[1:]
    if head == "*":
        if isinstance(document, list):
            for index, item in enumerate(document):
                for sub_path, value in _resolve(item, rest):
                    yield (index, *sub_path), value
    elif isinstance(document, dict) and head in document:
        for sub_path, value in _resolve(document[head], rest):
            yield (head, *sub_path), value


def _apply_defaults(document: Any, schema: dict[str, Any]) -> Any:
    """Structural defaulting, as the apiserver does before it runs CEL."""
    if isinstance(document, dict) and schema.get("type") == "object":
        out = dict(document)
        for name, sub in schema.get("properties", {}).items():
            if name not in out and "default" in sub:
                out[name] = sub["default"]
            if name in out:
                out[name] = _apply_defaults(out[name], sub)
        return out
    if isinstance(document, list) and isinstance(schema.get("items"), dict):
        return [_apply_defaults(item, schema["items"]) for item in document]
    return document


@lru_cache(maxsize=256)
def _program(rule: str) -> celpy.Runner:
    """A compiled CEL rule; parsing is the slow part (the time-zone rule lists ~550 names)."""
    env = celpy.Environment()
    return env.program(env.compile(rule))


def _cel_problems(document: dict[str, Any], schema: dict[str, Any]) -> Iterator[Problem]:
    defaulted = _apply_defaults(document, schema)
    for path, rule, message, field_path in _cel_rules(schema):
        if "oldSelf" in rule:
            continue  # transition rules need the stored object; only the apiserver has it
        program = _program(rule)
        for concrete, value in _resolve(defaulted, path):
            try:
                ok = program.evaluate({"self": json_to_cel(value)})
            except Exception as exc:  # a CEL runtime error rejects the object, as in the apiserver
                yield Problem(_field_path(concrete), f"rule {rule!r} failed to evaluate: {exc}", "cel")
                continue
            if not bool(ok) or isinstance(ok, CELEvalError):
                yield Problem(_field_path((*concrete, *field_path)), message, "cel")


def _model_problems(document: dict[str, Any], model: type[models.HotelLine] | type[models.VoiceSession]) -> Iterator[Problem]:
    try:
        model.model_validate(document)
    except ValidationError as exc:
        for error in exc.errors():
            loc = [part for part in error["loc"] if not (isinstance(part, str) and part.startswith("function-"))]
            message = str(error["msg"]).removeprefix("Value error, ")
            yield Problem(_field_path(loc), message, "model")


def validate(document: dict[str, Any]) -> list[Problem]:
    """All problems of one VoiceHive resource; an empty list means it would be accepted."""
    kind = document.get("kind")
    if kind not in _KINDS:
        return [Problem("kind", f"not a VoiceHive resource kind: {kind!r} (expected HotelLine or VoiceSession)", "schema")]
    model = _KINDS[kind][1]
    schema, validator = _schema_of(kind)
    problems = list(_schema_problems(document, schema, validator))
    if problems:
        return problems  # CEL only runs on schema-valid objects, as in the apiserver
    problems = list(_cel_problems(document, schema))
    if problems:
        return problems
    return list(_model_problems(document, model))
