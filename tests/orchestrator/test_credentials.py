"""Scoped, rotatable credentials, per-client rate limits and /docs off by default, over a real socket.

Issue 11: agent events and erasure need different credentials (a wrong scope gets 403); tokens in
a mounted Secret directory are reloaded without a restart, several valid at once; a client over
its limit gets 429 with Retry-After while another client is still served.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.orchestrator.helpers import ADMIN_TOKEN, AGENT_TOKEN, orchestrator_env, run_app
from voicehive_orchestrator.app import create_app
from voicehive_orchestrator.settings import load_settings

ERASE = {"caller_hash": "0" * 64}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def poll(probe: Callable[[], Any], accept: Callable[[Any], bool], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    value = probe()
    while not accept(value):
        assert time.monotonic() < deadline, f"timed out; last value {value!r}"
        time.sleep(0.1)  # polling a reload that happens on the server's own schedule
        value = probe()
    return value


def test_wrong_scope_is_403_and_unknown_token_401(redis_url: str) -> None:
    with run_app(create_app(load_settings(orchestrator_env(redis_url)))) as server, \
            httpx.Client(base_url=server.url, timeout=30) as client:
        agent_on_erasure = client.post("/v1/erasure", json=ERASE, headers=bearer(AGENT_TOKEN))
        assert agent_on_erasure.status_code == 403 and agent_on_erasure.json()["error"] == "forbidden"
        assert "agent scope" in agent_on_erasure.json()["detail"]
        admin_on_events = client.post("/v1/livekit/transcription", json={}, headers=bearer(ADMIN_TOKEN))
        assert admin_on_events.status_code == 403
        unknown = client.post("/v1/erasure", json=ERASE, headers=bearer("x" * 32))
        assert unknown.status_code == 401 and unknown.headers["www-authenticate"] == "Bearer"
        assert client.post("/v1/erasure", json=ERASE, headers=bearer(ADMIN_TOKEN)).status_code == 200
        # Call reads carry no personal data: either scope may read.
        for token in (AGENT_TOKEN, ADMIN_TOKEN):
            assert client.get("/v1/calls/never-seen", headers=bearer(token)).status_code == 404


def test_tokens_rotate_from_a_mounted_directory_without_restart(redis_url: str, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.mkdir()
    old, new = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    (tokens / "admin.dpo-2026").write_text(old)
    env = orchestrator_env(redis_url, VOICEHIVE_TOKENS_DIR=str(tokens))
    with run_app(create_app(load_settings(env))) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        def erase(token: str) -> int:
            return client.post("/v1/erasure", json=ERASE, headers=bearer(token)).status_code

        assert erase(old) == 200 and erase(new) == 401
        (tokens / "admin.dpo-2027").write_text(new)  # rotation step 1: both valid
        poll(lambda: erase(new), lambda s: s == 200)
        assert erase(old) == 200
        (tokens / "admin.dpo-2026").unlink()  # step 2: the old one is withdrawn
        poll(lambda: erase(old), lambda s: s == 401)
        assert erase(new) == 200
        (tokens / "agent.workers").write_text(secrets.token_urlsafe(24))  # a new agent credential...
        agent = (tokens / "agent.workers").read_text()
        poll(lambda: client.get("/v1/calls/x", headers=bearer(agent)).status_code, lambda s: s == 404)
        assert erase(agent) == 403  # ...cannot erase


def test_rate_limit_answers_429_with_retry_after_per_client(redis_url: str) -> None:
    env = orchestrator_env(redis_url, VOICEHIVE_RATE_LIMIT_ADMIN="5/minute", VOICEHIVE_RATE_LIMIT_ANONYMOUS="8/minute")
    with run_app(create_app(load_settings(env))) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        answers = [client.post("/v1/erasure", json=ERASE, headers=bearer(ADMIN_TOKEN)) for _ in range(7)]
        assert [a.status_code for a in answers] == [200] * 5 + [429] * 2
        limited = answers[-1]
        assert 1 <= int(limited.headers["retry-after"]) <= 60 and limited.json()["error"] == "rate_limited"
        # Another client (the agent credential) is unaffected by the admin client's limit.
        assert client.get("/v1/calls/never-seen", headers=bearer(AGENT_TOKEN)).status_code == 404
        # Guessing tokens is limited by address: unknown tokens share one bucket.
        guesses = [client.get("/v1/calls/x", headers=bearer(secrets.token_urlsafe(24))).status_code for _ in range(10)]
        assert guesses.count(401) == 8 and guesses[-1] == 429
        # Probes are never limited.
        assert all(client.get("/healthz").status_code == 200 for _ in range(20))


def test_docs_and_openapi_are_off_unless_enabled(redis_url: str) -> None:
    env = orchestrator_env(redis_url)
    env.pop("VOICEHIVE_API_DOCS")
    with run_app(create_app(load_settings(env))) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        assert [client.get(p).status_code for p in ("/docs", "/redoc", "/openapi.json")] == [404, 404, 404]


def test_the_webhook_routes_are_rate_limited_too(redis_url: str) -> None:
    """The two webhook routes skip FastAPI's layers for speed (issue 16); not the rate limit."""
    env = orchestrator_env(redis_url, VOICEHIVE_RATE_LIMIT_AGENT="3/minute", VOICEHIVE_RATE_LIMIT_ANONYMOUS="2/minute")
    with run_app(create_app(load_settings(env))) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        events = [client.post("/v1/livekit/transcription", json={}, headers=bearer(AGENT_TOKEN)).status_code
                  for _ in range(4)]
        assert events[:3] != [429] * 3 and events[3] == 429, events
        unsigned = [client.post("/v1/livekit/webhook", content=b"{}").status_code for _ in range(3)]
        assert unsigned[-1] == 429, unsigned


def test_each_request_looks_its_client_up_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The limiter and the handler share one lookup per request (a token digest compared with
    every credential); clients are limited by name, callers without a credential by address."""
    from voicehive_orchestrator import auth
    from voicehive_orchestrator.ratelimit import RateLimiter, RateLimits

    store = auth.TokenStore.from_tokens([(AGENT_TOKEN, auth.Scope.AGENT, "workers")])
    lookups: list[str | None] = []
    real = store.client_for

    def counting(header: str | None) -> auth.Client | None:
        lookups.append(header)
        return real(header)

    monkeypatch.setattr(store, "client_for", counting)
    limiter = RateLimiter(RateLimits(agent="3/minute", anonymous="2/minute"), lambda _scope: store)

    def scope(address: str, token: str | None = None) -> dict[str, Any]:
        headers = [(b"authorization", f"Bearer {token}".encode())] if token else []
        return {"type": "http", "path": "/v1/livekit/transcription", "headers": headers, "client": (address, 1)}

    request = scope("10.0.0.1", AGENT_TOKEN)
    assert limiter.retry_after(request) is None
    assert auth.permit(auth.client_of(request, store), auth.AGENT_ENDPOINTS).name == "workers"
    assert len(lookups) == 1  # the handler's check reused the limiter's lookup
    answers = [limiter.retry_after(scope(f"10.0.0.{i}", AGENT_TOKEN)) for i in range(3)]
    assert answers[:2] == [None, None] and answers[2] is not None and 1 <= answers[2] <= 60  # one client
    for i in range(5):  # anonymous: per address, 2 a minute each
        assert [limiter.retry_after(scope(f"192.0.2.{i}")) is None for _ in range(3)] == [True, True, False]


def test_moving_window_counts_any_window_and_forgets_idle_keys_only() -> None:
    """At most N hits in any window (not per clock minute); a refusal says when the oldest hit
    leaves the window; idle keys are dropped when the table is full, live ones keep their count."""
    from voicehive_orchestrator.ratelimit import MovingWindows

    now = [1000.0]
    windows = MovingWindows(max_keys=4, clock=lambda: now[0])
    assert windows.hit("a", 3, 60) is None
    now[0] += 30
    assert windows.hit("a", 3, 60) is None and windows.hit("a", 3, 60) is None
    assert windows.hit("a", 3, 60) == pytest.approx(30.0)  # the first hit leaves at 1060
    now[0] += 30.5
    assert windows.hit("a", 3, 60) is None  # one slot free again, not three: a moving window
    assert windows.hit("a", 3, 60) == pytest.approx(29.5)
    for key in "bcd":
        assert windows.hit(key, 1, 10) is None
    now[0] += 11  # b, c, d idle; a still has hits in its window
    assert windows.hit("e", 1, 10) is None  # the table was full: pruned
    assert len(windows) == 2  # a and e
    assert windows.hit("a", 3, 60) is not None  # a's count survived the pruning
    for i in range(20):  # all live: the table grows, pruning is not retried on every new key
        assert windows.hit(f"live{i}", 1, 600) is None
    assert len(windows) == 22
