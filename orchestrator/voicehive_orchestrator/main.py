"""Run the orchestrator: uvicorn, HTTPS by default, certificate reloaded when its files change.

WHY the reload: cert-manager rotates the mounted certificate in place; restarting every replica
for that would drop in-flight webhooks. Uvicorn keeps one ``ssl.SSLContext`` for the listener,
and ``SSLContext.load_cert_chain`` on that same context makes every *new* handshake present the
new certificate, so a small watcher re-loads it when the files' mtime/size change.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import ssl
import sys
from pathlib import Path

import uvicorn

from voicehive.audit import configure_json_logging

from .app import create_app
from .settings import Settings, SettingsError, load_settings

log = logging.getLogger(__name__)
CERT_POLL_SECONDS = 5.0


def _stamp(*paths: str) -> tuple[tuple[float, int], ...]:
    stamps = []
    for path in paths:
        try:
            st = os.stat(path)
            stamps.append((st.st_mtime, st.st_size))
        except OSError:
            stamps.append((0.0, -1))
    return tuple(stamps)


async def watch_certificate(context: ssl.SSLContext, cert: str, key: str, poll_seconds: float = CERT_POLL_SECONDS) -> None:
    """Reload ``cert``/``key`` into ``context`` whenever they change (until cancelled)."""
    last = _stamp(cert, key)
    while True:
        await asyncio.sleep(poll_seconds)  # polling period of the file watch
        current = _stamp(cert, key)
        if current == last:
            continue
        try:
            context.load_cert_chain(cert, key)
        except (ssl.SSLError, OSError) as exc:
            # Mid-rotation the pair can be inconsistent for a moment; keep the old one, retry.
            log.warning("certificate reload failed; keeping the current one", extra={"error_type": type(exc).__name__})
            continue
        last = current
        log.info("TLS certificate reloaded")


def harden_tls(context: ssl.SSLContext) -> ssl.SSLContext:
    """TLS 1.2 at least (explicit, whatever the platform's OpenSSL defaults to)."""
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


async def _serve(settings: Settings, host: str, port: int, cert_poll_seconds: float) -> None:
    app = create_app(settings)
    tls = settings.tls_cert is not None and settings.tls_key is not None
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        ssl_certfile=settings.tls_cert if tls else None,
        ssl_keyfile=settings.tls_key if tls else None,
        log_config=None,
        access_log=False,
        proxy_headers=False,
        server_header=False,
        limit_concurrency=2048,
        timeout_graceful_shutdown=20,
    )
    config.load()
    if config.ssl is not None:
        harden_tls(config.ssl)
    server = uvicorn.Server(config)
    # Everything imported and built so far lives as long as the process: move it out of the
    # collector's reach, so a full collection under load scans the requests' objects only
    # (~50 ms of stalls per full collection otherwise, with every in-flight webhook waiting).
    gc.freeze()
    watcher: asyncio.Task[None] | None = None
    if tls and config.ssl is not None:
        assert settings.tls_cert is not None and settings.tls_key is not None
        watcher = asyncio.create_task(watch_certificate(config.ssl, settings.tls_cert, settings.tls_key, cert_poll_seconds))
    try:
        await server.serve()
    finally:
        if watcher is not None:
            watcher.cancel()


def serve(
    host: str = "127.0.0.1",
    port: int = 8443,
    redis_url: str | None = None,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    plain_http: bool = False,
    namespace: str | None = None,
    cert_poll_seconds: float = CERT_POLL_SECONDS,
) -> None:
    """Entry point of ``voicehive orchestrator``. Exits with status 2 on bad configuration."""
    configure_json_logging()
    try:
        settings = load_settings(redis_url=redis_url, tls_cert=tls_cert, tls_key=tls_key, namespace=namespace)
    except SettingsError as exc:
        print(str(exc), file=sys.stderr)
        raise SystemExit(2) from None
    if settings.tls_cert is None and not plain_http:
        print(
            "refusing to serve plain HTTP: give --tls-cert/--tls-key (or VOICEHIVE_TLS_CERT/VOICEHIVE_TLS_KEY), "
            "or --plain-http to ask for it explicitly",
            file=sys.stderr,
        )
        raise SystemExit(2)
    if plain_http:
        settings = Settings(**{**settings.__dict__, "tls_cert": None, "tls_key": None})
    try:  # uvloop (from uvicorn[standard]) when present: the same asyncio API, faster
        import uvloop
    except ImportError:
        asyncio.run(_serve(settings, host, port, cert_poll_seconds))
    else:
        uvloop.run(_serve(settings, host, port, cert_poll_seconds))


def main(argv: list[str] | None = None) -> None:
    """``python -m voicehive_orchestrator`` without the shared CLI (container entry point)."""
    import argparse

    parser = argparse.ArgumentParser(prog="voicehive-orchestrator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8443)
    parser.add_argument("--redis-url")
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    parser.add_argument("--plain-http", action="store_true")
    parser.add_argument("--namespace")
    parser.add_argument("--cert-poll-seconds", type=float, default=CERT_POLL_SECONDS)
    args = parser.parse_args(argv)
    for path in (args.tls_cert, args.tls_key):
        if path and not Path(path).is_file():
            print(f"file not found: {path}", file=sys.stderr)
            raise SystemExit(2)
    serve(args.host, args.port, args.redis_url, args.tls_cert, args.tls_key, args.plain_http, args.namespace,
          args.cert_poll_seconds)
