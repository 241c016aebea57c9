"""Names shared by operator, orchestrator and worker: API names, labels, annotations, env vars.

Every component reads these constants instead of spelling strings itself, so renaming a label
is a one-line change. Nothing here may derive a name from personal data in clear: session
names come from the keyed room hash (``voicehive.privacy``), never from the room name.
"""

from __future__ import annotations

import hashlib
from typing import Final

# Our API: defined beside the models the CRDs are generated from, imported from here by everyone.
from voicehive.api.models import API_VERSION as API_VERSION
from voicehive.api.models import GROUP as GROUP
from voicehive.api.models import HOTELLINE_KIND as HOTELLINE_KIND
from voicehive.api.models import HOTELLINES as HOTELLINES
from voicehive.api.models import VERSION as VERSION
from voicehive.api.models import VOICESESSION_KIND as VOICESESSION_KIND
from voicehive.api.models import VOICESESSIONS as VOICESESSIONS

# Labels (selectable) ---------------------------------------------------------------------
LABEL_PART_OF: Final = "app.kubernetes.io/part-of"
LABEL_COMPONENT: Final = "app.kubernetes.io/component"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
LABEL_LINE: Final = f"{GROUP}/line"  # HotelLine name, on worker pods, VoiceSessions, Riva objects
LABEL_WORKER_STATE: Final = f"{GROUP}/worker-state"  # idle | claimed, on worker pods
LABEL_WORKER: Final = f"{GROUP}/worker"  # worker pod name, on the VoiceSession it serves
LABEL_SESSION: Final = f"{GROUP}/session"  # VoiceSession name, on the worker pod serving it
LABEL_SPEC_HASH: Final = f"{GROUP}/spec-hash"  # hash of the line spec a warm pod was built from
LABEL_CALLER_HASH: Final = f"{GROUP}/caller"  # first 63 hex chars of the caller hash (erasure)
LABEL_ASR_POOL: Final = f"{GROUP}/asr-pool"  # shared Riva deployment key (region + model)

PART_OF: Final = "voicehive"  # value of LABEL_PART_OF on everything VoiceHive creates
WORKER_IDLE: Final = "idle"
WORKER_CLAIMED: Final = "claimed"

COMPONENT_WORKER: Final = "worker"
COMPONENT_ASR: Final = "asr"
MANAGER: Final = "voicehive-operator"
# Every worker pod the operator manages carries these; the operator watches only such pods.
WORKER_POD_LABELS: Final = {LABEL_COMPONENT: COMPONENT_WORKER, LABEL_MANAGED_BY: MANAGER}

# Annotations -----------------------------------------------------------------------------
ANNOTATION_ERASE: Final = f"{GROUP}/erase-caller"  # on a HotelLine: caller hash(es) to erase
# On a HotelLine no replica has reconciled: when the operator asked Kopf to look again (backstop.py).
ANNOTATION_NUDGED: Final = f"{GROUP}/reconcile-requested"
# On a VoiceSession: the W3C trace context (``traceparent`` value) of the orchestrator's span that
# created it; the operator's bind span and the worker's call span are its children (docs/tracing.md).
ANNOTATION_TRACEPARENT: Final = f"{GROUP}/traceparent"
# On a VoiceSession: the room-scoped LiveKit token the operator minted for the bound worker,
# sealed with the line's token key (AES-GCM, context "<namespace>/<session>").
ANNOTATION_SEALED_TOKEN: Final = f"{GROUP}/sealed-livekit-token"
# On a VoiceSession's status: the worker asks the operator to transfer the caller (the SIP grant
# that a transfer needs would let a worker place calls anywhere, so only the operator holds it).
def sealed_token_context(namespace: str, session: str) -> str:
    """AAD of ANNOTATION_SEALED_TOKEN: a sealed token opens only on the session it was written to."""
    return f"{namespace}/{session}"


CONDITION_TRANSFER: Final = "TransferToFrontDesk"

# Worker pod environment (operator writes, worker reads); names of variables, not values.
# ruff: noqa: S105
ENV_LINE_NAME: Final = "VOICEHIVE_LINE"
ENV_NAMESPACE: Final = "VOICEHIVE_NAMESPACE"
ENV_POD_NAME: Final = "VOICEHIVE_POD_NAME"
ENV_LINE_SPEC: Final = "VOICEHIVE_LINE_SPEC"  # the HotelLine spec as JSON (holds no secrets)
ENV_RIVA_SERVER: Final = "VOICEHIVE_RIVA_SERVER"  # host:port
ENV_REDIS_URL: Final = "VOICEHIVE_REDIS_URL"
ENV_PII_KEY: Final = "VOICEHIVE_PII_KEY"
ENV_TRANSCRIPT_KEY: Final = "VOICEHIVE_TRANSCRIPT_KEY"
ENV_AGENT_TOKEN: Final = "VOICEHIVE_AGENT_TOKEN"
ENV_LIVEKIT_URL: Final = "LIVEKIT_URL"
ENV_LIVEKIT_API_KEY: Final = "LIVEKIT_API_KEY"
ENV_LIVEKIT_API_SECRET: Final = "LIVEKIT_API_SECRET"
ENV_AZURE_OPENAI_API_KEY: Final = "AZURE_OPENAI_API_KEY"
ENV_ELEVEN_API_KEY: Final = "ELEVEN_API_KEY"
ENV_LINE_TOKEN_KEY: Final = "VOICEHIVE_LINE_TOKEN_KEY"  # opens ANNOTATION_SEALED_TOKEN (per line)
ENV_RECORDING_LINE_KEY: Final = "VOICEHIVE_RECORDING_LINE_KEY"  # one line's recording key (worker, staff)
# Where worker pods find the CA of a rediss:// Redis (the URL names it: ?ssl_ca_certs=<dir>/ca.crt).
REDIS_CA_DIR: Final = "/etc/voicehive/redis-ca"
# The CA of the line's operator-managed Riva pool (its TLS sidecar): when set, the worker dials
# Riva over TLS and trusts only this CA. Mounted from the line Secret at RIVA_CA_DIR/ca.crt.
ENV_RIVA_CA_FILE: Final = "VOICEHIVE_RIVA_CA_FILE"
RIVA_CA_DIR: Final = "/etc/voicehive/riva-ca"
AGENT_IDENTITY_PREFIX: Final = "voicehive-agent-"  # + pod name: the worker's LiveKit identity
ENV_READY_PORT: Final = "VOICEHIVE_READY_PORT"  # the worker's probe server (/healthz, /readyz)
# the worker pod's terminationGracePeriodSeconds: how long a draining worker lets its call run
ENV_TERMINATION_GRACE_SECONDS: Final = "VOICEHIVE_TERMINATION_GRACE_SECONDS"
WORKER_PROBE_PORT: Final = 8081
# OpenTelemetry's standard variables (the SDK's names): tracing is on only when an endpoint is set.
ENV_OTLP_ENDPOINT: Final = "OTEL_EXPORTER_OTLP_ENDPOINT"  # base URL; /v1/traces is appended
ENV_OTLP_TRACES_ENDPOINT: Final = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"  # full URL, wins over the base
ENV_OTLP_PROTOCOL: Final = "OTEL_EXPORTER_OTLP_PROTOCOL"
ENV_OTLP_TRACES_PROTOCOL: Final = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
ENV_OTEL_SDK_DISABLED: Final = "OTEL_SDK_DISABLED"
ENV_PMS_ID: Final = "VOICEHIVE_PMS_ID"  # Mews ClientToken / Apaleo client id (spec.pms.credentials)
ENV_PMS_SECRET: Final = "VOICEHIVE_PMS_SECRET"  # Mews AccessToken / Apaleo client secret
ENV_WEBHOOK_SECRET: Final = "VOICEHIVE_WEBHOOK_SECRET"  # spec.staffDelivery.webhook.secretRef
ENV_SMTP_USER: Final = "VOICEHIVE_SMTP_USER"  # spec.staffDelivery.email.credentials
ENV_SMTP_PASSWORD: Final = "VOICEHIVE_SMTP_PASSWORD"

# LiveKit ---------------------------------------------------------------------------------
# Attribute set by the line's dispatch rule on every SIP participant, so a webhook names its
# line without parsing the room name (which also carries the caller's number).
ATTRIBUTE_LINE: Final = "voicehive.line"  # value: "<namespace>/<name>"


def line_key(namespace: str, name: str) -> str:
    """The ``namespace/name`` key of a HotelLine, as carried in LiveKit attributes and metadata."""
    return f"{namespace}/{name}"


def room_prefix(namespace: str, name: str) -> str:
    """Room-name prefix unique to a line across the whole LiveKit project.

    Hashed so that a long namespace/name cannot overflow LiveKit's room-name limit; the
    orchestrator maps a room back to its line through this prefix when attributes are absent.
    """
    digest = hashlib.sha256(line_key(namespace, name).encode()).hexdigest()[:10]
    return f"vh-{digest}-"


def session_name(room_hash: str) -> str:
    """VoiceSession name for a call: from the keyed room hash, never from the room name."""
    return f"vs-{room_hash[:20]}"


def caller_label(caller_hash: str) -> str:
    """Label value for a caller hash (label values are limited to 63 characters)."""
    return caller_hash[:63]


def worker_pod_selector() -> str:
    """The label selector (server-side) of the worker pods the operator manages."""
    return ",".join(f"{key}={value}" for key, value in sorted(WORKER_POD_LABELS.items()))
