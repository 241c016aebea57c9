"""Bearer credentials with scopes, several valid at once, reloaded from a mounted Secret.

WHY: one static token guarded agent events, call reads and GDPR erasure alike, and could not be
rotated without restarting every replica at once. Now

- a credential carries a scope: ``agent`` (agent events, transcription, call reads) or ``admin``
  (erasure and call reads); a valid token of the wrong scope gets 403, an unknown one 401;
- any number of tokens are valid at once, so a rotation is: add the new token to the Secret,
  move the clients over, remove the old one — no restart: Kubernetes updates the mounted files
  and :class:`TokenStore` re-reads the directory at most once per ``reload_seconds``;
- each token names its client (for per-client rate limits and logs), never the token itself.

Directory layout (one Secret mounted as files): each file is one credential, named
``<scope>.<client>`` (e.g. ``agent.workers-2026-12``, ``admin.dpo-office``), content the token.
``VOICEHIVE_AGENT_TOKEN`` / ``VOICEHIVE_ADMIN_TOKEN`` still work as one static credential each.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MIN_TOKEN_CHARS = 16


class Scope(StrEnum):
    AGENT = "agent"
    ADMIN = "admin"


@dataclass(frozen=True)
class Client:
    """Who presented a valid token: a name for limits and logs, and what it may do."""

    name: str
    scope: Scope


class Denied(Exception):
    """401 (no or unknown credential) or 403 (valid credential, wrong scope)."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail
        self.headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def read_token_dir(directory: Path) -> dict[bytes, Client]:
    """Credentials in a mounted Secret directory; malformed entries are skipped with a warning."""
    found: dict[bytes, Client] = {}
    for path in sorted(directory.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue  # Kubernetes' ..data / ..<timestamp> bookkeeping entries
        scope_name, _, client = path.name.partition(".")
        token = path.read_text(encoding="utf-8").strip()
        if scope_name not in {s.value for s in Scope} or not client or len(token) < MIN_TOKEN_CHARS:
            log.warning("ignoring credential file: expected <agent|admin>.<client> holding a token of at "
                        "least %d characters", MIN_TOKEN_CHARS, extra={"file": path.name})
            continue
        found[_digest(token)] = Client(client, Scope(scope_name))
    return found


@dataclass
class TokenStore:
    """Valid tokens (by SHA-256) and their clients; static ones plus a directory re-read over time."""

    static: Mapping[bytes, Client] = field(default_factory=dict)
    directory: Path | None = None
    reload_seconds: float = 2.0
    clock: Callable[[], float] = time.monotonic
    _loaded: dict[bytes, Client] = field(default_factory=dict)
    _loaded_at: float | None = None
    _all: dict[bytes, Client] | None = None

    @classmethod
    def from_tokens(cls, tokens: Iterable[tuple[str, Scope, str]], directory: Path | None = None,
                    reload_seconds: float = 2.0) -> TokenStore:
        """``tokens``: (token, scope, client name) triples, e.g. from environment variables."""
        static = {_digest(token): Client(name, scope) for token, scope, name in tokens if token}
        return cls(static=static, directory=directory, reload_seconds=reload_seconds)

    def _current(self) -> dict[bytes, Client]:
        now = self.clock()
        if self.directory is not None and (self._loaded_at is None or now - self._loaded_at >= self.reload_seconds):
            try:
                self._loaded = read_token_dir(self.directory)
            except OSError as exc:  # keep the last good set: a rotation must not lock everyone out
                log.warning("credential directory unreadable; keeping the last set",
                            extra={"error_type": type(exc).__name__})
            self._loaded_at = now
            self._all = None
        if self._all is None:  # merged once per (re)load, not on every request
            self._all = {**self.static, **self._loaded}
        return self._all

    def has_scope(self, scope: Scope) -> bool:
        return any(c.scope is scope for c in self._current().values())

    def client_for(self, authorization: str | None) -> Client | None:
        """The client a ``Bearer`` header belongs to, or ``None`` (compared by digest, in constant time)."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        digest = _digest(token.strip())
        match = None
        for known, client in self._current().items():
            if hmac.compare_digest(known, digest):
                match = client
        return match


def permit(client: Client | None, allowed: frozenset[Scope]) -> Client:
    """``client`` if it may call an endpoint open to ``allowed``; else :class:`Denied` (401/403)."""
    if client is None:
        raise Denied(401, "unauthorized", "a valid 'Authorization: Bearer <token>' header is required")
    if client.scope not in allowed:
        wanted = " or ".join(sorted(s.value for s in allowed))
        raise Denied(403, "forbidden", f"this credential has the {client.scope.value} scope; "
                                       f"this endpoint needs {wanted}")
    return client


# The ASGI scope key (a namespaced extension key) under which a request's client is kept once found.
_SCOPE_CLIENT = "voicehive.client"


def client_of(scope: MutableMapping[str, Any], store: TokenStore) -> Client | None:
    """The client of one request (its ASGI ``scope``), looked up once: the rate limiter and the
    handler both need it, and each lookup hashes the token and compares it with every credential."""
    found = scope.get(_SCOPE_CLIENT)
    if found is None:
        header = next((value for name, value in scope.get("headers") or () if name == b"authorization"), b"")
        found = scope[_SCOPE_CLIENT] = (store.client_for(header.decode("latin-1")),)
    client: Client | None = found[0]
    return client


AGENT_ENDPOINTS = frozenset({Scope.AGENT})
ADMIN_ENDPOINTS = frozenset({Scope.ADMIN})
READ_ENDPOINTS = frozenset({Scope.AGENT, Scope.ADMIN})


def token_store(agent_token: str | None, admin_token: str | None, tokens_dir: str | None) -> TokenStore:
    """The credentials the settings name: the static env tokens plus the mounted directory."""
    return TokenStore.from_tokens(
        [(agent_token or "", Scope.AGENT, "agent-env"), (admin_token or "", Scope.ADMIN, "admin-env")],
        directory=Path(tokens_dir) if tokens_dir else None,
    )
