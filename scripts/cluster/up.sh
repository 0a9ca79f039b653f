#!/usr/bin/env bash
# `make cluster-up`: a one-node Kubernetes cluster as processes on this machine.
#   etcd, kube-apiserver, kube-controller-manager, kube-scheduler   (control plane, loopback)
#   containerd + runc + CNI bridge, kubelet, kube-proxy, CoreDNS     (the node)
# Builds what is missing first (cached outside the clone), then starts each part and waits for
# it. On a running cluster it does nothing. docs/cluster.md explains each part.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$HERE/certs.sh"

healthy() {
  [ -f "$CLUSTER_KUBECONFIG" ] && kc get --raw /readyz >/dev/null 2>&1 \
    && kc get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' \
       2>/dev/null | grep -qx True
}
if healthy; then say "already running (KUBECONFIG=$CLUSTER_KUBECONFIG)"; exit 0; fi
[ "$(id -u)" = 0 ] || die "needs root: it runs containerd, the kubelet and iptables"
if [ -d "$PIDS" ] && ls "$PIDS"/*.pid >/dev/null 2>&1; then
  say "a cluster is half up; stopping it first"
  bash "$HERE/down.sh"
fi

# ------------------------------------------------------------------------- what it needs
need=()
command -v containerd >/dev/null || need+=(containerd)
command -v runc >/dev/null || need+=(runc)
[ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
command -v iptables >/dev/null || need+=(iptables)
command -v conntrack >/dev/null || need+=(conntrack)
command -v openssl >/dev/null || need+=(openssl)
command -v curl >/dev/null || need+=(curl)
command -v dockerd >/dev/null || need+=(docker.io)
command -v debootstrap >/dev/null || need+=(debootstrap)
if [ ${#need[@]} -gt 0 ]; then
  say "installing from Debian: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
bash "$HERE/build-components.sh"
bash "$HERE/images.sh" infra

# ------------------------------------------------------------------------- network
sysctl -qw net.ipv4.ip_forward=1
sysctl -qw net.bridge.bridge-nf-call-iptables=1 2>/dev/null || true
# The bridge exists before the first pod so that the API server can advertise, and CoreDNS
# listen on, the node's address on it.
if ! ip link show cni0 >/dev/null 2>&1; then
  ip link add cni0 type bridge
  ip addr add "$NODE_IP/${POD_CIDR#*/}" dev cni0
fi
ip link set cni0 up
# Docker sets the FORWARD policy to DROP; pod traffic over the bridge must pass.
for dir in -i -o; do
  iptables -C FORWARD "$dir" cni0 -j ACCEPT 2>/dev/null || iptables -I FORWARD "$dir" cni0 -j ACCEPT
done

# What a crashed cluster may have left: its pods' mounts, then its state.
unmount_under "$CLUSTER_STATE"
rm -rf "$CLUSTER_STATE"
mkdir -p "$CLUSTER_STATE"/{pki,etcd,kubelet,pod-logs,cni/net.d,cni/ipam,config} "$LOGS" "$PIDS" \
  "$CLUSTER_RUN"
PKI=$CLUSTER_STATE/pki
CFG=$CLUSTER_STATE/config
say "making certificates in $PKI"
make_certs "$PKI"
kubeconfig "$CLUSTER_KUBECONFIG" admin
for c in controller-manager scheduler kubelet kube-proxy coredns; do
  kubeconfig "$CFG/$c.kubeconfig" "$c"
done
admin_curl() { curl -sf --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" "$@"; }

# ------------------------------------------------------------------------- control plane
B=$CLUSTER_BIN
start etcd "$B/etcd" --name default --data-dir "$CLUSTER_STATE/etcd" \
  --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
  --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
  --initial-cluster default=http://127.0.0.1:2380 --listen-metrics-urls http://127.0.0.1:2381 \
  --unsafe-no-fsync --log-level warn
wait_for etcd 60 curl -sf http://127.0.0.1:2381/health

start kube-apiserver "$B/kube-apiserver" \
  --etcd-servers http://127.0.0.1:2379 \
  --bind-address 0.0.0.0 --secure-port "$APISERVER_PORT" --advertise-address "$NODE_IP" \
  --client-ca-file "$PKI/ca.crt" \
  --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
  --kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" \
  --kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
  --kubelet-preferred-address-types InternalIP \
  --service-account-issuer "https://kubernetes.default.svc.$CLUSTER_DOMAIN" \
  --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
  --service-cluster-ip-range "$SERVICE_CIDR" \
  --authorization-mode Node,RBAC \
  --enable-admission-plugins NodeRestriction \
  --profiling=false
wait_for kube-apiserver 120 admin_curl "https://127.0.0.1:$APISERVER_PORT/readyz"

start kube-controller-manager "$B/kube-controller-manager" \
  --kubeconfig "$CFG/controller-manager.kubeconfig" \
  --authentication-kubeconfig "$CFG/controller-manager.kubeconfig" \
  --authorization-kubeconfig "$CFG/controller-manager.kubeconfig" \
  --root-ca-file "$PKI/ca.crt" --service-account-private-key-file "$PKI/sa.key" \
  --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
  --use-service-account-credentials --leader-elect=false \
  --cluster-cidr "$CLUSTER_CIDR" --service-cluster-ip-range "$SERVICE_CIDR" \
  --bind-address 127.0.0.1 --profiling=false
start kube-scheduler "$B/kube-scheduler" --kubeconfig "$CFG/scheduler.kubeconfig" \
  --authentication-kubeconfig "$CFG/scheduler.kubeconfig" \
  --authorization-kubeconfig "$CFG/scheduler.kubeconfig" \
  --leader-elect=false --bind-address 127.0.0.1 --profiling=false
wait_for kube-controller-manager 60 curl -skf https://127.0.0.1:10257/healthz
wait_for kube-scheduler 60 curl -skf https://127.0.0.1:10259/healthz

# Read access for the node's CoreDNS.
kc apply -f "$HERE/manifests/coredns-rbac.yaml" >/dev/null

# ------------------------------------------------------------------------- the node
cat >"$CFG/containerd.toml" <<TOML
version = 2
root = "$CONTAINERD_ROOT"
state = "$CLUSTER_RUN/containerd"
[grpc]
  address = "$CONTAINERD_SOCK"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # This VM withholds CAP_SYS_RESOURCE even from root, so no process may lower its OOM score
  # below containerd's; without this, runc fails every sandbox ("oom_score_adj: Permission
  # denied", reported as "can't get final child's PID from pipe").
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$CLUSTER_RUN/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$CLUSTER_STATE/cni/net.d"
TOML
cat >"$CLUSTER_STATE/cni/net.d/10-finetune.conflist" <<JSON
{
  "cniVersion": "0.4.0",
  "name": "finetune",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": "$CLUSTER_STATE/cni/ipam",
              "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$NODE_IP"}]],
              "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
JSON
mkdir -p "$CONTAINERD_ROOT"
start containerd containerd --config "$CFG/containerd.toml"
wait_for containerd 60 ctr --address "$CONTAINERD_SOCK" version
bash "$HERE/images.sh" import-infra

cat >"$CFG/Corefile" <<CORE
.:53 {
    bind $CLUSTER_DNS_IP
    errors
    health 127.0.0.1:8082
    ready 127.0.0.1:8183
    kubernetes $CLUSTER_DOMAIN in-addr.arpa ip6.arpa {
        kubeconfig $CFG/coredns.kubeconfig finetune-local
        pods insecure
    }
    # Cluster names only: pods have no business resolving names outside this machine.
    cache 5
}
CORE
start coredns "$B/coredns" -conf "$CFG/Corefile"
wait_for coredns 60 curl -sf http://127.0.0.1:8183/ready

cat >"$CFG/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
cgroupDriver: cgroupfs
# This machine runs cgroup v1, which Kubernetes 1.34 supports in maintenance mode.
failCgroupV1: false
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
clusterDNS: [$CLUSTER_DNS_IP]
clusterDomain: $CLUSTER_DOMAIN
# Pods get the cluster's resolver and search path only, not the machine's.
resolvConf: ""
podLogsDir: $CLUSTER_STATE/pod-logs
readOnlyPort: 0
failSwapOn: false
# Images cannot be pulled again here: never garbage-collect them, never evict for disk (a
# disk threshold makes the eviction manager delete every unused image, the sandbox's pause
# image among them). Setting evictionHard replaces the defaults, so no disk signal is left;
# images.sh checks the free space instead.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 200Mi}
# The node has 2 cores; the default 10 s grace makes node-loss tests slow.
nodeStatusUpdateFrequency: 4s
serializeImagePulls: false
YAML
start kubelet "$B/kubelet" --config "$CFG/kubelet.yaml" --kubeconfig "$CFG/kubelet.kubeconfig" \
  --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" \
  --node-labels finetune.dev/pool=training --root-dir "$CLUSTER_STATE/kubelet" \
  --cert-dir "$CLUSTER_STATE/kubelet/pki"
start kube-proxy "$B/kube-proxy" --kubeconfig "$CFG/kube-proxy.kubeconfig" \
  --hostname-override "$NODE_NAME" --cluster-cidr "$CLUSTER_CIDR" --proxy-mode iptables \
  --conntrack-max-per-core 0 --metrics-bind-address 127.0.0.1:10249 \
  --healthz-bind-address 127.0.0.1:10256
node_ready() {
  kc get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' \
    | grep -qx True
}
wait_for kubelet 120 node_ready
wait_for kube-proxy 60 curl -sf http://127.0.0.1:10256/healthz
wait_for kube-controller-manager 60 kc -n default get serviceaccount default

# A node that reports Ready may still fail to start a pod (sandbox, CNI, cgroups): start one.
smoke_pod() {
  kc -n default delete pod cluster-smoke --ignore-not-found --wait=false >/dev/null
  kc -n default run cluster-smoke --image "$PAUSE_IMAGE" --image-pull-policy Never \
    --restart Never >/dev/null
  local deadline=$(( $(date +%s) + 120 ))
  until [ "$(kc -n default get pod cluster-smoke -o jsonpath='{.status.phase}')" = Running ]; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      kc -n default describe pod cluster-smoke >&2 || true
      tail -n 20 "$LOGS/kubelet.log" "$LOGS/containerd.log" >&2 || true
      die "a first pod did not start within 120s; read $LOGS/kubelet.log"
    fi
    sleep 1
  done
  kc -n default delete pod cluster-smoke --wait=false >/dev/null
  say "a first pod ran"
}
smoke_pod
say "ready: export KUBECONFIG=$CLUSTER_KUBECONFIG"
