"""``voicehive recording``: staff access to a call's recording (fetch, decrypt, audit).

WHY a key and an audit line: a recording is personal data. Only someone holding the line's
recording key (``VOICEHIVE_RECORDING_LINE_KEY``, or the master ``VOICEHIVE_TRANSCRIPT_KEY`` it
derives from) can open it, and every opening leaves a JSON line on the ``voicehive.audit``
logger: who, which session, when; never the audio's content or where it is stored.

Self-contained on purpose (registered in ``voicehive.cli`` with one line): heavy imports stay
inside the commands so ``voicehive --help`` stays fast.
"""

from __future__ import annotations

import base64
import getpass
import logging
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from voicehive.contract import ENV_RECORDING_LINE_KEY as LINE_KEY_ENV  # base64 of one line's recording key

app = typer.Typer(help="Call recordings: fetch and decrypt for staff (audited).", no_args_is_help=True)


def _line_key(namespace: str, line: str) -> bytes:
    """The line's recording key: given directly, or derived from the master key."""
    from voicehive.privacy import TRANSCRIPT_KEY_ENV, decode_key, load_key
    from voicehive_worker.recording import recording_key

    direct = os.environ.get(LINE_KEY_ENV)
    if direct:
        return decode_key(LINE_KEY_ENV, direct)
    return recording_key(load_key(TRANSCRIPT_KEY_ENV), namespace, line)


def _line_from_cluster(namespace: str, session: str) -> tuple[str, Any]:
    """(line name, HotelLineSpec) of a VoiceSession, read from the cluster ($KUBECONFIG)."""
    import kubernetes

    from voicehive.api.models import GROUP, VERSION, HotelLine

    kubernetes.config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))  # type: ignore[no-untyped-call]
    api = kubernetes.client.CustomObjectsApi()
    vs: Any = api.get_namespaced_custom_object(GROUP, VERSION, namespace, "voicesessions", session)
    line = str(vs["spec"]["lineRef"]["name"])
    body: Any = api.get_namespaced_custom_object(GROUP, VERSION, namespace, "hotellines", line)
    return line, HotelLine.model_validate(body).spec


def _line_from_file(path: Path) -> tuple[str, Any]:
    import yaml

    from voicehive.api.models import HotelLine

    for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
        if doc and doc.get("kind") == "HotelLine":
            line = HotelLine.model_validate(doc)
            return str(line.metadata.name), line.spec
    raise ValueError(f"{path}: no HotelLine found")


def audit_access(*, user: str, namespace: str, line: str, session: str, chunks: int, complete: bool) -> None:
    """One JSON audit line per opened recording (typed fields only, nothing of the audio)."""
    from voicehive.audit import AUDIT_LOGGER_NAME

    logging.getLogger(AUDIT_LOGGER_NAME).info(
        "recording %s opened by %s", session, user,
        extra={"audit": "recording_access", "actor": user, "namespace": namespace, "line": line,
               "session": session, "chunks": chunks, "complete": complete},
    )


@app.command()
def get(
    session: Annotated[str, typer.Argument(help="VoiceSession name (vs-...).")],
    out: Annotated[Path, typer.Option(help="WAV file to write (two channels: caller, agent).")],
    namespace: Annotated[str, typer.Option("--namespace", "-n", help="Namespace of the line.")] = "default",
    line_file: Annotated[Path | None, typer.Option(help="HotelLine YAML instead of reading the cluster.")] = None,
) -> None:
    """Fetch and decrypt a call recording into a WAV file (needs the line's key); audited."""
    from voicehive.audit import configure_json_logging
    from voicehive.privacy import KeyConfigError, SealError
    from voicehive.recording_store import s3_client
    from voicehive_worker.recording import bucket_access, read_recording, wav_bytes

    configure_json_logging()
    try:
        line, spec = _line_from_file(line_file) if line_file else _line_from_cluster(namespace, session)
        if spec.recording is None:
            raise ValueError(f"line {line} has no recording configuration")
        client = s3_client(bucket_access(spec.recording))
        opened = read_recording(client, spec.recording.bucket, namespace, line, session, _line_key(namespace, line))
    except (ValueError, KeyConfigError, SealError, FileNotFoundError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    out.write_bytes(wav_bytes(opened.pcm))
    audit_access(user=os.environ.get("VOICEHIVE_USER") or getpass.getuser(), namespace=namespace, line=line,
                 session=session, chunks=opened.chunks, complete=opened.complete)
    state = "complete" if opened.complete else "incomplete (the call did not end cleanly)"
    typer.echo(f"wrote {out}: {opened.seconds:.1f} s, {opened.chunks} chunk(s), {state}")


@app.command("line-key")
def line_key(
    line: Annotated[str, typer.Argument(help="HotelLine name.")],
    namespace: Annotated[str, typer.Option("--namespace", "-n", help="Namespace of the line.")] = "default",
) -> None:
    """Print one line's recording key (from VOICEHIVE_TRANSCRIPT_KEY) to hand to that line's staff."""
    from voicehive.privacy import TRANSCRIPT_KEY_ENV, KeyConfigError, load_key
    from voicehive_worker.recording import recording_key

    try:
        master = load_key(TRANSCRIPT_KEY_ENV)
    except KeyConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(base64.b64encode(recording_key(master, namespace, line)).decode("ascii"))
