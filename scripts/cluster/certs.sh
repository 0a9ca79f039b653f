# shellcheck shell=bash
# Sourced by up.sh: the cluster's CA, serving and client certificates, made at each start.
# make_certs DIR
make_certs() {
  local d=$1
  mkdir -p "$d"
  openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=finetune-cluster-ca" \
    -keyout "$d/ca.key" -out "$d/ca.crt" 2>/dev/null
  # The ServiceAccount token signing key pair.
  openssl genrsa -out "$d/sa.key" 2048 2>/dev/null
  openssl rsa -in "$d/sa.key" -pubout -out "$d/sa.pub" 2>/dev/null
  local sans="DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc"
  sans="$sans,DNS:kubernetes.default.svc.$CLUSTER_DOMAIN,IP:127.0.0.1,IP:$NODE_IP"
  sans="$sans,IP:$KUBERNETES_SERVICE_IP"
  sign "$d" apiserver "/CN=kube-apiserver" "$sans" serverAuth
  sign "$d" admin "/O=system:masters/CN=finetune-admin" "" clientAuth
  sign "$d" apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "" clientAuth
  sign "$d" controller-manager "/CN=system:kube-controller-manager" "" clientAuth
  sign "$d" scheduler "/CN=system:kube-scheduler" "" clientAuth
  sign "$d" kubelet "/O=system:nodes/CN=system:node:$NODE_NAME" "" clientAuth
  sign "$d" kube-proxy "/CN=system:kube-proxy" "" clientAuth
  sign "$d" coredns "/CN=system:coredns" "" clientAuth
}

# sign DIR NAME SUBJECT SANS USAGE
sign() {
  local d=$1 name=$2 subj=$3 sans=$4 usage=$5 ext
  ext=$(mktemp)
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$usage"
    [ -n "$sans" ] && echo "subjectAltName=$sans"
  } >"$ext"
  openssl req -newkey rsa:2048 -nodes -subj "$subj" -keyout "$d/$name.key" \
    -out "$d/$name.csr" 2>/dev/null
  openssl x509 -req -in "$d/$name.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
    -days 30 -extfile "$ext" -out "$d/$name.crt" 2>/dev/null
  rm -f "$d/$name.csr" "$ext"
}

# kubeconfig FILE CERT-NAME: a kubeconfig for one client certificate.
kubeconfig() {
  local file=$1 name=$2 d=$CLUSTER_STATE/pki
  cat >"$file" <<KC
apiVersion: v1
kind: Config
clusters:
- name: finetune-local
  cluster:
    certificate-authority: $d/ca.crt
    server: https://127.0.0.1:$APISERVER_PORT
users:
- name: $name
  user:
    client-certificate: $d/$name.crt
    client-key: $d/$name.key
contexts:
- name: finetune-local
  context: {cluster: finetune-local, user: $name}
current-context: finetune-local
KC
}
