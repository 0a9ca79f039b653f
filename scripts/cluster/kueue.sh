#!/usr/bin/env bash
# kueue.sh up|down: Kueue on the running local cluster, for tests/e2e/test_cluster_kueue.py.
#   up    builds the manager (build-kueue.sh, cached), applies Kueue's CRDs and starts the
#         manager as a process on this machine, with the cluster's admin kubeconfig, like the
#         control plane; returns once its readyz probe answers. Does nothing when it runs.
#   down  stops it (down.sh runs it too). The CRDs stay: nothing reads them without Kueue.
# It manages only Jobs with the kueue.x-k8s.io/queue-name label (batch/job integration,
# manageJobsWithoutQueueName false), so the other tests' Jobs never meet it. No webhook
# configuration is registered with the API server (docs/cluster.md, "Kueue").
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

KUEUE_STATE=$CLUSTER_STATE/kueue
# Loopback only; Kueue's defaults (8081, 9443) moved out of the way of anything else here.
KUEUE_HEALTH=127.0.0.1:18081
KUEUE_WEBHOOK_PORT=19443
# Kueue without its internal cert management reads the metrics server's certificate from
# this fixed path (cmd/kueue/main.go), even with the metrics server off.
KUEUE_METRICS_CERTS=/etc/kueue/metrics/certs

# self_signed DIR: tls.crt and tls.key for 127.0.0.1, as controller-runtime's servers want.
self_signed() {
  mkdir -p "$1"
  openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=kueue.finetune-cluster" \
    -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" \
    -keyout "$1/tls.key" -out "$1/tls.crt" 2>/dev/null
}

write_config() {
  cat >"$KUEUE_STATE/config.yaml" <<EOF
apiVersion: config.kueue.x-k8s.io/v1beta2
kind: Configuration
namespace: kueue-system
health:
  healthProbeBindAddress: $KUEUE_HEALTH
metrics:
  bindAddress: "0"   # off: the tests read Kueue's objects, not its metrics
webhook:
  host: 127.0.0.1
  port: $KUEUE_WEBHOOK_PORT
  certDir: $KUEUE_STATE/webhook-certs
leaderElection:
  leaderElect: false
internalCertManagement:
  enable: false
manageJobsWithoutQueueName: false
integrations:
  frameworks:
  - batch/job
featureGates:
  # Its on-demand visibility API is an aggregated API server the cluster would have to
  # register; nothing here reads it.
  VisibilityOnDemand: false
EOF
}

up() {
  if [ ! -f "$CLUSTER_KUBECONFIG" ] || ! kc get --raw /readyz >/dev/null 2>&1; then
    die "no cluster at $CLUSTER_KUBECONFIG: make cluster-up first"
  fi
  if running kueue; then say "kueue already running"; return; fi
  bash "$HERE/build-kueue.sh"
  local src
  src=$(cd "$HERE/kueue" && GOFLAGS=-mod=mod go list -m -f '{{.Dir}}' sigs.k8s.io/kueue)
  say "applying Kueue $KUEUE_VERSION's CRDs"
  # Server-side: the Workload CRD is too big for client-side apply's annotation.
  kc apply --server-side --force-conflicts -f "$src/config/components/crd/bases" >/dev/null
  kc wait --for condition=Established --timeout=60s -f "$src/config/components/crd/bases" \
    >/dev/null
  mkdir -p "$KUEUE_STATE"
  if [ ! -e "$KUEUE_METRICS_CERTS" ]; then
    self_signed "$KUEUE_METRICS_CERTS"
    echo "$KUEUE_METRICS_CERTS" >"$KUEUE_STATE/made-metrics-certs"
  elif [ ! -f "$KUEUE_STATE/made-metrics-certs" ]; then
    die "$KUEUE_METRICS_CERTS exists and is not this cluster's: move it away first"
  fi
  self_signed "$KUEUE_STATE/webhook-certs"
  write_config
  start kueue env KUBECONFIG="$CLUSTER_KUBECONFIG" "$KUEUE_BIN/kueue" \
    --config "$KUEUE_STATE/config.yaml" --zap-log-level=info
  wait_for kueue 180 curl -fsS "http://$KUEUE_HEALTH/readyz"
  say "kueue $KUEUE_VERSION ready (log: $LOGS/kueue.log)"
}

down() {
  if running kueue; then say "stopping kueue"; fi
  stop kueue
  if [ -f "$KUEUE_STATE/made-metrics-certs" ]; then
    rm -rf "$KUEUE_METRICS_CERTS"
    rmdir /etc/kueue/metrics /etc/kueue 2>/dev/null || true
    rm -f "$KUEUE_STATE/made-metrics-certs"
  fi
}

[ "$(id -u)" = 0 ] || die "needs root"
case "${1:-}" in
  up) up ;;
  down) down ;;
  *) die "usage: kueue.sh up|down" ;;
esac
