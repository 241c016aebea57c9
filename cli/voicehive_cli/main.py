"""The ``voicehive`` command: one entry point for every component.

It lives outside ``voicehive/`` because it starts the components, and the shared core must not
import them. Each subcommand imports its component lazily, so ``voicehive --help`` and ``voicehive validate``
start fast and work without the heavy media stack loaded.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from voicehive.contract import GROUP

app = typer.Typer(
    name="voicehive",
    help="VoiceHive: Kubernetes-native voice agents that answer hotel phone lines.",
    no_args_is_help=True,
    add_completion=False,
)


@app.command()
def validate(
    files: Annotated[list[Path], typer.Argument(help="YAML files holding HotelLine/VoiceSession resources.")],
) -> None:
    """Check resources offline against the CRD schema, its CEL rules and the operator's models."""
    import yaml

    from voicehive.api.validation import validate as validate_document

    failed = False
    for path in files:
        try:
            documents = [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]
        except (OSError, yaml.YAMLError) as exc:
            typer.echo(f"{path}: cannot read: {exc}", err=True)
            failed = True
            continue
        ours = [d for d in documents if isinstance(d, dict) and str(d.get("apiVersion", "")).startswith(f"{GROUP}/")]
        if not ours:
            typer.echo(f"{path}: no VoiceHive resource (apiVersion {GROUP}/...) found", err=True)
            failed = True
        for document in ours:
            metadata = document.get("metadata")
            name = metadata.get("name", "?") if isinstance(metadata, dict) else "?"
            problems = validate_document(document)
            if problems:
                failed = True
                for problem in problems:
                    typer.echo(f"{path}: {document.get('kind')} {name}: {problem}", err=True)
            else:
                typer.echo(f"{path}: {document.get('kind')} {name}: valid")
    raise typer.Exit(1 if failed else 0)


@app.command()
def crds(
    out: Annotated[Path, typer.Option(help="Directory to write the CRD YAML into.")] = Path("crds"),
) -> None:
    """Write the CustomResourceDefinitions generated from the API models."""
    from voicehive.api.crd import write_crds

    for path in write_crds(out):
        typer.echo(f"wrote {path}")


@app.command("caller-hash")
def caller_hash(
    number: Annotated[str, typer.Argument(help="The caller's phone number, e.g. +49 30 1234567.")],
) -> None:
    """Print the caller hash of a number, for an erasure request (key from VOICEHIVE_PII_KEY).

    The hash is what VoiceHive stores instead of the number; annotate the HotelLine with
    ``voicehive.io/erase-caller=<hash>`` to erase every trace of that caller.
    """
    from voicehive import contract
    from voicehive.privacy import KeyConfigError, PiiHasher, load_key, normalise_e164

    try:
        key = load_key(contract.ENV_PII_KEY)
    except KeyConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    try:
        normalise_e164(number)
    except ValueError as exc:  # the message never echoes the number
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(PiiHasher(key).phone(number))


@app.command()
def operator(
    namespace: Annotated[list[str] | None, typer.Option("--namespace", "-n", help="Namespace(s) to watch.")] = None,
    all_namespaces: Annotated[bool, typer.Option("--all-namespaces", "-A", help="Watch every namespace.")] = False,
    peering: Annotated[str | None, typer.Option(help="Kopf peering name for HA (standby replicas).")] = None,
    priority: Annotated[
        int | None,
        typer.Option(help="Peering priority (highest is active); default: derived from the Pod's name "
                     "[env: VOICEHIVE_POD_NAME], so each replica differs."),
    ] = None,
) -> None:
    """Run the operator: HotelLines become SIP trunks, Riva ASR and warm workers; calls get pods."""
    from voicehive_operator.main import run

    run(namespaces=namespace or [], all_namespaces=all_namespaces, peering=peering, priority=priority)


@app.command()
def orchestrator(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    redis_url: Annotated[str | None, typer.Option(help="Redis URL [env: VOICEHIVE_REDIS_URL].")] = None,
    tls_cert: Annotated[Path | None, typer.Option(help="TLS certificate (PEM) [env: VOICEHIVE_TLS_CERT].")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="TLS private key (PEM) [env: VOICEHIVE_TLS_KEY].")] = None,
    plain_http: Annotated[bool, typer.Option(help="Serve plain HTTP without TLS (development only).")] = False,
) -> None:
    """Run the orchestrator: the seed's webhook API, the CallManager and Redis call state."""
    from voicehive_orchestrator.main import serve

    serve(
        host=host,
        port=port,
        redis_url=redis_url,
        tls_cert=str(tls_cert) if tls_cert else None,
        tls_key=str(tls_key) if tls_key else None,
        plain_http=plain_http,
    )


@app.command()
def worker(
    line: Annotated[Path | None, typer.Option(help="HotelLine YAML (default: the spec in VOICEHIVE_LINE_SPEC).")] = None,
) -> None:
    """Run one per-call worker: start warm, wait for a call, serve it, drain and exit."""
    from voicehive_worker.entrypoint import main as worker_main

    worker_main(line_file=line)


@app.command()
def call(
    line: Annotated[Path, typer.Option(help="HotelLine YAML to take the configuration from.")],
    say: Annotated[list[str] | None, typer.Option(help="A caller utterance, synthesised locally; repeatable.")] = None,
    audio: Annotated[list[Path] | None, typer.Option(help="A WAV file the caller plays as is; repeatable.")] = None,
    out: Annotated[Path | None, typer.Option(help="Directory to write the agent's reply audio into.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="One JSON object per turn.")] = False,
) -> None:
    """Simulate a phone call to a line through the real pipeline (local engines without keys)."""
    from voicehive_worker.simulate import run_call

    raise typer.Exit(run_call(line, says=say or [], audios=audio or [], out_dir=out, as_json=json_output))


def _register_recording() -> None:
    from voicehive_worker.recording_cli import app as recording_app

    app.add_typer(recording_app, name="recording")


_register_recording()


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
