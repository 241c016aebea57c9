"""One Pod's life on the node: sandbox, init containers, containers with probes and restarts,
status, and deletion (preStop, SIGTERM, grace period, SIGKILL). One thread per Pod."""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rig.nodeagent.dockerfile import ImageConfig, expand_references, home_of, passwd_lines, primary_gid
from rig.nodeagent.env import ConfigError, PodFacts, build_env
from rig.nodeagent.images import ImageError, Process, RunError, resolve_process
from rig.nodeagent.kube import KubeError
from rig.nodeagent.netns import Target, connect_socket, create_pod_network, delete_netns
from rig.nodeagent.nodes import now_rfc3339
from rig.nodeagent.probes import ProbeContext, resolve_port, run_probe
from rig.nodeagent.status import (
    ContainerRecord,
    ProbeState,
    backoff_delay,
    build_pod_status,
    probe_settings,
    probe_update,
    should_restart,
)
from rig.nodeagent.volumes import (
    SA_PATH,
    PreparedVolumes,
    default_sa_volume,
    needs_default_sa,
    prepare_volume,
    refresh_token,
)

if TYPE_CHECKING:
    from rig.nodeagent.agent import Agent

log = logging.getLogger("rig.nodeagent")


@dataclass
class Running:
    """A started container process and its probes."""

    proc: subprocess.Popen[bytes]
    started: float
    uid: int
    gid: int
    env: dict[str, str]
    probes: dict[str, ProbeState] = field(default_factory=dict)
    next_probe: dict[str, float] = field(default_factory=dict)
    kill_at: float | None = None  # SIGKILL deadline after a SIGTERM


def exit_code(returncode: int) -> int:
    """A signal death as a runtime reports it: 128 + signal number."""
    return 128 - returncode if returncode < 0 else returncode


def user_of(
    pod: dict[str, Any], container: dict[str, Any], image_user: str, image: ImageConfig | None = None
) -> tuple[int, int, list[int]]:
    """(uid, gid, groups): securityContext over the image USER (numeric or root only); the
    group is runAsGroup, else the image user's own group."""
    pod_sc = pod["spec"].get("securityContext", {}) or {}
    sc = container.get("securityContext", {}) or {}
    uid_value = sc.get("runAsUser", pod_sc.get("runAsUser"))
    if uid_value is None:
        user = (image_user or "0").split(":")[0]
        if user == "root":
            user = "0"
        if not user.isdigit():
            raise ConfigError(f"image user {image_user!r} is not numeric (the rig node agent has no /etc/passwd)")
        uid_value = int(user)
    default_gid = primary_gid(image, int(uid_value)) if image is not None else 0
    gid = sc.get("runAsGroup", pod_sc.get("runAsGroup", default_gid))
    if (sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True) and int(uid_value) == 0:
        raise ConfigError("container has runAsNonRoot and image will run as root")
    groups = [int(g) for g in pod_sc.get("supplementalGroups", []) or []]
    if pod_sc.get("fsGroup") is not None:
        groups.append(int(pod_sc["fsGroup"]))
    return int(uid_value), int(gid), groups


def host_target(port: int) -> Callable[[], Target]:
    return lambda: (None, "127.0.0.1", port)


class PodWorker(threading.Thread):
    def __init__(self, agent: Agent, pod: dict[str, Any]) -> None:
        self.agent = agent
        self.pod = pod
        meta = pod["metadata"]
        self.uid: str = meta["uid"]
        self.key = f"{meta['namespace']}/{meta['name']}"
        super().__init__(name=f"pod-{self.key}", daemon=True)
        self.node = agent.nodes[pod["spec"]["nodeName"]]
        spec = pod["spec"]
        self.restart_policy = spec.get("restartPolicy", "Always")
        self.init_specs: list[dict[str, Any]] = spec.get("initContainers", []) or []
        self.main_specs: list[dict[str, Any]] = spec.get("containers", []) or []
        self.init = [ContainerRecord(c["name"], c.get("image", ""), reason="PodInitializing") for c in self.init_specs]
        self.main = [ContainerRecord(c["name"], c.get("image", ""), reason="ContainerCreating") for c in self.main_specs]
        if self.init:
            self.init[0].reason = "ContainerCreating"
            for r in self.main:
                r.reason = "PodInitializing"
        self.running: dict[str, Running] = {}
        self.next_start: dict[str, float] = {}
        self.init_index = 0
        self.failed = False
        self.message = ""
        self.netns = f"{agent.prefix}-{self.uid[:8]}"
        self.veth = f"v{agent.prefix[-4:]}{self.uid[:8]}"[:15]
        self.pod_ip = ""
        self.dir = agent.state / "pods" / f"{meta['namespace']}_{meta['name']}_{self.uid[:8]}"
        self.volumes = PreparedVolumes()
        self.since: dict[str, tuple[bool, str]] = {}
        self.start_time = now_rfc3339()
        self.published: dict[str, Any] | None = None
        self.wake = threading.Event()
        self.delete_requested = False
        self.stopping = False
        self.gone = False
        self.grpc_ports: dict[int, int] = {}

    # ------------------------------------------------------------------ events from the agent

    def update(self, pod: dict[str, Any]) -> None:
        self.pod = pod
        if pod["metadata"].get("deletionTimestamp"):
            self.delete_requested = True
        self.wake.set()

    def vanished(self) -> None:
        self.gone = True
        self.wake.set()

    def stop(self) -> None:
        self.stopping = True
        self.wake.set()

    @property
    def done(self) -> bool:
        return self.delete_requested or self.stopping or self.gone

    # ------------------------------------------------------------------ main loop

    def run(self) -> None:
        try:
            if self._sandbox():
                while not self.done:
                    self._tick()
                    self._publish()
                    self.wake.wait(0.25)
                    self.wake.clear()
            self._stop()
        except Exception:
            log.exception("pod %s: worker failed", self.key)
            self._terminate(0)
        finally:
            try:
                self._teardown()  # the kubelet deletes a Pod once its resources are reclaimed
            finally:
                if self.delete_requested and not self.gone:
                    self._delete_from_api()
                self.agent.forget(self)

    def _stop(self) -> None:
        started, grace = time.monotonic(), self._grace()
        if self.delete_requested:
            log.info("pod %s: deleting (grace %.0fs)", self.key, grace)
        self._terminate(grace)
        if self.delete_requested:
            log.info("pod %s: containers stopped after %.1fs", self.key, time.monotonic() - started)
            with contextlib.suppress(Exception):  # the final delete below is what must happen
                self._publish()

    def _grace(self) -> float:
        meta_grace = self.pod["metadata"].get("deletionGracePeriodSeconds")
        if meta_grace is not None:
            return float(meta_grace)
        return float(self.pod["spec"].get("terminationGracePeriodSeconds", 30))

    # ------------------------------------------------------------------ sandbox

    def _sandbox(self) -> bool:
        """Network, files and volumes; retried (ContainerCreating) until it works or the Pod goes."""
        while not self.done:
            try:
                self._make_sandbox()
                return True
            except (ConfigError, KubeError, OSError, subprocess.CalledProcessError) as exc:
                detail = exc.stderr if isinstance(exc, subprocess.CalledProcessError) else exc
                self.message = f"sandbox: {detail}"
                for rec in self.init[:1] or self.main:
                    rec.reason, rec.message = "ContainerCreating", str(detail)
                log.warning("pod %s: %s", self.key, self.message)
                self._publish()
                self.wake.wait(2.0)
                self.wake.clear()
        return False

    def _make_sandbox(self) -> None:
        agent = self.agent
        if not self.pod_ip:
            address = agent.allocate_ip(self.uid)
            try:
                create_pod_network(self.netns, agent.node_net, self.veth, address, agent.prefix_len, agent.gateway)
                for port in agent.host_ports:
                    agent.proxy.add(self.netns, "127.0.0.1", port, host_target(port))
                for port in agent.host_udp_ports:
                    agent.proxy.add_udp(self.netns, "127.0.0.1", port, ("127.0.0.1", port))
            except (OSError, subprocess.CalledProcessError):
                agent.proxy.remove_netns(self.netns)
                delete_netns(self.netns)
                agent.release_ip(self.uid)
                raise
            self.pod_ip = address
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o755)
        (self.dir / "hostname").write_text(self.pod["metadata"]["name"] + "\n")
        ns = self.pod["metadata"]["namespace"]
        (self.dir / "resolv.conf").write_text(
            f"search {ns}.svc.cluster.local svc.cluster.local cluster.local\nnameserver 127.0.0.1\noptions ndots:5\n"
        )
        self.write_hosts()
        self._prepare_volumes()
        self.message = ""

    def write_hosts(self) -> None:
        """Rewritten in place (same inode), so running containers see new Services."""
        path = self.dir / "hosts"
        text = self.agent.hosts_text(self.pod, self.pod_ip)
        with open(path, "a+") as handle:
            handle.seek(0)
            handle.truncate()
            handle.write(text)
        os.chmod(path, 0o644)

    def _prepare_volumes(self) -> None:
        pod = self.pod
        facts = PodFacts(self.pod_ip, self.agent.host_ip, self.node.name)
        fs_group = (pod["spec"].get("securityContext", {}) or {}).get("fsGroup")
        volumes = list(pod["spec"].get("volumes", []) or [])
        if needs_default_sa(pod, self.agent.sa_automount(pod)):
            volumes.append(default_sa_volume())
        prepared = PreparedVolumes()
        for volume in volumes:
            path, tokens = prepare_volume(volume, self.dir / "volumes", pod, facts, self.agent.sources, fs_group)
            prepared.paths[volume["name"]] = path
            prepared.tokens.extend(tokens)
        self.volumes = prepared

    # ------------------------------------------------------------------ containers

    def _tick(self) -> None:
        now = time.monotonic()
        for token in self.volumes.tokens:
            if time.time() >= token.refresh_at:
                try:
                    refresh_token(token, self.pod, self.agent.sources)
                except KubeError as exc:
                    log.warning("pod %s: token refresh: %s", self.key, exc)
        if self.failed:
            return
        if self.init_index < len(self.init_specs):
            self._tick_init(now)
            return
        for spec, rec in zip(self.main_specs, self.main, strict=True):
            self._tick_container(spec, rec, now, init=False)

    def _tick_init(self, now: float) -> None:
        spec, rec = self.init_specs[self.init_index], self.init[self.init_index]
        self._tick_container(spec, rec, now, init=True)
        if rec.state == "terminated" and rec.exit_code == 0:
            self.init_index += 1
            if self.init_index < len(self.init):
                self.init[self.init_index].reason = "ContainerCreating"
            else:
                for r in self.main:
                    r.reason = "ContainerCreating"

    def _tick_container(self, spec: dict[str, Any], rec: ContainerRecord, now: float, init: bool) -> None:
        running = self.running.get(rec.name)
        if running is not None:
            code = running.proc.poll()
            if code is None:
                if running.kill_at is not None and now >= running.kill_at:
                    self._signal(running, signal.SIGKILL)
                elif running.kill_at is None and not init:
                    self._probe(spec, rec, running, now)
                return
            self._exited(spec, rec, exit_code(code), init, now)
            return
        if rec.state == "terminated" and (not should_restart(self._policy(init), rec.exit_code) or self.failed):
            return
        if now >= self.next_start.get(rec.name, 0.0):
            self._start(spec, rec, init, now)

    def _policy(self, init: bool) -> str:
        # Init containers: Always behaves as OnFailure (a finished init container is not rerun).
        return "OnFailure" if init and self.restart_policy == "Always" else self.restart_policy

    def _exited(self, spec: dict[str, Any], rec: ContainerRecord, code: int, init: bool, now: float) -> None:
        self.running.pop(rec.name, None)
        finished = now_rfc3339()
        reason = "Completed" if code == 0 else "Error"
        terminated = {"exitCode": code, "reason": reason, "startedAt": rec.started_at, "finishedAt": finished,
                      "containerID": rec.container_id}
        rec.ready, rec.started = False, False
        log.info("pod %s: container %s exited with %d", self.key, rec.name, code)
        if should_restart(self._policy(init), code):
            delay = backoff_delay(rec.restart_count + 1, self.agent.backoff_base)
            self.next_start[rec.name] = now + delay
            rec.state, rec.last_terminated = "waiting", terminated
            rec.reason = "CrashLoopBackOff"
            rec.message = f"back-off {delay:g}s restarting failed container={rec.name} pod={self.pod['metadata']['name']}"
            return
        rec.state, rec.exit_code, rec.reason, rec.finished_at = "terminated", code, reason, finished
        if init and code != 0:
            self.failed = True  # restartPolicy Never: an init container failure fails the Pod
        elif not init and self.restart_policy == "Never" and code != 0:
            self.failed = all(r.state == "terminated" for r in self.main)

    def _start(self, spec: dict[str, Any], rec: ContainerRecord, init: bool, now: float) -> None:
        try:
            process = resolve_process(spec, self.agent.images, self.node, self.agent.repo)
            launch, uid, gid, env = self._launch_spec(spec, process)
        except ImageError as exc:
            pulls = rec.extra.get("pulls", 0)
            rec.extra["pulls"] = pulls + 1
            rec.state, rec.reason, rec.message = "waiting", "ErrImagePull" if pulls == 0 else "ImagePullBackOff", str(exc)
            self.next_start[rec.name] = now + backoff_delay(pulls + 1, self.agent.backoff_base)
            return
        except RunError as exc:
            rec.state, rec.reason, rec.message = "waiting", "CreateContainerError", str(exc)
            self.next_start[rec.name] = now + 5.0
            return
        except (ConfigError, KubeError) as exc:
            rec.state, rec.reason, rec.message = "waiting", "CreateContainerConfigError", str(exc)
            self.next_start[rec.name] = now + 2.0
            return
        proc = self._spawn(rec.name, launch)
        if rec.last_terminated is not None or rec.container_id:
            rec.restart_count += 1
        rec.container_id = f"rig://{self.uid[:8]}/{rec.name}/{proc.pid}"
        rec.state, rec.reason, rec.message, rec.started_at = "running", "", "", now_rfc3339()
        rec.exit_code = 0
        has_startup = "startupProbe" in spec
        rec.started = not has_startup
        rec.ready = not init and "readinessProbe" not in spec and not has_startup
        running = Running(proc=proc, started=now, uid=uid, gid=gid, env=env)
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            if kind in spec:
                running.probes[kind] = ProbeState()
                running.next_probe[kind] = now + probe_settings(spec[kind])[0]
        self.running[rec.name] = running
        log.info("pod %s: started container %s (pid %d): %s", self.key, rec.name, proc.pid, launch["argv"])

    def _launch_spec(self, spec: dict[str, Any], process: Process) -> tuple[dict[str, Any], int, int, dict[str, str]]:
        uid, gid, groups = user_of(self.pod, spec, process.image.user, process.image)
        ns = self.pod["metadata"]["namespace"]
        facts = PodFacts(self.pod_ip, self.agent.host_ip, self.node.name)
        service_env = self.agent.service_env(ns) if self.pod["spec"].get("enableServiceLinks", True) else \
            self.agent.service_env(ns, only_kubernetes=True)
        env = build_env(self.pod, spec, process.image.env_dict(), service_env, facts,
                        self.agent.sources.secret_text, self.agent.sources.configmap_text)
        home = home_of(process.image, uid)
        env.setdefault("HOME", home)
        argv = [expand_references(a, env) for a in process.argv]
        mounts = self._mounts(spec, home, uid)
        mounts.extend(self._passwd(spec["name"], process.image))
        launch = {
            "netns": f"/run/netns/{self.netns}",
            "hostname": self.pod["spec"].get("hostname") or self.pod["metadata"]["name"],
            "mounts": mounts,
            "expose": [str(self.agent.python_prefix)],
            "staging": str(self.dir / ".expose"),
            "uid": uid,
            "gid": gid,
            "groups": groups,
            "workdir": process.workdir,
            "argv": argv,
            "env": env,
        }
        return launch, uid, gid, env

    def _mounts(self, spec: dict[str, Any], home: str, uid: int) -> list[dict[str, Any]]:
        repo = self.agent.repo
        mounts: list[dict[str, Any]] = [
            {"tmpfs": True, "target": "/tmp"},  # first: volumes may be mounted below /tmp
            {"source": str(repo / ".venv"), "target": "/opt/venv", "readonly": True},
            {"source": str(self.dir / "hosts"), "target": "/etc/hosts", "readonly": True},
            {"source": str(self.dir / "resolv.conf"), "target": "/etc/resolv.conf", "readonly": True},
            {"source": str(self.dir / "hostname"), "target": "/etc/hostname", "readonly": True},
        ]
        if home != "/":
            home_dir = self.dir / "home" / spec["name"]
            home_dir.mkdir(parents=True, exist_ok=True)
            os.chown(home_dir, uid, -1)
            mounts.append({"source": str(home_dir), "target": home})
        for mount in spec.get("volumeMounts", []) or []:
            source = self.volumes.paths.get(mount["name"])
            if source is None:
                raise ConfigError(f"volumeMount {mount['name']!r}: no such volume")
            if mount.get("subPath"):
                source = source / mount["subPath"]
            mounts.append({"source": str(source), "target": mount["mountPath"], "readonly": bool(mount.get("readOnly"))})
        sa_volume = self.volumes.paths.get("kube-api-access-rig")
        if sa_volume is not None:
            mounts.append({"source": str(sa_volume), "target": SA_PATH, "readonly": True})
        if self.agent.ca_bundle is not None:  # the image's trust store, as if built with the rig's CA in it
            mounts += [{"source": str(self.agent.ca_bundle), "target": target, "readonly": True}
                       for target in trust_stores(self.agent.python_prefix, repo)]
        if any(Path(m["target"]) in (repo, *repo.parents) for m in mounts if m["target"] != "/"):
            # The venv's scripts and editable install name the repo's own path; a checkout under
            # /tmp (the container's tmpfs) or a volume's path would hide it: bind it back, last.
            mounts.append({"source": str(repo), "target": str(repo), "readonly": True})
        return mounts

    def _passwd(self, name: str, image: ImageConfig) -> list[dict[str, Any]]:
        """The host's /etc/passwd and /etc/group plus the image's own users."""
        host_passwd, host_group = Path("/etc/passwd").read_text(), Path("/etc/group").read_text()
        known = {int(line.split(":")[2]) for line in host_passwd.splitlines() if line.count(":") >= 6}
        extra_passwd, extra_group = passwd_lines(image, known)
        mounts = []
        for kind, text in (("passwd", host_passwd + extra_passwd), ("group", host_group + extra_group)):
            path = self.dir / f"{kind}-{name}"
            path.write_text(text)
            os.chmod(path, 0o644)
            mounts.append({"source": str(path), "target": f"/etc/{kind}", "readonly": True})
        return mounts

    def _spawn(self, name: str, launch: dict[str, Any]) -> subprocess.Popen[bytes]:
        spec_file = self.dir / f".launch-{name}.json"
        fd = os.open(spec_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(launch, handle)
        logfile = self.agent.log_path(self.pod, name)
        with open(logfile, "ab") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "rig.nodeagent.launch", str(spec_file)],
                cwd=self.agent.repo,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(self.agent.repo)},
            )

    # ------------------------------------------------------------------ probes

    def _probe_context(self, spec: dict[str, Any], running: Running) -> ProbeContext:
        ports = {p["name"]: int(p["containerPort"]) for p in spec.get("ports", []) or [] if p.get("name")}
        return ProbeContext(self.agent.node_net, self.pod_ip, ports, running.env, running.proc.pid,
                            running.uid, running.gid, self._grpc_forward)

    def _grpc_forward(self, port: int) -> int:
        if port not in self.grpc_ports:
            ip, net = self.pod_ip, self.agent.node_net
            self.grpc_ports[port] = self.agent.proxy.add(None, "127.0.0.1", 0, lambda: (net, ip, port))
        return self.grpc_ports[port]

    def _probe(self, spec: dict[str, Any], rec: ContainerRecord, running: Running, now: float) -> None:
        for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            if kind not in running.probes or now < running.next_probe[kind]:
                continue
            if kind != "startupProbe" and not rec.started:
                continue
            if kind == "startupProbe" and rec.started:
                continue
            _, period, _, success, failure = probe_settings(spec[kind])
            running.next_probe[kind] = now + period
            ok = run_probe(spec[kind], self._probe_context(spec, running))
            if kind != "readinessProbe":
                success = 1
            state = probe_update(running.probes[kind], ok, success, failure)
            running.probes[kind] = state
            if kind == "startupProbe" and state.passed:
                rec.started = True
                rec.ready = "readinessProbe" not in spec
            elif kind == "readinessProbe":
                rec.ready = state.passed is True  # stays ready until failureThreshold failures
            elif state.passed is False and kind in {"startupProbe", "livenessProbe"}:
                log.info("pod %s: %s failed for %s; killing it", self.key, kind, rec.name)
                rec.ready = False
                self._kill(running, float(self.pod["spec"].get("terminationGracePeriodSeconds", 30)))
                return

    # ------------------------------------------------------------------ stopping

    def _signal(self, running: Running, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(running.proc.pid, sig)

    def _kill(self, running: Running, grace: float) -> None:
        self._signal(running, signal.SIGTERM)
        running.kill_at = time.monotonic() + grace

    def _pre_stop(self, spec: dict[str, Any], running: Running) -> None:
        hook = ((spec.get("lifecycle") or {}).get("preStop")) or {}
        ctx = self._probe_context(spec, running)
        try:
            if "exec" in hook:
                argv = ["nsenter", "-t", str(running.proc.pid), "-n", "-m", "-u", "-S", str(running.uid), "-G",
                        str(running.gid), "--", *hook["exec"].get("command", [])]
                subprocess.run(argv, env=running.env, capture_output=True, timeout=self._grace() or 1, check=False)
            elif "httpGet" in hook:
                get = hook["httpGet"]
                port = resolve_port(get.get("port"), ctx.ports)
                sock = connect_socket(ctx.node_net, get.get("host") or self.pod_ip, port, 5.0)
                sock.setblocking(True)
                conn = http.client.HTTPConnection(self.pod_ip, port, timeout=max(1.0, self._grace()))
                conn.sock = sock
                conn.request("GET", get.get("path", "/") or "/")
                conn.getresponse().read()
                conn.close()
            elif "sleep" in hook:
                time.sleep(min(float(hook["sleep"].get("seconds", 0)), self._grace()))
        except (OSError, ValueError, http.client.HTTPException, subprocess.TimeoutExpired) as exc:
            log.info("pod %s: preStop of %s: %s", self.key, spec["name"], exc)

    def _terminate(self, grace: float) -> None:
        """preStop hooks (in parallel), SIGTERM, wait out the grace period, SIGKILL."""
        deadline = time.monotonic() + grace
        specs = {c["name"]: c for c in [*self.init_specs, *self.main_specs]}
        hooks = [threading.Thread(target=self._pre_stop, args=(specs[name], r), daemon=True)
                 for name, r in self.running.items() if (specs[name].get("lifecycle") or {}).get("preStop")]
        for t in hooks:
            t.start()
        for t in hooks:
            t.join(max(0.0, deadline - time.monotonic()))
        for running in self.running.values():
            self._signal(running, signal.SIGTERM)
        while any(r.proc.poll() is None for r in self.running.values()) and time.monotonic() < deadline:
            time.sleep(0.1)
        for running in self.running.values():
            if running.proc.poll() is None:
                self._signal(running, signal.SIGKILL)
        for name, running in list(self.running.items()):
            code = exit_code(running.proc.wait(timeout=10))
            rec = next(r for r in [*self.init, *self.main] if r.name == name)
            rec.state, rec.exit_code, rec.finished_at, rec.ready = "terminated", code, now_rfc3339(), False
            rec.reason = "Completed" if code == 0 else "Error"
        self.running.clear()

    def _teardown(self) -> None:
        self.agent.proxy.remove_netns(self.netns)
        for port in self.grpc_ports.values():
            self.agent.proxy.remove((None, "127.0.0.1", port))
        delete_netns(self.netns)
        if self.pod_ip:
            self.agent.release_ip(self.uid)
        shutil.rmtree(self.dir, ignore_errors=True)

    # ------------------------------------------------------------------ API

    def _publish(self) -> None:
        status = build_pod_status(self.init, self.main, self.restart_policy, self.pod_ip, self.agent.host_ip,
                                  self.start_time, self.since, now_rfc3339(), self.failed, self.message)
        if status == self.published or self.gone:
            return
        meta = self.pod["metadata"]
        try:
            self.agent.kube.patch(f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/status",
                                  {"metadata": {"uid": self.uid}, "status": status})
            self.published = status
        except KubeError as exc:
            if exc.status == 404:
                self.gone = True
            else:
                log.warning("pod %s: status: %s", self.key, exc)

    def _delete_from_api(self) -> None:
        """Remove the stopped Pod from the API, retried until it is gone, as the kubelet's
        status manager does (a Pod whose final delete failed once would stay Terminating)."""
        meta = self.pod["metadata"]
        path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"
        retry_until_done(lambda: self.agent.kube.delete(path, {"gracePeriodSeconds": 0,
                                                               "preconditions": {"uid": self.uid}}),
                         self.agent.stopping, what=f"pod {self.key}: final delete")


def retry_until_done(call: Callable[[], Any], stopping: threading.Event, what: str, pause: float = 1.0) -> bool:
    """``call()`` until it succeeds or answers 404/409 (gone, or another Pod by that name):
    True. Any other error (apiserver busy, connection reset) is logged and retried; False
    only when the agent is stopping."""
    while True:
        try:
            call()
            return True
        except KubeError as exc:
            if exc.status in (404, 409):
                return True
            log.warning("%s: %s; retrying", what, exc)
        except Exception as exc:  # urllib3/socket errors: the apiserver did not answer
            log.warning("%s: %s; retrying", what, exc)
        if stopping.wait(pause):
            return False


def trust_stores(python_prefix: Path, repo: Path) -> list[str]:
    """The CA bundles an image's clients read: OpenSSL's default file and certifi's in the venv."""
    stores = ["/etc/ssl/certs/ca-certificates.crt"]
    stores += [str(p) for p in sorted((repo / ".venv").glob("lib/python3*/site-packages/certifi/cacert.pem"))]
    return stores
