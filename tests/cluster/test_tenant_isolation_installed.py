"""Issue 11 on the installed chart: what a worker Pod holds, and what it can do with it.

A "compromised worker" here is the test acting with exactly what the node agent gave a running
worker Pod: its ServiceAccount token (the projected file), its environment as the kubelet
resolves it (Secret references read as the kubelet would), and the room token the operator
sealed on the VoiceSession it serves. Every attempt to reach beyond its one call must fail on
the real kube-apiserver's RBAC and on the real livekit-server.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import kubernetes
import pytest

from tests.cluster.conftest import CLUSTER_ENV, Cluster
from tests.rig.conftest import eventually
from voicehive import contract
from voicehive.privacy import Sealer, SealError, derive_line_key

pytestmark = pytest.mark.rig

GROUP, VERSION = "voicehive.io", "v1alpha1"
LINE = "lindenhof-main"
STATE = CLUSTER_ENV.parent.parent / "nodeagent"


def _claimed_worker(cluster: Cluster) -> tuple[dict[str, Any], Any]:
    """A VoiceSession bound to a warm worker (the operator's claim), and that worker's Pod."""
    from tests.operator.test_sessions import Call
    from voicehive.privacy import Privacy

    keys = json.loads((CLUSTER_ENV.parent / "keys.json").read_text())
    privacy = Privacy.from_keys(base64.b64decode(keys["pii-key"]), base64.b64decode(keys["transcript-key"]))
    call = Call(privacy, LINE)
    cluster.custom.create_namespaced_custom_object(GROUP, VERSION, cluster.hotel_ns, "voicesessions",
                                                   call.body(cluster.hotel_ns))
    session = eventually(lambda: (vs := cluster.custom.get_namespaced_custom_object(
        GROUP, VERSION, cluster.hotel_ns, "voicesessions", call.name)).get("status", {}).get("workerPod") and vs,
        timeout=60, what="the VoiceSession bound to a warm worker")
    pod = cluster.core.read_namespaced_pod(session["status"]["workerPod"], cluster.hotel_ns)
    return session, pod


def _token_of(pod: Any) -> str:
    """The worker's projected ServiceAccount token, as the node agent wrote it for the Pod."""
    found = sorted((STATE / "pods").glob(f"{pod.metadata.namespace}_{pod.metadata.name}_*/volumes/*/token"))
    assert found, f"no ServiceAccount token file of {pod.metadata.name} under {STATE}"
    return found[0].read_text().strip()


def _env_of(cluster: Cluster, pod: Any) -> dict[str, str]:
    """The worker container's environment resolved as the kubelet does (values and Secret keys)."""
    env: dict[str, str] = {}
    for var in pod.spec.containers[0].env or []:
        if var.value is not None:
            env[var.name] = var.value
        elif var.value_from is not None and var.value_from.secret_key_ref is not None:
            ref = var.value_from.secret_key_ref
            secret = cluster.core.read_namespaced_secret(ref.name, pod.metadata.namespace)
            if ref.key in (secret.data or {}):
                env[var.name] = base64.b64decode(secret.data[ref.key]).decode()
    return env


def _as_worker(cluster: Cluster, token: str) -> kubernetes.client.ApiClient:
    config = kubernetes.client.Configuration()
    admin = cluster.api.configuration
    config.host, config.ssl_ca_cert = admin.host, admin.ssl_ca_cert
    config.api_key = {"authorization": f"Bearer {token}"}
    return kubernetes.client.ApiClient(config)


def _status(call: Any) -> int:
    try:
        call()
    except kubernetes.client.ApiException as exc:
        return int(exc.status)
    return 200


def test_a_compromised_worker_reaches_nothing_beyond_its_call(cluster: Cluster) -> None:
    session, pod = _claimed_worker(cluster)
    try:
        _attempts_beyond_its_call(cluster, session, pod)
    finally:  # the call ends: its worker leaves, whatever was found
        cluster.custom.delete_namespaced_custom_object(GROUP, VERSION, cluster.hotel_ns, "voicesessions",
                                                       session["metadata"]["name"])


def _attempts_beyond_its_call(cluster: Cluster, session: dict[str, Any], pod: Any) -> None:
    ns, other_ns = cluster.hotel_ns, cluster.release_ns
    worker = _as_worker(cluster, _token_of(pod))
    core, custom = kubernetes.client.CoreV1Api(worker), kubernetes.client.CustomObjectsApi(worker)
    try:
        # its own VoiceSession: yes (that is its job) ...
        assert _status(lambda: custom.get_namespaced_custom_object(GROUP, VERSION, ns, "voicesessions",
                                                                   session["metadata"]["name"])) == 200
        # ... no Secret (not even its own line's), no other namespace, no Pods, no HotelLine writes
        assert _status(lambda: core.list_namespaced_secret(ns)) == 403
        assert _status(lambda: core.read_namespaced_secret("voicehive-keys", ns)) == 403
        assert _status(lambda: custom.list_namespaced_custom_object(GROUP, VERSION, other_ns, "voicesessions")) == 403
        assert _status(lambda: core.list_namespaced_pod(ns)) == 403
        assert _status(lambda: custom.delete_namespaced_custom_object(GROUP, VERSION, ns, "hotellines", LINE)) == 403
    finally:
        worker.close()  # type: ignore[no-untyped-call]

    env = _env_of(cluster, pod)
    # no LiveKit API secret, no orchestrator token, no master key in the Pod
    assert contract.ENV_LIVEKIT_API_SECRET not in env and contract.ENV_AGENT_TOKEN not in env
    keys = json.loads((CLUSTER_ENV.parent / "keys.json").read_text())
    assert keys["transcript-key"] not in env.values() and keys["agent-token"] not in env.values()

    # its transcript key is its line's: it opens nothing sealed for another line
    master = base64.b64decode(keys["transcript-key"])
    own = base64.b64decode(env[contract.ENV_TRANSCRIPT_KEY])
    other = Sealer(derive_line_key(master, ns, "another-hotel-line", "transcript"))
    sealed = other.seal_text("a guest's sentence", context="t")
    with pytest.raises(SealError):
        Sealer(own).open_text(sealed, context="t")

    # the room token the operator sealed for it: this room only, no room administration
    from voicehive_worker.credentials import room_access

    secret = _privacy(keys).open_call_ref(session["spec"]["sealedCallRef"])
    vs = cluster.custom.get_namespaced_custom_object(GROUP, VERSION, ns, "voicesessions", session["metadata"]["name"])
    access = room_access(env, vs, room=secret.room, pod=pod.metadata.name)
    assert access.api_key is None, "the worker minted its own token: it holds an API secret"
    _livekit_refuses_other_rooms(access.token, secret.room)


def _privacy(keys: dict[str, str]) -> Any:
    from voicehive.privacy import Privacy

    return Privacy.from_keys(base64.b64decode(keys["pii-key"]), base64.b64decode(keys["transcript-key"]))


def _livekit_refuses_other_rooms(token: str, room: str) -> None:
    """The real livekit-server: the token lists nothing, creates nothing, removes no one elsewhere."""
    from livekit import api as lkapi

    from tests.fixtures.rig import parse_env_file

    url = parse_env_file(CLUSTER_ENV.parent.parent / "env")["LIVEKIT_URL"]

    async def attempts() -> list[str]:
        refused: list[str] = []
        async with lkapi.LiveKitAPI.with_token(token, url) as lk:
            for name, call in (
                ("list rooms", lambda: lk.room.list_rooms(lkapi.ListRoomsRequest())),
                ("another room's participants",
                 lambda: lk.room.list_participants(lkapi.ListParticipantsRequest(room=room + "-other"))),
                ("create a room", lambda: lk.room.create_room(lkapi.CreateRoomRequest(name=room + "-new"))),
                # its own room it administers (it hangs up its caller); another call's, no
                ("remove another call's caller", lambda: lk.room.remove_participant(
                    lkapi.RoomParticipantIdentity(room=room + "-other", identity="sip_caller"))),
                ("SIP trunks", lambda: lk.sip.list_sip_inbound_trunk(lkapi.ListSIPInboundTrunkRequest())),
            ):
                try:
                    await call()
                except lkapi.TwirpError as err:
                    if err.code in ("unauthenticated", "permission_denied"):
                        refused.append(name)
        return refused

    refused = asyncio.run(attempts())
    assert refused == ["list rooms", "another room's participants", "create a room", "remove another call's caller",
                       "SIP trunks"], refused


def test_no_pod_spec_holds_a_secret_value(cluster: Cluster) -> None:
    """`kubectl get pods -A -o yaml`: no key, token, LiveKit secret or Redis URL in clear."""
    from tests.fixtures.rig import parse_env_file

    keys = json.loads((CLUSTER_ENV.parent / "keys.json").read_text())
    rig = parse_env_file(CLUSTER_ENV.parent.parent / "env")
    secrets_ = [*keys.values(), rig["LIVEKIT_API_SECRET"], cluster.env["VOICEHIVE_CLUSTER_REDIS_URL"]]
    pods = cluster.core.list_pod_for_all_namespaces().items
    assert any(p.metadata.namespace == cluster.hotel_ns for p in pods), "no worker Pods to scan"
    dump = json.dumps([cluster.api.sanitize_for_serialization(p) for p in pods])
    leaked = [i for i, value in enumerate(secrets_) if value and value in dump]
    assert not leaked, f"secret values #{leaked} appear in a Pod spec"
