"""A loopback OTLP/HTTP trace receiver: what an OpenTelemetry Collector does on port 4318.

``POST /v1/traces`` with a binary protobuf ``ExportTraceServiceRequest`` (optionally gzip), decoded
with the official ``opentelemetry-proto`` messages and answered with an
``ExportTraceServiceResponse``, as the OTLP specification says. Every span is kept, flattened to
a :class:`ReceivedSpan`, so a test can read traces without knowing protobuf.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from tests.fakes._http import AiohttpFake

PROTOBUF = "application/x-protobuf"


def _value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, kind) if kind else None


def _attributes(items: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in items}


@dataclass
class ReceivedSpan:
    """One exported span as the receiver decoded it."""

    service: str
    scope: str
    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: int
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    events: list[tuple[str, dict[str, Any]]]
    status_code: int
    resource: dict[str, Any] = field(default_factory=dict)


class OtlpReceiver(AiohttpFake):
    """Records the spans of every export request; ``requests`` counts them."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spans: list[ReceivedSpan] = []
        self.requests = 0
        self.rejected: list[str] = []  # why a request was refused (wrong content type, bad protobuf)

    @property
    def traces_url(self) -> str:
        return f"{self.url}/v1/traces"

    def build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/traces", self._export)
        return app

    async def _export(self, request: web.Request) -> web.Response:
        if request.content_type != PROTOBUF:
            self.rejected.append(f"content type {request.content_type}")
            return web.Response(status=415)
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        message = ExportTraceServiceRequest()
        try:
            message.ParseFromString(body)
        except Exception as exc:  # a malformed body is the exporter's bug: remember it, answer 400
            self.rejected.append(type(exc).__name__)
            return web.Response(status=400)
        self.requests += 1
        self.spans.extend(self._flatten(message))
        return web.Response(body=ExportTraceServiceResponse().SerializeToString(), content_type=PROTOBUF)

    @staticmethod
    def _flatten(message: ExportTraceServiceRequest) -> list[ReceivedSpan]:
        spans = []
        for rs in message.resource_spans:
            resource = _attributes(rs.resource.attributes)
            for ss in rs.scope_spans:
                for s in ss.spans:
                    spans.append(ReceivedSpan(
                        service=str(resource.get("service.name", "")), scope=ss.scope.name,
                        trace_id=s.trace_id.hex(), span_id=s.span_id.hex(), parent_span_id=s.parent_span_id.hex(),
                        name=s.name, kind=s.kind, start_ns=s.start_time_unix_nano, end_ns=s.end_time_unix_nano,
                        attributes=_attributes(s.attributes),
                        events=[(e.name, _attributes(e.attributes)) for e in s.events],
                        status_code=s.status.code, resource=resource,
                    ))
        return spans

    def named(self, name: str) -> list[ReceivedSpan]:
        return [s for s in self.spans if s.name == name]
