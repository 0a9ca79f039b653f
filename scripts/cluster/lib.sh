# shellcheck shell=bash
# Shared by the cluster scripts: logging, processes started in the background, and waiting.
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$HERE/versions.sh"
LOGS=$CLUSTER_STATE/logs
PIDS=$CLUSTER_STATE/pids

say() { printf 'cluster: %s\n' "$*" >&2; }
die() { printf 'cluster: %s\n' "$*" >&2; exit 1; }

# start NAME CMD...: runs CMD in its own session, its output in $LOGS/NAME.log.
start() {
  local name=$1; shift
  mkdir -p "$LOGS" "$PIDS"
  say "starting $name (log: $LOGS/$name.log)"
  setsid "$@" >>"$LOGS/$name.log" 2>&1 < /dev/null &
  echo $! >"$PIDS/$name.pid"
}

running() { [ -f "$PIDS/$1.pid" ] && kill -0 "$(cat "$PIDS/$1.pid")" 2>/dev/null; }

# wait_for NAME SECONDS CMD...: polls CMD until it succeeds; names NAME and its log on failure.
wait_for() {
  local name=$1 secs=$2; shift 2
  local deadline=$(( $(date +%s) + secs ))
  until "$@" >/dev/null 2>&1; do
    if ! running "$name"; then
      tail -n 20 "$LOGS/$name.log" >&2 || true
      die "$name exited during start-up; read $LOGS/$name.log"
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      tail -n 20 "$LOGS/$name.log" >&2 || true
      die "$name did not become ready within ${secs}s; read $LOGS/$name.log"
    fi
    sleep 0.5
  done
}

ROOT=$(cd "$HERE/../.." && pwd)
# The project's kubectl (`make tools`), else the one on PATH.
KUBECTL=${KUBECTL:-$ROOT/.venv/bin/kubectl}
[ -x "$KUBECTL" ] || KUBECTL=$(command -v kubectl || echo kubectl)
kc() { "$KUBECTL" --kubeconfig "$CLUSTER_KUBECONFIG" "$@"; }

# need_disk GIB DIR: fails, saying what to do, when DIR's filesystem has less than GIB free.
need_disk() {
  local want=$1 dir=$2 free
  mkdir -p "$dir"
  free=$(( $(df -Pk "$dir" | awk 'NR==2 {print $4}') / 1024 / 1024 ))
  [ "$free" -ge "$want" ] && return
  die "only ${free} GiB free under $dir, and building and importing the images needs about ${want} GiB: free some (docker image prune; make cluster-down; rm -rf /var/cache/finetune-cluster/containerd)"
}

stop() {
  local name=$1 pid
  [ -f "$PIDS/$name.pid" ] || return 0
  pid=$(cat "$PIDS/$name.pid")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  rm -f "$PIDS/$name.pid"
}

# unmount_under DIR: pod volumes (tmpfs, bind mounts) the kubelet left below DIR, deepest first.
unmount_under() {
  grep " $1/" /proc/mounts 2>/dev/null | awk '{print $2}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
}
