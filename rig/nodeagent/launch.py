"""Starts one container process: joins the Pod's netns, makes its own mount and UTS namespaces,
binds volumes, drops to the image's user and execs the command (the PID stays the same).

    python -m rig.nodeagent.launch SPEC.json

Run by the agent as root; SPEC.json (mode 0600) is read then deleted, since it holds the
environment. Exit 127 with a message on stderr when the command cannot be started, as a
runtime's StartError would.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
from pathlib import Path
from typing import Any

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWNET = 0x40000000
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(libc: Any, source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(
        libc.mount(
            source.encode() if source else None,
            target.encode(),
            fstype.encode() if fstype else None,
            flags,
            data.encode() if data else None,
        ),
        f"mount {source} on {target}",
    )


def _mountpoint(source: str, target: str) -> None:
    """Create the mountpoint like a runtime does in the image (here on the shared filesystem)."""
    path = Path(target)
    if os.path.isdir(source):
        path.mkdir(parents=True, exist_ok=True)
    elif not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()


def hidden_ancestor(path: Path) -> Path | None:
    """The top-most ancestor another user cannot traverse (e.g. /root, mode 0700), if any."""
    for parent in reversed(path.parents):
        if parent != Path("/") and not os.stat(parent).st_mode & 0o001:
            return parent
    return None


def expose(libc: Any, path: Path, staging: Path) -> None:
    """Make ``path`` reachable for the container user although an ancestor is private: the
    image's own interpreter lives there (a pyenv Python under /root). The private ancestor is
    covered by an empty tmpfs holding only ``path``, which also hides the rest of it."""
    top = hidden_ancestor(path)
    if top is None:
        return
    staging.mkdir(parents=True, exist_ok=True)
    _mount(libc, str(path), str(staging), None, MS_BIND | MS_REC)
    _mount(libc, "tmpfs", str(top), "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755")
    path.mkdir(parents=True, exist_ok=True)
    _mount(libc, str(staging), str(path), None, MS_BIND | MS_REC)


def enter(spec: dict[str, Any]) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(spec["netns"], os.O_RDONLY)
    _check(libc.setns(fd, CLONE_NEWNET), "setns")
    os.close(fd)
    _check(libc.unshare(CLONE_NEWNS | CLONE_NEWUTS), "unshare")
    _mount(libc, None, "/", None, MS_REC | MS_PRIVATE)
    hostname = spec["hostname"].encode()
    _check(libc.sethostname(hostname, len(hostname)), "sethostname")
    for index, path in enumerate(spec.get("expose", [])):
        expose(libc, Path(path), Path(spec["staging"]) / str(index))
    # Sources are opened before anything is mounted: the Pod's files may live under /tmp, which
    # the container gets as its own tmpfs; /proc/self/fd/N still names them afterwards.
    sources = {i: os.open(m["source"], os.O_PATH) for i, m in enumerate(spec["mounts"]) if not m.get("tmpfs")}
    for index, mount in enumerate(spec["mounts"]):
        target = mount["target"]
        if mount.get("tmpfs"):
            Path(target).mkdir(parents=True, exist_ok=True)
            _mount(libc, "tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
            continue
        source = f"/proc/self/fd/{sources[index]}"
        _mountpoint(source, target)
        _mount(libc, source, target, None, MS_BIND | MS_REC)
        if mount.get("readonly"):
            _mount(libc, None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY)


def main() -> None:
    path = Path(sys.argv[1])
    spec = json.loads(path.read_text())
    path.unlink()
    try:
        enter(spec)
        os.setgroups([int(g) for g in spec.get("groups", [])])
        os.setgid(int(spec["gid"]))
        os.setuid(int(spec["uid"]))
        os.chdir(spec["workdir"])
        argv = spec["argv"]
        if not argv:
            raise OSError("no command specified (no ENTRYPOINT, CMD, command or args)")
        os.execvpe(argv[0], argv, spec["env"])
    except OSError as exc:
        print(f"rig node agent: cannot start container: {exc}", file=sys.stderr, flush=True)
        sys.exit(127)


if __name__ == "__main__":
    main()
