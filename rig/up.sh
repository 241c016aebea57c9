#!/usr/bin/env bash
# Start the local control plane on 127.0.0.1: etcd, kube-apiserver, kube-controller-manager,
# a redis-server for LiveKit, livekit-server. Idempotent: a component that is already up and
# healthy is left alone. Writes what clients need to .rig/env and prints it.
#
# Usage: rig/up.sh [--build] [--best-effort]
#   --build        run rig/build.sh first for tools not yet in the cache
#   --best-effort  never exit non-zero; start what was built, explain what was not
# A component whose binary is missing is skipped with the reason; the rest still starts.
set -uo pipefail
# shellcheck source=rig/lib.sh
. "$(dirname "$0")/lib.sh"

BUILD=0; BEST_EFFORT=0
for a in "$@"; do
  case $a in
    --build) BUILD=1 ;;
    --best-effort) BEST_EFFORT=1 ;;
    *) echo "usage: rig/up.sh [--build] [--best-effort]" >&2; exit 2 ;;
  esac
done

log() { printf '[rig] %s\n' "$*" >&2; }
finish() { local rc=$1; if [ "$BEST_EFFORT" = 1 ]; then exit 0; fi; exit "$rc"; }

if [ "$BUILD" = 1 ]; then
  # Bounded, so CI stays inside its budget; Go's build cache keeps the progress of a cut build.
  timeout "${VOICEHIVE_RIG_BUILD_TIMEOUT:-2700}" "$RIG_DIR/build.sh" ||
    log "some tools failed to build or the build timed out (details above); starting the rest"
fi

mkdir -p "$RIG_STATE"/{pki,logs,run,etcd}
chmod 700 "$RIG_STATE"
PKI=$RIG_STATE/pki; LOGS=$RIG_STATE/logs; RUN=$RIG_STATE/run

# ---- ports: chosen once per work tree (free at that time), so two clones never collide ----
PORTS=$RIG_STATE/ports.env
if [ ! -f "$PORTS" ]; then
  python3 - >"$PORTS" <<'PY'
import socket
names = ["ETCD_CLIENT_PORT", "ETCD_PEER_PORT", "APISERVER_PORT", "KCM_PORT", "SCHEDULER_PORT",
         "LIVEKIT_REDIS_PORT", "LIVEKIT_PORT", "LIVEKIT_RTC_UDP_PORT"]
socks = []
for name in names:
    kind = socket.SOCK_DGRAM if name.endswith("UDP_PORT") else socket.SOCK_STREAM
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    socks.append(s)
    print(f"{name}={s.getsockname()[1]}")
PY
fi
# shellcheck disable=SC1090  # generated: ETCD_CLIENT_PORT, APISERVER_PORT, ...
. "$PORTS"
if [ -z "${SCHEDULER_PORT:-}" ]; then  # ports.env written before the scheduler joined the rig
  SCHEDULER_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  echo "SCHEDULER_PORT=$SCHEDULER_PORT" >>"$PORTS"
fi
if [ -z "${LIVEKIT_WEBHOOK_PORT:-}" ]; then  # where livekit-server posts webhooks (rig/servicefwd.py)
  LIVEKIT_WEBHOOK_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  echo "LIVEKIT_WEBHOOK_PORT=$LIVEKIT_WEBHOOK_PORT" >>"$PORTS"
fi

# ---- process helpers: only ever signal the pids we recorded ----
alive() { rig_pid "$1" >/dev/null; }
start() {  # start <name> <cmd...>
  local name=$1; shift
  log "starting $name (log: $LOGS/$name.log)"
  setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$RUN/$name.pid"
}
wait_for() {  # wait_for <name> <seconds> <check cmd...>
  local name=$1 secs=$2; shift 2
  local deadline=$(( $(date +%s) + secs ))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    if "$@" >/dev/null 2>&1; then log "$name is ready"; return 0; fi
    # kill -0, not alive(): right after `start` the pid may still be the forked shell, whose
    # command line does not name .rig/ yet (alive() then said "exited" for a healthy start)
    if ! kill -0 "$(cat "$RUN/$name.pid")" 2>/dev/null; then
      log "$name exited; last log lines:"; tail -20 "$LOGS/$name.log" >&2; return 1
    fi
    sleep 0.5
  done
  log "$name not ready after ${secs}s; last log lines:"; tail -20 "$LOGS/$name.log" >&2; return 1
}
have() { rig_tool_built "$1" || { log "skipping $2: not built (run rig/build.sh $1; see $(rig_tool_dir "$1")/FAILED)"; return 1; }; }

STATUS=0
KUBE_UP=0; LIVEKIT_UP=0

# ---- credentials: generated once per work tree, never committed (.rig/ is ignored) ----
gen_pki() {
  if [ -f "$PKI/ca.crt" ] && [ -f "$PKI/apiserver.crt" ] && [ -f "$PKI/sa.key" ] && [ -f "$PKI/admin.token" ]; then
    if [ ! -f "$PKI/scheduler.token" ]; then  # a rig from before the scheduler (restart it to load)
      openssl rand -hex 24 >"$PKI/scheduler.token" && chmod 600 "$PKI/scheduler.token"
      echo "$(cat "$PKI/scheduler.token"),system:kube-scheduler,uid-scheduler,\"system:masters\"" >>"$PKI/tokens.csv"
    fi
    return 0
  fi
  log "generating CA, serving certificate, service-account keys and admin token in $PKI"
  (
    cd "$PKI" || exit 1
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=voicehive-rig-ca" \
      -keyout ca.key -out ca.crt 2>/dev/null
    cat >apiserver.ext <<EXT
subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
extendedKeyUsage=serverAuth
EXT
    openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" -keyout apiserver.key -out apiserver.csr 2>/dev/null
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile apiserver.ext -out apiserver.crt 2>/dev/null
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    openssl rand -hex 24 >admin.token
    openssl rand -hex 24 >controller-manager.token
    openssl rand -hex 24 >scheduler.token
    # static tokens: token,user,uid,"groups"
    {
      echo "$(cat admin.token),voicehive-rig-admin,uid-admin,\"system:masters\""
      echo "$(cat controller-manager.token),system:kube-controller-manager,uid-kcm,\"system:masters\""
      echo "$(cat scheduler.token),system:kube-scheduler,uid-scheduler,\"system:masters\""
    } >tokens.csv
    chmod 600 ./*.key ./*.token tokens.csv
  ) || { log "certificate generation failed (is openssl installed?)"; return 1; }
}

kubeconfig() {  # kubeconfig <file> <token-file>
  cat >"$1" <<KC
apiVersion: v1
kind: Config
clusters:
- name: voicehive-rig
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority: $PKI/ca.crt
users:
- name: voicehive-rig-admin
  user:
    token: $(cat "$2")
contexts:
- name: voicehive-rig
  context: {cluster: voicehive-rig, user: voicehive-rig-admin}
current-context: voicehive-rig
KC
  chmod 600 "$1"
}

etcd_healthy() { curl -fsS "http://127.0.0.1:$ETCD_CLIENT_PORT/health" | grep -q '"health":"true"'; }
apiserver_ready() { curl -fsS --cacert "$PKI/ca.crt" -H "Authorization: Bearer $(cat "$PKI/admin.token")" "https://127.0.0.1:$APISERVER_PORT/readyz"; }
kcm_healthy() { curl -fsSk "https://127.0.0.1:$KCM_PORT/healthz"; }
scheduler_healthy() { curl -fsSk "https://127.0.0.1:$SCHEDULER_PORT/healthz"; }
redis_ready() { redis-cli -h 127.0.0.1 -p "$LIVEKIT_REDIS_PORT" ping | grep -q PONG; }
livekit_ready() { curl -fsS "http://127.0.0.1:$LIVEKIT_PORT/" | grep -q OK; }

# ---- Kubernetes: etcd -> kube-apiserver -> kube-controller-manager ----
up_kube() {
  have etcd etcd || return 1
  have kube "kube-apiserver and kube-controller-manager" || return 1
  gen_pki || return 1
  if ! { alive etcd && etcd_healthy; }; then
    start etcd "$(rig_bin etcd etcd)" --name rig --data-dir "$RIG_STATE/etcd" \
      --listen-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
      --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
      --initial-cluster "rig=http://127.0.0.1:$ETCD_PEER_PORT" \
      --unsafe-no-fsync --quota-backend-bytes 2147483648 --log-level warn
    wait_for etcd 60 etcd_healthy || return 1
  fi
  if ! { alive kube-apiserver && apiserver_ready; }; then
    # ServiceAccount admission is off: a test's fresh namespace has no "default" ServiceAccount
    # until the controller creates it, which would make Pod creation racy. RBAC is on, so
    # least-privilege roles can be tested by impersonation.
    start kube-apiserver "$(rig_bin kube kube-apiserver)" \
      --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$APISERVER_PORT" \
      --etcd-servers="http://127.0.0.1:$ETCD_CLIENT_PORT" \
      --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
      --client-ca-file="$PKI/ca.crt" --token-auth-file="$PKI/tokens.csv" \
      --service-account-issuer=https://kubernetes.default.svc.cluster.local \
      --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
      --api-audiences=https://kubernetes.default.svc.cluster.local \
      --service-cluster-ip-range=10.0.0.0/24 --authorization-mode=RBAC \
      --disable-admission-plugins=ServiceAccount --allow-privileged=true \
      --endpoint-reconciler-type=none --profiling=false --v=1
    wait_for kube-apiserver 180 apiserver_ready || return 1
  fi
  kubeconfig "$RIG_STATE/kubeconfig" "$PKI/admin.token"
  kubeconfig "$RIG_STATE/controller-manager.kubeconfig" "$PKI/controller-manager.token"
  kubeconfig "$RIG_STATE/scheduler.kubeconfig" "$PKI/scheduler.token"
  if ! { alive kube-controller-manager && kcm_healthy; }; then
    # The controllers between a Deployment, a Service or a PodDisruptionBudget and its Pods:
    # ownerReferences cascade, namespaces are cleaned up, Deployments -> ReplicaSets -> Pods,
    # Services get EndpointSlices, PDBs their status, every namespace its kube-root-ca.crt.
    # Pods stay Pending until the node agent (rig/nodeagent, `make cluster-up`) registers nodes.
    start kube-controller-manager "$(rig_bin kube kube-controller-manager)" \
      --kubeconfig="$RIG_STATE/controller-manager.kubeconfig" \
      --authentication-kubeconfig="$RIG_STATE/controller-manager.kubeconfig" \
      --authorization-kubeconfig="$RIG_STATE/controller-manager.kubeconfig" \
      --bind-address=127.0.0.1 --secure-port="$KCM_PORT" --leader-elect=false \
      --controllers=garbage-collector-controller,namespace-controller,serviceaccount-controller,serviceaccount-token-controller,deployment-controller,replicaset-controller,endpointslice-controller,disruption-controller,root-ca-certificate-publisher-controller \
      --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
      --concurrent-gc-syncs=5 --profiling=false --v=1
    wait_for kube-controller-manager 120 kcm_healthy || return 1
  fi
  if ! { alive kube-scheduler && scheduler_healthy; }; then
    # The real scheduler: affinity, taints/tolerations and GPU requests decide where Pods land.
    start kube-scheduler "$(rig_bin kube kube-scheduler)" \
      --kubeconfig="$RIG_STATE/scheduler.kubeconfig" \
      --authentication-kubeconfig="$RIG_STATE/scheduler.kubeconfig" \
      --authorization-kubeconfig="$RIG_STATE/scheduler.kubeconfig" \
      --bind-address=127.0.0.1 --secure-port="$SCHEDULER_PORT" --leader-elect=false --profiling=false --v=1
    wait_for kube-scheduler 120 scheduler_healthy || return 1
  fi
  KUBE_UP=1
}

# ---- LiveKit: redis-server -> livekit-server (SIP and agent dispatch need Redis) ----
up_livekit() {
  have livekit livekit-server || return 1
  command -v redis-server >/dev/null || { log "skipping livekit-server: redis-server is not installed (make system-deps)"; return 1; }
  if ! { alive livekit-redis && redis_ready; }; then
    start livekit-redis redis-server --bind 127.0.0.1 --port "$LIVEKIT_REDIS_PORT" --save "" --appendonly no \
      --dir "$RUN" --protected-mode yes
    wait_for livekit-redis 30 redis_ready || return 1
  fi
  local keyf=$RIG_STATE/livekit.keys
  if [ ! -f "$keyf" ]; then
    printf 'LIVEKIT_API_KEY=%s\nLIVEKIT_API_SECRET=%s\n' "API$(openssl rand -hex 6)" "$(openssl rand -hex 32)" >"$keyf"
    chmod 600 "$keyf"
  fi
  # shellcheck disable=SC1090  # generated: LIVEKIT_API_KEY, LIVEKIT_API_SECRET
  . "$keyf"
  cat >"$RIG_STATE/livekit.yaml" <<LK
# Generated by rig/up.sh. Loopback only; SIP and agent dispatch state in the rig's Redis.
port: $LIVEKIT_PORT
bind_addresses: ["127.0.0.1"]
rtc:
  # ICE over TCP off: livekit-server binds that listener on every interface (no bind option).
  tcp_port: 0
  udp_port: $LIVEKIT_RTC_UDP_PORT
  use_external_ip: false
  node_ip: 127.0.0.1
  enable_loopback_candidate: true
  ips:
    includes: ["127.0.0.1/32"]
redis:
  address: 127.0.0.1:$LIVEKIT_REDIS_PORT
keys:
  $LIVEKIT_API_KEY: $LIVEKIT_API_SECRET
logging:
  level: info
# Webhooks signed with the API key, as in production, to the installed orchestrator's Service:
# make cluster-up forwards 127.0.0.1:$LIVEKIT_WEBHOOK_PORT to it (rig/servicefwd.py); without
# a cluster the port is closed and livekit-server only logs the failed posts.
webhook:
  api_key: $LIVEKIT_API_KEY
  urls: ["https://127.0.0.1:$LIVEKIT_WEBHOOK_PORT/v1/livekit/webhook"]
LK
  chmod 600 "$RIG_STATE/livekit.yaml"
  if ! { alive livekit-server && livekit_ready; }; then
    # the orchestrator's certificate comes from the cluster's CA (rig/cluster.py keeps it stable;
    # Go reads SSL_CERT_FILE at the first TLS handshake, i.e. the first webhook a cluster answers)
    SSL_CERT_FILE="$RIG_STATE/cluster/tls/ca.pem" \
      start livekit-server "$(rig_bin livekit livekit-server)" --config "$RIG_STATE/livekit.yaml"
    wait_for livekit-server 60 livekit_ready || return 1
  fi
  LIVEKIT_UP=1
}

up_kube || STATUS=1
up_livekit || STATUS=1

# ---- env for tests and people ----
ENVF=$RIG_STATE/env
{
  echo "# Written by rig/up.sh; source it or let tests/fixtures read it."
  echo "VOICEHIVE_RIG_STATE=$RIG_STATE"
  if [ "$KUBE_UP" = 1 ]; then
    echo "KUBECONFIG=$RIG_STATE/kubeconfig"
    echo "VOICEHIVE_RIG_KUBE_URL=https://127.0.0.1:$APISERVER_PORT"
    echo "VOICEHIVE_RIG_KUBE_CA=$PKI/ca.crt"
    echo "VOICEHIVE_RIG_KUBE_TOKEN_FILE=$PKI/admin.token"
  fi
  if [ "$LIVEKIT_UP" = 1 ]; then
    echo "LIVEKIT_URL=ws://127.0.0.1:$LIVEKIT_PORT"
    echo "LIVEKIT_API_KEY=$LIVEKIT_API_KEY"
    echo "LIVEKIT_API_SECRET=$LIVEKIT_API_SECRET"
    echo "VOICEHIVE_RIG_LIVEKIT_REDIS_URL=redis://127.0.0.1:$LIVEKIT_REDIS_PORT"
  fi
  if rig_tool_built helm; then echo "HELM=$(rig_bin helm helm)"; fi
} >"$ENVF.tmp"
chmod 600 "$ENVF.tmp"; mv "$ENVF.tmp" "$ENVF"
log "environment ($ENVF):"
grep -v '^#' "$ENVF"
finish $STATUS
