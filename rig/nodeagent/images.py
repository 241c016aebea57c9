"""What an image name runs as: a Dockerfile target of the repo, the Riva fake, the host's nginx,
or nothing."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rig.nodeagent.dockerfile import ImageConfig, compose_command, image_target, is_nginx_image, is_riva_image
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


def _env_value(container: dict[str, Any], name: str) -> str | None:
    """A container's literal ``env`` value (not valueFrom), as the image process would see it."""
    return next((str(e["value"]) for e in container.get("env", []) or [] if e.get("name") == name and "value" in e),
                None)


def riva_process(container: dict[str, Any], node: NodeSpec, repo: Path) -> Process:
    """The loopback Riva fake, only where a GPU was granted: gRPC on ``NIM_GRPC_API_PORT`` when
    the container sets it (where a Riva NIM serves gRPC, NVIDIA's documented variable; it need not
    be a declared port, e.g. behind a TLS sidecar), else on the declared TCP ports."""
    if node.gpus <= 0 or gpu_request(container) <= 0:
        raise RunError(
            f"{container['image']} needs an NVIDIA GPU: the Pod must request {GPU_RESOURCE} and run on a GPU node "
            f"(node {node.name} has {node.gpus} GPUs, the container requests {gpu_request(container):g})"
        )
    tcp = [p for p in container.get("ports", []) or [] if p.get("protocol", "TCP") == "TCP"]
    nim_port = _env_value(container, "NIM_GRPC_API_PORT")
    if nim_port is not None and not nim_port.isdigit():
        raise RunError(f"{container['image']}: NIM_GRPC_API_PORT={nim_port!r} is not a port number")
    ports = [nim_port] if nim_port else [str(p["containerPort"]) for p in tcp if p.get("name") != "http"]
    if not ports:
        raise RunError(f"{container['image']}: set NIM_GRPC_API_PORT or declare the Riva gRPC port as a containerPort")
    # A NIM's HTTP API port (named "http"): its documented /v1/health/ready and /live.
    http = [arg for p in tcp if p.get("name") == "http" for arg in ("--http", str(p["containerPort"]))]
    argv = [sys.executable, "-m", "rig.nodeagent.riva", *ports, *http]
    # NGC images run as root unless the Pod says otherwise (runAsUser).
    image = ImageConfig(env=(("PATH", "/usr/local/bin:/usr/bin:/bin"), ("PYTHONPATH", str(repo))), user="0")
    return Process(argv=argv, image=image, workdir=str(repo))


# NGINX's official image (docker.io/library/nginx): PATH and CMD as its Dockerfile sets them. Its
# ENTRYPOINT /docker-entrypoint.sh only runs /docker-entrypoint.d hooks (which edit the default
# configuration) before exec'ing the command; the rig has no such script, so it is left out: a
# Pod that names `command` (the operator's Riva TLS sidecar does) runs the same argv either way.
NGINX_IMAGE = ImageConfig(
    env=(("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),),
    cmd=("nginx", "-g", "daemon off;"),
    user="0",
)
NGINX_BINARY = Path("/usr/sbin/nginx")  # Debian's package `nginx` (make system-deps)
# Debian builds the stream module as a dynamic module (package libnginx-mod-stream); NGINX's own
# builds compile it in, so a configuration for the image has no load_module line.
DEBIAN_STREAM_MODULE = Path("/usr/lib/nginx/modules/ngx_stream_module.so")


def with_stream_module(argv: list[str], module: Path = DEBIAN_STREAM_MODULE) -> list[str]:
    """``argv`` with Debian's stream module loaded through ``-g`` (read before the configuration
    file; nginx keeps only the last ``-g``, so the load joins an existing one)."""
    if not module.exists() or not argv or Path(argv[0]).name != "nginx":
        return argv
    load = f"load_module {module};"
    if "-g" in argv[:-1]:
        i = argv.index("-g")
        return [*argv[: i + 1], f"{load} {argv[i + 1]}", *argv[i + 2 :]]
    return [*argv, "-g", load]


def nginx_process(container: dict[str, Any]) -> Process:
    """The host's real nginx (Debian's package) standing in for NGINX's official image: the same
    binary name, configuration path (/etc/nginx/nginx.conf, here the mounted ConfigMap) and CMD."""
    if not NGINX_BINARY.exists():
        raise RunError(f"{container['image']}: the rig runs the host's nginx for this image, and {NGINX_BINARY} "
                       "is not installed (make system-deps)")
    argv = with_stream_module(compose_command(NGINX_IMAGE, container.get("command"), container.get("args")))
    return Process(argv=argv, image=NGINX_IMAGE, workdir=container.get("workingDir") or "/")


def resolve_process(container: dict[str, Any], targets: dict[str, ImageConfig], node: NodeSpec, repo: Path) -> Process:
    image = str(container.get("image", ""))
    if is_riva_image(image):
        return riva_process(container, node, repo)
    if is_nginx_image(image) and image_target(image) not in targets:
        return nginx_process(container)
    target = image_target(image)
    config = targets.get(target)
    if config is None:
        raise ImageError(
            f'Failed to pull image "{image}": no Dockerfile target {target!r} in {repo / "Dockerfile"} '
            f"(rig node agent: the last path segment of the image names the target; known: {', '.join(sorted(targets))})"
        )
    argv = compose_command(config, container.get("command"), container.get("args"))
    return Process(argv=argv, image=config, workdir=container.get("workingDir") or config.workdir)
