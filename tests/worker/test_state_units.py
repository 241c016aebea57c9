"""What the worker logs when the API server refuses a VoiceSession status write (pure)."""

from __future__ import annotations

import json

import kubernetes

from voicehive_worker.state import rejected_fields


def test_a_refused_status_write_names_fields_and_reasons_but_not_values() -> None:
    err = kubernetes.client.ApiException(status=422, reason="Unprocessable Entity")
    err.body = json.dumps({"kind": "Status", "code": 422, "details": {"causes": [
        {"reason": "FieldValueNotSupported", "message": 'Unsupported value: "+4930123"', "field": "status.language"},
    ]}})
    fields = rejected_fields(err)
    assert fields == ["status.language: FieldValueNotSupported"]
    assert "+4930123" not in " ".join(fields)


def test_other_errors_name_no_field() -> None:
    assert rejected_fields(RuntimeError("boom")) == []
    err = kubernetes.client.ApiException(status=500)
    err.body = "not json"
    assert rejected_fields(err) == []
