#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy, etcd and
# CoreDNS from their Go modules into $CLUSTER_BIN (cached: a second run builds nothing).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$HERE/versions.sh"

wanted=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy etcd coredns pause)
missing=()
for b in "${wanted[@]}"; do [ -x "$CLUSTER_BIN/$b" ] || missing+=("$b"); done
if [ ${#missing[@]} -eq 0 ]; then echo "cluster binaries: cached in $CLUSTER_BIN"; exit 0; fi

command -v go >/dev/null || { echo "build-components: Go is needed (https://go.dev/dl)" >&2; exit 1; }
mkdir -p "$CLUSTER_BIN"
tmp=$(mktemp -d "$CLUSTER_BIN/.build.XXXX")
trap 'rm -rf "$tmp"' EXIT
export GOFLAGS=-mod=mod CGO_ENABLED=0

# The version a binary reports (kubectl version, the Node's kubeletVersion, helm's
# .Capabilities.KubeVersion) comes from these variables, which `make` sets in a release build.
minor=${KUBERNETES_VERSION#v1.}; minor=${minor%%.*}
vpkg=k8s.io/component-base/version
ldflags="-s -w -X $vpkg.gitVersion=$KUBERNETES_VERSION -X $vpkg.gitMajor=1 -X $vpkg.gitMinor=$minor
  -X $vpkg.gitTreeState=clean -X $vpkg.buildDate=1970-01-01T00:00:00Z"
ldflags="$ldflags ${ldflags//component-base\/version/client-go\/pkg\/version}"

cd "$HERE/components"
for b in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy; do
  [ -x "$CLUSTER_BIN/$b" ] && continue
  echo "building $b $KUBERNETES_VERSION from k8s.io/kubernetes (first time only; minutes)"
  go build -trimpath -ldflags "$ldflags" -o "$tmp/$b" "k8s.io/kubernetes/cmd/$b"
  mv "$tmp/$b" "$CLUSTER_BIN/$b"
done
if [ ! -x "$CLUSTER_BIN/etcd" ]; then
  echo "building etcd $ETCD_VERSION from go.etcd.io/etcd/server/v3"
  go build -trimpath -ldflags "-s -w" -o "$tmp/etcd" go.etcd.io/etcd/server/v3
  mv "$tmp/etcd" "$CLUSTER_BIN/etcd"
fi
if [ ! -x "$CLUSTER_BIN/coredns" ]; then
  echo "building CoreDNS $COREDNS_VERSION from github.com/coredns/coredns"
  (cd "$HERE/coredns" && go build -trimpath -ldflags "-s -w" -o "$tmp/coredns" github.com/coredns/coredns)
  mv "$tmp/coredns" "$CLUSTER_BIN/coredns"
fi
if [ ! -x "$CLUSTER_BIN/pause" ]; then
  # The pod sandbox's pause process, compiled from the source that k8s.io/kubernetes carries.
  src=$(go list -m -f '{{.Dir}}' k8s.io/kubernetes)/build/pause/linux/pause.c
  echo "compiling pause from $src"
  cc -Os -static -DVERSION="$KUBERNETES_VERSION" -o "$tmp/pause" "$src"
  mv "$tmp/pause" "$CLUSTER_BIN/pause"
fi
echo "cluster binaries: built into $CLUSTER_BIN"
