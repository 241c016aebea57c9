"""HotelLine reconciliation: one idempotent pass that makes the world match the spec.

The same pass runs on create, update, resume and every resync tick (drift check), so a trunk
deleted behind our back, a lost status, a killed warm pod or a vanished Riva Deployment are all
repaired the same way. The result is a status patch plus the changes worth an Event.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from voicehive import contract
from voicehive.api.models import EURegion, HotelLineSpec
from voicehive.lifecycle import is_terminal
from voicehive_operator import builders, conditions, metrics, policy, pool, providers, riva, sessions
from voicehive_operator.conditions import Observation
from voicehive_operator.livekit_sip import SipError, SipIds
from voicehive_operator.riva import PoolUser
from voicehive_operator.runtime import ProviderCheck, Runtime
from voicehive_operator.settings import OperatorSettings

log = logging.getLogger(__name__)


@dataclass
class LineResult:
    """What one reconcile of a HotelLine produced: its status patch, the changes it made, and
    the conditions that flipped (each becomes a Kubernetes Event)."""

    status: dict[str, Any]
    changes: list[str] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)  # changed conditions


def validation_message(exc: ValidationError) -> str:
    """First few validation errors as ``field: problem`` (the input value is never echoed)."""
    parts = []
    for err in exc.errors()[:3]:
        where = ".".join(str(p) for p in err.get("loc", ())) or "spec"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    more = len(exc.errors()) - 3
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def parse_spec(raw: Mapping[str, Any]) -> tuple[HotelLineSpec | None, Observation | None]:
    """The validated spec, or an observation saying in plain words why it is refused."""
    region = raw.get("region")
    if region is not None and not policy.region_is_eu(str(region)):
        allowed = ", ".join(r.value for r in EURegion)
        return None, Observation(
            conditions.READY,
            False,
            "RegionNotEU",
            f"Region {region} is outside the EU; VoiceHive keeps calls in EU regions only ({allowed}).",
        )
    try:
        return HotelLineSpec.model_validate(dict(raw)), None
    except ValidationError as exc:
        return None, Observation(conditions.READY, False, "SpecInvalid", f"The spec is invalid: {validation_message(exc)}")


def allow_list_refusal(spec: HotelLineSpec, settings: OperatorSettings) -> Observation | None:
    """Why a line names an image or endpoint the operator does not allow, before any Pod or request.

    A HotelLine author may only choose among what the platform team configured (chart values):
    otherwise they could run their own code with the line's keys, or have the provider check
    send a Secret of the namespace to a host of their choosing.
    """
    problems = [
        policy.image_problem(spec.workers.image, settings.worker_images),
        policy.llm_endpoint_problem(spec.llm.endpoint, settings.llm_allowed_hosts),
        policy.https_endpoint_problem("tts.endpoint", spec.tts.endpoint, settings.tts_allowed_hosts),
        policy.address_problem("asr.endpoint", spec.asr.endpoint, settings.asr_allowed_hosts)
        if spec.asr.endpoint else None,
    ]
    found = [p for p in problems if p]
    if not found:
        return None
    reason = "ImageNotAllowed" if problems[0] else "EndpointNotAllowed"
    return Observation(conditions.READY, False, reason, " ".join(found))


def usable_spec(raw: Mapping[str, Any], settings: OperatorSettings) -> HotelLineSpec | None:
    """The spec workers may be built from: valid and within the allow-lists, else ``None``."""
    spec, _ = parse_spec(raw)
    return spec if spec is not None and allow_list_refusal(spec, settings) is None else None


def pool_user(namespace: str, name: str, uid: str, raw_spec: Mapping[str, Any], meta: Mapping[str, Any],
              runtime: Runtime) -> (
    dict[str, PoolUser] | None
):
    """Index entry of a line in the shared-Riva index (``None``: uses no shared pool)."""
    if meta.get("deletionTimestamp"):
        return None
    spec = usable_spec(raw_spec, runtime.settings)
    if spec is None:
        return None
    pool_spec = builders.riva_pool_for(namespace, spec, runtime.settings)
    if pool_spec is None:
        return None
    return {pool_spec.key: PoolUser(contract.line_key(namespace, name), uid, spec.workers.max_concurrent_calls,
                                    pool_spec)}


def _refusal(outcome_obs: Observation, existing: Iterable[Mapping[str, Any]] | None, generation: int | None,
             runtime: Runtime) -> LineResult:
    obs = [Observation(t, False, outcome_obs.reason, outcome_obs.message) for t in conditions.COMPONENTS]
    obs.append(outcome_obs)
    new = conditions.merge(existing, obs, generation=generation, now=runtime.settings.clock.now())
    return LineResult(
        status={"conditions": new, "observedGeneration": generation},
        events=conditions.changed_types(existing, new),
    )


def calls_in_progress(line_sessions: Iterable[Mapping[str, Any]]) -> int:
    """Sessions of a line that have not ended (Pending, Starting or Active)."""
    return sum(1 for vs in line_sessions if not is_terminal(sessions.phase_of(vs.get("status") or {})))


@metrics.reconciled("HotelLine")
async def reconcile(
    runtime: Runtime,
    *,
    namespace: str,
    name: str,
    uid: str,
    generation: int | None,
    raw_spec: Mapping[str, Any],
    status: Mapping[str, Any],
    asr_users: Mapping[str, Iterable[PoolUser]],
    line_sessions: Iterable[Mapping[str, Any]] | None = None,
) -> LineResult:
    """One pass over SIP, Riva, the warm pool and the providers.

    ``line_sessions`` (the watch-fed index of this line's VoiceSessions) gives ``activeCalls``
    without listing every claimed pod of a busy line on each resync; without it, pods are listed.
    """
    existing = status.get("conditions") or []
    spec, refusal = parse_spec(raw_spec)
    if spec is None:
        assert refusal is not None
        return _refusal(refusal, existing, generation, runtime)
    refusal = allow_list_refusal(spec, runtime.settings)
    if refusal is not None:
        return _refusal(refusal, existing, generation, runtime)

    settings = runtime.settings
    observed: dict[str, Observation] = {}
    changes: list[str] = []
    patch: dict[str, Any] = {"observedGeneration": generation, "roomPrefix": contract.room_prefix(namespace, name)}

    # 1. LiveKit SIP trunk + dispatch rule -------------------------------------------------
    generation_changed = status.get("observedGeneration") != generation
    async with runtime.lock(f"sip:{namespace}/{name}"):
        if uid in runtime.deleted_lines:  # a resync that raced the deletion handler
            return LineResult(status={})
        observed[conditions.SIP] = await _ensure_sip(runtime, namespace, name, spec, status, patch, changes,
                                                     force=generation_changed)

    # 2. Riva (shared pool) ------------------------------------------------------------------
    asr_address = builders.asr_address(namespace, spec, settings)
    patch["asrService"] = asr_address
    shared = builders.riva_pool_for(namespace, spec, settings)
    # Always reconcile: a line that moved to its own endpoint or another model frees a pool.
    changes += await riva.reconcile_namespace(runtime, settings.riva_namespace or namespace, asr_users)

    # 3. The line's Secret (per-line keys, Redis URL), then the warm pool -----------------------
    riva_ca = await riva.pool_ca(runtime, shared) if shared is not None and settings.riva_tls else None
    changes += await _ensure_line_secret(runtime, namespace, name, uid, riva_ca)
    plan, pool_changes = await pool.reconcile(runtime, namespace, name, uid, spec,
                                              count_claimed=line_sessions is None)
    changes += pool_changes
    patch["warmWorkers"] = plan.idle_current
    patch["activeCalls"] = plan.claimed if line_sessions is None else calls_in_progress(line_sessions)
    desired = spec.workers.warm_pool
    counts = f"{plan.idle_current} of {desired} warm worker pod(s) started, {plan.ready} ready"
    if plan.idle_current >= desired:
        observed[conditions.WORKERS] = Observation(conditions.WORKERS, True, "WarmPoolFull", counts + ".")
    else:
        observed[conditions.WORKERS] = Observation(conditions.WORKERS, False, "WarmPoolFilling", counts + ".")

    # 4. Providers ------------------------------------------------------------------------------
    observed.update({o.type: o for o in await _providers(runtime, namespace, name, uid, spec, shared, asr_address,
                                                         riva_ca)})

    observed[conditions.READY] = conditions.ready(observed)
    new = conditions.merge(existing, observed.values(), generation=generation, now=settings.clock.now())
    patch["conditions"] = new
    return LineResult(status=patch, changes=changes, events=conditions.changed_types(existing, new))


async def _ensure_line_secret(runtime: Runtime, namespace: str, name: str, uid: str, riva_ca: str | None) -> list[str]:
    """The line's Secret (its derived keys, the Redis URL, its Riva pool's CA): checked once per
    operator run, then only when its content would change, so a resync costs no Secret round trip."""
    body = builders.line_secret(namespace, name, uid, runtime.settings, riva_ca)
    fingerprint = _fingerprint(body["data"])
    if runtime.line_secrets.get(uid) == fingerprint:
        return []
    written = await runtime.kube.ensure_secret(body)
    runtime.line_secrets[uid] = fingerprint
    return [f"wrote Secret {builders.line_secret_name(name)} (the line's worker keys)"] if written else []


async def _ensure_sip(
    runtime: Runtime,
    namespace: str,
    name: str,
    spec: HotelLineSpec,
    status: Mapping[str, Any],
    patch: dict[str, Any],
    changes: list[str],
    *,
    force: bool,
) -> Observation:
    auth: tuple[str, str] | None = None
    if spec.sip.auth is not None:
        ref = spec.sip.auth
        user = await runtime.kube.read_secret_key(namespace, ref.secret_name, ref.username_key)
        password = await runtime.kube.read_secret_key(namespace, ref.secret_name, ref.password_key)
        if user is None or password is None:
            missing = ref.username_key if user is None else ref.password_key
            return Observation(
                conditions.SIP,
                False,
                "AuthSecretMissing",
                f"Secret {ref.secret_name} has no key {missing} (sip.auth); the trunk is not created without it.",
            )
        auth = (user, password)
    known = None
    if status.get("sipTrunkId") and status.get("dispatchRuleId"):
        known = SipIds(str(status["sipTrunkId"]), str(status["dispatchRuleId"]))
    elif status.get("sipTrunkId"):
        known = SipIds(str(status["sipTrunkId"]), "")
    try:
        ids, sip_changes = await runtime.sip.ensure(namespace, name, spec, auth, known, force_update=force)
    except SipError as exc:
        return Observation(conditions.SIP, False, exc.reason, exc.message)
    patch["sipTrunkId"] = ids.trunk_id
    patch["dispatchRuleId"] = ids.dispatch_rule_id
    changes.extend(sip_changes)
    count = len(spec.phone_numbers)
    return Observation(
        conditions.SIP, True, "TrunkReady", f"Inbound trunk {ids.trunk_id} takes calls for {count} number(s)."
    )


def _key_missing(condition: str, ref: Any, field: str) -> Observation:
    return Observation(condition, False, "KeySecretMissing", f"Secret {ref.name} has no key {ref.key} ({field}).")


def _fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


async def _pool_not_ready(runtime: Runtime, shared: builders.RivaPool, riva_ca: str | None) -> Observation | None:
    """Why a shared Riva pool cannot be checked yet (no replica up, or no CA issued), or None."""
    available, wanted = await riva.availability(runtime, shared)
    if available == 0:
        return Observation(
            conditions.ASR, False, "RivaStarting",
            f"Waiting for Riva {shared.name} ({available}/{wanted} replicas available; a model load takes minutes).",
        )
    if runtime.settings.riva_tls and riva_ca is None:
        return Observation(
            conditions.ASR, False, "RivaCertificateMissing",
            f"Riva {shared.name} serves TLS but its certificate Secret {builders.riva_tls_secret_name(shared)} "
            "has no CA certificate yet; the operator issues it on its next pass.",
        )
    return None


async def _providers(
    runtime: Runtime,
    namespace: str,
    name: str,
    uid: str,
    spec: HotelLineSpec,
    shared: builders.RivaPool | None,
    asr_address: str,
    riva_ca: str | None = None,
) -> list[Observation]:
    settings = runtime.settings
    asr_tls = builders.asr_uses_tls(namespace, spec, settings)
    static = policy.llm_endpoint_problem(spec.llm.endpoint, settings.llm_allowed_hosts)
    asr_obs = await _pool_not_ready(runtime, shared, riva_ca) if shared is not None else None
    if not settings.check_providers:
        unchecked = "Provider checks are disabled on this operator."
        return [
            asr_obs or Observation(conditions.ASR, None, "NotChecked", unchecked),
            Observation(conditions.LLM, False, "LlmOutsideEU", static) if static
            else Observation(conditions.LLM, None, "NotChecked", unchecked),
            Observation(conditions.TTS, None, "NotChecked", unchecked),
        ]
    llm_key = await runtime.kube.read_secret_key(namespace, spec.llm.api_key_secret_ref.name, spec.llm.api_key_secret_ref.key)
    tts_key = await runtime.kube.read_secret_key(namespace, spec.tts.api_key_secret_ref.name, spec.tts.api_key_secret_ref.key)
    fingerprint = _fingerprint(
        spec.asr.model_dump(), spec.llm.model_dump(), spec.tts.model_dump(), asr_address,
        hashlib.sha256(f"{llm_key}\x00{tts_key}".encode()).hexdigest(), asr_obs is None, asr_tls,
        hashlib.sha256((riva_ca or "").encode()).hexdigest(),
    )
    now = settings.clock.now().timestamp()
    cached = runtime.provider_checks.get(uid)
    if cached is not None and cached.fingerprint == fingerprint and now - cached.at < settings.provider_recheck_s:
        results = cached.observations
    else:
        results = []
        if asr_obs is None:
            results.append(
                await providers.check_riva(
                    asr_address, spec.asr.model, use_tls=asr_tls, ca_file=settings.provider_ca_file,
                    ca_pem=riva_ca, timeout_s=settings.provider_timeout_s,
                )
            )
        if static:
            results.append(Observation(conditions.LLM, False, "LlmOutsideEU", static))
        elif llm_key is None:
            results.append(_key_missing(conditions.LLM, spec.llm.api_key_secret_ref, "llm.apiKeySecretRef"))
        else:
            results.append(
                await providers.check_azure_openai(
                    endpoint=spec.llm.endpoint, deployment=spec.llm.deployment, api_version=spec.llm.api_version,
                    api_key=llm_key, eu_hosts=settings.llm_eu_hosts, ca_file=settings.provider_ca_file,
                    timeout_s=settings.provider_timeout_s,
                )
            )
        if tts_key is None:
            results.append(_key_missing(conditions.TTS, spec.tts.api_key_secret_ref, "tts.apiKeySecretRef"))
        else:
            results.append(
                await providers.check_elevenlabs(
                    base_url=spec.tts.endpoint, voice_id=spec.tts.voice_id, model_id=spec.tts.model_id,
                    api_key=tts_key, ca_file=settings.provider_ca_file, timeout_s=settings.provider_timeout_s,
                )
            )
        runtime.provider_checks[uid] = ProviderCheck(now, fingerprint, results)
    return ([asr_obs] if asr_obs else []) + results


@metrics.forgotten
async def teardown(runtime: Runtime, *, namespace: str, name: str, uid: str, raw_spec: Mapping[str, Any],
                   asr_users: Mapping[str, Iterable[PoolUser]]) -> list[str]:
    """Remove everything the line made: LiveKit objects, idle pods, unused Riva pools."""
    runtime.deleted_lines.add(uid)  # in-flight refills and resyncs must not recreate anything
    changes: list[str] = []
    async with runtime.lock(f"sip:{namespace}/{name}"):
        removed = await runtime.sip.delete(namespace, name)
    if removed:
        changes.append(f"deleted {removed} LiveKit SIP object(s)")
    idle = await pool.remove_idle(runtime, namespace, name)
    if idle:
        changes.append(f"removed {idle} idle worker pod(s)")
    spec, _ = parse_spec(raw_spec)
    riva_ns = runtime.settings.riva_namespace or namespace
    if spec is not None:
        shared = builders.riva_pool_for(namespace, spec, runtime.settings)
        riva_ns = shared.namespace if shared else riva_ns
    changes += await riva.reconcile_namespace(runtime, riva_ns, asr_users)
    runtime.provider_checks.pop(uid, None)
    runtime.line_secrets.pop(uid, None)
    return changes
