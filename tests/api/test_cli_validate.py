"""`voicehive validate`: what a platform engineer sees before `kubectl apply`."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from voicehive_cli.main import app

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def test_help_names_every_component() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("operator", "orchestrator", "worker", "call", "validate", "crds"):
        assert command in result.output


def test_the_example_line_is_valid() -> None:
    result = runner.invoke(app, ["validate", str(ROOT / "examples/hotelline.yaml")])
    assert result.exit_code == 0, result.output
    assert "HotelLine lindenhof-main: valid" in result.output


def test_an_invalid_line_names_the_field_and_fails() -> None:
    result = runner.invoke(app, ["validate", str(ROOT / "examples/invalid/region-outside-eu.yaml")])
    assert result.exit_code == 1
    assert 'spec.region: Unsupported value: "eu-west-2"' in result.output


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("a: [unclosed\n", "cannot read"),
        ("- 1\n- 2\n", "no VoiceHive resource"),
        ("apiVersion: voicehive.io/v1alpha1\nkind: HotelLine\nmetadata: 7\nspec: {}\n", "metadata: Invalid value: 7"),
        ("apiVersion: voicehive.io/v1alpha1\nkind: Gadget\n", "not a VoiceHive resource kind"),
        ("apiVersion: voicehive.io/v1alpha1\nkind: HotelLine\nspec: 5\n", "spec: Invalid value: 5: must be of type object"),
    ],
)
def test_bad_files_get_a_clear_error_not_a_crash(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "line.yaml"
    path.write_text(content)
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert expected in result.output


def test_a_missing_file_is_reported(tmp_path: Path) -> None:
    result = runner.invoke(app, ["validate", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 1 and "cannot read" in result.output


def test_caller_hash_is_the_one_voicehive_stores(monkeypatch: pytest.MonkeyPatch) -> None:
    from voicehive import contract
    from voicehive.privacy import PiiHasher, decode_key, generate_key_b64

    key = generate_key_b64()
    monkeypatch.setenv(contract.ENV_PII_KEY, key)
    result = runner.invoke(app, ["caller-hash", "+49 30 1234-5670"])
    assert result.exit_code == 0, result.output
    digest = result.output.strip()
    assert digest == PiiHasher(decode_key(contract.ENV_PII_KEY, key)).phone("+493012345670")
    assert "1234" not in result.output


def test_caller_hash_errors_name_the_problem_without_echoing_the_number(monkeypatch: pytest.MonkeyPatch) -> None:
    from voicehive import contract
    from voicehive.privacy import generate_key_b64

    monkeypatch.delenv(contract.ENV_PII_KEY, raising=False)
    result = runner.invoke(app, ["caller-hash", "+493012345670"])
    assert result.exit_code == 2 and contract.ENV_PII_KEY in result.output
    monkeypatch.setenv(contract.ENV_PII_KEY, generate_key_b64())
    result = runner.invoke(app, ["caller-hash", "call me maybe 555"])
    assert result.exit_code == 2 and "not a phone number" in result.output and "555" not in result.output
