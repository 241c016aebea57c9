#!/usr/bin/env bash
# `make kind-up`: a kind cluster with EU region/zone labels and a tainted GPU-pool node, the
# three images built and loaded, the chart installed, the example HotelLine applied.
# Needs Docker, kind, kubectl and helm. It does not run in the project's sandbox (no Docker).
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null || { echo "kind-up needs $tool on PATH" >&2; exit 1; }
done
CLUSTER=${KIND_CLUSTER:-voicehive}
for component in operator orchestrator worker; do
  docker build --target "$component" -t "ghcr.io/voicehive/$component:dev" .
done
kind get clusters | grep -qx "$CLUSTER" || kind create cluster --name "$CLUSTER" --config kind/kind-config.yaml
for component in operator orchestrator worker; do
  kind load docker-image --name "$CLUSTER" "ghcr.io/voicehive/$component:dev"
done
kubectl create namespace voicehive --dry-run=client -o yaml | kubectl apply -f -
kubectl create namespace hotels --dry-run=client -o yaml | kubectl apply -f -
kubectl label namespace voicehive hotels pod-security.kubernetes.io/enforce=restricted --overwrite
key() { head -c32 /dev/urandom | base64; }
for ns in voicehive hotels; do
  kubectl -n "$ns" get secret voicehive-keys >/dev/null 2>&1 || kubectl -n "$ns" create secret generic voicehive-keys \
    --from-literal=pii-key="$(key)" --from-literal=transcript-key="$(key)" --from-literal=agent-token="$(key)"
  kubectl -n "$ns" get secret voicehive-livekit >/dev/null 2>&1 || kubectl -n "$ns" create secret generic voicehive-livekit \
    --from-literal=api-key=devkey --from-literal=api-secret="$(key)"
done
kubectl apply -f kind/redis.yaml
helm upgrade --install voicehive charts/voicehive --namespace voicehive -f kind/values-kind.yaml --wait --timeout 5m
# The example line (its worker image is the one loaded above; replace the placeholder keys to take real calls).
sed 's#ghcr.io/voicehive/worker:0.1.0#ghcr.io/voicehive/worker:dev#' examples/hotelline.yaml | kubectl apply -n hotels -f -
kubectl -n hotels get hotellines
