"""The Dockerfile read as image configs, and the container command rules (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rig.nodeagent.dockerfile import (
    ImageConfig,
    compose_command,
    expand_references,
    home_of,
    image_target,
    is_riva_image,
    load_dockerfile,
    parse_dockerfile,
    passwd_lines,
)

ROOT = Path(__file__).resolve().parents[2]

SAMPLE = """
# comment
ARG BASE=python:3.11
FROM python:3.11-slim AS build
WORKDIR /src
RUN pip install .

FROM python:3.11-slim AS runtime
RUN useradd --uid 10001 --create-home app
ENV PATH=/opt/venv/bin:$PATH \\
    A=1
USER 10001

FROM runtime AS svc
ENV B="two words" C=${A}x
WORKDIR app
ENTRYPOINT ["app", "serve"]
CMD ["--port", "80"]

FROM svc AS child
ENTRYPOINT exec child

FROM runtime AS shell
CMD echo hi
"""


def test_stages_inherit_env_user_and_workdir_from_the_stage_they_start_from() -> None:
    stages = parse_dockerfile(SAMPLE)
    svc = stages["svc"]
    env = svc.env_dict()
    assert env["PATH"].startswith("/opt/venv/bin:/usr/local/sbin:")
    assert env["A"] == "1"
    assert env["B"] == "two words"
    assert env["C"] == "1x"
    assert svc.user == "10001"
    assert svc.workdir == "/app"  # relative WORKDIR joins the inherited one ("/")
    assert svc.entrypoint == ("app", "serve")
    assert svc.cmd == ("--port", "80")
    assert home_of(svc, 10001) == "/home/app"
    assert home_of(svc, 0) == "/"
    assert passwd_lines(svc, {0}) == ("app:x:10001:10001::/home/app:/bin/sh\n", "app:x:10001:\n")
    assert passwd_lines(svc, {10001}) == ("", "")
    assert stages["build"].workdir == "/src"


def test_a_new_entrypoint_drops_the_inherited_cmd_and_shell_form_uses_sh() -> None:
    stages = parse_dockerfile(SAMPLE)
    assert stages["child"].entrypoint == ("/bin/sh", "-c", "exec child")
    assert stages["child"].cmd == ()
    assert stages["shell"].cmd == ("/bin/sh", "-c", "echo hi")
    assert stages["shell"].entrypoint == ()


def test_the_repo_dockerfile_targets() -> None:
    stages = load_dockerfile(ROOT / "Dockerfile")
    assert {"operator", "orchestrator", "worker"} <= set(stages)
    for name in ("operator", "orchestrator", "worker"):
        assert stages[name].user == "10001", name
        assert stages[name].env_dict()["PATH"].startswith("/opt/venv/bin:"), name
        assert stages[name].entrypoint[:2] == ("voicehive", name), name
    assert stages["orchestrator"].env_dict()["VOICEHIVE_TLS_CERT"] == "/tls/tls.crt"
    assert stages["worker"].env_dict()["VOICEHIVE_READY_PORT"] == "8081"


@pytest.mark.parametrize(
    ("image", "target"),
    [
        ("ghcr.io/voicehive/worker:0.1.0", "worker"),
        ("voicehive/operator:dev", "operator"),
        ("orchestrator", "orchestrator"),
        ("registry:5000/a/b/orchestrator@sha256:abc", "orchestrator"),
    ],
)
def test_the_last_repository_segment_names_the_target(image: str, target: str) -> None:
    assert image_target(image) == target


def test_riva_images_are_recognised() -> None:
    assert is_riva_image("nvcr.io/nvidia/riva/riva-speech:2.19.0")
    assert is_riva_image("nvcr.io/nim/nvidia/parakeet:1")
    assert not is_riva_image("ghcr.io/voicehive/worker:0.1.0")


IMAGE = ImageConfig(entrypoint=("voicehive", "operator"), cmd=("--all-namespaces", "--peering", "voicehive"))


def test_no_command_no_args_runs_entrypoint_and_cmd() -> None:
    assert compose_command(IMAGE, None, None) == ["voicehive", "operator", "--all-namespaces", "--peering", "voicehive"]


def test_args_replace_cmd_and_keep_entrypoint_reproducing_the_chart_defect() -> None:
    # issue 9, defect 1: the chart passes the subcommand again in args.
    assert compose_command(IMAGE, None, ["operator", "--peering=x"]) == [
        "voicehive", "operator", "operator", "--peering=x",
    ]
    assert compose_command(IMAGE, None, ["--peering=x"]) == ["voicehive", "operator", "--peering=x"]


def test_command_replaces_entrypoint_and_drops_cmd() -> None:
    assert compose_command(IMAGE, ["python3", "-c", "pass"], None) == ["python3", "-c", "pass"]
    assert compose_command(IMAGE, ["sh"], ["-c", "x"]) == ["sh", "-c", "x"]


def test_dependent_variables_expand_like_kubernetes() -> None:
    env = {"A": "1"}
    assert expand_references("$(A)-$(B)-$$(A)", env) == "1-$(B)-$(A)"
