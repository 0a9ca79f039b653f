#!/usr/bin/env bash
# Makes the images' base locally, since no container registry can be pulled from:
# debootstrap of Debian 12 (minbase plus Python 3.11), imported with `docker import`.
#   scripts/cluster/base-image.sh [IMAGE]     default finetune-base:bookworm
# Does nothing when the image already exists.
set -euo pipefail
image=${1:-finetune-base:bookworm}
if docker image inspect "$image" >/dev/null 2>&1; then echo "base image $image: present"; exit 0; fi
command -v debootstrap >/dev/null || { echo "base-image: debootstrap is needed (apt-get install debootstrap)" >&2; exit 1; }
root=$(mktemp -d /var/tmp/finetune-base.XXXX)
trap 'rm -rf "$root"' EXIT
echo "making base image $image with debootstrap (first time only; about a minute)"
debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,python3-dev,ca-certificates \
  bookworm "$root" http://deb.debian.org/debian >"$root.log" 2>&1 \
  || { echo "base-image: debootstrap failed; see $root.log" >&2; exit 1; }
# The same Debian sources as an official image, and no package lists left behind.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin
# `python` as on the official Python images, which the Dockerfiles also accept as a base.
ln -sf python3 "$root/usr/bin/python"
tar -C "$root" -c . | docker import --change 'CMD ["/bin/bash"]' - "$image" >/dev/null
rm -f "$root.log"
echo "base image $image: made"
