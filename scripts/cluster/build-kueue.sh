#!/usr/bin/env bash
# Builds Kueue's manager (sigs.k8s.io/kueue/cmd/kueue, the version in kueue/go.mod) into
# $KUEUE_BIN (cached: a second run builds nothing). kueue.sh up runs it.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$HERE/versions.sh"

if [ -x "$KUEUE_BIN/kueue" ]; then echo "kueue: cached in $KUEUE_BIN"; exit 0; fi
command -v go >/dev/null || { echo "build-kueue: Go is needed (https://go.dev/dl)" >&2; exit 1; }
mkdir -p "$KUEUE_BIN"
tmp=$(mktemp -d "$KUEUE_BIN/.build.XXXX")
trap 'rm -rf "$tmp"' EXIT
export GOFLAGS=-mod=mod CGO_ENABLED=0
# What the manager logs as its version at start-up; Kueue's Makefile sets the same variables.
vpkg=sigs.k8s.io/kueue/pkg/version
ldflags="-s -w -X $vpkg.GitVersion=$KUEUE_VERSION -X $vpkg.BuildDate=1970-01-01T00:00:00Z"
cd "$HERE/kueue"
echo "building kueue $KUEUE_VERSION from sigs.k8s.io/kueue (first time only; minutes)"
go build -trimpath -ldflags "$ldflags" -o "$tmp/kueue" sigs.k8s.io/kueue/cmd/kueue
mv "$tmp/kueue" "$KUEUE_BIN/kueue"
echo "kueue: built into $KUEUE_BIN"
