#!/usr/bin/env bash
# Stop what rig/up.sh started in this work tree (by recorded pid only). Keeps certs, keys and
# ports so the next `make rig` is quick; `rig/down.sh --purge` also deletes .rig/ state.
set -uo pipefail
# shellcheck source=rig/lib.sh
. "$(dirname "$0")/lib.sh"
RUN=$RIG_STATE/run
for name in livekit-server livekit-redis kube-scheduler kube-controller-manager kube-apiserver etcd; do
  f=$RUN/$name.pid
  [ -f "$f" ] || continue
  if pid=$(rig_pid "$name"); then
    echo "[rig] stopping $name ($pid)" >&2
    kill -TERM "$pid"
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
  fi
  rm -f "$f"
done
rm -f "$RIG_STATE/env"
if [ "${1:-}" = "--purge" ]; then rm -rf "$RIG_STATE"; echo "[rig] removed $RIG_STATE" >&2; fi
