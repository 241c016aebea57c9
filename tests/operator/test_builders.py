"""Unit tests of the operator's pure parts: builders, conditions, EU policy, pool plan, session verdicts."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from livekit.api.twirp_client import ServerError
from livekit.protocol import sip as lk_sip

from tests.operator.helpers import hex64, spec
from voicehive import contract
from voicehive.api.models import HotelLineSpec
from voicehive.lifecycle import CallPhase, EndReason
from voicehive_operator import builders, conditions, lines, policy, pool, sessions
from voicehive_operator.livekit_sip import explain
from voicehive_operator.settings import OperatorSettings, SecretRef, SettingsError

SETTINGS = OperatorSettings(streams_per_gpu=16, redis_url="redis://127.0.0.1:6379/0")


def line_spec(**overrides: Any) -> HotelLineSpec:
    return HotelLineSpec.model_validate(spec(**overrides))


def test_worker_pod_is_restricted_and_pinned_to_the_eu_region() -> None:
    s = line_spec()
    pod = builders.worker_pod(namespace="hotels", line_name="lindenhof", line_uid="u1", spec=s, settings=SETTINGS)
    podspec = pod["spec"]
    container = podspec["containers"][0]
    sc = container["securityContext"]
    assert podspec["securityContext"]["runAsNonRoot"] is True
    assert podspec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    terms = podspec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms[0]["matchExpressions"] == [
        {"key": "topology.kubernetes.io/region", "operator": "In", "values": ["germanywestcentral"]}
    ]
    # A call can finish: the grace period covers the longest call.
    assert podspec["terminationGracePeriodSeconds"] >= s.workers.max_call_duration_seconds
    assert podspec["serviceAccountName"] == SETTINGS.worker_service_account
    assert container["resources"] == {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"cpu": "2", "memory": "1Gi"}}
    labels = pod["metadata"]["labels"]
    assert labels[contract.LABEL_LINE] == "lindenhof"
    assert labels[contract.LABEL_WORKER_STATE] == contract.WORKER_IDLE
    assert pod["metadata"]["ownerReferences"][0]["kind"] == "HotelLine"


def test_worker_env_carries_the_contract_and_keys_only_by_reference() -> None:
    s = line_spec()
    env = {e["name"]: e for e in builders.worker_env("hotels", "lindenhof", s, SETTINGS)}
    assert json.loads(env[contract.ENV_LINE_SPEC]["value"]) == s.to_wire()
    assert env[contract.ENV_AZURE_OPENAI_API_KEY]["valueFrom"]["secretKeyRef"] == {
        "name": "line-keys", "key": "azure-openai-api-key"}
    assert env[contract.ENV_ELEVEN_API_KEY]["valueFrom"]["secretKeyRef"]["key"] == "elevenlabs-api-key"
    for name in (contract.ENV_PII_KEY, contract.ENV_TRANSCRIPT_KEY, contract.ENV_REDIS_URL):
        assert "secretKeyRef" in env[name]["valueFrom"], name
    assert env[contract.ENV_POD_NAME]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env[contract.ENV_RIVA_SERVER]["value"].endswith(".svc:50051")
    # The Redis URL (it may carry a password) comes from the line's Secret, never as a value.
    assert env[contract.ENV_REDIS_URL]["valueFrom"]["secretKeyRef"] == {
        "name": builders.line_secret_name("lindenhof"), "key": builders.LINE_SECRET_REDIS_URL}
    # Nothing a worker does not need for its one call (tests/operator/test_worker_credentials.py).
    assert not {contract.ENV_LIVEKIT_API_KEY, contract.ENV_LIVEKIT_API_SECRET, contract.ENV_AGENT_TOKEN} & set(env)


def test_spec_hash_changes_with_the_spec_only() -> None:
    a = builders.worker_spec_hash("ns", "l", line_spec(), SETTINGS)
    assert a == builders.worker_spec_hash("ns", "l", line_spec(), SETTINGS)
    assert a != builders.worker_spec_hash("ns", "l", line_spec(displayName="Other"), SETTINGS)


def test_worker_role_can_only_read_sessions_and_patch_their_status() -> None:
    sa, role, binding = builders.worker_rbac("hotels", SETTINGS)
    assert sa["kind"] == "ServiceAccount" and binding["subjects"][0]["name"] == sa["metadata"]["name"]
    rules = {tuple(r["resources"]): set(r["verbs"]) for r in role["rules"]}
    assert rules == {("voicesessions",): {"get", "list", "watch"}, ("voicesessions/status",): {"get", "patch"}}


def test_riva_pool_is_shared_per_region_model_and_gpu_pool() -> None:
    a = builders.riva_pool_for("ns", line_spec(), SETTINGS)
    b = builders.riva_pool_for("ns", line_spec(displayName="Another hotel"), SETTINGS)
    assert a is not None and b is not None and a.key == b.key
    other_model = builders.riva_pool_for("ns", line_spec(asr={**spec()["asr"], "model": "conformer-de"}), SETTINGS)
    assert other_model is not None and other_model.key != a.key
    own = builders.riva_pool_for("ns", line_spec(asr={**spec()["asr"], "endpoint": "riva.example:50051"}), SETTINGS)
    assert own is None


@pytest.mark.parametrize(("calls", "streams", "gpus", "replicas"), [(1, 16, 1, 1), (16, 16, 1, 1), (17, 16, 1, 2),
                                                                     (100, 16, 2, 4), (0, 16, 1, 1)])
def test_riva_replicas_from_summed_calls(calls: int, streams: int, gpus: int, replicas: int) -> None:
    assert builders.riva_replicas(calls, streams, gpus) == replicas


def test_riva_deployment_has_gpu_limits_affinity_tolerations_and_patient_grpc_probes() -> None:
    pool_spec = builders.riva_pool_for("ns", line_spec(), SETTINGS)
    assert pool_spec is not None
    dep = builders.riva_deployment(pool_spec, 3, SETTINGS)
    podspec = dep["spec"]["template"]["spec"]
    container = podspec["containers"][0]
    assert dep["spec"]["replicas"] == 3
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    exprs = podspec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"][0]["matchExpressions"]
    assert {"key": "topology.kubernetes.io/region", "operator": "In", "values": ["germanywestcentral"]} in exprs
    assert {"key": "voicehive.io/pool", "operator": "In", "values": ["gpu-l4"]} in exprs
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in podspec["tolerations"]
    startup = container["startupProbe"]
    assert startup["httpGet"] == {"path": "/v1/health/ready", "port": "http"}  # NVIDIA's NIM health endpoint
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600  # minutes for a model load
    svc = builders.riva_service(pool_spec, SETTINGS)
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]


def test_livekit_trunk_and_rule_carry_the_line_identity() -> None:
    s = line_spec()
    trunk = builders.inbound_trunk("hotels", "lindenhof", s, ("user", "pw"))
    assert list(trunk.numbers) == s.phone_numbers
    assert trunk.media.encryption == lk_sip.SIP_MEDIA_ENCRYPT_REQUIRE
    assert trunk.auth_username == "user" and trunk.auth_password == "pw"
    assert builders.line_of_metadata(trunk.metadata) == "hotels/lindenhof"
    rule = builders.dispatch_rule("hotels", "lindenhof", "ST_x")
    assert rule.rule.dispatch_rule_individual.room_prefix == contract.room_prefix("hotels", "lindenhof")
    assert dict(rule.attributes) == {contract.ATTRIBUTE_LINE: "hotels/lindenhof"}
    assert not rule.hide_phone_number and list(rule.trunk_ids) == ["ST_x"]
    assert builders.line_of_metadata('{"line":"x/y"}') is None  # not ours without managedBy


def test_livekit_conflict_is_rephrased_without_the_full_number() -> None:
    exc = ServerError("invalid_argument", 'Conflicting inbound SIP Trunks: "ST_a" and "ST_b", using the same '
                      'number(s) ["+493012345670"] without AllowedNumbers set', status=400)
    err = explain(exc, "trunk", ["+493012345670"])
    assert err.reason == "NumberInUse"
    assert "+493012345670" not in err.message and "+49…" in err.message


def test_conditions_keep_transition_time_until_status_flips() -> None:
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    first = conditions.merge([], [conditions.Observation("SipTrunkReady", False, "X", "m")], generation=1, now=t0)
    same = conditions.merge(first, [conditions.Observation("SipTrunkReady", False, "Y", "m2")], generation=2,
                            now=t0 + dt.timedelta(minutes=1))
    assert same[0]["lastTransitionTime"] == first[0]["lastTransitionTime"] and same[0]["observedGeneration"] == 2
    flipped = conditions.merge(same, [conditions.Observation("SipTrunkReady", True, "Z", "ok")], generation=2,
                               now=t0 + dt.timedelta(minutes=2))
    assert flipped[0]["lastTransitionTime"] == "2026-01-01T00:02:00Z"
    ready = conditions.ready({"SipTrunkReady": conditions.Observation("SipTrunkReady", True, "Z", "ok")})
    assert ready.ok is False and "AsrReady" in ready.message


def test_non_eu_region_and_llm_endpoint_are_refused_in_plain_words() -> None:
    parsed, refusal = lines.parse_spec(spec(region="us-east-1"))
    assert parsed is None and refusal is not None and refusal.reason == "RegionNotEU"
    assert "outside the EU" in refusal.message
    parsed, refusal = lines.parse_spec(spec(region="eu-west-2"))  # London: European, not EU
    assert parsed is None and refusal is not None
    allowed = OperatorSettings().llm_allowed_hosts
    assert policy.llm_endpoint_problem("https://x.openai.azure.com", allowed) is None
    problem = policy.llm_endpoint_problem("https://api.openai.com/v1", allowed)
    assert problem is not None and "api.openai.com" in problem
    assert policy.azure_region_is_eu("Sweden Central") and not policy.azure_region_is_eu("East US")
    bad, refusal = lines.parse_spec(spec(workers={"warmPool": 5, "maxConcurrentCalls": 2}))
    assert bad is None and refusal is not None and "warmPool" in refusal.message


def _pod(name: str, state: str, spec_hash: str, phase: str | None = None, ready: bool = False) -> dict[str, Any]:
    status: dict[str, Any] = {}
    if phase:
        status["phase"] = phase
    if ready:
        status["conditions"] = [{"type": "Ready", "status": "True"}]
    return {"metadata": {"name": name, "labels": {contract.LABEL_WORKER_STATE: state, contract.LABEL_SPEC_HASH: spec_hash},
                         "creationTimestamp": "2026-01-01T00:00:00Z"}, "status": status}


def test_pool_plan_refills_replaces_stale_and_trims_surplus() -> None:
    pods = [_pod("a", "idle", "h1", ready=True), _pod("b", "idle", "old"), _pod("c", "idle", "h1", phase="Failed"),
            _pod("d", "claimed", "h1")]
    plan = pool.plan(pods, 3, "h1")
    assert plan.create == 2 and set(plan.delete) == {"b", "c"} and plan.claimed == 1
    assert plan.idle_current == 3 and plan.ready == 1
    surplus = pool.plan([_pod("a", "idle", "h1"), _pod("b", "idle", "h1", ready=True)], 1, "h1")
    assert surplus.create == 0 and surplus.delete == ("a",)  # the ready one stays


def test_top_up_counts_indexed_idle_pods_and_the_ones_still_starting() -> None:
    idle = [{"name": "a", "specHash": "h1"}, {"name": "b", "specHash": "old"}, {"name": "c", "specHash": "h1"}]
    # a and c serve; b is stale (the authoritative reconcile replaces it); c is being claimed
    assert pool.top_up_count(idle, 3, "h1", reserved={"c"}, starting=set()) == 2
    # two pods were created and their watch events have not come: they count, nothing more to start
    assert pool.top_up_count(idle, 3, "h1", reserved={"c"}, starting={"n1", "n2"}) == 0
    # a started pod that the index already holds is not counted twice
    assert pool.top_up_count(idle, 3, "h1", reserved=set(), starting={"a"}) == 1
    assert pool.top_up_count(idle, 0, "h1", reserved=set(), starting=set()) == 0


def _session(phase: str, created: dt.datetime, bound: dt.datetime | None = None,
             answered: dt.datetime | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase}
    if bound:
        status["conditions"] = [{"type": "WorkerBound", "status": "True", "lastTransitionTime": conditions.rfc3339(bound)}]
    if answered:
        status["answeredAt"] = conditions.rfc3339(answered)
    return {"metadata": {"name": "vs-x", "creationTimestamp": conditions.rfc3339(created)}, "status": status}


def test_session_verdicts() -> None:
    s = line_spec()
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    starting = _session("Starting", t0, bound=t0)
    assert sessions.judge(starting, s, t0 + dt.timedelta(seconds=5), 30).action == "none"
    late = sessions.judge(starting, s, t0 + dt.timedelta(seconds=21), 30)
    assert late.action == "fail" and late.reason is EndReason.START_TIMEOUT
    active = _session("Active", t0, bound=t0, answered=t0)
    long_call = sessions.judge(active, s, t0 + dt.timedelta(seconds=601), 30)
    assert long_call.action == "end" and long_call.reason is EndReason.MAX_DURATION
    ended = _session("Ended", t0)
    assert sessions.judge(ended, s, t0 + dt.timedelta(days=29), 30).action == "none"
    assert sessions.judge(ended, s, t0 + dt.timedelta(days=31), 30).action == "delete"
    assert sessions.phase_of({"phase": "Active"}) is CallPhase.ACTIVE


def test_erase_annotation_takes_only_hashes() -> None:
    a, b = hex64(), hex64()
    assert sessions.parse_erase_annotation(f"{a}, {b} +4930123") == [a, b]
    assert sessions.parse_erase_annotation(None) == []


def test_settings_from_env_validate_and_name_the_variable() -> None:
    settings = OperatorSettings.from_env({"VOICEHIVE_OPERATOR_STREAMS_PER_GPU": "64",
                                          "VOICEHIVE_OPERATOR_PII_KEY_SECRET": "keys/pii",
                                          "LIVEKIT_URL": "http://127.0.0.1:7880"})
    assert settings.streams_per_gpu == 64 and settings.pii_key_ref == SecretRef("keys", "pii")
    with pytest.raises(SettingsError, match="VOICEHIVE_OPERATOR_STREAMS_PER_GPU"):
        OperatorSettings.from_env({"VOICEHIVE_OPERATOR_STREAMS_PER_GPU": "many"})
    with pytest.raises(SettingsError, match="PII_KEY_SECRET"):
        OperatorSettings.from_env({"VOICEHIVE_OPERATOR_PII_KEY_SECRET": "no-slash"})


def test_worker_pod_is_ready_only_when_the_worker_says_so() -> None:
    """The operator claims pods by readiness: Ready must mean the worker's /readyz answered 200."""
    pod = builders.worker_pod(namespace="hotels", line_name="lindenhof", line_uid="u1", spec=line_spec(), settings=SETTINGS)
    container = pod["spec"]["containers"][0]
    port = {p["name"]: p["containerPort"] for p in container.get("ports", [])}.get("probes")
    assert port == contract.WORKER_PROBE_PORT
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "probes"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "probes"}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env[contract.ENV_READY_PORT] == str(contract.WORKER_PROBE_PORT)


def test_worker_env_carries_pms_and_delivery_secrets_by_reference() -> None:
    s = line_spec(
        pms={"kind": "apaleo", "endpoint": "https://api.apaleo.com", "credentials": {"secretName": "apaleo"},
             "propertyId": "BER"},
        staffDelivery={
            "webhook": {"url": "https://hooks.hotel.example/vh", "secretRef": {"name": "hooks", "key": "hmac"}},
            "email": {"host": "smtp.hotel.example", "sender": "a@hotel.example", "to": ["desk@hotel.example"],
                      "credentials": {"secretName": "smtp", "idKey": "user", "secretKey": "password"}},
        },
    )
    env = {e["name"]: e for e in builders.worker_env("hotels", "lindenhof", s, SETTINGS)}
    refs = {name: env[name]["valueFrom"]["secretKeyRef"] for name in (
        contract.ENV_PMS_ID, contract.ENV_PMS_SECRET, contract.ENV_WEBHOOK_SECRET, contract.ENV_SMTP_USER, contract.ENV_SMTP_PASSWORD)}
    assert refs[contract.ENV_PMS_ID] == {"name": "apaleo", "key": "client-id"}
    assert refs[contract.ENV_PMS_SECRET] == {"name": "apaleo", "key": "client-secret"}
    assert refs[contract.ENV_WEBHOOK_SECRET] == {"name": "hooks", "key": "hmac"}
    assert refs[contract.ENV_SMTP_PASSWORD] == {"name": "smtp", "key": "password"}
    assert contract.ENV_PMS_ID not in {e["name"] for e in builders.worker_env("hotels", "l", line_spec(), SETTINGS)}


def test_riva_deployment_is_nvidias_asr_nim() -> None:
    """NVIDIA's documented Riva ASR NIM run: model by NIM_TAGS_SELECTOR, NGC_API_KEY from a Secret,
    the model cache on a PVC, /v1/health/ready and /v1/health/live on the HTTP port, gRPC 50051
    (TLS off: the NIM serves the Service's port itself; with TLS see test_riva_tls.py)."""
    settings = SETTINGS.replace(riva_model_pvc="riva-nim-cache", riva_image_pull_secret="ngc-pull", riva_tls=False)
    pool_spec = builders.riva_pool_for("ns", line_spec(), settings)
    assert pool_spec is not None
    pod = builders.riva_deployment(pool_spec, 1, settings)["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["NIM_TAGS_SELECTOR"]["value"] == "mode=str"
    assert env["NGC_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "voicehive-ngc", "key": "api-key"}
    assert env["NIM_GRPC_API_PORT"]["value"] == "50051" and env["NIM_HTTP_API_PORT"]["value"] == "9000"
    assert not any(name.startswith("VOICEHIVE_") for name in env), "NIM reads no VoiceHive variables"
    assert "args" not in container and "command" not in container  # the NIM's own entrypoint
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == 9000 and 50051 in ports.values()
    assert container["readinessProbe"]["httpGet"]["path"] == "/v1/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v1/health/live"
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts["/opt/nim/.cache"]]["persistentVolumeClaim"] == {"claimName": "riva-nim-cache"}
    assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
    assert pod["imagePullSecrets"] == [{"name": "ngc-pull"}]
    requests = container["resources"]["requests"]
    assert {"nvidia.com/gpu", "cpu", "memory"} <= requests.keys()
    # restricted Pod Security: non-root, no escalation, no capabilities, RuntimeDefault seccomp
    assert pod["securityContext"]["runAsNonRoot"] is True
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert all("hostPath" not in v for v in pod["volumes"])


def test_the_worker_pull_policy_is_a_setting_and_part_of_the_worker_spec() -> None:
    """The chart's image.pullPolicy reaches worker Pods; changing it replaces warm ones."""
    settings = OperatorSettings.from_env({"VOICEHIVE_OPERATOR_WORKER_IMAGE_PULL_POLICY": "Always"})
    assert settings.worker_image_pull_policy == "Always"
    assert OperatorSettings.from_env({}).worker_image_pull_policy == "IfNotPresent"
    with pytest.raises(SettingsError, match="VOICEHIVE_OPERATOR_WORKER_IMAGE_PULL_POLICY"):
        OperatorSettings.from_env({"VOICEHIVE_OPERATOR_WORKER_IMAGE_PULL_POLICY": "Sometimes"})
