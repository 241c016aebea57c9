# shellcheck shell=bash disable=SC2034
# Shared paths for rig/*.sh. Sourced, not executed.
# Binaries live in a cache OUTSIDE the repo, keyed by tool version and Go version, so every
# clone on this machine (including CI's fresh clone) reuses one build. Runtime state
# (etcd data, certs, logs, pids, env) lives in ./.rig/ of the work tree, which git ignores.
RIG_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$RIG_DIR/.." && pwd)
# shellcheck source=versions.env
. "$RIG_DIR/versions.env"
RIG_CACHE=${VOICEHIVE_RIG_CACHE:-$HOME/.cache/voicehive-rig}
RIG_STATE=${VOICEHIVE_RIG_STATE:-$REPO_DIR/.rig}
RIG_TOOLS="kube etcd livekit helm"

rig_go_version() { go env GOVERSION 2>/dev/null || echo nogo; }

# Directory that holds one tool's build (src/ module, bin/, build.log, build-seconds).
rig_tool_dir() {
  local gov; gov=$(rig_go_version)
  case $1 in
    kube)    echo "$RIG_CACHE/kubernetes-$KUBERNETES_VERSION-staging-$KUBERNETES_STAGING_VERSION-$gov" ;;
    etcd)    echo "$RIG_CACHE/etcd-$ETCD_VERSION-$gov" ;;
    livekit) echo "$RIG_CACHE/livekit-server-$LIVEKIT_SERVER_VERSION-$gov" ;;
    helm)    echo "$RIG_CACHE/helm-$HELM_VERSION-$gov-r2" ;;
    *) echo "unknown rig tool: $1" >&2; return 2 ;;
  esac
}

rig_tool_binaries() {
  case $1 in
    kube) echo "kube-apiserver kube-controller-manager kube-scheduler" ;;
    etcd) echo "etcd" ;;
    livekit) echo "livekit-server" ;;
    helm) echo "helm" ;;
  esac
}

# True when every binary of the tool is built.
rig_tool_built() {
  local d b; d=$(rig_tool_dir "$1")
  for b in $(rig_tool_binaries "$1"); do [ -x "$d/bin/$b" ] || return 1; done
}

rig_bin() {  # rig_bin <tool> <binary>
  echo "$(rig_tool_dir "$1")/bin/$2"
}

# The pid of rig component <name> if it is alive AND still ours: a recorded pid can be reused by
# an unrelated process after a reboot, and we must never signal that one.
rig_pid() {
  local f=$RIG_STATE/run/$1.pid pid cmd
  [ -f "$f" ] || return 1
  pid=$(cat "$f")
  kill -0 "$pid" 2>/dev/null || return 1
  # NUL-separated; redis pads its rewritten process title with NULs.
  cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | sed 's/ *$//') || return 1
  case $cmd in
    *"$RIG_STATE"*) ;;  # every component's command line names a file in .rig/
    redis-server*) [ -f "$RIG_STATE/ports.env" ] && grep -q "LIVEKIT_REDIS_PORT=${cmd##*:}" "$RIG_STATE/ports.env" || return 1 ;;
    *) return 1 ;;
  esac
  echo "$pid"
}

# True when any rig process recorded in this work tree is alive.
rig_running() {
  local n
  for n in etcd kube-apiserver kube-controller-manager kube-scheduler livekit-redis livekit-server; do
    rig_pid "$n" >/dev/null && return 0
  done
  return 1
}
