"""Pydantic models of the VoiceHive custom resources: the single source of the API.

The CRD YAML in ``crds/`` is generated from these classes (``make crds``); a test fails when
the two drift. Field descriptions become the CRD's property descriptions, so they are written
for ``kubectl explain``: what the field means to a hotel's platform engineer, not to us.

Rules that span fields are written twice on purpose: once as CEL (``x-kubernetes-validations``,
enforced by the apiserver) and once as a pydantic validator (enforced by the operator, so a
resource that slipped past an old CRD still gets a plain-words condition). A test runs every
invalid example through both.
"""

from __future__ import annotations

import enum
import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from voicehive.api.timezones import TIME_ZONES, one_of_regex
from voicehive.lifecycle import CallPhase

GROUP = "voicehive.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
# Kinds and plurals of our two resources: every component and the CRD generator read these.
HOTELLINE_KIND = "HotelLine"
HOTELLINES = "hotellines"  # plural
VOICESESSION_KIND = "VoiceSession"
VOICESESSIONS = "voicesessions"  # plural

# Patterns shared by schema and models. Kept as plain strings so the CRD carries them verbatim.
E164_PATTERN = r"^\+[1-9][0-9]{6,14}$"
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
SECRET_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"  # noqa: S105 (a pattern, not a secret)
LANGUAGE_PATTERN = r"^[a-z]{2}(-[A-Z]{2})?$"
TIME_ZONE_PATTERN = r"^(UTC|[A-Z][A-Za-z_]+(/[A-Za-z0-9_+\-]+){1,2})$"
HHMM_PATTERN = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"
PORT = r"([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"  # 1-65535
HTTPS_URL_PATTERN = rf"^https://(\[[0-9a-fA-F:.]+\]|[^\s/?#:\[\]]+)(:{PORT})?(/[^\s]*)?$"
_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
IP_OR_CIDR_PATTERN = (
    rf"^({_OCTET}(\.{_OCTET}){{3}}(/(3[0-2]|[12]?[0-9]))?|[0-9a-fA-F:]+:[0-9a-fA-F:]*(/(12[0-8]|1[01][0-9]|[1-9]?[0-9]))?)$"
)
TRANSFER_TARGET_PATTERN = r"^(tel:\+[1-9][0-9]{6,14}|sips?:[^\s@]+@[^\s]+)$"
QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|Ki|Mi|Gi|Ti)?$"
HASH_PATTERN = r"^[0-9a-f]{64}$"
IMAGE_PATTERN = r"^[a-z0-9]+([._/:@-][a-zA-Z0-9]+)*$"
# Text the agent says to callers: something to say, and no control characters (eSpeak NG and the
# SIP media path cannot carry a NUL; an escape sequence is nothing a caller should hear).
SPOKEN_TEXT_PATTERN = r"^[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f][^\x00-\x1f\x7f]*$"
# Same, for answers and addresses written over several lines (tab and newline allowed).
SPOKEN_LINES_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*[^\s\x00-\x1f\x7f][^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"
# Kubernetes label keys (optional DNS-subdomain prefix) and values: the operator copies node
# selectors and tolerations into Pods and Deployments, which the apiserver checks against these.
LABEL_KEY_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$"
MAX_NIGHTLY_RATE = 100_000_000  # room for rupiah and dong rates; far beyond any price a line quotes


class EURegion(enum.StrEnum):
    """Cloud regions inside the European Union (not the UK, Switzerland or Norway).

    The value is what nodes carry in ``topology.kubernetes.io/region``; the operator pins GPU
    and worker pods there. ``eu-west-2``/``europe-west2``/``uksouth`` (London) are deliberately
    absent: they look European but are outside the EU.
    """

    AWS_FRANKFURT = "eu-central-1"
    AWS_IRELAND = "eu-west-1"
    AWS_PARIS = "eu-west-3"
    AWS_STOCKHOLM = "eu-north-1"
    AWS_MILAN = "eu-south-1"
    AWS_SPAIN = "eu-south-2"
    AZURE_WEST_EUROPE = "westeurope"
    AZURE_NORTH_EUROPE = "northeurope"
    AZURE_GERMANY_WEST_CENTRAL = "germanywestcentral"
    AZURE_FRANCE_CENTRAL = "francecentral"
    AZURE_SWEDEN_CENTRAL = "swedencentral"
    AZURE_ITALY_NORTH = "italynorth"
    AZURE_POLAND_CENTRAL = "polandcentral"
    AZURE_SPAIN_CENTRAL = "spaincentral"
    GCP_BELGIUM = "europe-west1"
    GCP_FRANKFURT = "europe-west3"
    GCP_NETHERLANDS = "europe-west4"
    GCP_PARIS = "europe-west9"
    GCP_FINLAND = "europe-north1"
    GCP_MADRID = "europe-southwest1"
    GCP_WARSAW = "europe-central2"
    GCP_MILAN = "europe-west8"


class Weekday(enum.StrEnum):
    MON = "Mon"
    TUE = "Tue"
    WED = "Wed"
    THU = "Thu"
    FRI = "Fri"
    SAT = "Sat"
    SUN = "Sun"


class MediaEncryption(enum.StrEnum):
    """SRTP for the SIP media leg (LiveKit ``SIPMediaEncryption``)."""

    DISABLE = "disable"
    ALLOW = "allow"
    REQUIRE = "require"


class _Model(BaseModel):
    """camelCase on the wire (Kubernetes convention), snake_case in Python; unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_enum_values=True,
    )

    # CEL rules for this object, copied into the CRD as x-kubernetes-validations:
    # (rule, message) or (rule, message, fieldPath relative to this object).
    cel_rules: ClassVar[tuple[tuple[str, ...], ...]] = ()

    def to_wire(self) -> dict[str, Any]:
        """The JSON a Kubernetes client sends: camelCase, no unset optionals."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


def _field(description: str, **kwargs: Any) -> Any:
    return Field(description=description, **kwargs)


class SecretKeyRef(_Model):
    """Where a secret value lives; VoiceHive never accepts a secret inline."""

    name: str = _field(
        "Name of a Secret in the HotelLine's namespace.", pattern=DNS_SUBDOMAIN_PATTERN, max_length=253
    )
    key: str = _field("Key inside that Secret whose value is used.", pattern=SECRET_KEY_PATTERN, max_length=253)


class SipAuth(_Model):
    """Digest credentials the carrier must present; both values come from one Secret."""

    secret_name: str = _field(
        "Secret holding the SIP digest credentials.", pattern=DNS_SUBDOMAIN_PATTERN, max_length=253
    )
    username_key: str = _field(
        "Key of the user name inside the Secret.", default="username", pattern=SECRET_KEY_PATTERN
    )
    password_key: str = _field(
        "Key of the password inside the Secret.", default="password", pattern=SECRET_KEY_PATTERN
    )


class SipSpec(_Model):
    """Who may send calls to this line and how the media leg is protected."""

    allowed_addresses: list[Annotated[str, Field(pattern=IP_OR_CIDR_PATTERN)]] = _field(
        "Carrier addresses (IP or CIDR) allowed to send calls. Empty means any address, which then "
        "requires auth.",
        default_factory=list,
        max_length=64,
    )
    auth: SipAuth | None = _field("Digest authentication for inbound INVITEs, from a Secret.", default=None)
    media_encryption: MediaEncryption = _field(
        "SRTP policy for the call audio: disable, allow (use it when the carrier offers it) or require.",
        default=MediaEncryption.ALLOW,
    )

    cel_rules = (
        (
            "(has(self.allowedAddresses) && size(self.allowedAddresses) > 0) || has(self.auth)",
            "sip: set allowedAddresses or auth, otherwise anyone on the internet could call in "
            "on this trunk",
        ),
    )

    @field_validator("allowed_addresses")
    @classmethod
    def _addresses_parse(cls, value: list[str]) -> list[str]:
        # The pattern cannot check IPv6 fully; LiveKit matches carriers with a parsed prefix.
        import ipaddress

        for address in value:
            try:
                ipaddress.ip_network(address, strict=False)
            except ValueError:
                raise ValueError(
                    "sip.allowedAddresses: every entry must be an IP address or CIDR range, e.g. 203.0.113.0/28"
                ) from None
        return value

    @model_validator(mode="after")
    def _addresses_or_auth(self) -> SipSpec:
        if not self.allowed_addresses and self.auth is None:
            raise ValueError(self.cel_rules[0][1])
        return self


class OpeningHours(_Model):
    """One weekly opening window of the front desk, in the line's time zone."""

    days: list[Weekday] = _field("Weekdays this window applies to.", min_length=1, max_length=7)
    open: str = _field("Opening time, 24-hour HH:MM.", pattern=HHMM_PATTERN)
    close: str = _field("Closing time, 24-hour HH:MM; 24:00 is written 23:59.", pattern=HHMM_PATTERN)

    cel_rules = (("self.open < self.close", "frontDesk.hours: open must be before close"),)

    @model_validator(mode="after")
    def _open_before_close(self) -> OpeningHours:
        if not self.open < self.close:
            raise ValueError(self.cel_rules[0][1])
        return self


class FrontDeskSpec(_Model):
    """The people behind the agent: where a call goes when the caller asks for a person."""

    transfer_to: str = _field(
        "Transfer target as tel:+E164 or sip:user@host; used for SIP REFER.", pattern=TRANSFER_TARGET_PATTERN
    )
    hours: list[OpeningHours] = _field(
        "When the front desk is staffed. Empty means always. Outside these hours the agent takes a "
        "message instead of transferring.",
        default_factory=list,
        max_length=14,
    )


class Toleration(_Model):
    """A Kubernetes toleration, for tainted GPU node pools."""

    key: str | None = _field("Taint key to tolerate.", default=None, max_length=253, pattern=LABEL_KEY_PATTERN)
    operator: Literal["Exists", "Equal"] = _field("Exists or Equal.", default="Equal")
    value: str | None = _field(
        "Taint value, for operator Equal.", default=None, max_length=63, pattern=LABEL_VALUE_PATTERN
    )
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = _field(
        "Taint effect to tolerate; empty means all effects.", default=None
    )
    toleration_seconds: int | None = _field(
        "For NoExecute: how long the pod stays bound after the taint appears.", default=None, ge=0
    )

    # The operator copies tolerations into Riva's Deployment; the apiserver refuses these there.
    cel_rules = (
        ("self.operator != 'Exists' || !has(self.value) || self.value == ''", "tolerations: operator Exists takes no value"),
        ("has(self.key) || self.operator == 'Exists'", "tolerations: a toleration without a key must use operator Exists"),
        (
            "!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
            "tolerations: tolerationSeconds applies only to effect NoExecute",
        ),
    )

    @model_validator(mode="after")
    def _kubernetes_accepts(self) -> Toleration:
        checks = (
            self.operator != "Exists" or not self.value,
            self.key is not None or self.operator == "Exists",
            self.toleration_seconds is None or self.effect == "NoExecute",
        )
        for ok, rule in zip(checks, self.cel_rules, strict=True):
            if not ok:
                raise ValueError(rule[1])
        return self


class AsrSpec(_Model):
    """Speech recognition: an NVIDIA Riva streaming ASR model served on EU GPU node pools."""

    model: str = _field(
        "Riva ASR model name as served by Riva (e.g. parakeet-1.1b-en-US-asr-streaming).",
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
    )
    language: str | None = _field(
        "BCP-47 language of the model; defaults to the line's first language.",
        default=None,
        pattern=LANGUAGE_PATTERN,
        max_length=5,
    )
    models: dict[Annotated[str, Field(pattern=r"^[a-z]{2}$")], Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]] = _field(
        "Riva model per language (two-letter code) the call switches to when the caller does; a "
        "multilingual model needs none.",
        default_factory=dict,
        max_length=10,
    )
    gpus_per_replica: int = _field("nvidia.com/gpu per Riva replica.", default=1, ge=1, le=8)
    node_selector: dict[str, Annotated[str, Field(pattern=LABEL_VALUE_PATTERN, max_length=63)]] = _field(
        "Labels of the GPU node pool Riva runs on (added to the region affinity).", default_factory=dict, max_length=32
    )
    tolerations: list[Toleration] = _field(
        "Tolerations for tainted GPU nodes.", default_factory=list, max_length=16
    )
    endpoint: str | None = _field(
        "Use an existing Riva server at host:port instead of the operator-managed Deployment.",
        default=None,
        pattern=rf"^[A-Za-z0-9.-]+:{PORT}$",
    )
    use_tls: bool = _field("Connect to Riva over TLS.", default=False)

    @model_validator(mode="after")
    def _label_keys(self) -> AsrSpec:
        # Not CEL: map keys carry no length bound in a structural schema, so the apiserver's cost
        # estimate of a regex over them exceeds its budget. The operator refuses them instead.
        if not all(len(key) <= 317 and re.match(LABEL_KEY_PATTERN, key) for key in self.node_selector):
            raise ValueError("asr.nodeSelector: every key must be a Kubernetes label key, e.g. voicehive.io/pool")
        return self


class LlmSpec(_Model):
    """The language model: an Azure OpenAI deployment in an EU region."""

    endpoint: str = _field(
        "Azure OpenAI endpoint, https://<resource>.openai.azure.com; must be an EU resource.",
        pattern=HTTPS_URL_PATTERN,
        max_length=2048,
    )
    deployment: str = _field(
        "Deployment name inside that resource.", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$"
    )
    api_version: str = _field(
        "Azure OpenAI API version, e.g. 2024-10-21.",
        default="2024-10-21",
        pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}(-preview)?$",
    )
    api_key_secret_ref: SecretKeyRef = _field("Secret key holding the Azure OpenAI API key.")
    persona: str = _field(
        "How the agent presents itself (name, tone). Shown to the model, never to logs.",
        default="a warm, concise hotel receptionist",
        max_length=2000,
    )
    temperature: float = _field("Sampling temperature.", default=0.3, ge=0.0, le=2.0)


class TtsSpec(_Model):
    """Speech synthesis: an ElevenLabs voice, streamed as PCM."""

    voice_id: str = _field(
        "ElevenLabs voice id.", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$"
    )
    voices: dict[Annotated[str, Field(pattern=r"^[a-z]{2}$")], Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]] = _field(
        "ElevenLabs voice per language (two-letter code, e.g. de); languages not listed use voiceId.",
        default_factory=dict,
        max_length=10,
    )
    model_id: str = _field(
        "ElevenLabs model id; Flash models have the lowest latency.",
        default="eleven_flash_v2_5",
        pattern=r"^[A-Za-z0-9_.-]+$",
        max_length=64,
    )
    api_key_secret_ref: SecretKeyRef = _field("Secret key holding the ElevenLabs API key.")
    endpoint: str = _field(
        "ElevenLabs API base URL; defaults to the EU data-residency endpoint.",
        default="https://api.eu.residency.elevenlabs.io",
        pattern=HTTPS_URL_PATTERN,
        max_length=2048,
    )


class ResourceList(_Model):
    """CPU and memory quantities (Kubernetes quantity syntax)."""

    cpu: str | None = _field("CPU, e.g. 500m or 1.", default=None, pattern=QUANTITY_PATTERN)
    memory: str | None = _field("Memory, e.g. 512Mi.", default=None, pattern=QUANTITY_PATTERN)


class WorkerResources(_Model):
    """Requests and limits of each worker pod."""

    requests: ResourceList = _field("Guaranteed resources.", default=ResourceList(cpu="500m", memory="512Mi"))
    limits: ResourceList = _field("Upper bounds.", default=ResourceList(cpu="2", memory="1Gi"))

    @model_validator(mode="after")
    def _requests_within_limits(self) -> WorkerResources:
        # The apiserver refuses a Pod whose request exceeds its limit, so no worker would start.
        # Not CEL: cel-python, which `voicehive validate` runs, has no Kubernetes quantity library.
        from kubernetes.utils.quantity import parse_quantity

        for name in ("cpu", "memory"):
            request, limit = getattr(self.requests, name), getattr(self.limits, name)
            if request is not None and limit is not None and parse_quantity(request) > parse_quantity(limit):  # type: ignore[no-untyped-call]
                raise ValueError(
                    f"workers.resources: requests.{name} ({request}) cannot exceed limits.{name} ({limit}); "
                    "a limit left out is 2 CPUs and 1Gi"
                )
        return self


class WorkersSpec(_Model):
    """The per-call agent worker pods and the warm pool that hides their start-up time."""

    image: str = _field(
        "Worker container image.", default="ghcr.io/voicehive/worker:0.1.0", pattern=IMAGE_PATTERN, max_length=512
    )
    warm_pool: int = _field(
        "Idle, started worker pods kept ready so a call never waits for a pod start.", default=1, ge=0, le=50
    )
    max_concurrent_calls: int = _field(
        "Most calls this line serves at once; also sizes the shared Riva capacity.", default=10, ge=1, le=1000
    )
    max_call_duration_seconds: int = _field(
        "Calls longer than this are ended politely.", default=1800, ge=60, le=14400
    )
    start_timeout_seconds: int = _field(
        "A call whose worker has not answered after this long fails.", default=20, ge=2, le=300
    )
    resources: WorkerResources = _field("Requests and limits of each worker pod.", default_factory=WorkerResources)

    cel_rules = (
        ("self.warmPool <= self.maxConcurrentCalls", "workers: warmPool cannot exceed maxConcurrentCalls"),
    )

    @model_validator(mode="after")
    def _pool_within_capacity(self) -> WorkersSpec:
        if self.warm_pool > self.max_concurrent_calls:
            raise ValueError(self.cel_rules[0][1])
        return self


class RetentionSpec(_Model):
    """How long VoiceHive keeps what a call leaves behind (GDPR storage limitation)."""

    metadata_days: int = _field(
        "Days call metadata (VoiceSessions, call state, encrypted transcripts) is kept.",
        default=30,
        ge=1,
        le=365,
    )
    recording_days: int = _field("Days call recordings are kept.", default=7, ge=0, le=365)

    cel_rules = (
        (
            "self.recordingDays <= self.metadataDays",
            "retention: recordingDays cannot exceed metadataDays",
        ),
    )

    @model_validator(mode="after")
    def _recordings_within_metadata(self) -> RetentionSpec:
        if self.recording_days > self.metadata_days:
            raise ValueError(self.cel_rules[0][1])
        return self


BUCKET_PATTERN = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"
DTMF_PATTERN = r"^[0-9*#]$"


class RecordingSpec(_Model):
    """Call recording (opt-in): both sides, encrypted per line, in an S3-compatible bucket in the EU.

    When enabled, the greeting tells callers the call is recorded and how to object (say so, or
    press ``objectionKey``); an objection stops the recording and deletes what was captured.
    Recordings expire after ``retention.recordingDays``; the block stays needed after disabling
    so the operator keeps enforcing retention on recordings already stored.
    """

    enabled: bool = _field("Record new calls of this line.", default=False)
    bucket: str = _field("Bucket name (S3 naming rules).", pattern=BUCKET_PATTERN, max_length=63)
    region: EURegion = _field("EU region of the bucket (the signing region of its endpoint).")
    endpoint: str = _field(
        "S3-compatible endpoint, https://host[:port], in that region.", pattern=HTTPS_URL_PATTERN, max_length=2048
    )
    access_key_id_secret_ref: SecretKeyRef = _field("Secret key holding the bucket's access key id.")
    secret_access_key_secret_ref: SecretKeyRef = _field("Secret key holding the bucket's secret access key.")
    objection_key: str = _field(
        "Keypad digit a caller presses to object to the recording (0 is the front desk).",
        default="9",
        pattern=DTMF_PATTERN,
    )

    cel_rules = (("self.objectionKey != '0'", "recording: objectionKey cannot be 0 (0 reaches the front desk)"),)

    @model_validator(mode="after")
    def _objection_not_front_desk(self) -> RecordingSpec:
        if self.objection_key == "0":
            raise ValueError(self.cel_rules[0][1])
        return self


class RoomType(_Model):
    """A bookable room category, as the built-in availability adapter sees it."""

    code: str = _field("Short code of the room type.", pattern=r"^[A-Za-z0-9_-]{1,32}$")
    name: str = _field("Name said to callers.", min_length=1, max_length=120, pattern=SPOKEN_TEXT_PATTERN)
    max_guests: int = _field("Most guests in one room.", ge=1, le=20)
    rate_from: float = _field(
        "Nightly rate from which this type is quoted, in the hotel's currency.", ge=0, le=MAX_NIGHTLY_RATE
    )
    rooms: int = _field("How many rooms of this type the hotel has.", ge=0, le=10000)


class FaqEntry(_Model):
    """A question callers ask and the hotel's answer."""

    question: str = _field(
        "The question, as a caller might ask it.", min_length=1, max_length=500, pattern=SPOKEN_LINES_PATTERN
    )
    answer: str = _field("The answer the agent gives.", min_length=1, max_length=2000, pattern=SPOKEN_LINES_PATTERN)


class HotelFacts(_Model):
    """What the agent knows about the hotel; the built-in PMS adapter quotes from it."""

    address: str | None = _field(
        "Street address said to callers.", default=None, max_length=500, pattern=SPOKEN_LINES_PATTERN
    )
    currency: str = _field("ISO 4217 currency of rates.", default="EUR", pattern=r"^[A-Z]{3}$")
    check_in: str = _field("Check-in from, HH:MM.", default="15:00", pattern=HHMM_PATTERN)
    check_out: str = _field("Check-out until, HH:MM.", default="11:00", pattern=HHMM_PATTERN)
    amenities: list[Annotated[str, Field(min_length=1, max_length=200, pattern=SPOKEN_TEXT_PATTERN)]] = _field(
        "Amenities worth mentioning.", default_factory=list, max_length=100
    )
    room_types: list[RoomType] = _field("Bookable room types.", default_factory=list, max_length=50)
    faq: list[FaqEntry] = _field("Frequently asked questions and answers.", default_factory=list, max_length=200)


class PmsKind(enum.StrEnum):
    """Which property-management system answers availability, prices and bookings."""

    BUILTIN = "builtin"  # the line's own facts (static rates, staff confirm every request)
    MEWS = "mews"  # Mews Connector API
    APALEO = "apaleo"  # Apaleo Booking API with OAuth2 client credentials


class BookingPolicy(enum.StrEnum):
    """What the agent may do in the PMS once the caller has confirmed a quoted stay."""

    BOOK = "book"  # create a confirmed reservation and read back its number
    HOLD = "hold"  # create an option/hold (Mews: Optional) or a staff request; staff confirm


class CredentialsRef(_Model):
    """A Secret with an id and a secret value (Mews ClientToken + AccessToken, Apaleo client id + secret, SMTP user + password)."""

    secret_name: str = _field("Secret holding both values.", pattern=DNS_SUBDOMAIN_PATTERN, max_length=253)
    id_key: str = _field(
        "Key of the Mews ClientToken or the Apaleo client id.", default="client-id", pattern=SECRET_KEY_PATTERN
    )
    secret_key: str = _field(
        "Key of the Mews AccessToken or the Apaleo client secret.", default="client-secret", pattern=SECRET_KEY_PATTERN
    )


class PmsSpec(_Model):
    """The hotel's PMS: the agent quotes only what it returns and books in it."""

    cel_rules = (
        (
            "self.kind == 'builtin' || (has(self.endpoint) && has(self.credentials) && has(self.propertyId))",
            "pms: mews and apaleo need endpoint, credentials and propertyId",
        ),
    )

    kind: PmsKind = _field("builtin, mews or apaleo.", default=PmsKind.BUILTIN)
    endpoint: str | None = _field(
        "HTTPS base URL of the PMS API in the EU (e.g. https://api.mews.com, https://api.apaleo.com).",
        default=None,
        pattern=HTTPS_URL_PATTERN,
        max_length=512,
    )
    token_endpoint: str | None = _field(
        "Apaleo only: OAuth2 token URL (default https://identity.apaleo.com/connect/token).",
        default=None,
        pattern=HTTPS_URL_PATTERN,
        max_length=512,
    )
    credentials: CredentialsRef | None = _field("Secret with the PMS credentials.", default=None)
    property_id: str | None = _field(
        "Mews: the accommodation ServiceId; Apaleo: the propertyId.", default=None, min_length=1, max_length=128
    )
    rate_id: str | None = _field(
        "Mews: RateId used to price and book; Apaleo: optional ratePlan id to prefer.", default=None, max_length=128
    )
    booking: BookingPolicy = _field(
        "book: confirmed reservation; hold: option/hold or staff request, staff confirm.", default=BookingPolicy.HOLD
    )
    timeout_seconds: float = _field("Per-request timeout before the agent says the PMS is slow.", default=4.0, ge=0.5, le=30)

    @model_validator(mode="after")
    def _complete(self) -> PmsSpec:
        if self.kind != PmsKind.BUILTIN and not (self.endpoint and self.credentials and self.property_id):
            raise ValueError(self.cel_rules[0][1])
        return self


class WebhookDelivery(_Model):
    """Signed HTTPS webhook to the hotel's system (HMAC-SHA256 over timestamp.body)."""

    url: str = _field("HTTPS URL receiving POSTed staff requests.", pattern=HTTPS_URL_PATTERN, max_length=2048)
    secret_ref: SecretKeyRef = _field("Secret key holding the HMAC signing secret.")


class EmailDelivery(_Model):
    """E-mail over SMTP with STARTTLS."""

    host: str = _field("SMTP server host.", min_length=1, max_length=253)
    port: int = _field("SMTP submission port.", default=587, ge=1, le=65535)
    sender: str = _field("From address.", pattern=r"^[^\s@]+@[^\s@]+$", max_length=254)
    to: list[Annotated[str, Field(pattern=r"^[^\s@]+@[^\s@]+$", max_length=254)]] = _field(
        "Staff addresses.", min_length=1, max_length=10
    )
    credentials: CredentialsRef | None = _field("Secret with SMTP user (idKey) and password (secretKey).", default=None)


class StaffDeliverySpec(_Model):
    """How messages, booking requests and hand-offs reach the hotel's staff."""

    webhook: WebhookDelivery | None = _field("Signed webhook.", default=None)
    email: EmailDelivery | None = _field("E-mail over SMTP with STARTTLS.", default=None)
    max_attempts: int = _field("Tries before a delivery is dead-lettered (and alerted).", default=12, ge=1, le=100)


class HotelLineSpec(_Model):
    """Desired state of one hotel phone line."""

    hotel_id: str = _field(
        "Stable id of the hotel (DNS label); shared by all lines of one hotel.",
        pattern=DNS_LABEL_PATTERN,
        max_length=63,
    )
    display_name: str = _field(
        "Hotel name the agent says when it answers.", min_length=1, max_length=200, pattern=SPOKEN_TEXT_PATTERN
    )
    time_zone: str = _field(
        "IANA time zone of the hotel, e.g. Europe/Berlin; the agent tells dates and front-desk hours in it.",
        pattern=TIME_ZONE_PATTERN,
        max_length=64,
    )
    languages: list[Annotated[str, Field(pattern=LANGUAGE_PATTERN, max_length=5)]] = _field(
        "Languages the agent speaks, BCP-47; the first is the greeting language.", min_length=1, max_length=10
    )
    region: EURegion = _field(
        "EU cloud region (topology.kubernetes.io/region) where ASR, workers and data stay."
    )
    phone_numbers: list[Annotated[str, Field(pattern=E164_PATTERN, max_length=16)]] = _field(
        "Public numbers of this line in E.164 (+ then country code and number, no spaces).",
        min_length=1,
        max_length=50,
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    sip: SipSpec = _field("SIP access: allowed carrier addresses, auth and media encryption.")
    front_desk: FrontDeskSpec = _field("Where callers are transferred when they ask for a person.")
    asr: AsrSpec = _field("Speech recognition (Riva).")
    llm: LlmSpec = _field("Language model (Azure OpenAI).")
    tts: TtsSpec = _field("Speech synthesis (ElevenLabs).")
    facts: HotelFacts = _field("What the agent knows about the hotel.", default_factory=HotelFacts)
    workers: WorkersSpec = _field("Per-call worker pods and their warm pool.", default_factory=WorkersSpec)
    retention: RetentionSpec = _field("How long call data is kept.", default_factory=RetentionSpec)
    pms: PmsSpec = _field("The hotel's PMS (builtin: the facts above).", default_factory=PmsSpec)
    staff_delivery: StaffDeliverySpec = _field(
        "Where staff requests are delivered (none: kept sealed in Redis only).", default_factory=StaffDeliverySpec
    )
    recording: RecordingSpec | None = _field(
        "Call recording, off unless enabled; see retention.recordingDays.", default=None
    )

    cel_rules = (
        (
            "!has(self.asr.language) || self.languages.exists(l, l == self.asr.language || "
            "l.startsWith(self.asr.language + '-') || self.asr.language.startsWith(l + '-'))",
            "asr.language must be one of the line's languages",
            ".asr.language",
        ),
        (
            f"self.timeZone.matches(r'{one_of_regex(TIME_ZONES)}')",
            "timeZone: not a time zone of the IANA database; name one such as Europe/Berlin or UTC",
            ".timeZone",
        ),
    )

    @field_validator("time_zone")
    @classmethod
    def _known_time_zone(cls, value: str) -> str:
        # The worker's clock is ZoneInfo(timeZone): a name outside the database fails every call.
        if value not in TIME_ZONES:
            raise ValueError(cls.cel_rules[1][1])
        return value

    @model_validator(mode="after")
    def _cross_field_rules(self) -> HotelLineSpec:
        lang = self.asr.language
        if lang is not None and not any(
            code == lang or code.startswith(lang + "-") or lang.startswith(code + "-") for code in self.languages
        ):
            raise ValueError(self.cel_rules[0][1])
        if len(set(self.phone_numbers)) != len(self.phone_numbers):
            raise ValueError("phoneNumbers must not repeat a number")
        return self

    @property
    def asr_language(self) -> str:
        """The ASR language, defaulting to the greeting language."""
        return self.asr.language or self.languages[0]


class ConditionStatus(enum.StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(_Model):
    """A Kubernetes-style condition: one observed aspect, in plain words."""

    type: str = _field("Aspect this condition reports, e.g. Ready or SipTrunkReady.", max_length=316)
    status: ConditionStatus = _field("True, False or Unknown.")
    reason: str = _field("One CamelCase word for machines.", max_length=1024, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
    message: str = _field("What is wrong or right, in plain words for a person.", default="", max_length=32768)
    last_transition_time: str = _field("When status last changed (RFC 3339).", json_schema_extra={"format": "date-time"})
    observed_generation: int | None = _field("The spec generation this condition was computed from.", default=None, ge=0)


_CONDITION_LIST: dict[str, Any] = {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]}

HOTEL_LINE_CONDITIONS: tuple[str, ...] = (
    "Ready",
    "SipTrunkReady",
    "AsrReady",
    "LlmReady",
    "TtsReady",
    "WorkersReady",
)


class HotelLineStatus(_Model):
    """Observed state of a hotel line, written by the operator."""

    conditions: list[Condition] = _field(
        "Ready, SipTrunkReady, AsrReady, LlmReady, TtsReady and WorkersReady.",
        default_factory=list,
        json_schema_extra=_CONDITION_LIST,
    )
    observed_generation: int | None = _field("Spec generation the operator last acted on.", default=None, ge=0)
    sip_trunk_id: str | None = _field("LiveKit inbound SIP trunk id (ST_...).", default=None, max_length=128)
    dispatch_rule_id: str | None = _field("LiveKit SIP dispatch rule id (SDR_...).", default=None, max_length=128)
    room_prefix: str | None = _field("Prefix of every LiveKit room this line's calls land in.", default=None, max_length=128)
    asr_service: str | None = _field("Riva service (host:port) this line's workers use.", default=None, max_length=512)
    active_calls: int = _field("Calls in progress.", default=0, ge=0)
    warm_workers: int = _field("Idle, started worker pods ready for the next call.", default=0, ge=0)


class LineRef(_Model):
    """Which HotelLine a call belongs to."""

    name: str = _field("Name of the HotelLine in the same namespace.", pattern=DNS_SUBDOMAIN_PATTERN, max_length=253)


class VoiceSessionSpec(_Model):
    """One call. Carries no phone number and no room name in clear: both are personal data."""

    # Transition rule (oldSelf): enforced by the apiserver on updates only.
    cel_rules = (("self == oldSelf", "spec is immutable: a call's line, room and caller never change"),)

    line_ref: LineRef = _field("The HotelLine this call came in on.")
    room_hash: str = _field(
        "Keyed HMAC-SHA256 of the LiveKit room name (the seed's call_sid); LiveKit names rooms after "
        "the caller's number, so the name itself is never stored.",
        pattern=HASH_PATTERN,
    )
    caller_hash: str = _field(
        "Keyed HMAC-SHA256 of the caller's E.164 number, for erasure requests.", pattern=HASH_PATTERN
    )
    sealed_call_ref: str = _field(
        "Room name and SIP participant identity, sealed with AES-GCM (base64) so only the worker "
        "and operator, which hold the key, can join the room.",
        min_length=16,
        max_length=4096,
        pattern=r"^[A-Za-z0-9+/_=-]+$",
    )
    language: str | None = _field(
        "Caller's language if known (BCP-47); otherwise the line's first language.",
        default=None,
        pattern=LANGUAGE_PATTERN,
    )


class LatencySummary(_Model):
    """Voice-to-voice latency of the call's turns: caller stops speaking to first reply audio."""

    turns: int = _field("Turns measured.", default=0, ge=0)
    p50_ms: float | None = _field("Median, milliseconds.", default=None, ge=0)
    p95_ms: float | None = _field("95th percentile, milliseconds.", default=None, ge=0)
    max_ms: float | None = _field("Slowest turn, milliseconds.", default=None, ge=0)


class RecordingStatus(_Model):
    """Whether the call left a recording and until when; never where it is stored."""

    exists: bool = _field("A recording of this call is stored (encrypted).", default=False)
    state: Literal["Recording", "Complete", "Objected", "Expired", "Erased", "Failed"] | None = _field(
        "Recording (in progress), Complete, Objected (the caller objected; deleted), Expired, Erased "
        "(erasure request) or Failed (could not be stored).",
        default=None,
    )
    expires_at: str | None = _field(
        "When the recording is deleted (RFC 3339).", default=None, json_schema_extra={"format": "date-time"}
    )
    seconds: float | None = _field("Seconds of audio stored.", default=None, ge=0)


class VoiceSessionStatus(_Model):
    """Observed state of a call, written by the operator (start, failure) and the worker (call)."""

    # The lifecycle's one hard rule, also enforced by the apiserver: a finished call stays finished.
    cel_rules = (
        (
            "!has(oldSelf.phase) || !(oldSelf.phase in ['Ended', 'Failed']) || self.phase == oldSelf.phase",
            "phase: a call that has Ended or Failed cannot change phase again",
            ".phase",
        ),
    )

    phase: CallPhase = _field("Pending, Starting, Active, Ended or Failed.", default=CallPhase.PENDING)
    worker_pod: str | None = _field("Worker pod serving this call.", default=None, max_length=253)
    created_at: str | None = _field("When the call reached VoiceHive (RFC 3339).", default=None, json_schema_extra={"format": "date-time"})
    answered_at: str | None = _field("When the agent answered (RFC 3339).", default=None, json_schema_extra={"format": "date-time"})
    ended_at: str | None = _field("When the call ended (RFC 3339).", default=None, json_schema_extra={"format": "date-time"})
    end_reason: str | None = _field("Why the call ended or failed, in plain words.", default=None, max_length=1024)
    turns: int = _field("Caller turns answered.", default=0, ge=0)
    intents: list[Annotated[str, Field(max_length=64)]] = _field(
        "Intents recognised during the call, in order of first appearance.", default_factory=list, max_length=64
    )
    latency: LatencySummary = _field("Voice-to-voice latency summary.", default_factory=LatencySummary)
    language: str | None = _field(
        "The language the call is in now (two-letter code); changes when the caller switches.",
        default=None,
        pattern=LANGUAGE_PATTERN,
    )
    recording: RecordingStatus | None = _field("The call's recording, if the line records.", default=None)
    conditions: list[Condition] = _field(
        "Conditions of the call (e.g. WorkerBound).", default_factory=list, json_schema_extra=_CONDITION_LIST
    )
    observed_generation: int | None = _field("Spec generation last acted on.", default=None, ge=0)


class ObjectMeta(BaseModel):
    """The part of Kubernetes metadata our models read; the apiserver owns the rest."""

    model_config = ConfigDict(extra="allow")
    name: str | None = None
    namespace: str | None = None
    generation: int | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class _Resource(_Model):
    """Common envelope of our custom resources."""

    model_config = ConfigDict(extra="ignore")
    api_version: Literal["voicehive.io/v1alpha1"] = Field(default="voicehive.io/v1alpha1", alias="apiVersion")
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)


class HotelLine(_Resource):
    kind: Literal["HotelLine"] = "HotelLine"
    spec: HotelLineSpec
    status: HotelLineStatus | None = None


class VoiceSession(_Resource):
    kind: Literal["VoiceSession"] = "VoiceSession"
    spec: VoiceSessionSpec
    status: VoiceSessionStatus | None = None
