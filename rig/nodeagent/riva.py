"""The loopback Riva fake (tests/fakes/riva.py) as a "Riva image": serves ASR and the gRPC
health service on every given port of the Pod's network, and a NIM's HTTP health endpoints
(`/v1/health/ready`, `/v1/health/live`, as NVIDIA documents for the Riva ASR NIM) on the
`--http` port, until SIGTERM.

    python -m rig.nodeagent.riva PORT [PORT...] [--http PORT]
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from pathlib import Path
from typing import Any

import grpc
from riva.client.proto import riva_asr_pb2_grpc

from tests.fakes.riva import RivaFake, ScriptedTranscriber

SERVING = b"\x08\x01"
REPO = str(Path(__file__).resolve().parents[2])


def health_handler() -> grpc.GenericRpcHandler:
    def check(request: bytes, context: Any) -> bytes:
        return SERVING

    return grpc.method_handlers_generic_handler(
        "grpc.health.v1.Health", {"Check": grpc.unary_unary_rpc_method_handler(check)}
    )


async def serve_http(port: int) -> Any:
    from aiohttp import web

    async def ok(_: web.Request) -> web.Response:
        return web.json_response({"status": "ready"})

    app = web.Application()
    for path in ("/v1/health/ready", "/v1/health/live"):
        app.router.add_get(path, ok)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port).start()
    return runner


async def serve(ports: list[int], http_port: int | None = None) -> None:
    # pocketsphinx on the example line's words when installed (the e2e caller is understood),
    # else a script; tests/e2e/voices.py
    from tests.e2e.voices import riva_transcriber

    local = riva_transcriber(REPO)
    fake = RivaFake(local if local is not None else ScriptedTranscriber(["hello"], clauses=True))
    server = grpc.aio.server()
    riva_asr_pb2_grpc.add_RivaSpeechRecognitionServicer_to_server(fake, server)  # type: ignore[no-untyped-call]
    server.add_generic_rpc_handlers((health_handler(),))
    for port in ports:  # all addresses of the Pod, as the real server (--riva-uri=0.0.0.0:P)
        server.add_insecure_port(f"0.0.0.0:{port}")
    await server.start()
    http = await serve_http(http_port) if http_port else None
    print(f"riva fake (rig node agent) serving ASR + health on ports {ports}, HTTP health on {http_port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    if http is not None:
        await http.cleanup()
    await server.stop(1)


def main() -> None:
    args = sys.argv[1:]
    http = int(args[args.index("--http") + 1]) if "--http" in args else None
    ports = [int(p) for i, p in enumerate(args) if p != "--http" and (i == 0 or args[i - 1] != "--http")]
    asyncio.run(serve(ports, http))


if __name__ == "__main__":
    main()
