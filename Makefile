# VoiceHive developer commands. Every target sets up what it needs on a fresh machine.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
APT_PACKAGES := redis-server redis-tools redis-sentinel espeak-ng sox prometheus nginx libnginx-mod-stream

.PHONY: help
help: ## list the commands
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

# --- set-up -------------------------------------------------------------------------------
.PHONY: system-deps
system-deps: ## install the Debian packages tests and demo need (redis-server, redis-sentinel, espeak-ng, sox, promtool, nginx)
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get install -y -q $$missing >/dev/null 2>&1 || \
	  { $$SUDO apt-get update -q >/dev/null && $$SUDO apt-get install -y -q $$missing >/dev/null; }; \
	fi

# Reinstall when dependencies change or a component package appears (editable finder maps packages).
$(STAMP): pyproject.toml $(wildcard */voicehive_*/__init__.py)
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python >= 3.11 is required"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

.PHONY: venv
venv: $(STAMP) ## create the virtual environment and install VoiceHive with its dev tools

# --- quality ------------------------------------------------------------------------------
.PHONY: lint
lint: venv ## ruff and mypy
	$(BIN)/ruff check .
	$(BIN)/mypy

.PHONY: crds
crds: venv ## regenerate crds/ from the pydantic models
	$(BIN)/python -m voicehive.api.crd crds

.PHONY: test
test: system-deps venv ## the whole suite: lint, type-check, tests (starts what it needs itself)
	$(BIN)/ruff check .
	$(BIN)/mypy
	@# The rig (real kube-apiserver, livekit-server) when it builds; KMock and fakes otherwise.
	rig/with-rig.sh $(BIN)/pytest $(PYTEST_ARGS)

# --- demo (owner: worker local engines) ---------------------------------------------------
# A whole simulated booking call through the real AgentSession on the embedded local engines
# (pocketsphinx, eSpeak NG, the hotel policy): no keys, no network. Reply audio in .cache/demo/.
# tests/worker_engines/test_demo.py runs this same target (with DEMO_ARGS=--json) in `make test`.
DEMO_LINE ?= examples/hotelline.yaml
DEMO_ARGS ?=
.PHONY: demo
demo: system-deps venv ## simulated phone call to the example hotel (local engines, no cloud keys)
	$(BIN)/voicehive call --line $(DEMO_LINE) --out .cache/demo $(DEMO_ARGS) \
	  --say "Hello, do you have a double room available from the 12th of March for two nights?" \
	  --say "Yes please, book it. My name is Anna Schmidt." \
	  --say "What time is check out?" \
	  --say "Are pets allowed?" \
	  --say "Thank you, goodbye."

# --- benchmarks ---------------------------------------------------------------------------
.PHONY: bench
bench: ## run every benchmark; JSON results land in bench/results/

# orchestrator webhooks (owner: orchestrator): events/s, p50/p99 at concurrency 64, Redis ceiling
.PHONY: bench-webhooks
bench: bench-webhooks
bench-webhooks: system-deps venv ## webhook events/s and latency vs redis-benchmark -> bench/results/webhooks.json
	$(BIN)/python bench/webhooks.py

# worker pipeline (owner: worker): ~5 min of real-time calls, fakes with fixed latencies
.PHONY: bench-pipeline
bench: bench-pipeline
bench-pipeline: system-deps venv ## voice-to-voice latency, our worker vs a bare AgentSession -> bench/results/pipeline.json
	$(BIN)/python bench/pipeline.py

# operator (owner: operator): ~2 min, KMock + LiveKit fake in-process, operator as its own process
.PHONY: bench-operator
bench: bench-operator
bench-operator: venv ## VoiceSession->pod bind latency at 20/s, reconcile of 200 HotelLines, RSS -> bench/results/operator.json
	$(BIN)/python bench/operator.py

# --- local control plane (rig/, docs/rig.md) -------------------------------------------------
.PHONY: rig-build rig rig-down helm-lint
rig-build: ## build kube-apiserver/controller-manager, etcd, livekit-server, helm (cached in ~/.cache/voicehive-rig)
	rig/build.sh

rig: system-deps ## build once (cached) and start etcd, kube-apiserver, controller-manager, livekit-server on 127.0.0.1
	rig/up.sh --build

rig-down: ## stop the local control plane (rig/down.sh --purge also forgets its certs and data)
	rig/down.sh

helm-lint: ## helm lint --strict and render the chart (helm built into the rig cache if needed)
	rig/build.sh helm
	HELM=$$(. rig/lib.sh && rig_bin helm helm); \
	$$HELM lint --strict charts/voicehive && $$HELM template voicehive charts/voicehive --namespace voicehive >/dev/null

# --- the installed product on the rig (rig/cluster.py, docs/rig.md) ----------------------------
.PHONY: cluster-up cluster-down
cluster-up: system-deps venv ## the rig + node agent (kubelet stand-in) + `helm install` of the chart + the example HotelLine, all Ready
	$(BIN)/python -m rig.cluster up

cluster-down: ## uninstall the chart and stop the node agent, the fakes and the call-state Redis (the rig stays up)
	$(BIN)/python -m rig.cluster down

# --- a phone call through the installed product (tests/e2e, issue 10) --------------------------
# The SIP gateway simulator (tests/e2e/sip_gateway_sim.py) dials the example line on `make cluster-up`;
# livekit-server's signed webhooks reach the orchestrator's Service. Root (the node agent). `make test`
# runs the same tests when the rig is up.
.PHONY: e2e bench-e2e
e2e: system-deps venv ## a hotel call through the installed chart, every step asserted (cluster brought up if needed)
	rig/with-rig.sh env VOICEHIVE_RIG=1 $(BIN)/pytest -p no:cacheprovider tests/e2e $(PYTEST_ARGS)

BENCH_E2E_ARGS ?= --concurrent 4 --empty-pool 3 --faults
bench-e2e: system-deps venv ## pickup, voice-to-voice, calls at once, empty pool, faults through the installed chart -> bench/results/e2e.json
	$(BIN)/python -m rig.cluster up
	$(BIN)/python bench/e2e.py $(BENCH_E2E_ARGS)

.PHONY: manifests
manifests: ## re-render manifests/base/voicehive.yaml from the Helm chart (Kustomize base for Argo CD)
	rig/build.sh helm
	rig/render-manifests.sh

.PHONY: argocd
argocd: venv ## re-render the Argo CD install snippets (manifests/argocd/*.yaml) from the health checks' Lua
	$(BIN)/python rig/render-argocd.py

# --- kind (machines with Docker; not the project sandbox) ----------------------------------
.PHONY: kind-up kind-down
kind-up: ## kind cluster (EU region/zone labels, tainted GPU-pool node), build + kind load images, install chart, apply the example
	kind/up.sh

kind-down: ## delete the kind cluster
	kind delete cluster --name $${KIND_CLUSTER:-voicehive}

.PHONY: test-rig
.PHONY: test-nightly
test-nightly: system-deps venv ## generated HotelLines (issue 18) at nightly volume: 2000 text calls, 20 audio calls
	VOICEHIVE_HYPOTHESIS_EXAMPLES=2000 VOICEHIVE_RIG=0 $(BIN)/pytest -p no:cacheprovider --hypothesis-show-statistics \
		tests/worker_engines/test_every_line_takes_a_call.py

test-rig: system-deps venv ## tests that need the real control plane (builds and starts the rig, fails if it cannot)
	VOICEHIVE_RIG=1 rig/with-rig.sh $(BIN)/pytest $(PYTEST_ARGS) tests/rig tests/delivery tests/smoke
