"""Schema-driven fuzzing: ≥ 2,000 requests generated from the served ``/openapi.json``.

Bodies are drawn from the operation's JSON schema (valid ones), then mutated (fields dropped,
values swapped for arbitrary JSON), or replaced by arbitrary JSON or raw bytes; path parameters
are arbitrary text; the auth header and content type vary. Whatever comes, the service must
answer without a 5xx, and every 4xx must be JSON that names the problem.
"""

from __future__ import annotations

import json
import re
import string
from typing import Any
from urllib.parse import quote

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.orchestrator.helpers import RunningServer, auth

EXAMPLES = 2100
JSON_LEAF = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40)
ANY_JSON = st.recursive(JSON_LEAF, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4), max_leaves=12)


def from_schema(schema: dict[str, Any], components: dict[str, Any], depth: int = 0) -> st.SearchStrategy[Any]:
    """A strategy of values valid for (a practical subset of) JSON Schema."""
    if "$ref" in schema:
        return from_schema(components[schema["$ref"].rsplit("/", 1)[1]], components, depth + 1)
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    for key in ("oneOf", "anyOf"):
        if key in schema:
            return st.one_of([from_schema(s, components, depth + 1) for s in schema[key]])
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties", {})
        required = set(schema.get("required", []))
        return st.fixed_dictionaries(
            {k: from_schema(v, components, depth + 1) for k, v in props.items() if k in required},
            optional={k: from_schema(v, components, depth + 1) for k, v in props.items() if k not in required},
        )
    if kind == "string":
        if "pattern" in schema:
            return st.from_regex(schema["pattern"], fullmatch=True).filter(
                lambda s: schema.get("minLength", 0) <= len(s) <= schema.get("maxLength", 10_000))
        low = schema.get("minLength", 0)
        return st.text(min_size=low, max_size=max(low, min(schema.get("maxLength", 60), 60)))
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        return st.integers()
    if kind == "number":
        return st.floats(min_value=schema.get("minimum"), max_value=schema.get("maximum"), allow_nan=False)
    if kind == "null":
        return st.none()
    if kind == "array":
        return st.lists(from_schema(schema.get("items", {}), components, depth + 1), max_size=3)
    return ANY_JSON


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[Any]) -> Any:
    value = draw(base)
    if isinstance(value, dict) and value:
        key = draw(st.sampled_from(sorted(value)))
        if draw(st.booleans()):
            value.pop(key)
        else:
            value[key] = draw(ANY_JSON)
    return value


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    ops = []
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            ops.append((method.upper(), path, op))
    return ops


def test_fuzz_openapi_no_5xx(orch_server: RunningServer) -> None:
    with httpx.Client(base_url=orch_server.url, timeout=30) as client:
        spec = client.get("/openapi.json").json()
        components = spec["components"]["schemas"]
        ops = operations(spec)
        assert len(ops) >= 7
        sent: list[int] = []

        def body_strategy(op: dict[str, Any]) -> st.SearchStrategy[Any]:
            content = op.get("requestBody", {}).get("content", {})
            schema = content.get("application/json", {}).get("schema")
            valid = from_schema(schema, components) if schema else ANY_JSON
            return st.one_of(valid, mutated(valid), ANY_JSON)

        requests = st.sampled_from(ops).flatmap(
            lambda op: st.tuples(
                st.just(op),
                body_strategy(op[2]),
                st.sampled_from(["json", "json", "json", "raw", "webhook"]),
                st.binary(max_size=200),
                st.text(max_size=30),
                st.text(alphabet=string.ascii_letters + string.digits + "._-", max_size=60),
                st.booleans() | st.just(True),
            )
        )

        @settings(max_examples=EXAMPLES, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(requests)
        def one(request: tuple[Any, ...]) -> None:
            (method, path, _op), body, mode, raw, param, token, with_auth = request
            url = re.sub(r"\{[^}]+\}", lambda _m: quote(param, safe="") or "x", path)
            headers = auth() if with_auth else {}
            if mode == "json":
                content = json.dumps(body).encode()
                headers["Content-Type"] = "application/json"
            elif mode == "webhook":
                content = json.dumps(body).encode()
                headers["Content-Type"] = "application/webhook+json"
                headers["Authorization"] = token or "x"
            else:
                content = raw
                headers["Content-Type"] = "application/json"
            r = client.request(method, url, content=content if method != "GET" else None, headers=headers)
            sent.append(r.status_code)
            assert r.status_code < 500, (method, url, r.status_code, r.text)
            if r.status_code >= 400:
                problem = r.json()
                assert problem.get("error") and problem.get("detail"), problem

        one()
        assert len(sent) >= 2000
        print(f"\nfuzz: {len(sent)} requests, statuses {sorted(set(sent))}")
