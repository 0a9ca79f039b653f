#!/usr/bin/env bash
# restart.sh NAME [DOWN_SECONDS]: stop one running component of the local cluster (etcd,
# kube-apiserver, kubelet, ...), keep it down DOWN_SECONDS (default 0), and start it again with
# the command line it ran with, read from /proc; returns once it answers again. For the fault
# tests (tests/e2e/test_cluster_control_plane.py).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

name=${1:?usage: restart.sh NAME [DOWN_SECONDS]}
down=${2:-0}
running "$name" || die "$name is not running (make cluster-up)"
mapfile -d '' argv <"/proc/$(cat "$PIDS/$name.pid")/cmdline"
[ "${#argv[@]}" -gt 0 ] || die "could not read the command line of $name"
stop "$name"
sleep "$down"
start "$name" "${argv[@]}"
case $name in
  etcd) wait_for etcd 60 curl -sf http://127.0.0.1:2381/health ;;
  kube-apiserver) wait_for kube-apiserver 120 kc get --raw /readyz ;;
  *) sleep 2; running "$name" || die "$name exited after its restart; read $LOGS/$name.log" ;;
esac
say "$name restarted"
