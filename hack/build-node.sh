#!/usr/bin/env bash
# Build the test node's add-ons from Go modules (the Go module proxy is the only
# source every machine of this project reaches), into
#   ${RLHF_CACHE:-$HOME/.cache/rlhf-operator}/node/
#     coredns                  cluster DNS (kubernetes, forward, cache, ...: hack/node/coredns/main.go)
#     local-path-provisioner   dynamic provisioner for ReadWriteOnce claims
#     crictl                   CRI client, for debugging the node's containerd
# (kubelet, kube-scheduler and kube-proxy come from hack/build-kube.sh.)
#
# Each comes from its own module under hack/node/ with checked-in go.mod and go.sum,
# so its version (the `require` line) and every dependency are pinned and a build
# needs no `go mod tidy`:
#   hack/node/coredns/                 github.com/coredns/coredns; main.go is upstream's
#                                      coredns.go with a chosen plugin list instead of all
#                                      (all pull in the AWS/Azure/GCP SDKs: 1.6 GB of
#                                      modules and +50 s of compile, for plugins we never use)
#   hack/node/local-path-provisioner/  github.com/rancher/local-path-provisioner (its main package)
#   hack/node/cri-tools/               sigs.k8s.io/cri-tools/cmd/crictl
# None of the upstream modules has replace directives, so building from our module
# resolves the same dependency versions as upstream's go.mod. To move to another
# version: edit the require line, run `go mod tidy` in that folder, commit both files.
#
# Usage:
#   bash hack/build-node.sh           build those that are missing, report another version,
#                                     or were built from other hack/node/NAME/ files
#   bash hack/build-node.sh --force   rebuild all three
#
# Static binaries (CGO_ENABLED=0), stamped with their version like upstream's
# Makefiles do. Cold on 2 cores, after the control plane's build (module downloads
# add ~15 s): CoreDNS ~100 s, local-path-provisioner 65 s, crictl 40 s; nothing to
# do: under a second.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${RLHF_CACHE:-$HOME/.cache/rlhf-operator}"
OUT="$CACHE/node"

force=0
for arg in "$@"; do
  case "$arg" in
    --force) force=1 ;;
    -h|--help) sed -n '2,31p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "build-node.sh: unknown argument: $arg" >&2; exit 2 ;;
  esac
done

command -v go >/dev/null || { echo "build-node.sh: go is required (>= 1.26.6)" >&2; exit 1; }

# NAME|MODULE DIR|UPSTREAM MODULE|MAIN PACKAGE (built in MODULE DIR)|VERSION VARIABLE (-X)|VERSION FLAG|EXPECTED FIRST LINE
# The expected line has {v} for the module's version as pinned in its go.mod.
COMPONENTS=(
  "coredns|coredns|github.com/coredns/coredns|.|github.com/coredns/coredns/coremain.GitCommit=module-{v}|-version|CoreDNS-{v#v}"
  "local-path-provisioner|local-path-provisioner|github.com/rancher/local-path-provisioner|github.com/rancher/local-path-provisioner|main.VERSION={v}|--version|local-path-provisioner version {v}"
  "crictl|cri-tools|sigs.k8s.io/cri-tools|sigs.k8s.io/cri-tools/cmd/crictl|sigs.k8s.io/cri-tools/pkg/version.Version={v}|--version|crictl version {v}"
)

pinned_version() {  # pinned_version MODULE_DIR UPSTREAM_MODULE: the version its go.mod requires
  (cd "$ROOT/hack/node/$1" && go list -mod=readonly -m -f '{{.Version}}' "$2")
}

expand() {  # expand TEMPLATE VERSION: {v} -> v1.2.3, {v#v} -> 1.2.3
  local t="${1//\{v#v\}/${2#v}}"
  echo "${t//\{v\}/$2}"
}

binary_ok() {  # binary_ok PATH VERSION_FLAG EXPECTED_FIRST_LINE
  [[ -x "$1" ]] || return 1
  local first
  first="$("$1" "$2" 2>/dev/null | sed -n 1p)" || return 1
  [[ "$first" == "$3" ]]
}

sources_hash() {  # sources_hash MODULE_DIR: changes when go.mod, go.sum or main.go do
  (cd "$ROOT/hack/node/$1" && sha256sum -- * | sha256sum | cut -d' ' -f1)
}

export CGO_ENABLED=0
mkdir -p "$OUT"
tmp="$(mktemp -d "$OUT/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)
built=()

for spec in "${COMPONENTS[@]}"; do
  IFS='|' read -r name dir module package xflag version_flag expected <<<"$spec"
  version="$(pinned_version "$dir" "$module")" && [[ -n "$version" ]] ||
    { echo "build-node.sh: hack/node/$dir/go.mod must require $module (see the header)" >&2; exit 1; }
  expected="$(expand "$expected" "$version")"
  stamp="$OUT/.$name.sources"  # sources_hash of the build that made $OUT/$name
  if (( ! force )) && binary_ok "$OUT/$name" "$version_flag" "$expected" &&
    [[ "$(cat "$stamp" 2>/dev/null)" == "$(sources_hash "$dir")" ]]; then
    echo "$name $version already in $OUT"
    continue
  fi
  t0=$(date +%s)
  echo "building $name $version from $module ..."
  (cd "$ROOT/hack/node/$dir" && go build -mod=readonly -trimpath \
    -ldflags="-s -w -X $(expand "$xflag" "$version")" -o "$tmp/$name" "$package")
  binary_ok "$tmp/$name" "$version_flag" "$expected" || {
    echo "build-node.sh: $name $version_flag printed '$("$tmp/$name" "$version_flag" 2>&1 | sed -n 1p)'," \
      "expected '$expected'" >&2
    exit 1
  }
  mv -f "$tmp/$name" "$OUT/$name"
  sources_hash "$dir" >"$stamp"
  echo "  $expected ($(( $(date +%s) - t0 ))s)"
  built+=("$name")
done

if (( ${#built[@]} > 0 )); then
  echo "built ${built[*]} in $OUT in $(( $(date +%s) - start ))s"
fi
