"""Retention and erasure of call recordings in each line's bucket.

WHY both a lifecycle rule and a sweep: the rule lets the bucket expire objects even while the
operator is down, but someone can remove or change it, and S3-compatible stores differ in
whether (and how promptly) they apply rules. The sweep deletes every recording past the
expiry its objects carry, so retention holds either way. Erasure by caller hash finds a
caller's recordings by the hash in their metadata, so it works after the VoiceSession is gone.

All S3 calls are boto3 (blocking) in a thread; the credentials come from the line's Secrets.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from voicehive import recording_store as store
from voicehive.api.models import HotelLineSpec
from voicehive.contract import VOICESESSIONS
from voicehive_operator.runtime import Runtime

log = logging.getLogger(__name__)


class NotConfigured(ValueError):
    """The line's recording Secrets are missing; the message names them."""


@dataclass
class Outcome:
    """What one pass over a line's recordings did (for Events and logs)."""

    rule_written: bool = False
    expired: list[str] = field(default_factory=list)  # session names
    erased: list[str] = field(default_factory=list)


async def bucket_client(runtime: Runtime, namespace: str, spec: HotelLineSpec) -> tuple[Any, str]:
    """A boto3 client for the line's bucket, credentials read from its Secret references."""
    rec = spec.recording
    assert rec is not None
    key_id = await runtime.kube.read_secret_key(namespace, rec.access_key_id_secret_ref.name,
                                                rec.access_key_id_secret_ref.key)
    secret = await runtime.kube.read_secret_key(namespace, rec.secret_access_key_secret_ref.name,
                                                rec.secret_access_key_secret_ref.key)
    if not key_id or not secret:
        raise NotConfigured(
            f"recording credentials missing: Secret {rec.access_key_id_secret_ref.name} / "
            f"{rec.secret_access_key_secret_ref.name} (keys {rec.access_key_id_secret_ref.key}, "
            f"{rec.secret_access_key_secret_ref.key})"
        )
    access = store.BucketAccess(bucket=rec.bucket, region=str(rec.region), endpoint=rec.endpoint,
                                access_key_id=key_id, secret_access_key=secret,
                                ca_file=runtime.settings.provider_ca_file)
    return await asyncio.to_thread(store.s3_client, access), rec.bucket


def _sweep(client: Any, bucket: str, namespace: str, line: str, days: int, now: Any) -> list[str]:
    """Deletes every recording of the line past its expiry; returns their session names."""
    expired = []
    for prefix, keys in store.list_recordings(client, bucket, store.line_prefix(namespace, line)).items():
        meta, modified = store.recording_metadata(client, bucket, keys)
        if store.is_expired(meta, modified, now, days):
            store.delete_recording(client, bucket, prefix)
            expired.append(store.session_of(prefix))
    return expired


def _erase(client: Any, bucket: str, namespace: str, line: str, callers: set[str]) -> list[str]:
    """Deletes the line's recordings whose caller hash is one of ``callers``."""
    erased = []
    for prefix, keys in store.list_recordings(client, bucket, store.line_prefix(namespace, line)).items():
        meta, _modified = store.recording_metadata(client, bucket, keys)
        if meta.get(store.META_CALLER) in callers:
            store.delete_recording(client, bucket, prefix)
            erased.append(store.session_of(prefix))
    return erased


async def enforce_line(runtime: Runtime, namespace: str, line: str, spec: HotelLineSpec) -> Outcome:
    """Lifecycle rule in place, expired recordings deleted, their sessions' status updated."""
    outcome = Outcome()
    if spec.recording is None:
        return outcome
    client, bucket = await bucket_client(runtime, namespace, spec)
    days = spec.retention.recording_days
    rule = store.lifecycle_rule(namespace, line, days)
    outcome.rule_written = await asyncio.to_thread(store.ensure_lifecycle, client, bucket, rule)
    now = runtime.settings.clock.now()
    outcome.expired = await asyncio.to_thread(_sweep, client, bucket, namespace, line, days, now)
    await _mark_gone(runtime, namespace, outcome.expired, "Expired")
    return outcome


async def erase_callers(runtime: Runtime, namespace: str, callers: Iterable[str],
                        lines: Iterable[tuple[str, HotelLineSpec]]) -> list[str]:
    """Deletes these callers' recordings on every recording line of the namespace."""
    wanted = set(callers)
    erased: list[str] = []
    if not wanted:
        return erased
    for line, spec in lines:
        if spec.recording is None:
            continue
        client, bucket = await bucket_client(runtime, namespace, spec)
        erased += await asyncio.to_thread(_erase, client, bucket, namespace, line, wanted)
    await _mark_gone(runtime, namespace, erased, "Erased")
    return erased


async def _mark_gone(runtime: Runtime, namespace: str, sessions: list[str], state: str) -> None:
    """The sessions' status says their recording no longer exists (sessions already gone are skipped)."""
    for name in sessions:
        try:
            await runtime.kube.patch_custom_status(namespace, VOICESESSIONS, name,
                                                   {"status": {"recording": {"exists": False, "state": state,
                                                                                "expiresAt": None}}})
        except Exception as err:  # deleted with the call (erasure) or by retention: nothing to say
            log.debug("recording status not updated", extra={"session": name, "error": type(err).__name__})
