#!/usr/bin/env bash
# The images of the local cluster, built with Docker from the project's own Dockerfiles on a
# locally made base (no registry can be pulled from), then imported into the cluster's
# containerd.
#   images.sh infra          the pod sandbox image (pause), into Docker
#   images.sh import-infra   ... and into containerd
#   images.sh build          the operator image and the CPU trainer image
#   images.sh import         both into containerd (skipped when containerd has that build),
#                            then a pod starts each (imported again if it cannot)
# Settings: OPERATOR_IMAGE [finetune-operator:dev], TRAINER_IMAGE [finetune-trainer:dev-cpu],
#   BASE_IMAGE [finetune-base:bookworm], EXTRA_CA_FILE [the CAs this machine trusts beyond
#   Debian's own, found in /etc/ssl/certs/ca-certificates.crt].
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
OPERATOR_IMAGE=${OPERATOR_IMAGE:-finetune-operator:dev}
TRAINER_IMAGE=${TRAINER_IMAGE:-finetune-trainer:dev-cpu}
BASE_IMAGE=${BASE_IMAGE:-finetune-base:bookworm}

docker_up() {
  docker info >/dev/null 2>&1 && return
  command -v dockerd >/dev/null || die "Docker's engine is missing (apt-get install docker.io)"
  say "starting dockerd (log: /var/log/finetune-dockerd.log)"
  setsid dockerd >>/var/log/finetune-dockerd.log 2>&1 < /dev/null &
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && return; sleep 0.5; done
  die "dockerd did not start; read /var/log/finetune-dockerd.log"
}

# The certificates this machine trusts that a stock Debian image does not (a TLS-intercepting
# proxy's CA, here), as PEM text for the Dockerfiles' EXTRA_CA_CERTS.
extra_cas() {
  if [ -n "${EXTRA_CA_FILE:-}" ]; then cat "$EXTRA_CA_FILE"; return; fi
  python3 - <<'PY'
import glob, re
pem = re.compile(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", re.S)
stock = set()
for path in glob.glob("/usr/share/ca-certificates/**/*.crt", recursive=True):
    stock.update(pem.findall(open(path).read().replace("\r", "")))
bundle = open("/etc/ssl/certs/ca-certificates.crt").read()
print("\n".join(p for p in pem.findall(bundle) if p not in stock))
PY
}

ctr_k8s() { ctr --address "$CONTAINERD_SOCK" -n k8s.io "$@"; }

# Each build of these images replaces the last under the same tag; left behind, the old ones
# fill the disk in a few rebuilds (6 GB each for the trainer).
prune_old_builds() {
  local title
  for title in finetune-operator finetune-trainer; do
    docker image prune -f --filter "label=org.opencontainers.image.title=$title" >/dev/null
  done
}

# What containerd keeps of earlier imports: image references by ID that are not the current
# build of any of the cluster's images. Its garbage collector then frees their content.
prune_old_imports() {
  local keep ref
  keep=$(for i in "$PAUSE_IMAGE" "$OPERATOR_IMAGE" "$TRAINER_IMAGE"; do
           docker image inspect -f '{{.Id}}' "$i" 2>/dev/null; done)
  for ref in $(ctr_k8s images ls -q | grep '^sha256:' || true); do
    grep -qx "$ref" <<<"$keep" || ctr_k8s images rm "$ref" >/dev/null 2>&1 || true
  done
}

# import_image IMAGE: docker save | ctr import, unless containerd already has this build.
import_image() {
  local image=$1 id stamp
  id=$(docker image inspect -f '{{.Id}}' "$image")
  stamp=$CONTAINERD_ROOT/.imported/${image//[:\/]/_}
  if [ "$(cat "$stamp" 2>/dev/null)" = "$id" ] && ctr_k8s images ls -q | grep -qx "docker.io/library/$image\|$image"; then
    return
  fi
  say "importing $image into the cluster's containerd"
  # containerd's garbage collector can remove a layer snapshot that an import has just found and
  # means to build on ("parent snapshot ... does not exist", containerd/containerd#3787): it
  # runs soon after containerd starts and after images are removed. The next attempt finds the
  # layer gone and unpacks it again.
  local attempt
  for attempt in 1 2 3; do
    docker save "$image" | ctr_k8s images import --no-unpack=false - >/dev/null && break
    [ "$attempt" = 3 ] && die "importing $image into containerd failed 3 times (above)"
    say "importing $image failed (attempt $attempt of 3); trying again"
    sleep 2
  done
  mkdir -p "$(dirname "$stamp")"
  echo "$id" >"$stamp"
}

# check_image IMAGE CMD...: a pod runs CMD in IMAGE, as the kubelet would start it. A cached
# containerd store can list an image whose content it lost; then import it once more.
check_image() {
  local image=$1; shift
  if run_check_pod "$image" "$@"; then return; fi
  say "$image does not start from the cluster's containerd; importing it again"
  ctr_k8s images rm "docker.io/library/$image" >/dev/null 2>&1 || true
  rm -f "$CONTAINERD_ROOT/.imported/${image//[:\/]/_}"
  import_image "$image"
  run_check_pod "$image" "$@" || die "$image does not start in the cluster (described above)"
}

run_check_pod() {
  local image=$1 pod=image-check phase=""; shift
  kc -n default delete pod "$pod" --ignore-not-found >/dev/null
  kc -n default run "$pod" --image "$image" --image-pull-policy Never --restart Never \
    --command -- "$@" >/dev/null
  local deadline=$(( $(date +%s) + 180 ))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    phase=$(kc -n default get pod "$pod" -o jsonpath='{.status.phase}')
    case $phase in Succeeded|Failed) break ;; esac
    sleep 1
  done
  if [ "$phase" != Succeeded ]; then
    kc -n default describe pod "$pod" | tail -n 25 >&2 || true
    kc -n default logs "$pod" --tail 20 >&2 || true
  fi
  kc -n default delete pod "$pod" --wait=false >/dev/null
  [ "$phase" = Succeeded ]
}

# build IMAGE DOCKERFILE [ARGS...]: its output goes to a log, shown when the build fails.
build() {
  local image=$1 file=$2 log; shift 2
  log=$CLUSTER_CACHE/logs/build-${image//[:\/]/_}.log
  mkdir -p "$(dirname "$log")"
  say "building $image ($file; log: $log)"
  if ! docker build -f "$file" --build-arg BASE_IMAGE="$BASE_IMAGE" \
      --build-arg EXTRA_CA_CERTS="$cas" -t "$image" "$@" . >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    die "building $image failed; read $log"
  fi
}

case ${1:-} in
  infra)
    docker_up
    docker image inspect "$PAUSE_IMAGE" >/dev/null 2>&1 && exit 0
    tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
    cp "$CLUSTER_BIN/pause" "$tmp/pause"
    tar -C "$tmp" -c pause | docker import --change 'ENTRYPOINT ["/pause"]' - "$PAUSE_IMAGE" >/dev/null
    say "made $PAUSE_IMAGE from Kubernetes' pause.c"
    ;;
  import-infra)
    docker_up
    import_image "$PAUSE_IMAGE"
    ;;
  build)
    docker_up
    bash "$HERE/base-image.sh" "$BASE_IMAGE"
    cas=$(extra_cas)
    cd "$ROOT"
    need_disk 16 /var/lib/docker
    build "$OPERATOR_IMAGE" operator/Dockerfile
    # The first trainer build takes minutes (torch from PyPI); later ones reuse the layers.
    build "$TRAINER_IMAGE" trainer_image/Dockerfile --build-arg VARIANT=cpu
    prune_old_builds
    ;;
  import)
    docker_up
    need_disk 8 "$CONTAINERD_ROOT"
    # Every pod's sandbox needs it: make sure containerd still has it.
    import_image "$PAUSE_IMAGE"
    import_image "$OPERATOR_IMAGE"
    import_image "$TRAINER_IMAGE"
    prune_old_imports
    check_image "$OPERATOR_IMAGE" finetune --version
    check_image "$TRAINER_IMAGE" python -c "import finetune_trainer, torch, trl"
    say "both images start in the cluster"
    ;;
  *) die "usage: images.sh infra|import-infra|build|import" ;;
esac
