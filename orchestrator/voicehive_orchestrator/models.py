"""Request and response bodies of the seed's webhook contract (kept field for field).

Types are strict: ``"call_sid": 123`` or ``"is_final": "yes"`` is a 422 naming the field, not
a silent coercion. Unknown top-level fields are ignored (agents may send more), unknown
``event_type`` values are rejected.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, model_validator

CallSid = Annotated[StrictStr, Field(min_length=1, max_length=256, description="LiveKit room name of the call.")]
EventId = Annotated[
    StrictStr,
    Field(min_length=1, max_length=128, description="Sender's unique id of this delivery (deduplication)."),
]
ShortText = Annotated[StrictStr, Field(max_length=256)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class AgentReadyData(_Body):
    room_name: ShortText | None = None
    hotel_id: ShortText | None = None
    line: Annotated[StrictStr, Field(max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")] | None = None
    namespace: Annotated[StrictStr, Field(max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")] | None = None
    language: Annotated[StrictStr, Field(max_length=16)] | None = None


class CallStartedData(_Body):
    participant_sid: ShortText | None = None
    is_sip: StrictBool | None = None


class CallEndedData(_Body):
    reason: Annotated[StrictStr, Field(max_length=128)] | None = None


class _AgentEventBase(_Body):
    call_sid: CallSid
    event_id: EventId | None = None


class AgentReadyEvent(_AgentEventBase):
    event_type: Literal["agent_ready"]
    data: AgentReadyData = Field(default_factory=AgentReadyData)


class CallStartedEvent(_AgentEventBase):
    event_type: Literal["call_started"]
    data: CallStartedData = Field(default_factory=CallStartedData)


class CallEndedEvent(_AgentEventBase):
    event_type: Literal["call_ended"]
    data: CallEndedData = Field(default_factory=CallEndedData)


AgentEvent = Annotated[
    AgentReadyEvent | CallStartedEvent | CallEndedEvent, Field(discriminator="event_type")
]
AGENT_EVENT_TYPES = ("agent_ready", "call_started", "call_ended")


class TranscriptionRequest(_Body):
    call_sid: CallSid
    text: Annotated[StrictStr, Field(max_length=4000, description="Recognised text (personal data).")]
    language: Annotated[StrictStr, Field(min_length=2, max_length=16, pattern=r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")]
    confidence: Annotated[float, Field(strict=True, ge=0.0, le=1.0, allow_inf_nan=False)]
    is_final: StrictBool
    event_id: EventId | None = None


class TranscriptionResponse(BaseModel):
    status: Literal["processed"] = "processed"
    call_sid: str
    intent_detected: str
    intent_confidence: float


class WebhookResponse(BaseModel):
    status: Literal["processed", "duplicate", "ignored"]
    call_sid: str | None = None
    call_ref: str | None = None
    outcome: str
    phase: str | None = None


class CallView(BaseModel):
    call_ref: str
    phase: str
    line: str | None
    hotel_id: str | None
    caller_hash: str | None
    language: str | None
    end_reason: str | None
    created_at: float
    updated_at: float
    answered_at: float | None
    ended_at: float | None
    turns: int
    last_intent: str | None
    intents: dict[str, int]
    events: int


class ErasureRequest(_Body):
    """Exactly one of the two: the number is hashed on arrival and never stored."""

    caller_hash: Annotated[StrictStr, Field(min_length=64, max_length=64)] | None = None
    phone_number: Annotated[StrictStr, Field(min_length=3, max_length=32)] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> ErasureRequest:
        if (self.caller_hash is None) == (self.phone_number is None):
            raise ValueError("give exactly one of caller_hash or phone_number")
        return self


class ErasureResponse(BaseModel):
    erased_calls: int
    call_refs: list[str]


class ErrorItem(BaseModel):
    field: str
    problem: str


class ErrorBody(BaseModel):
    error: str
    detail: str
    errors: list[ErrorItem] = Field(default_factory=list)


def agent_event_schema() -> dict[str, Any]:
    """JSON schema of the agent-event body, for the OpenAPI document."""
    from pydantic import TypeAdapter

    return TypeAdapter(AgentEvent).json_schema(ref_template="#/components/schemas/{model}")
