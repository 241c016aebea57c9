"""The repo's Dockerfile read as an image config: what a container runtime takes from an image.

Only the instructions our Dockerfile uses matter for running a process (FROM ... AS, ENV,
WORKDIR, USER, ENTRYPOINT, CMD, EXPOSE); RUN/COPY are skipped: the "filesystem" of every
target is the repo's ``.venv`` bound at ``/opt/venv`` (see docs/rig.md, node agent).
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field, replace
from pathlib import Path


@dataclass(frozen=True)
class ImageConfig:
    """The parts of an OCI image config a runtime uses to start a process."""

    env: tuple[tuple[str, str], ...] = ()
    workdir: str = "/"
    user: str = ""
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    exposed: tuple[str, ...] = ()
    users: tuple[tuple[str, str, str], ...] = field(default=())  # (uid, name, home) of `useradd --uid`

    def env_dict(self) -> dict[str, str]:
        return dict(self.env)


class DockerfileError(ValueError):
    """A Dockerfile line this reader cannot interpret."""


def logical_lines(text: str) -> list[str]:
    """Joins backslash continuations and drops comments and blank lines."""
    lines: list[str] = []
    current = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        lines.append(current.strip())
        current = ""
    if current.strip():
        lines.append(current.strip())
    return lines


def _exec_form(value: str) -> tuple[str, ...]:
    """JSON array (exec form) or shell form, which a runtime wraps in ``/bin/sh -c``."""
    value = value.strip()
    if value.startswith("["):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as exc:
            raise DockerfileError(f"not a JSON array: {value}") from exc
        if not isinstance(parsed, list) or not all(isinstance(v, str) for v in parsed):
            raise DockerfileError(f"not a list of strings: {value}")
        return tuple(parsed)
    return ("/bin/sh", "-c", value)


def _expand(value: str, env: dict[str, str]) -> str:
    """``$VAR`` and ``${VAR}`` from the stage's ENV so far (what ENV PATH=/x:$PATH needs)."""
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: env.get(m.group(1) or m.group(2), ""), value)


def _env_pairs(value: str, env: dict[str, str]) -> list[tuple[str, str]]:
    tokens = shlex.split(value)
    if tokens and "=" not in tokens[0]:  # legacy form: ENV KEY value with spaces
        return [(tokens[0], _expand(value.split(None, 1)[1] if len(tokens) > 1 else "", env))]
    pairs: list[tuple[str, str]] = []
    for token in tokens:
        key, _, val = token.partition("=")
        pairs.append((key, _expand(val, {**env, **dict(pairs)})))
    return pairs


def _useradd(value: str) -> tuple[str, str, str] | None:
    """(uid, name, home) of ``RUN useradd --uid N [--create-home] NAME``: the image's /etc/passwd."""
    match = re.search(r"useradd\s+(.*?)(?:&&|;|$)", value)
    if not match:
        return None
    tokens = shlex.split(match.group(1))
    uid, name = "", ""
    i = 0
    while i < len(tokens):
        if tokens[i] in {"--uid", "-u"} and i + 1 < len(tokens):
            uid, i = tokens[i + 1], i + 2
            continue
        if not tokens[i].startswith("-"):
            name = tokens[i]
        i += 1
    return (uid, name, f"/home/{name}") if uid and name else None


BASE = ImageConfig(env=(("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),))


def _apply(config: ImageConfig, instruction: str, value: str) -> ImageConfig:
    env = config.env_dict()
    if instruction == "ENV":
        env.update(_env_pairs(value, env))
        return replace(config, env=tuple(env.items()))
    if instruction == "WORKDIR":
        path = _expand(value, env)
        return replace(config, workdir=path if path.startswith("/") else f"{config.workdir.rstrip('/')}/{path}")
    if instruction == "USER":
        return replace(config, user=_expand(value, env))
    if instruction == "ENTRYPOINT":  # a new ENTRYPOINT resets an inherited CMD (Docker's rule)
        return replace(config, entrypoint=_exec_form(value), cmd=())
    if instruction == "CMD":
        return replace(config, cmd=_exec_form(value))
    if instruction == "EXPOSE":
        return replace(config, exposed=config.exposed + tuple(value.split()))
    if instruction == "RUN":
        user = _useradd(value)
        return replace(config, users=(*config.users, user)) if user else config
    return config


def parse_dockerfile(text: str) -> dict[str, ImageConfig]:
    """Every named stage (``FROM x AS name``), inheriting from a named stage it starts FROM."""
    stages: dict[str, ImageConfig] = {}
    current: ImageConfig | None = None
    name = ""
    for line in logical_lines(text):
        instruction, _, value = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            words = value.split()
            words = [w for w in words if not w.startswith("--")]
            if current is not None and name:
                stages[name] = current
            base = words[0] if words else ""
            current = stages.get(base, BASE)
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else ""
            continue
        if current is None:
            if instruction == "ARG":
                continue
            raise DockerfileError(f"{instruction} before FROM")
        current = _apply(current, instruction, value.strip())
    if current is not None and name:
        stages[name] = current
    return stages


def load_dockerfile(path: Path) -> dict[str, ImageConfig]:
    return parse_dockerfile(path.read_text())


def image_target(image: str) -> str:
    """The Dockerfile target an image names: the last segment of its repository.

    ``ghcr.io/voicehive/worker:0.1.0`` -> ``worker``; a digest or tag is dropped.
    """
    repository = image.split("@", 1)[0]
    last = repository.rsplit("/", 1)[-1]
    return last.split(":", 1)[0]


RIVA_PREFIXES = ("nvcr.io/nvidia/riva/", "nvcr.io/nim/")


def is_riva_image(image: str) -> bool:
    return image.startswith(RIVA_PREFIXES)


def is_nginx_image(image: str) -> bool:
    """NGINX's official image by any registry path or tag: ``nginx:1.28-alpine``,
    ``docker.io/library/nginx@sha256:...``, ``mirror.example/nginx:1.28``."""
    return image_target(image) == "nginx"


def compose_command(image: ImageConfig, command: list[str] | None, args: list[str] | None) -> list[str]:
    """The argv a container runs, by the Kubernetes rules.

    command replaces ENTRYPOINT and drops CMD; args replace CMD; neither: ENTRYPOINT + CMD.
    (kubernetes.io/docs/tasks/inject-data-application/define-command-argument-container/#notes)
    """
    if command:
        return [*command, *(args or [])]
    if args:
        return [*image.entrypoint, *args]
    return [*image.entrypoint, *image.cmd]


def expand_references(value: str, env: dict[str, str]) -> str:
    """``$(VAR)`` in command/args/env as Kubernetes expands it; ``$$(VAR)`` escapes; unknown stays."""

    def sub(match: re.Match[str]) -> str:
        if match.group(0).startswith("$$"):
            return match.group(0)[1:]
        name = match.group(1)
        return env.get(name, match.group(0))

    return re.sub(r"\$\$\(\w+\)|\$\((\w+)\)", sub, value)


def home_of(image: ImageConfig, uid: int) -> str:
    """HOME as a runtime sets it: the image user's home, else ``/``."""
    return next((home for u, _, home in image.users if u == str(uid)), "/")


def passwd_lines(image: ImageConfig, known_uids: set[int]) -> tuple[str, str]:
    """/etc/passwd and /etc/group lines for the image's own users (useradd makes a group of
    the same id), so getpwuid() works in the container as in the image."""
    users = [(int(u), name, home) for u, name, home in image.users if int(u) not in known_uids]
    passwd = "".join(f"{name}:x:{uid}:{uid}::{home}:/bin/sh\n" for uid, name, home in users)
    group = "".join(f"{name}:x:{uid}:\n" for uid, name, _ in users)
    return passwd, group


def primary_gid(image: ImageConfig, uid: int) -> int:
    """The image user's group (useradd's user group), else 0 as a runtime uses without one."""
    return uid if any(u == str(uid) for u, _, _ in image.users) else 0
