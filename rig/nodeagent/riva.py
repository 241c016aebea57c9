"""The loopback Riva fake (tests/fakes/riva.py) as a "Riva image": serves ASR and the gRPC
health service on every given port of the Pod's network, until SIGTERM.

    python -m rig.nodeagent.riva PORT [PORT...]
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from typing import Any

import grpc
from riva.client.proto import riva_asr_pb2_grpc

from tests.fakes.riva import RivaFake, ScriptedTranscriber

SERVING = b"\x08\x01"


def health_handler() -> grpc.GenericRpcHandler:
    def check(request: bytes, context: Any) -> bytes:
        return SERVING

    return grpc.method_handlers_generic_handler(
        "grpc.health.v1.Health", {"Check": grpc.unary_unary_rpc_method_handler(check)}
    )


async def serve(ports: list[int]) -> None:
    fake = RivaFake(ScriptedTranscriber(["hello"], clauses=True))
    server = grpc.aio.server()
    riva_asr_pb2_grpc.add_RivaSpeechRecognitionServicer_to_server(fake, server)  # type: ignore[no-untyped-call]
    server.add_generic_rpc_handlers((health_handler(),))
    for port in ports:  # all addresses of the Pod, as the real server (--riva-uri=0.0.0.0:P)
        server.add_insecure_port(f"0.0.0.0:{port}")
    await server.start()
    print(f"riva fake (rig node agent) serving ASR + health on ports {ports}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1)


def main() -> None:
    asyncio.run(serve([int(p) for p in sys.argv[1:]]))


if __name__ == "__main__":
    main()
