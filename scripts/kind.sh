#!/usr/bin/env bash
# The local cluster end to end (docs/kind.md walks through it):
#
#   scripts/kind.sh kind-up     create a kind cluster (kind-config.yaml: 1 control plane, 2 workers)
#   scripts/kind.sh images      build the operator image and the CPU trainer image
#   scripts/kind.sh kind-e2e    load the images, helm install the chart, run
#                               examples/tiny-chat-k8s.yaml to Succeeded, show status and metrics
#   scripts/kind.sh kind-down   delete the cluster
#
# The Makefile maps `make kind-up images kind-e2e kind-down` here. Several targets may be given
# in one call. Settings (environment variables, defaults in brackets):
#   KIND_CLUSTER_NAME [finetune]       KIND_NODE_IMAGE [kind's default]
#   CONTAINER_ENGINE  [docker, else podman]
#   OPERATOR_IMAGE    [finetune-operator:dev]   TRAINER_IMAGE [finetune-trainer:dev-cpu]
#   RELEASE [finetune-operator]  NAMESPACE [finetune-system]  JOB_NAMESPACE [default]
#   JOB_FILE [examples/tiny-chat-k8s.yaml]  E2E_TIMEOUT [1800] seconds for the job to succeed
#   VOLUME_FILE [examples/volumes/tiny-chat-output.yaml; empty: none] the job's output claim
#   E2E_POLL [10] seconds between status polls
#   CPU_BASE_IMAGE [python:3.12-slim-bookworm]  CPU_TORCH_INDEX [PyTorch's CPU index]
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

KIND_VERSION=v0.33.0
CLUSTER=${KIND_CLUSTER_NAME:-finetune}
OPERATOR_IMAGE=${OPERATOR_IMAGE:-finetune-operator:dev}
TRAINER_IMAGE=${TRAINER_IMAGE:-finetune-trainer:dev-cpu}
RELEASE=${RELEASE:-finetune-operator}
NAMESPACE=${NAMESPACE:-finetune-system}
JOB_NAMESPACE=${JOB_NAMESPACE:-default}
JOB_FILE=${JOB_FILE:-examples/tiny-chat-k8s.yaml}
# The job's output claim, applied first (kind's default StorageClass provisions it).
VOLUME_FILE=${VOLUME_FILE-examples/volumes/tiny-chat-output.yaml}
E2E_TIMEOUT=${E2E_TIMEOUT:-1800}
E2E_POLL=${E2E_POLL:-10}
CPU_BASE_IMAGE=${CPU_BASE_IMAGE:-python:3.12-slim-bookworm}
CPU_TORCH_INDEX=${CPU_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}
CHART=charts/finetune-operator
VENV_BIN=${VENV_BIN:-$ROOT/.venv/bin}
# Tools already on PATH win; .venv/bin (helm, kubectl, kind from `make tools`) is the fallback.
export PATH="$PATH:$VENV_BIN"

log() { printf '\n==> %s\n' "$*" >&2; }
die() { printf 'kind.sh: %s\n' "$*" >&2; exit 1; }

# ------------------------------------------------------------------------------ tools

engine() {
  if [ -n "${CONTAINER_ENGINE:-}" ]; then echo "$CONTAINER_ENGINE"; return; fi
  local e
  for e in docker podman; do
    if command -v "$e" >/dev/null 2>&1 && "$e" info >/dev/null 2>&1; then echo "$e"; return; fi
  done
  die "no running container engine: install and start Docker (or Podman), then retry"
}

need_engine() {
  ENGINE=$(engine)
  if [ "$ENGINE" = podman ]; then export KIND_EXPERIMENTAL_PROVIDER=podman; fi
}

need_kind() {
  if command -v kind >/dev/null 2>&1; then return; fi
  if command -v go >/dev/null 2>&1; then
    log "installing kind $KIND_VERSION into .venv/bin with go install"
    mkdir -p "$VENV_BIN"
    GOBIN="$VENV_BIN" go install "sigs.k8s.io/kind@$KIND_VERSION"
    return
  fi
  die "kind not found. Install it (https://kind.sigs.k8s.io/docs/user/quick-start/#installation),
e.g. with Go: go install sigs.k8s.io/kind@$KIND_VERSION, or your package manager; then retry."
}

need_helm_kubectl() {
  if command -v helm >/dev/null 2>&1 && command -v kubectl >/dev/null 2>&1; then return; fi
  [ -x "$VENV_BIN/python" ] || die "no .venv: run 'make venv' first"
  bash scripts/install-tools.sh .venv
}

cluster_exists() { kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; }

image_exists() { "$ENGINE" image inspect "$1" >/dev/null 2>&1; }

# ------------------------------------------------------------------------------ targets

kind_up() {
  need_engine
  need_kind
  if cluster_exists; then
    log "kind cluster '$CLUSTER' already exists"
  else
    log "creating kind cluster '$CLUSTER' (1 control plane, 2 workers)"
    kind create cluster --name "$CLUSTER" --config kind-config.yaml \
      ${KIND_NODE_IMAGE:+--image "$KIND_NODE_IMAGE"} --wait 180s
  fi
  need_helm_kubectl
  kubectl config use-context "kind-$CLUSTER" >/dev/null
  kubectl get nodes -o wide
}

images() {
  need_engine
  log "building $OPERATOR_IMAGE (operator/Dockerfile)"
  "$ENGINE" build -f operator/Dockerfile -t "$OPERATOR_IMAGE" .
  log "building $TRAINER_IMAGE (trainer_image/Dockerfile, CPU variant)"
  # A laptop reaches PyTorch's CPU index: a few hundred MB of torch instead of several GB.
  "$ENGINE" build -f trainer_image/Dockerfile --build-arg VARIANT=cpu \
    --build-arg BASE_IMAGE="$CPU_BASE_IMAGE" --build-arg TORCH_INDEX_URL="$CPU_TORCH_INDEX" \
    -t "$TRAINER_IMAGE" .
}

load_images() {
  local image archive
  for image in "$OPERATOR_IMAGE" "$TRAINER_IMAGE"; do
    image_exists "$image" || die "image $image not built: run 'make images'"
    log "loading $image into the kind nodes"
    # An archive works the same for Docker and Podman.
    archive=$(mktemp "${TMPDIR:-/tmp}/kind-image.XXXXXX.tar")
    "$ENGINE" save -o "$archive" "$image"
    kind load image-archive --name "$CLUSTER" "$archive"
    rm -f "$archive"
  done
}

split_image() {  # repository and tag of an image reference without a digest
  local ref=$1
  IMAGE_REPO=${ref%:*}
  IMAGE_TAG=${ref##*:}
  if [ "$IMAGE_REPO" = "$ref" ] || [[ "$IMAGE_TAG" == */* ]]; then
    IMAGE_REPO=$ref
    IMAGE_TAG=latest
  fi
}

install_chart() {
  local op_repo op_tag tr_repo tr_tag
  split_image "$OPERATOR_IMAGE"; op_repo=$IMAGE_REPO; op_tag=$IMAGE_TAG
  split_image "$TRAINER_IMAGE"; tr_repo=$IMAGE_REPO; tr_tag=$IMAGE_TAG
  # Helm installs CRDs only on first install and never upgrades them: apply the current one.
  log "applying the FineTuneJob CRD"
  kubectl apply --server-side --force-conflicts -f crds/finetunejob.yaml
  kubectl wait --for=condition=Established --timeout=60s crd/finetunejobs.finetune.dev
  log "helm upgrade --install $RELEASE ($CHART) in $NAMESPACE"
  helm upgrade --install "$RELEASE" "$CHART" \
    --namespace "$NAMESPACE" --create-namespace \
    -f "$CHART/ci/kind-values.yaml" \
    --set "image.repository=$op_repo" --set "image.tag=$op_tag" \
    --set "trainer.image.repository=$tr_repo" --set "trainer.image.tag=$tr_tag" \
    --wait --timeout 5m
  # A chart upgrade with the same image tag does not restart the pod: pick up a rebuilt image.
  kubectl -n "$NAMESPACE" rollout restart "deployment/$(operator_deployment)"
  kubectl -n "$NAMESPACE" rollout status "deployment/$(operator_deployment)" --timeout=180s
}

operator_deployment() {
  kubectl -n "$NAMESPACE" get deployment \
    -l "app.kubernetes.io/instance=$RELEASE,app.kubernetes.io/component=operator" \
    -o jsonpath='{.items[0].metadata.name}'
}

phase_of() {
  kubectl -n "$JOB_NAMESPACE" get finetunejob "$1" -o jsonpath='{.status.phase}' 2>/dev/null || true
}

rank0_metrics() {  # Prometheus text of rank 0 of job $1, through the API server's pod proxy
  local pod
  pod=$(kubectl -n "$JOB_NAMESPACE" get pods \
    -l "finetune.dev/job=$1,batch.kubernetes.io/job-completion-index=0" \
    --field-selector=status.phase=Running -o jsonpath='{.items[0].metadata.name}' 2>/dev/null) \
    || return 1
  [ -n "$pod" ] || return 1
  kubectl get --raw "/api/v1/namespaces/$JOB_NAMESPACE/pods/http:$pod:9400/proxy/metrics" \
    2>/dev/null | grep -E '^finetune_(train|eval)_' || return 1
}

show_failure() {
  local job=$1
  kubectl -n "$JOB_NAMESPACE" describe finetunejob "$job" || true
  kubectl -n "$JOB_NAMESPACE" get pods -l "finetune.dev/job=$job" -o wide || true
  kubectl -n "$JOB_NAMESPACE" logs -l "finetune.dev/job=$job" --tail=60 --prefix || true
  kubectl -n "$NAMESPACE" logs "deployment/$(operator_deployment)" --tail=60 || true
}

kind_e2e() {
  need_engine
  need_kind
  need_helm_kubectl
  [ -f "$JOB_FILE" ] || die "$JOB_FILE not found"
  cluster_exists || kind_up
  kubectl config use-context "kind-$CLUSTER" >/dev/null
  if ! image_exists "$OPERATOR_IMAGE" || ! image_exists "$TRAINER_IMAGE"; then images; fi
  load_images
  install_chart

  local job
  job=$(kubectl create --dry-run=client -o jsonpath='{.metadata.name}' -f "$JOB_FILE")
  log "submitting $JOB_FILE (FineTuneJob $job) in namespace $JOB_NAMESPACE"
  kubectl -n "$JOB_NAMESPACE" delete finetunejob "$job" --ignore-not-found --wait=true
  if [ -n "$VOLUME_FILE" ]; then kubectl -n "$JOB_NAMESPACE" apply -f "$VOLUME_FILE"; fi
  kubectl -n "$JOB_NAMESPACE" apply -f "$JOB_FILE"

  local start phase sample="" last=""
  start=$(date +%s)
  while :; do
    phase=$(phase_of "$job")
    if [ "$phase" != "$last" ]; then log "phase: ${phase:-<none yet>}"; last=$phase; fi
    case "$phase" in
      Succeeded) break ;;
      Failed) show_failure "$job"; die "FineTuneJob $job failed" ;;
      Running) [ -n "$sample" ] || sample=$(rank0_metrics "$job" || true) ;;
    esac
    if [ $(( $(date +%s) - start )) -gt "$E2E_TIMEOUT" ]; then
      show_failure "$job"
      die "FineTuneJob $job did not succeed within ${E2E_TIMEOUT}s"
    fi
    kubectl -n "$JOB_NAMESPACE" get finetunejob "$job" --no-headers 2>/dev/null || true
    sleep "$E2E_POLL"
  done

  log "FineTuneJob $job succeeded in $(( $(date +%s) - start ))s"
  kubectl -n "$JOB_NAMESPACE" get ftj -o wide
  kubectl -n "$JOB_NAMESPACE" get pods -l "finetune.dev/job=$job" -o wide
  if [ -n "$sample" ]; then
    log "metrics sample from rank 0 while it trained (port 9400)"
    printf '%s\n' "$sample"
  fi
  log "operator metrics (service/$(operator_deployment)-metrics)"
  kubectl get --raw \
    "/api/v1/namespaces/$NAMESPACE/services/http:$(operator_deployment)-metrics:metrics/proxy/metrics" \
    | grep -E '^finetune_(operator|job)_' | grep -v '_created' | head -40
}

kind_down() {
  need_engine
  need_kind
  if cluster_exists; then
    log "deleting kind cluster '$CLUSTER'"
    kind delete cluster --name "$CLUSTER"
  else
    log "no kind cluster '$CLUSTER'"
  fi
}

[ $# -gt 0 ] || die "usage: $0 kind-up|images|kind-e2e|kind-down ..."
for target in "$@"; do
  case "$target" in
    kind-up) kind_up ;;
    images) images ;;
    kind-e2e) kind_e2e ;;
    kind-down) kind_down ;;
    *) die "unknown target '$target' (kind-up, images, kind-e2e, kind-down)" ;;
  esac
done
