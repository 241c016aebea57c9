"""Operator settings, read once from the environment.

WHY a dataclass and not module globals: tests run several operators in one process (kill and
restart) with different settings and a shifted clock, so every handler reaches its settings
through Kopf's ``memo`` instead of importing them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from voicehive import contract
from voicehive.privacy import KeyConfigError, decode_key
from voicehive.tracing import TracingConfig, tracing_config

ENV_PREFIX = "VOICEHIVE_OPERATOR_"
SERVICE_NAME = "voicehive-operator"  # service.name of its spans


class SettingsError(ValueError):
    """A setting is malformed; the message names the variable and never echoes a secret."""


@dataclass
class Clock:
    """Wall clock with an offset tests can advance (retention, timeouts) instead of sleeping."""

    offset_seconds: float = 0.0

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=self.offset_seconds)

    def advance(self, seconds: float) -> None:
        self.offset_seconds += seconds


@dataclass(frozen=True)
class SecretRef:
    """A key inside a Secret that worker pods receive as an environment variable."""

    name: str
    key: str


@dataclass
class OperatorSettings:
    # LiveKit control plane (the operator's own credentials, for SIP trunks and dispatch rules)
    livekit_url: str = "http://127.0.0.1:7880"
    livekit_api_key: str = ""
    livekit_api_secret: str = ""
    livekit_timeout_s: float = 10.0

    # Secrets worker pods receive via secretKeyRef (names in the worker's namespace)
    livekit_worker_url: str | None = None  # URL workers dial; defaults to livekit_url
    pii_key_ref: SecretRef = SecretRef("voicehive-keys", "pii-key")
    transcript_key_ref: SecretRef = SecretRef("voicehive-keys", "transcript-key")  # only without master keys
    redis_url: str | None = None  # for workers and for retention/erasure of Redis keys
    redis_ca_pem: str | None = None  # CA of a rediss:// Redis, copied into each line Secret
    # Master keys the per-line keys derive from (voicehive.privacy.line_key); the operator opens
    # sealedCallRef with the PII key to mint each call's room-scoped LiveKit token.
    pii_key: bytes | None = field(default=None, repr=False)
    transcript_key: bytes | None = field(default=None, repr=False)

    # Workers
    worker_service_account: str = "voicehive-worker"
    worker_image_pull_policy: str = "IfNotPresent"
    # Images a HotelLine may name in workers.image (shell globs); nothing else runs as a worker.
    worker_images: tuple[str, ...] = ("ghcr.io/voicehive/worker:*",)

    # Riva (shared ASR Deployments on EU GPU pools)
    # NVIDIA's Riva ASR NIM: the container and NIM_TAGS_SELECTOR choose the model (str = low-latency
    # streaming); pin a tag or digest in production. The NGC key Secret lives in the Riva namespace.
    riva_image: str = "nvcr.io/nim/nvidia/parakeet-1-1b-ctc-en-us:latest"
    riva_tags_selector: str = "mode=str"
    riva_ngc_key_ref: SecretRef = SecretRef("voicehive-ngc", "api-key")
    riva_image_pull_secret: str | None = None  # a docker-registry Secret for nvcr.io
    riva_namespace: str | None = None  # None: the line's own namespace
    riva_port: int = 50051  # the pool Service's gRPC port: TLS (the nginx sidecar) when riva_tls
    # TLS in front of each pool's NIM (builders.riva_proxy_container): on by default; off (labs)
    # serves the NIM's plaintext gRPC on riva_port as before. The image is NGINX's official one.
    riva_tls: bool = True
    riva_tls_proxy_image: str = "nginx:1.28-alpine"
    streams_per_gpu: int = 160
    riva_startup_budget_s: int = 1200  # a first model build takes minutes
    riva_model_pvc: str | None = None
    riva_cpu: str = "4"  # requests; Riva's documented minimum host is 4+ cores and 16+ GB
    riva_memory: str = "16Gi"

    # EU rule for LLM endpoints (see docs/operator.md "EU residency")
    llm_allowed_hosts: tuple[str, ...] = ("*.openai.azure.com", "*.cognitiveservices.azure.com")
    llm_eu_hosts: tuple[str, ...] = ()  # hosts known to be EU even without a region header
    # Hosts a HotelLine may name as tts.endpoint / asr.endpoint (default: ElevenLabs' EU
    # data-residency API; no foreign Riva, only the operator-managed pools).
    tts_allowed_hosts: tuple[str, ...] = ("api.eu.residency.elevenlabs.io",)
    asr_allowed_hosts: tuple[str, ...] = ()
    provider_ca_file: str | None = None
    provider_timeout_s: float = 8.0
    provider_recheck_s: float = 300.0
    check_providers: bool = True

    # Loops
    resync_interval_s: float = 30.0  # HotelLine drift check / pool refill / provider re-check
    sweep_interval_s: float = 5.0  # VoiceSession timeouts and retention
    pool_create_batch: int = 10
    sweep_concurrency: int = 16  # sessions one line's sweep checks (and times out) at once
    liveness_endpoint: str | None = "http://0.0.0.0:8080/healthz"  # Kopf's /healthz for the kubelet
    metrics_port: int = 0  # Prometheus /metrics on this port (0: not served; the chart sets 9090)
    # OTLP trace export (OTEL_EXPORTER_OTLP_ENDPOINT); also written into worker pods. None: off.
    tracing: TracingConfig | None = None

    clock: Clock = field(default_factory=Clock)

    @property
    def url_workers_dial(self) -> str:
        """The LiveKit URL written into worker pods: LIVEKIT_WORKER_URL, else LIVEKIT_URL."""
        return self.livekit_worker_url or self.livekit_url

    def replace(self, **changes: object) -> OperatorSettings:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OperatorSettings:
        r = _EnvReader(os.environ if environ is None else environ)
        env, get, number, ref, hosts = r.env, r.get, r.number, r.ref, r.hosts
        read_file, master_key, images = r.read_file, r.master_key, r.images
        base = cls()
        try:
            tracing = tracing_config(SERVICE_NAME, env)
        except ValueError as exc:
            raise SettingsError(str(exc)) from None
        return cls(
            livekit_url=env.get(contract.ENV_LIVEKIT_URL) or base.livekit_url,
            livekit_api_key=env.get(contract.ENV_LIVEKIT_API_KEY, ""),
            livekit_api_secret=env.get(contract.ENV_LIVEKIT_API_SECRET, ""),
            livekit_timeout_s=number("LIVEKIT_TIMEOUT_S", base.livekit_timeout_s, minimum=0.1),
            livekit_worker_url=get("LIVEKIT_WORKER_URL"),
            pii_key_ref=ref("PII_KEY_SECRET", base.pii_key_ref),
            transcript_key_ref=ref("TRANSCRIPT_KEY_SECRET", base.transcript_key_ref),
            redis_url=env.get(contract.ENV_REDIS_URL) or get("REDIS_URL"),
            redis_ca_pem=read_file("REDIS_CA_FILE"),
            pii_key=master_key(contract.ENV_PII_KEY),
            transcript_key=master_key(contract.ENV_TRANSCRIPT_KEY),
            worker_service_account=get("WORKER_SERVICE_ACCOUNT", base.worker_service_account)
            or base.worker_service_account,
            riva_image=get("RIVA_IMAGE", base.riva_image) or base.riva_image,
            riva_namespace=get("RIVA_NAMESPACE"),
            riva_tags_selector=get("RIVA_TAGS_SELECTOR", base.riva_tags_selector) or base.riva_tags_selector,
            riva_ngc_key_ref=ref("RIVA_NGC_KEY_SECRET", base.riva_ngc_key_ref),
            riva_image_pull_secret=get("RIVA_IMAGE_PULL_SECRET"),
            riva_port=int(number("RIVA_PORT", base.riva_port, minimum=1)),
            riva_tls=r.flag("RIVA_TLS", base.riva_tls),
            riva_tls_proxy_image=get("RIVA_TLS_PROXY_IMAGE", base.riva_tls_proxy_image) or base.riva_tls_proxy_image,
            streams_per_gpu=int(number("STREAMS_PER_GPU", base.streams_per_gpu, minimum=1)),
            riva_startup_budget_s=int(number("RIVA_STARTUP_BUDGET_S", base.riva_startup_budget_s, minimum=60)),
            riva_model_pvc=get("RIVA_MODEL_PVC"),
            riva_cpu=get("RIVA_CPU", base.riva_cpu) or base.riva_cpu,
            riva_memory=get("RIVA_MEMORY", base.riva_memory) or base.riva_memory,
            llm_allowed_hosts=hosts("LLM_ALLOWED_HOSTS", base.llm_allowed_hosts),
            llm_eu_hosts=hosts("LLM_EU_HOSTS", base.llm_eu_hosts),
            tts_allowed_hosts=hosts("TTS_ALLOWED_HOSTS", base.tts_allowed_hosts),
            asr_allowed_hosts=hosts("ASR_ALLOWED_HOSTS", base.asr_allowed_hosts),
            worker_images=images("WORKER_IMAGES", base.worker_images),
            worker_image_pull_policy=r.choice("WORKER_IMAGE_PULL_POLICY", base.worker_image_pull_policy,
                                              ("Always", "IfNotPresent", "Never")),
            provider_ca_file=get("PROVIDER_CA_FILE"),
            provider_timeout_s=number("PROVIDER_TIMEOUT_S", base.provider_timeout_s, minimum=0.1),
            provider_recheck_s=number("PROVIDER_RECHECK_S", base.provider_recheck_s, minimum=1),
            check_providers=(get("CHECK_PROVIDERS", "true") or "true").lower() not in {"0", "false", "no"},
            resync_interval_s=number("RESYNC_INTERVAL_S", base.resync_interval_s, minimum=0.1),
            sweep_interval_s=number("SWEEP_INTERVAL_S", base.sweep_interval_s, minimum=0.1),
            sweep_concurrency=int(number("SWEEP_CONCURRENCY", base.sweep_concurrency, minimum=1)),
            liveness_endpoint=get("LIVENESS", base.liveness_endpoint),
            metrics_port=int(number("METRICS_PORT", base.metrics_port)),
            tracing=tracing,
        )


@dataclass(frozen=True)
class _EnvReader:
    """Reads and checks ``VOICEHIVE_OPERATOR_*`` values; a bad one names its variable."""

    env: Mapping[str, str]

    def get(self, name: str, default: str | None = None) -> str | None:
        value = self.env.get(ENV_PREFIX + name)
        return value if value not in (None, "") else default

    def number(self, name: str, default: float, *, minimum: float = 0.0) -> float:
        raw = self.get(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise SettingsError(f"{ENV_PREFIX}{name}: expected a number, got {raw!r}") from None
        if value < minimum:
            raise SettingsError(f"{ENV_PREFIX}{name}: must be at least {minimum}")
        return value

    def ref(self, name: str, default: SecretRef) -> SecretRef:
        raw = self.get(name)
        if raw is None:
            return default
        secret, sep, key = raw.partition("/")
        if not sep or not secret or not key:
            raise SettingsError(f"{ENV_PREFIX}{name}: expected <secret-name>/<key>")
        return SecretRef(secret, key)

    def hosts(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        """Comma-separated host globs, lower-cased."""
        raw = self.get(name)
        return default if raw is None else tuple(h.strip().lower() for h in raw.split(",") if h.strip())

    def flag(self, name: str, default: bool) -> bool:
        raw = self.get(name)
        if raw is None:
            return default
        if raw.lower() in {"1", "true", "yes", "on"}:
            return True
        if raw.lower() in {"0", "false", "no", "off"}:
            return False
        raise SettingsError(f"{ENV_PREFIX}{name}: expected true or false, got {raw!r}")

    def choice(self, name: str, default: str, allowed: tuple[str, ...]) -> str:
        raw = self.get(name, default) or default
        if raw not in allowed:
            raise SettingsError(f"{ENV_PREFIX}{name}: expected one of {', '.join(allowed)}, got {raw!r}")
        return raw

    def images(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        """Comma-separated image globs (case kept)."""
        raw = self.get(name)
        return default if raw is None else tuple(i.strip() for i in raw.split(",") if i.strip())

    def read_file(self, name: str) -> str | None:
        path = self.get(name)
        if path is None:
            return None
        try:
            with open(path, encoding="utf-8") as handle:
                return handle.read()
        except OSError as exc:
            raise SettingsError(f"{ENV_PREFIX}{name}: cannot read {path} ({exc.strerror})") from None

    def master_key(self, variable: str) -> bytes | None:
        if not self.env.get(variable):
            return None
        try:
            return decode_key(variable, self.env.get(variable))
        except KeyConfigError as exc:
            raise SettingsError(str(exc)) from None
