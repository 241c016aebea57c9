"""Where call recordings live in their bucket, and the S3 operations every component shares.

The one source of truth for the bucket layout (the worker writes it, the operator sweeps and
erases it, ``voicehive recording get`` reads it)::

    recordings/<namespace>/<line>/<session>/header.json      format + the wrapped data key
    recordings/<namespace>/<line>/<session>/chunk-000001.bin AES-GCM sealed PCM, ~5 s each
    recordings/<namespace>/<line>/<session>/end.json         written when the call ended cleanly

WHY separate chunk objects and not one multipart upload: the parts of an unfinished multipart
upload are not readable objects, so a worker killed mid-call would leave nothing playable.
Every chunk is an object of its own, sealed on its own, so all chunks uploaded before a crash
decrypt and concatenate into a playable recording.

Every object carries its expiry and the caller hash as user metadata (``x-amz-meta-*``), never
the number, the room or anything a person could fetch the audio with.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

ROOT_PREFIX = "recordings"
HEADER = "header.json"
END = "end.json"
META_EXPIRES = "expires-at"
META_CALLER = "caller-hash"
RULE_ID_PREFIX = "voicehive-recordings-"
# Worker pod environment (from spec.recording's Secret references); names, not values.
ENV_ACCESS_KEY_ID = "VOICEHIVE_RECORDING_ACCESS_KEY_ID"
ENV_SECRET_ACCESS_KEY = "VOICEHIVE_RECORDING_SECRET_ACCESS_KEY"  # noqa: S105
# HKDF purpose of the per-line key that wraps recording data keys (privacy.derive_line_key)
RECORDING_PURPOSE = "recording"
_CHUNK_RE = re.compile(r"chunk-(\d{6})\.bin$")


def line_prefix(namespace: str, line: str) -> str:
    return f"{ROOT_PREFIX}/{namespace}/{line}/"


def recording_prefix(namespace: str, line: str, session: str) -> str:
    return f"{line_prefix(namespace, line)}{session}/"


def chunk_key(prefix: str, index: int) -> str:
    return f"{prefix}chunk-{index:06d}.bin"


def chunk_index(key: str) -> int | None:
    match = _CHUNK_RE.search(key)
    return int(match.group(1)) if match else None


def session_of(prefix: str) -> str:
    """The VoiceSession name a recording prefix belongs to."""
    return prefix.rstrip("/").rsplit("/", 1)[-1]


def rfc3339(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def parse_time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def object_metadata(expires_at: dt.datetime, caller_hash: str) -> dict[str, str]:
    """User metadata of every object of a recording (no personal data in clear)."""
    return {META_EXPIRES: rfc3339(expires_at), META_CALLER: caller_hash}


@dataclass(frozen=True)
class BucketAccess:
    """A bucket, its EU region and endpoint, and the credentials read from the line's Secrets."""

    bucket: str
    region: str
    endpoint: str
    access_key_id: str
    secret_access_key: str
    ca_file: str | None = None  # extra CA bundle (tests); None: the system's trust store


def s3_client(access: BucketAccess) -> Any:
    """A boto3 S3 client with bounded, retried calls (standard retry mode: throttling, 5xx, resets)."""
    import boto3
    from botocore.config import Config

    from voicehive.api.models import EURegion

    # botocore logs signed headers (the access key id) and request parameters at DEBUG: never emit those
    for name in ("botocore", "boto3", "s3transfer"):
        library_log = logging.getLogger(name)
        library_log.setLevel(max(library_log.level, logging.INFO))
    if access.region not in {r.value for r in EURegion}:
        raise ValueError(f"recording.region {access.region!r} is not an EU region")
    config = Config(
        region_name=access.region,
        retries={"mode": "standard", "max_attempts": 5},
        connect_timeout=5,
        read_timeout=20,
        s3={"addressing_style": "path"},
    )
    return boto3.client(
        "s3",
        endpoint_url=access.endpoint,
        aws_access_key_id=access.access_key_id,
        aws_secret_access_key=access.secret_access_key,
        config=config,
        verify=access.ca_file or None,  # None: the default trust store, or $AWS_CA_BUNDLE
    )


def list_recordings(client: Any, bucket: str, prefix: str) -> dict[str, list[str]]:
    """Object keys under ``prefix`` grouped by recording (``.../<session>/``)."""
    groups: dict[str, list[str]] = {}
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []) or []:
            key = str(item["Key"])
            rec, _, _name = key.rpartition("/")
            groups.setdefault(rec + "/", []).append(key)
    return groups


def delete_keys(client: Any, bucket: str, keys: Iterable[str]) -> int:
    """Deletes objects in batches of 1000; returns how many were deleted."""
    pending = list(keys)
    deleted = 0
    for start in range(0, len(pending), 1000):
        batch = pending[start : start + 1000]
        result = client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True})
        errors = result.get("Errors") or []
        if errors:
            raise RuntimeError(f"{len(errors)} recording object(s) could not be deleted")
        deleted += len(batch)
    return deleted


def delete_recording(client: Any, bucket: str, prefix: str) -> int:
    """Deletes every object of one recording (and aborts its unfinished multipart uploads, if any)."""
    keys = [k for group in list_recordings(client, bucket, prefix).values() for k in group]
    uploads = client.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads") or []
    for upload in uploads:
        client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    return delete_keys(client, bucket, keys)


def recording_metadata(client: Any, bucket: str, keys: list[str]) -> tuple[dict[str, str], dt.datetime | None]:
    """User metadata of a recording (from its header, else its first object) and its last change."""
    header = [k for k in keys if k.endswith("/" + HEADER)]
    key = header[0] if header else sorted(keys)[0]
    head = client.head_object(Bucket=bucket, Key=key)
    meta = {str(k).lower(): str(v) for k, v in (head.get("Metadata") or {}).items()}
    modified = head.get("LastModified")
    return meta, modified if isinstance(modified, dt.datetime) else None


def is_expired(meta: Mapping[str, str], modified: dt.datetime | None, now: dt.datetime, days: int) -> bool:
    """Past its own expiry; without one (written by something else), past ``days`` since written."""
    expires = parse_time(meta.get(META_EXPIRES))
    if expires is None and modified is not None:
        expires = modified + dt.timedelta(days=days)
    return expires is not None and now >= expires


def lifecycle_rule(namespace: str, line: str, days: int) -> dict[str, Any]:
    """The bucket lifecycle rule that expires one line's recordings (and unfinished uploads)."""
    return {
        "ID": f"{RULE_ID_PREFIX}{namespace}-{line}"[:255],
        "Filter": {"Prefix": line_prefix(namespace, line)},
        "Status": "Enabled",
        "Expiration": {"Days": max(1, days)},
        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
    }


def merged_rules(existing: list[dict[str, Any]], rule: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The bucket's rules with ours put in place, or None when they already hold it unchanged.

    Other rules on the bucket (someone else's) are kept: PutBucketLifecycleConfiguration
    replaces the whole configuration.
    """
    others = [r for r in existing if r.get("ID") != rule["ID"]]
    ours = [r for r in existing if r.get("ID") == rule["ID"]]
    if len(ours) == 1 and _same_rule(ours[0], rule):
        return None
    return [*others, rule]


def _same_rule(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    keys = ("Status", "Expiration", "AbortIncompleteMultipartUpload")
    prefix_a = (a.get("Filter") or {}).get("Prefix", a.get("Prefix"))
    return prefix_a == b["Filter"]["Prefix"] and all(a.get(k) == b.get(k) for k in keys)


def ensure_lifecycle(client: Any, bucket: str, rule: dict[str, Any]) -> bool:
    """Puts our rule on the bucket if it is missing or was changed; returns whether it wrote."""
    from botocore.exceptions import ClientError

    try:
        existing = client.get_bucket_lifecycle_configuration(Bucket=bucket).get("Rules") or []
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") != "NoSuchLifecycleConfiguration":
            raise
        existing = []
    rules = merged_rules(list(existing), rule)
    if rules is None:
        return False
    client.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": rules})
    return True
