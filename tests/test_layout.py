"""The code's layout promises: one source for each fact, checked where a type cannot hold it."""

from __future__ import annotations

import ast
from pathlib import Path

from voicehive import contract
from voicehive.api import models

ROOT = Path(__file__).resolve().parents[1]


def test_model_literals_match_the_api_names() -> None:
    """Pydantic needs literal kinds and apiVersion; they must say what ``contract`` says."""
    assert models.HotelLine.model_fields["kind"].default == contract.HOTELLINE_KIND
    assert models.VoiceSession.model_fields["kind"].default == contract.VOICESESSION_KIND
    for model in (models.HotelLine, models.VoiceSession):
        assert model.model_fields["api_version"].default == contract.API_VERSION


COMPONENTS = ("voicehive_operator", "voicehive_orchestrator", "voicehive_worker", "voicehive_cli")


def _imported_modules(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_the_core_imports_no_component() -> None:
    """``voicehive/`` is shared by every component; importing one from it would tie them all."""
    offenders = {}
    for path in sorted((ROOT / "voicehive").rglob("*.py")):
        found = {m for m in _imported_modules(ast.parse(path.read_text(encoding="utf-8")))
                 if m.split(".")[0] in COMPONENTS}
        if found:
            offenders[str(path.relative_to(ROOT))] = sorted(found)
    assert offenders == {}
    assert len(list((ROOT / "voicehive").rglob("*.py"))) > 5  # the walk did see the core
