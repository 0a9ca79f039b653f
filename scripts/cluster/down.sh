#!/usr/bin/env bash
# `make cluster-down`: stops every part of the local cluster and removes its state (etcd's
# data, certificates, pods' volumes and logs). The built binaries and the images stay cached.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
[ "$(id -u)" = 0 ] || die "needs root"
# Kueue first (when a test left it running): it talks to the API server.
bash "$HERE/kueue.sh" down
for c in kube-proxy kubelet coredns kube-scheduler kube-controller-manager kube-apiserver etcd; do
  if running "$c"; then say "stopping $c"; fi
  stop "$c"
done
# Every pod's containers, then containerd itself.
if running containerd; then
  say "removing pod containers"
  ns=(--address "$CONTAINERD_SOCK" -n k8s.io)
  for t in $(ctr "${ns[@]}" tasks ls -q 2>/dev/null); do ctr "${ns[@]}" tasks kill -s KILL "$t" 2>/dev/null || true; done
  sleep 1
  for t in $(ctr "${ns[@]}" tasks ls -q 2>/dev/null); do ctr "${ns[@]}" tasks delete -f "$t" >/dev/null 2>&1 || true; done
  for c in $(ctr "${ns[@]}" containers ls -q 2>/dev/null); do ctr "${ns[@]}" containers delete "$c" >/dev/null 2>&1 || true; done
  say "stopping containerd"
fi
stop containerd
# Leftover shims and the mounts of pod volumes.
pkill -f "containerd-shim-runc-v2 -namespace k8s.io" 2>/dev/null || true
unmount_under "$CLUSTER_STATE"
unmount_under "$CLUSTER_RUN"
# kube-proxy's and the bridge plugin's iptables rules, and the bridge.
"$CLUSTER_BIN/kube-proxy" --cleanup >/dev/null 2>&1 || true
for dir in -i -o; do iptables -D FORWARD "$dir" cni0 -j ACCEPT 2>/dev/null || true; done
for chain in $(iptables-save -t nat 2>/dev/null | grep -o 'CNI-[0-9a-f]*' | sort -u || true); do
  iptables -t nat -F "$chain" 2>/dev/null || true
done
ip link show cni0 >/dev/null 2>&1 && ip link delete cni0
rm -rf "$CLUSTER_STATE" "$CLUSTER_RUN"
say "down"
