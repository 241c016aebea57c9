"""A small Kubernetes REST client over urllib3: raw JSON in and out, thread-safe, with watches.

The agent needs a dozen verbs on plain dicts; the generated ``kubernetes`` models would only
get in the way (status subresources, merge patches, TokenRequest, raw watch events).
"""

from __future__ import annotations

import base64
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import urllib3
import yaml

MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"


class KubeError(Exception):
    def __init__(self, status: int, body: Any, what: str) -> None:
        self.status = status
        self.body = body
        message = body.get("message", body) if isinstance(body, dict) else body
        super().__init__(f"{what}: HTTP {status}: {message}")


def _materialise(value: str | None, data: str | None, tmp: Path, name: str, base: Path) -> str | None:
    """A kubeconfig path (relative to the file) or ``*-data`` written to a private temp file."""
    if data:
        path = tmp / name
        path.write_bytes(base64.b64decode(data))
        path.chmod(0o600)
        return str(path)
    if value:
        return str((base / value).resolve()) if not value.startswith("/") else value
    return None


class Kube:
    """Connection to the apiserver named by a kubeconfig's current context."""

    def __init__(self, kubeconfig: Path) -> None:
        config = yaml.safe_load(kubeconfig.read_text())
        context_name = config.get("current-context")
        context = next(c["context"] for c in config["contexts"] if c["name"] == context_name)
        cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
        user: dict[str, Any] = next((u["user"] for u in config.get("users", []) if u["name"] == context.get("user")), {})
        self._tmp = tempfile.TemporaryDirectory(prefix="nodeagent-kube-")
        tmp, base = Path(self._tmp.name), kubeconfig.parent
        self.server = cluster["server"].rstrip("/")
        ca = _materialise(cluster.get("certificate-authority"), cluster.get("certificate-authority-data"), tmp, "ca", base)
        cert = _materialise(user.get("client-certificate"), user.get("client-certificate-data"), tmp, "crt", base)
        key = _materialise(user.get("client-key"), user.get("client-key-data"), tmp, "key", base)
        token = user.get("token")
        if not token and user.get("tokenFile"):
            token = Path(user["tokenFile"]).read_text().strip()
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        insecure = bool(cluster.get("insecure-skip-tls-verify"))
        self.ca_file = ca
        self.pool = urllib3.PoolManager(
            num_pools=4,
            maxsize=16,
            cert_reqs="CERT_NONE" if insecure else "CERT_REQUIRED",
            ca_certs=ca,
            cert_file=cert,
            key_file=key,
        )

    def url(self, path: str, params: dict[str, Any] | None = None) -> str:
        query = f"?{urlencode(params)}" if params else ""
        return f"{self.server}{path}{query}"

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: dict[str, Any] | None = None,
        content_type: str = "application/json",
        timeout: float = 30.0,
    ) -> Any:
        headers = {**self.headers, "Accept": "application/json"}
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = json.dumps(body).encode()
        response = self.pool.request(
            method, self.url(path, params), body=data, headers=headers, timeout=timeout, retries=False
        )
        try:
            parsed = json.loads(response.data) if response.data else None
        except json.JSONDecodeError:
            parsed = response.data.decode(errors="replace")
        if response.status >= 400:
            raise KubeError(response.status, parsed, f"{method} {path}")
        return parsed

    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return self.request("GET", path, params=params)

    def get_or_none(self, path: str) -> Any:
        try:
            return self.get(path)
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    def post(self, path: str, body: Any) -> Any:
        return self.request("POST", path, body)

    def patch(self, path: str, body: Any, content_type: str = MERGE) -> Any:
        return self.request("PATCH", path, body, content_type=content_type)

    def delete(self, path: str, body: Any = None) -> Any:
        return self.request("DELETE", path, body)

    def watch(self, path: str, params: dict[str, Any], timeout: float = 300.0) -> Iterator[dict[str, Any]]:
        """Events of one watch request (ends when the server closes it, at most ``timeout``)."""
        query = {**params, "watch": "true", "timeoutSeconds": int(timeout), "allowWatchBookmarks": "true"}
        response = self.pool.request(
            "GET",
            self.url(path, query),
            headers={**self.headers, "Accept": "application/json"},
            preload_content=False,
            timeout=urllib3.Timeout(connect=10, read=timeout + 30),
            retries=False,
        )
        try:
            if response.status >= 400:
                raise KubeError(response.status, response.read().decode(errors="replace"), f"WATCH {path}")
            buffer = b""
            for chunk in response.stream(4096, decode_content=True):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line)
        finally:
            response.release_conn()

    def close(self) -> None:
        self.pool.clear()
        self._tmp.cleanup()
