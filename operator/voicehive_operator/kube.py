"""The Kubernetes calls the operator makes, as small async methods over the official client.

WHY a wrapper: the ``kubernetes`` client is synchronous; every call runs in a worker thread
(``asyncio.to_thread``) so handlers stay async without blocking Kopf's loop, and 404/409 turn
into return values where "already gone" or "already there" is the desired state anyway.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from typing import Any, TypeVar

import kubernetes
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from voicehive.contract import GROUP, VERSION

T = TypeVar("T")

KUBE_THREADS = 64  # threads the operator's blocking Kubernetes calls run in (handlers.configure)


class Conflict(Exception):
    """Someone else changed the object first (resourceVersion precondition failed)."""


def selector(labels: dict[str, str]) -> str:
    return ",".join(f"{key}={value}" for key, value in sorted(labels.items()))


def secret_text(secret: dict[str, Any]) -> dict[str, str]:
    """A Secret's keys as text (``data`` decoded, ``stringData`` as is)."""
    data = {k: base64.b64decode(v).decode("utf-8", "replace") for k, v in (secret.get("data") or {}).items()}
    return data | {k: v for k, v in (secret.get("stringData") or {}).items() if isinstance(v, str)}


def labels_match(obj: dict[str, Any], labels: dict[str, str]) -> bool:
    """Client-side re-check of a label selector (some test API servers ignore parts of it)."""
    have = obj.get("metadata", {}).get("labels") or {}
    return all(have.get(key) == value for key, value in labels.items())


class Kube:
    """Namespaced operations on pods, deployments, services, secrets and our custom resources."""

    def __init__(self, api_client: ApiClient) -> None:
        self.api_client = api_client
        self.core = kubernetes.client.CoreV1Api(api_client)
        self.apps = kubernetes.client.AppsV1Api(api_client)
        self.custom = kubernetes.client.CustomObjectsApi(api_client)

    @classmethod
    def from_environment(cls) -> Kube:
        """In-cluster service account first, then the local kubeconfig (development)."""
        try:
            kubernetes.config.load_incluster_config()  # type: ignore[no-untyped-call]
        except kubernetes.config.ConfigException:
            kubernetes.config.load_kube_config()  # type: ignore[no-untyped-call]
        config = kubernetes.client.Configuration.get_default_copy()
        # One pooled connection per worker thread (the default of 5 per CPU drops connections
        # under a burst of calls and pays a new TCP/TLS handshake for each).
        config.connection_pool_maxsize = KUBE_THREADS
        return cls(ApiClient(config))

    def connection_info(self) -> Any:
        """Kopf's login from the same client configuration (in-cluster token or kubeconfig).

        WHY: Kopf's own fallback login gives up on a kubeconfig without credentials (a local
        test API); one configuration for both clients also means one identity in audit logs.
        """
        import kopf

        cfg = self.api_client.configuration
        token = (cfg.api_key or {}).get("authorization") or (cfg.api_key or {}).get("BearerToken")
        scheme = None
        if token and " " in token:
            scheme, token = token.split(" ", 1)
        elif token:
            scheme = "Bearer"
        return kopf.ConnectionInfo(
            server=cfg.host,
            ca_path=cfg.ssl_ca_cert,
            insecure=not cfg.verify_ssl,
            scheme=scheme,
            token=token,
            certificate_path=cfg.cert_file,
            private_key_path=cfg.key_file,
        )

    def close(self) -> None:
        self.api_client.close()  # type: ignore[no-untyped-call]

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def _dict(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Call returning a plain JSON dict (no model deserialisation: faster, no field loss)."""
        kwargs["_preload_content"] = False
        response = await self._call(fn, *args, **kwargs)
        data: dict[str, Any] = json.loads(response.data)
        return data

    async def _optional(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        try:
            return await self._dict(fn, *args, **kwargs)
        except ApiException as exc:
            if exc.status == 404:
                return None
            if exc.status == 409:
                raise Conflict(str(exc.reason)) from None
            raise

    # ---------------------------------------------------------------- pods

    async def list_pods(self, namespace: str, labels: dict[str, str]) -> list[dict[str, Any]]:
        data = await self._dict(self.core.list_namespaced_pod, namespace, label_selector=selector(labels))
        return [pod for pod in data.get("items", []) if labels_match(pod, labels)]

    async def create_pod(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._dict(self.core.create_namespaced_pod, namespace, body)

    async def patch_pod(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any] | None:
        """Merge-patch a pod; ``None`` if it is gone; :class:`Conflict` on a stale resourceVersion.

        JSON merge patch, not the client's default strategic merge: a claim must *replace* the
        ownerReferences (HotelLine -> VoiceSession), which strategic merge would append to.
        """
        return await self._optional(
            self.core.patch_namespaced_pod, name, namespace, patch, _content_type="application/merge-patch+json"
        )

    async def delete_pod(self, namespace: str, name: str, grace_seconds: int | None = None) -> bool:
        body = kubernetes.client.V1DeleteOptions(grace_period_seconds=grace_seconds)
        return await self._optional(self.core.delete_namespaced_pod, name, namespace, body=body) is not None

    # ---------------------------------------------------------------- secrets

    async def read_secret_key(self, namespace: str, name: str, key: str) -> str | None:
        secret = await self._optional(self.core.read_namespaced_secret, name, namespace)
        if secret is None:
            return None
        raw = (secret.get("data") or {}).get(key)
        if raw is not None:
            return base64.b64decode(raw).decode("utf-8")
        plain = (secret.get("stringData") or {}).get(key)
        return plain if isinstance(plain, str) else None

    async def ensure_secret(self, body: dict[str, Any]) -> bool:
        """Create the Secret, or merge-patch its data to ``body``'s (idempotent; no read, no PUT)."""
        ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
        try:
            await self._dict(self.core.create_namespaced_secret, ns, body)
            return True
        except ApiException as exc:
            if exc.status != 409:
                raise
        await self._dict(self.core.patch_namespaced_secret, name, ns, {"data": body["data"]},
                         _content_type="application/merge-patch+json")
        return False

    async def read_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The whole Secret object (only for the operator's own Secrets), or ``None``."""
        return await self._optional(self.core.read_namespaced_secret, name, namespace)

    async def apply_secret(self, body: dict[str, Any]) -> None:
        """Create, or merge-patch data, labels and owners to ``body``'s (no list, no delete)."""
        await self._create_or_merge(self.core.create_namespaced_secret, self.core.patch_namespaced_secret, body)

    async def write_secret_once(self, body: dict[str, Any], replacing: dict[str, Any] | None) -> bool:
        """Create ``body``, or overwrite ``replacing`` (the Secret as last read) only if nobody
        changed it since. False: another writer got there first (read it again and use theirs)."""
        ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
        try:
            if replacing is None:
                await self._dict(self.core.create_namespaced_secret, ns, body)
            else:
                version = replacing["metadata"]["resourceVersion"]
                await self._dict(self.core.patch_namespaced_secret, name, ns,
                                 {"metadata": {"resourceVersion": version}, "data": body["data"]},
                                 _content_type="application/merge-patch+json")
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        return True

    async def set_secret_owner(self, namespace: str, name: str, owner: dict[str, Any]) -> None:
        """Make ``owner`` the Secret's only owner (garbage collected with it); data untouched."""
        await self._dict(self.core.patch_namespaced_secret, name, namespace, {"metadata": {"ownerReferences": [owner]}},
                         _content_type="application/merge-patch+json")

    # ---------------------------------------------------------------- config maps

    async def apply_configmap(self, body: dict[str, Any]) -> None:
        """As :meth:`apply_secret`, for the operator's own ConfigMaps."""
        await self._create_or_merge(self.core.create_namespaced_config_map, self.core.patch_namespaced_config_map, body)

    async def _create_or_merge(self, create: Any, patch: Any, body: dict[str, Any]) -> None:
        """Create ``body``; if it exists, merge-patch its data, labels and owners (no list, no delete)."""
        ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
        try:
            await self._dict(create, ns, body)
            return
        except ApiException as exc:
            if exc.status != 409:
                raise
        meta = {k: body["metadata"][k] for k in ("labels", "ownerReferences") if k in body["metadata"]}
        await self._dict(patch, name, ns, {"metadata": meta, "data": body["data"]},
                         _content_type="application/merge-patch+json")

    # ---------------------------------------------------------------- deployments / services

    async def get_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._optional(self.apps.read_namespaced_deployment, name, namespace)

    async def list_deployments(self, namespace: str, labels: dict[str, str]) -> list[dict[str, Any]]:
        data = await self._dict(self.apps.list_namespaced_deployment, namespace, label_selector=selector(labels))
        return [item for item in data.get("items", []) if labels_match(item, labels)]

    async def apply_deployment(self, body: dict[str, Any]) -> dict[str, Any]:
        """Create, or merge-patch to the desired shape (idempotent)."""
        ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
        try:
            return await self._dict(self.apps.create_namespaced_deployment, ns, body)
        except ApiException as exc:
            if exc.status != 409:
                raise
        return await self._dict(self.apps.patch_namespaced_deployment, name, ns, body)

    async def replace_pod_containers(self, body: dict[str, Any]) -> dict[str, Any]:
        """Replace a Deployment's Pod containers and volumes with ``body``'s (a JSON patch: a
        strategic merge can add a container but never remove one); the rollout does the rest."""
        ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
        pod = body["spec"]["template"]["spec"]
        patch = [{"op": "replace", "path": f"/spec/template/spec/{key}", "value": pod[key]}
                 for key in ("containers", "volumes")]
        return await self._dict(self.apps.patch_namespaced_deployment, name, ns, patch)

    async def delete_deployment(self, namespace: str, name: str) -> bool:
        return await self._optional(self.apps.delete_namespaced_deployment, name, namespace) is not None

    async def get_service(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._optional(self.core.read_namespaced_service, name, namespace)

    async def apply_service(self, body: dict[str, Any]) -> dict[str, Any]:
        ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
        try:
            return await self._dict(self.core.create_namespaced_service, ns, body)
        except ApiException as exc:
            if exc.status != 409:
                raise
        return await self._dict(self.core.patch_namespaced_service, name, ns, body)

    async def delete_service(self, namespace: str, name: str) -> bool:
        return await self._optional(self.core.delete_namespaced_service, name, namespace) is not None

    async def list_services(self, namespace: str, labels: dict[str, str]) -> list[dict[str, Any]]:
        data = await self._dict(self.core.list_namespaced_service, namespace, label_selector=selector(labels))
        return [item for item in data.get("items", []) if labels_match(item, labels)]

    # ---------------------------------------------------------------- custom resources

    async def list_custom(self, namespace: str, plural: str, labels: dict[str, str] | None = None) -> list[
        dict[str, Any]
    ]:
        kwargs: dict[str, Any] = {"label_selector": selector(labels)} if labels else {}
        data = await self._dict(self.custom.list_namespaced_custom_object, GROUP, VERSION, namespace, plural, **kwargs)
        return [item for item in data.get("items", []) if labels_match(item, labels or {})]

    async def list_custom_everywhere(self, plural: str) -> list[dict[str, Any]]:
        """Every namespace's objects (a cluster-wide operator's ClusterRole allows it)."""
        data = await self._dict(self.custom.list_cluster_custom_object, GROUP, VERSION, plural)
        return list(data.get("items", []))

    async def get_custom(self, namespace: str, plural: str, name: str) -> dict[str, Any] | None:
        return await self._optional(self.custom.get_namespaced_custom_object, GROUP, VERSION, namespace, plural, name)

    async def patch_custom(self, namespace: str, plural: str, name: str, patch: dict[str, Any]) -> dict[str, Any] | None:
        return await self._optional(
            self.custom.patch_namespaced_custom_object, GROUP, VERSION, namespace, plural, name, patch
        )

    async def patch_custom_status(
        self, namespace: str, plural: str, name: str, patch: dict[str, Any]
    ) -> dict[str, Any] | None:
        return await self._optional(
            self.custom.patch_namespaced_custom_object_status, GROUP, VERSION, namespace, plural, name, patch
        )

    async def delete_custom(self, namespace: str, plural: str, name: str) -> bool:
        return (
            await self._optional(self.custom.delete_namespaced_custom_object, GROUP, VERSION, namespace, plural, name)
            is not None
        )

    async def create_custom(self, namespace: str, plural: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._dict(self.custom.create_namespaced_custom_object, GROUP, VERSION, namespace, plural, body)
