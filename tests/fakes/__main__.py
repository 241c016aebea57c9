"""Serve all four fakes on 127.0.0.1 until interrupted, and print how to point clients at them.

    .venv/bin/python -m tests.fakes [--asr TEXT]... [--llm TEXT]... [--json]

Prints ``export NAME=value`` lines (or one JSON object with ``--json``) for the environment
the worker and the official SDKs read, with throwaway keys generated for this run only (they
open nothing but these loopback fakes). Useful to try ``voicehive call`` or a worker by hand
against providers that cost nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import secrets
import shlex
import signal
from pathlib import Path

from tests.fakes.azure_openai import AzureOpenAIFake, ScriptedResponder
from tests.fakes.elevenlabs import ElevenLabsFake
from tests.fakes.livekit_twirp import LiveKitFake
from tests.fakes.riva import RivaFake, ScriptedTranscriber
from tests.fakes.tls import TlsFiles


def environment(
    riva: RivaFake, azure: AzureOpenAIFake, eleven: ElevenLabsFake, lk: LiveKitFake
) -> dict[str, str]:
    """Variable names come from the code that reads them (one source of truth)."""
    from voicehive import contract

    env = {
        contract.ENV_RIVA_SERVER: riva.address,
        "AZURE_OPENAI_ENDPOINT": azure.endpoint,
        contract.ENV_AZURE_OPENAI_API_KEY: azure.api_key,
        "OPENAI_API_VERSION": "2024-10-21",
        contract.ENV_ELEVEN_API_KEY: eleven.api_key,
        contract.ENV_LIVEKIT_URL: lk.url,
        contract.ENV_LIVEKIT_API_KEY: lk.api_key,
        contract.ENV_LIVEKIT_API_SECRET: lk.api_secret,
    }
    try:  # the worker's own endpoint overrides, when the worker package is importable
        session = importlib.import_module("voicehive_worker.session")
        env[session.ENV_LLM_ENDPOINT] = azure.endpoint
        env[session.ENV_TTS_ENDPOINT] = eleven.base_url_v1
    except ImportError:
        pass
    return env


async def serve(asr_texts: list[str], llm_texts: list[str], as_json: bool, tls_dir: Path | None = None,
                json_file: Path | None = None, phone: bool = False) -> None:
    """With ``tls_dir`` (ca.pem, server.pem, server.key: tests.fakes.tls) the HTTP fakes serve TLS."""
    ssl_context = None
    if tls_dir is not None:
        ssl_context = TlsFiles(tls_dir / "ca.pem", tls_dir / "server.pem", tls_dir / "server.key").server_context()
    riva = RivaFake(ScriptedTranscriber(asr_texts, clauses=True))
    rules, speech = [], None
    if phone:  # the e2e phone line (tests/e2e/voices.py): spoken replies, rules for its caller
        from tests.e2e.voices import phone_rules, tts_speech

        rules, speech = phone_rules(), tts_speech()
    azure = AzureOpenAIFake(ScriptedResponder(llm_texts, rules=rules), api_key=secrets.token_urlsafe(24),
                            ssl_context=ssl_context)
    eleven = ElevenLabsFake(api_key=secrets.token_urlsafe(24), ssl_context=ssl_context, speech=speech)
    lk = LiveKitFake(auto_join_agents=True)
    async with riva, azure, eleven, lk:
        env = environment(riva, azure, eleven, lk)
        extra = {
            "azure_deployment": azure.deployment,
            "elevenlabs_voice_id": eleven.voice_id,
            "elevenlabs_endpoint": eleven.base_url_v1,
            "riva_model": riva.models[0].name,
            "ports": [azure.port, eleven.port],
        }
        if json_file is not None:  # written whole, then renamed: a reader never sees half of it
            json_file.with_suffix(".tmp").write_text(json.dumps({"env": env, **extra}))
            json_file.with_suffix(".tmp").rename(json_file)
        if as_json:
            print(json.dumps({"env": env, **extra}), flush=True)
        else:
            for name, value in env.items():
                print(f"export {name}={shlex.quote(value)}")
            print("# " + ", ".join(f"{k}={v}" for k, v in extra.items()), flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.fakes", description=__doc__.split("\n")[0])
    parser.add_argument("--asr", action="append", default=[], help="a caller utterance the ASR fake returns")
    parser.add_argument("--llm", action="append", default=[], help="a reply the LLM fake gives")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of export lines")
    parser.add_argument("--tls-dir", type=Path, help="serve the HTTP fakes over TLS with ca.pem/server.pem/server.key")
    parser.add_argument("--json-file", type=Path, help="also write the JSON object to this file")
    parser.add_argument("--phone", action="store_true",
                        help="speak replies with eSpeak NG and answer the e2e caller (tests/e2e/voices.py)")
    args = parser.parse_args()
    asyncio.run(serve(args.asr, args.llm, args.json, args.tls_dir, args.json_file, args.phone))


if __name__ == "__main__":
    main()
