"""What an image name runs as: a Dockerfile target of the repo, the Riva fake, or nothing."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rig.nodeagent.dockerfile import ImageConfig, compose_command, image_target, is_riva_image
from rig.nodeagent.env import quantity
from rig.nodeagent.nodes import GPU_RESOURCE, NodeSpec


class ImageError(Exception):
    """The image cannot be "pulled": ErrImagePull / ImagePullBackOff."""


class RunError(Exception):
    """The container cannot be created (CreateContainerError), e.g. Riva without a GPU."""


@dataclass(frozen=True)
class Process:
    """How a container starts: argv, image env, working directory, image user and its home."""

    argv: list[str]
    image: ImageConfig
    workdir: str


def gpu_request(container: dict[str, Any]) -> float:
    resources = container.get("resources", {}) or {}
    value = (resources.get("limits") or {}).get(GPU_RESOURCE) or (resources.get("requests") or {}).get(GPU_RESOURCE)
    return quantity(value) if value else 0.0


def riva_process(container: dict[str, Any], node: NodeSpec, repo: Path) -> Process:
    """The loopback Riva fake on the container's declared TCP ports, only where a GPU was granted."""
    if node.gpus <= 0 or gpu_request(container) <= 0:
        raise RunError(
            f"{container['image']} needs an NVIDIA GPU: the Pod must request {GPU_RESOURCE} and run on a GPU node "
            f"(node {node.name} has {node.gpus} GPUs, the container requests {gpu_request(container):g})"
        )
    tcp = [p for p in container.get("ports", []) or [] if p.get("protocol", "TCP") == "TCP"]
    ports = [str(p["containerPort"]) for p in tcp if p.get("name") != "http"]
    if not ports:
        raise RunError(f"{container['image']}: declare the Riva gRPC port as a containerPort")
    # A NIM's HTTP API port (named "http"): its documented /v1/health/ready and /live.
    http = [arg for p in tcp if p.get("name") == "http" for arg in ("--http", str(p["containerPort"]))]
    argv = [sys.executable, "-m", "rig.nodeagent.riva", *ports, *http]
    # NGC images run as root unless the Pod says otherwise (runAsUser).
    image = ImageConfig(env=(("PATH", "/usr/local/bin:/usr/bin:/bin"), ("PYTHONPATH", str(repo))), user="0")
    return Process(argv=argv, image=image, workdir=str(repo))


def resolve_process(container: dict[str, Any], targets: dict[str, ImageConfig], node: NodeSpec, repo: Path) -> Process:
    image = str(container.get("image", ""))
    if is_riva_image(image):
        return riva_process(container, node, repo)
    target = image_target(image)
    config = targets.get(target)
    if config is None:
        raise ImageError(
            f'Failed to pull image "{image}": no Dockerfile target {target!r} in {repo / "Dockerfile"} '
            f"(rig node agent: the last path segment of the image names the target; known: {', '.join(sorted(targets))})"
        )
    argv = compose_command(config, container.get("command"), container.get("args"))
    return Process(argv=argv, image=config, workdir=container.get("workingDir") or config.workdir)
