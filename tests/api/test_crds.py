"""The CRDs: generated from the models, structurally valid, self-describing, and enforcing the API."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from voicehive.api import crd, models
from voicehive.api.validation import validate

ROOT = Path(__file__).resolve().parents[2]
CRD_DIR = ROOT / "crds"
EXAMPLES = ROOT / "examples"
INVALID = sorted((EXAMPLES / "invalid").glob("*.yaml"))


def _load(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _walk_properties(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = []
    for name, sub in schema.get("properties", {}).items():
        found.append((f"{path}.{name}", sub))
        found.extend(_walk_properties(sub, f"{path}.{name}"))
    if isinstance(schema.get("items"), dict):
        found.extend(_walk_properties(schema["items"], f"{path}[]"))
    return found


@pytest.mark.parametrize("name", sorted(crd.CRD_FILES))
def test_crd_files_match_the_models(name: str) -> None:
    """`make crds` output is committed: the YAML and the pydantic models cannot drift."""
    on_disk = (CRD_DIR / name).read_text()
    assert on_disk == crd.rendered_crds()[name], f"crds/{name} is stale: run `make crds`"


@pytest.mark.parametrize("path", sorted(CRD_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_crd_is_a_valid_apiextensions_v1_object(path: Path) -> None:
    """Ours and Kopf's peering CRDs (HA) alike: `kubectl apply -f crds/` takes only valid CRDs."""
    documents = _load(path)
    assert documents
    for document in documents:
        assert document["kind"] == "CustomResourceDefinition"
        # The Kubernetes OpenAPI schemas of apiextensions.k8s.io/v1, checked strictly.
        kubernetes_validate.validate(document, "1.34", strict=True)


@pytest.mark.parametrize("name", sorted(crd.CRD_FILES))
def test_every_property_has_a_description(name: str) -> None:
    (document,) = _load(CRD_DIR / name)
    schema = document["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    # .metadata is ObjectMeta: the apiserver forbids restating it (kubectl explain documents it).
    missing = [
        path for path, sub in _walk_properties(schema) if path != ".metadata" and not sub.get("description", "").strip()
    ]
    assert missing == [], f"kubectl explain would show nothing for: {missing}"


@pytest.mark.parametrize("name", sorted(crd.CRD_FILES))
def test_schema_is_structural(name: str) -> None:
    """No $ref, anyOf-for-null, title or additionalProperties:false next to properties."""
    (document,) = _load(CRD_DIR / name)
    schema = document["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    text = yaml.safe_dump(schema)
    assert "$ref" not in text and "anyOf" not in text and "title:" not in text
    for path, sub in _walk_properties(schema):
        assert "type" in sub, f"{path} has no type"
        assert not ("properties" in sub and "additionalProperties" in sub), path


def test_crd_names_columns_and_categories() -> None:
    hl = crd.hotelline_crd()
    vs = crd.voicesession_crd()
    assert hl["spec"]["names"]["shortNames"] == ["hl"] and vs["spec"]["names"]["shortNames"] == ["vs"]
    assert hl["spec"]["names"]["categories"] == ["voicehive"] == vs["spec"]["names"]["categories"]
    columns = {c["name"] for c in hl["spec"]["versions"][0]["additionalPrinterColumns"]}
    assert {"Ready", "Region", "Numbers", "Active", "Age"} <= columns
    columns = {c["name"] for c in vs["spec"]["versions"][0]["additionalPrinterColumns"]}
    assert {"Line", "Phase", "Worker", "Age"} <= columns
    for document in (hl, vs):
        assert document["spec"]["versions"][0]["subresources"] == {"status": {}}


def test_defaults_are_in_the_schema() -> None:
    spec = crd.hotelline_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    retention = spec["properties"]["retention"]
    # The whole defaulted object (a real apiserver checks defaults against CEL rules as given).
    assert retention["default"] == {"metadataDays": 30, "recordingDays": 7}
    assert retention["properties"]["metadataDays"]["default"] == 30
    assert retention["properties"]["recordingDays"]["default"] == 7
    assert spec["properties"]["workers"]["properties"]["warmPool"]["default"] == 1


def test_region_enum_is_eu_only() -> None:
    regions = set(models.EURegion)
    # London, Zurich and Oslo regions of the big clouds are outside the EU.
    for outside in ("eu-west-2", "europe-west2", "uksouth", "switzerlandnorth", "europe-west6", "norwayeast", "eu-central-2"):
        assert outside not in regions


def test_good_example_is_accepted_by_schema_cel_and_models() -> None:
    documents = _load(EXAMPLES / "hotelline.yaml")
    lines = [doc for doc in documents if doc["kind"] == "HotelLine"]
    secrets = [doc for doc in documents if doc["kind"] == "Secret"]
    assert lines and secrets
    for line in lines:
        assert validate(line) == []
        parsed = models.HotelLine.model_validate(line)
        assert parsed.spec.retention.metadata_days == 30
        assert parsed.spec.asr_language == "en-US"
        # Every Secret the line references is in the example, with the referenced keys.
        secret = secrets[0]
        keys = set(secret["stringData"])
        assert parsed.spec.llm.api_key_secret_ref.name == secret["metadata"]["name"]
        assert {parsed.spec.llm.api_key_secret_ref.key, parsed.spec.tts.api_key_secret_ref.key} <= keys


def test_model_round_trip_is_lossless() -> None:
    (line,) = [doc for doc in _load(EXAMPLES / "hotelline.yaml") if doc["kind"] == "HotelLine"]
    parsed = models.HotelLineSpec.model_validate(line["spec"])
    again = models.HotelLineSpec.model_validate(parsed.to_wire())
    assert again == parsed


def _expectations(path: Path) -> tuple[str, str]:
    text = path.read_text()
    field = re.search(r"^# expect-field: (.+)$", text, re.M)
    error = re.search(r"^# expect-error: (.+)$", text, re.M)
    assert field and error, f"{path.name} must say which field fails and with what error"
    return field.group(1).strip(), error.group(1).strip()


def test_there_are_enough_invalid_examples() -> None:
    assert len(INVALID) >= 10


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_example_is_rejected_naming_the_field(path: Path) -> None:
    field, _ = _expectations(path)
    (document,) = _load(path)
    problems = validate(document)
    assert problems, f"{path.name} was accepted"
    assert field in [p.field for p in problems], f"expected {field}, got {[str(p) for p in problems]}"


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_example_is_rejected_by_the_models_too(path: Path) -> None:
    """The operator parses with the models, so a resource that slipped past an old CRD is still refused."""
    field, _ = _expectations(path)
    (document,) = _load(path)
    with pytest.raises(ValueError) as caught:
        models.HotelLine.model_validate(document)
    leaf = field.split(".")[-1].split("[")[0]
    assert leaf in str(caught.value), str(caught.value)


def test_voicesession_spec_cannot_carry_a_phone_number() -> None:
    spec = {
        "lineRef": {"name": "lindenhof-main"},
        "roomHash": "a" * 64,
        "callerHash": "b" * 64,
        "sealedCallRef": "c" * 32,
    }
    assert validate({"apiVersion": models.API_VERSION, "kind": "VoiceSession", "metadata": {"name": "vs-1"}, "spec": spec}) == []
    for field, value in (("callerHash", "+493012345670"), ("roomHash", "vh-1234567890-_+493012345670_abcd")):
        bad = dict(spec, **{field: value})
        problems = validate({"apiVersion": models.API_VERSION, "kind": "VoiceSession", "spec": bad})
        assert [p.field for p in problems] == [f"spec.{field}"]
