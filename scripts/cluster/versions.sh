# shellcheck shell=bash disable=SC2034  # sourced: the scripts that source it use these
# Versions of the local test cluster's parts; sourced by the cluster scripts. The Go modules
# are the one source of each version: components/go.mod (Kubernetes, etcd), coredns/go.mod,
# kueue/go.mod (Kueue, which only tests/e2e/test_cluster_kueue.py starts, through kueue.sh).
# Kubernetes 1.34 is the newest release whose kubelet still runs on a cgroup v1 hierarchy
# without an opt-out (1.35 refuses unless failCgroupV1 is false) and that supports
# containerd 1.6, which is what Debian 12 ships (1.36 needs containerd 2).
_CLUSTER_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
_module_version() {  # the required version of module $1 in go.mod $2
  awk -v m="$1" '$1 == "require" { $1 = ""; $0 = substr($0, 2) }
                 $1 == m && $2 ~ /^v/ { print $2; exit }' "$2"
}
KUBERNETES_VERSION=$(_module_version k8s.io/kubernetes "$_CLUSTER_DIR/components/go.mod")
ETCD_VERSION=$(_module_version go.etcd.io/etcd/server/v3 "$_CLUSTER_DIR/components/go.mod")
COREDNS_VERSION=$(_module_version github.com/coredns/coredns "$_CLUSTER_DIR/coredns/go.mod")
KUEUE_VERSION=$(_module_version sigs.k8s.io/kueue "$_CLUSTER_DIR/kueue/go.mod")
# Binaries and images are cached outside the clone, keyed by version, so that a second
# run builds nothing.
CLUSTER_CACHE=${CLUSTER_CACHE:-/var/cache/finetune-cluster}
CLUSTER_BIN=$CLUSTER_CACHE/bin-k8s-$KUBERNETES_VERSION-etcd-$ETCD_VERSION-coredns-$COREDNS_VERSION
# Kueue apart, so that a new Kueue does not rebuild Kubernetes (nor the reverse).
KUEUE_BIN=$CLUSTER_CACHE/bin-kueue-$KUEUE_VERSION

# Where the running cluster lives; `make cluster-down` removes all of it.
CLUSTER_STATE=${CLUSTER_STATE:-/var/lib/finetune-cluster}
CLUSTER_RUN=${CLUSTER_RUN:-/run/finetune-cluster}
# The admin kubeconfig (README: "Local cluster").
CLUSTER_KUBECONFIG=$CLUSTER_STATE/kubeconfig
NODE_NAME=finetune-node
# Private ranges inside this machine only: pods on the cni0 bridge, Services behind kube-proxy.
POD_CIDR=10.244.0.0/24
CLUSTER_CIDR=10.244.0.0/16
NODE_IP=10.244.0.1            # the bridge's gateway: the node as its pods see it
SERVICE_CIDR=10.96.0.0/16
KUBERNETES_SERVICE_IP=10.96.0.1
CLUSTER_DNS_IP=$NODE_IP       # CoreDNS runs on the node and answers on the bridge's address
CLUSTER_DOMAIN=cluster.local
APISERVER_PORT=6443
# containerd keeps its images in the cache, not in the cluster's state: images cannot be
# pulled here, so a cluster-down must not throw them away.
CONTAINERD_ROOT=$CLUSTER_CACHE/containerd
CONTAINERD_SOCK=$CLUSTER_RUN/containerd.sock
# Tagged like the upstream sandbox image, but built here from Kubernetes' pause.c.
PAUSE_IMAGE=registry.k8s.io/pause:3.10.1
