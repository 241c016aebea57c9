"""Orchestrator configuration: environment first, command-line flags override.

WHY strict: a missing key would either stop calls being stored (PII key) or leave a write path
unauthenticated (agent token). The service therefore refuses to start and names every missing
or malformed variable at once, instead of failing on the first call.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from limits import parse

from voicehive import contract
from voicehive.privacy import KeyConfigError, Privacy
from voicehive.tracing import TracingConfig, tracing_config

from .ratelimit import RateLimits

SERVICE_NAME = "voicehive-orchestrator"  # service.name of its spans

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
MIN_AGENT_TOKEN_CHARS = 16
ENV_TLS_CERT = "VOICEHIVE_TLS_CERT"
ENV_TLS_KEY = "VOICEHIVE_TLS_KEY"
ENV_KUBECONFIG = "VOICEHIVE_KUBECONFIG"
ENV_MAX_BODY = "VOICEHIVE_MAX_BODY_BYTES"
ENV_SESSION_RETRY = "VOICEHIVE_SESSION_RETRY_SECONDS"
ENV_HOTEL_NAMESPACES = "VOICEHIVE_HOTEL_NAMESPACES"
ENV_ADMIN_TOKEN = "VOICEHIVE_ADMIN_TOKEN"  # noqa: S105 (a variable name)
ENV_TOKENS_DIR = "VOICEHIVE_TOKENS_DIR"
ENV_API_DOCS = "VOICEHIVE_API_DOCS"  # serve /docs and /openapi.json (off in production)
ENV_RATE_AGENT = "VOICEHIVE_RATE_LIMIT_AGENT"
ENV_RATE_ADMIN = "VOICEHIVE_RATE_LIMIT_ADMIN"
ENV_RATE_ANONYMOUS = "VOICEHIVE_RATE_LIMIT_ANONYMOUS"


class SettingsError(ValueError):
    """Start-up configuration is unusable; the message names every variable at fault."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid configuration:\n  " + "\n  ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Settings:
    privacy: Privacy = field(repr=False)
    agent_token: str = field(repr=False)
    redis_url: str = DEFAULT_REDIS_URL
    livekit_api_key: str | None = None
    livekit_api_secret: str | None = field(default=None, repr=False)
    namespace: str = "default"
    kubeconfig: str | None = None
    in_cluster: bool = False
    tls_cert: str | None = None
    tls_key: str | None = None
    max_body_bytes: int = 64 * 1024
    session_retry_seconds: float = 5.0
    tracing: TracingConfig | None = None  # OTLP export (OTEL_EXPORTER_OTLP_ENDPOINT); None: off
    hotel_namespaces: tuple[str, ...] = ()  # where lines are listed; empty: cluster-wide
    admin_token: str | None = field(default=None, repr=False)
    tokens_dir: str | None = None
    api_docs: bool = False
    rate_limits: RateLimits = field(default_factory=RateLimits)

    @property
    def livekit_configured(self) -> bool:
        return bool(self.livekit_api_key and self.livekit_api_secret)

    @property
    def kube_configured(self) -> bool:
        return self.in_cluster or bool(self.kubeconfig)


def load_settings(
    environ: Mapping[str, str] | None = None,
    *,
    redis_url: str | None = None,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    namespace: str | None = None,
) -> Settings:
    """Build :class:`Settings`; raises :class:`SettingsError` listing every problem."""
    env = os.environ if environ is None else environ
    problems: list[str] = []
    privacy: Privacy | None = None
    try:
        privacy = Privacy.from_env(env, per_line=True)  # seals each call with its line's key
    except KeyConfigError as exc:
        problems.append(str(exc))
    token = env.get(contract.ENV_AGENT_TOKEN, "").strip()
    admin_token = env.get(ENV_ADMIN_TOKEN, "").strip() or None
    tokens_dir = env.get(ENV_TOKENS_DIR) or None
    if not token and not tokens_dir:
        problems.append(f"{contract.ENV_AGENT_TOKEN}: is not set (nor {ENV_TOKENS_DIR}); agent events need a bearer token")
    for name, value in ((contract.ENV_AGENT_TOKEN, token), (ENV_ADMIN_TOKEN, admin_token)):
        if value and len(value) < MIN_AGENT_TOKEN_CHARS:
            problems.append(f"{name}: is shorter than {MIN_AGENT_TOKEN_CHARS} characters")
    if tokens_dir and not Path(tokens_dir).is_dir():
        problems.append(f"{ENV_TOKENS_DIR}: directory {tokens_dir} does not exist")
    rate_limits = _rate_limits(env, problems)
    lk_key = env.get(contract.ENV_LIVEKIT_API_KEY) or None
    lk_secret = env.get(contract.ENV_LIVEKIT_API_SECRET) or None
    if bool(lk_key) != bool(lk_secret):
        missing = contract.ENV_LIVEKIT_API_SECRET if lk_key else contract.ENV_LIVEKIT_API_KEY
        problems.append(f"{missing}: is not set, but its pair is; both are needed to verify LiveKit webhooks")
    cert = tls_cert or env.get(ENV_TLS_CERT) or None
    key = tls_key or env.get(ENV_TLS_KEY) or None
    if bool(cert) != bool(key):
        problems.append(f"{ENV_TLS_CERT} / {ENV_TLS_KEY}: give both the certificate and the key")
    for label, path in ((ENV_TLS_CERT, cert), (ENV_TLS_KEY, key)):
        if path and not Path(path).is_file():
            problems.append(f"{label}: file {path} does not exist")
    max_body = _int(env, ENV_MAX_BODY, 64 * 1024, problems)
    retry = _float(env, ENV_SESSION_RETRY, 5.0, problems)
    kubeconfig = env.get(ENV_KUBECONFIG) or env.get("KUBECONFIG") or None
    in_cluster = bool(env.get("KUBERNETES_SERVICE_HOST")) and not kubeconfig
    tracing: TracingConfig | None = None
    try:
        tracing = tracing_config(SERVICE_NAME, env)
    except ValueError as exc:
        problems.append(str(exc))
    if problems or privacy is None:
        raise SettingsError(problems)
    return Settings(
        privacy=privacy,
        agent_token=token,
        redis_url=redis_url or env.get(contract.ENV_REDIS_URL) or DEFAULT_REDIS_URL,
        livekit_api_key=lk_key,
        livekit_api_secret=lk_secret,
        namespace=namespace or env.get(contract.ENV_NAMESPACE) or "default",
        kubeconfig=kubeconfig,
        in_cluster=in_cluster,
        tls_cert=cert,
        tls_key=key,
        max_body_bytes=max_body,
        session_retry_seconds=retry,
        tracing=tracing,
        admin_token=admin_token,
        tokens_dir=tokens_dir,
        api_docs=env.get(ENV_API_DOCS, "").lower() in {"1", "true", "yes"},
        rate_limits=rate_limits,
        hotel_namespaces=tuple(n.strip() for n in env.get(ENV_HOTEL_NAMESPACES, "").split(",") if n.strip()),
    )


def _int(env: Mapping[str, str], name: str, default: int, problems: list[str]) -> int:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
        if value <= 0:
            raise ValueError
        return value
    except ValueError:
        problems.append(f"{name}: must be a positive integer")
        return default


def _float(env: Mapping[str, str], name: str, default: float, problems: list[str]) -> float:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
        if value <= 0:
            raise ValueError
        return value
    except ValueError:
        problems.append(f"{name}: must be a positive number")
        return default


def _rate_limits(env: Mapping[str, str], problems: list[str]) -> RateLimits:
    base = RateLimits()
    chosen = {}
    for name, attr in ((ENV_RATE_AGENT, "agent"), (ENV_RATE_ADMIN, "admin"), (ENV_RATE_ANONYMOUS, "anonymous")):
        raw = env.get(name) or getattr(base, attr)
        try:
            parse(raw)
        except ValueError:
            problems.append(f"{name}: expected a rate such as 200/second or 60/minute")
            raw = getattr(base, attr)
        chosen[attr] = raw
    return RateLimits(**chosen)
