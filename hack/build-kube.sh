#!/usr/bin/env bash
# Build the real Kubernetes binaries for the tests:
#   control plane: etcd, kube-apiserver, kube-controller-manager
#   node:          kubelet, kube-scheduler, kube-proxy
# from Go modules (the Go module proxy is the only source that every machine of
# this project reaches), into
#   ${RLHF_CACHE:-$HOME/.cache/rlhf-operator}/kube/v1.35.4/
#
# The module sources are checked in under hack/kube/:
#   hack/kube/k8s/   requires k8s.io/kubernetes v1.35.4 (+ a replace line per staging module)
#   hack/kube/etcd/  requires go.etcd.io/etcd/server/v3 at the version Kubernetes uses
# with go.sum files, so a build is reproducible and needs no `go mod tidy`.
#
# Usage:
#   bash hack/build-kube.sh           build the binaries that are missing or fail `--version`
#   bash hack/build-kube.sh --force   rebuild all six
#   bash hack/build-kube.sh --regen   regenerate hack/kube/*/go.mod and go.sum from
#                                     k8s.io/kubernetes' own go.mod, then build
#
# All are static (CGO_ENABLED=0), as upstream releases them, kubelet included.
# A cold build (module download + compile) takes roughly 10-25 minutes on 2 cores;
# with a warm Go build cache it is about a minute (the three node binaries alone:
# 40 s, mostly linking). Nothing to do: under a second.
set -euo pipefail

KUBE_VERSION="v1.35.4"
# The staging modules (k8s.io/api, k8s.io/apiserver, ...) are published as v0.X.Y
# for Kubernetes v1.X.Y.
STAGING_VERSION="v0.${KUBE_VERSION#v1.}"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
K8S_MOD="$ROOT/hack/kube/k8s"
ETCD_MOD="$ROOT/hack/kube/etcd"
CACHE="${RLHF_CACHE:-$HOME/.cache/rlhf-operator}"
OUT="$CACHE/kube/$KUBE_VERSION"

force=0
regen=0
for arg in "$@"; do
  case "$arg" in
    --force) force=1 ;;
    --regen) regen=1; force=1 ;;
    -h|--help) sed -n '2,23p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "build-kube.sh: unknown argument: $arg" >&2; exit 2 ;;
  esac
done

# Built from hack/kube/k8s (k8s.io/kubernetes/cmd/NAME); each prints "Kubernetes $KUBE_VERSION".
KUBE_BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubelet)

binary_ok() {  # binary_ok NAME: present in $OUT, runs, reports the pinned version
  local b="$1" version
  [[ -x "$OUT/$b" ]] || return 1
  version="$("$OUT/$b" --version 2>/dev/null)" || return 1
  [[ "$b" == etcd ]] || [[ "$version" == "Kubernetes $KUBE_VERSION" ]]
}

# The binaries to (re)build: all with --force, else those that fail binary_ok.
wanted=()
for b in etcd "${KUBE_BINARIES[@]}"; do
  if (( force )) || ! binary_ok "$b"; then wanted+=("$b"); fi
done

if (( ${#wanted[@]} == 0 )); then
  echo "etcd, ${KUBE_BINARIES[*]} $KUBE_VERSION already in $OUT"
  exit 0
fi

command -v go >/dev/null || { echo "build-kube.sh: go is required (>= 1.25)" >&2; exit 1; }

start=$(date +%s)
elapsed() { echo "$(( $(date +%s) - start ))s"; }

regen_modules() {
  echo "regenerating $K8S_MOD/go.mod from k8s.io/kubernetes@$KUBE_VERSION"
  local upstream_mod staging
  upstream_mod="$(cd "$K8S_MOD" && go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
  # Every k8s.io/* module that k8s.io/kubernetes requires at v0.0.0 is a staging
  # module it replaces with ./staging/src/...; those replaces don't apply to a
  # dependency, so pin each to its published version.
  staging="$(grep -E '^[[:space:]]*k8s\.io/[^[:space:]]+ v0\.0\.0([[:space:]]|$)' "$upstream_mod" |
    awk '{print $1}' | sort -u)"
  [[ -n "$staging" ]] || { echo "build-kube.sh: no staging modules found in $upstream_mod" >&2; exit 1; }
  {
    cat <<EOF
// Builds the control plane (kube-apiserver, kube-controller-manager) and the node
// (kubelet, kube-scheduler, kube-proxy) for the tests.
// Managed by hack/build-kube.sh (see that script); regenerate with
//   bash hack/build-kube.sh --regen
module rlhf-operator/hack/kube/k8s

go 1.25.0

godebug default=go1.25

tool (
	k8s.io/kubernetes/cmd/kube-apiserver
	k8s.io/kubernetes/cmd/kube-controller-manager
	k8s.io/kubernetes/cmd/kube-proxy
	k8s.io/kubernetes/cmd/kube-scheduler
	k8s.io/kubernetes/cmd/kubelet
)

require k8s.io/kubernetes $KUBE_VERSION

// k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces them with
// ./staging paths, which do not apply to a dependency: pin them to the published
// versions that match $KUBE_VERSION.
replace (
EOF
    while read -r m; do printf '\t%s => %s %s\n' "$m" "$m" "$STAGING_VERSION"; done <<<"$staging"
    echo ")"
  } >"$K8S_MOD/go.mod"
  rm -f "$K8S_MOD/go.sum"
  (cd "$K8S_MOD" && go mod tidy)

  # etcd: the server version that k8s.io/kubernetes itself requires.
  local etcd_version
  etcd_version="$(awk '$1 == "go.etcd.io/etcd/server/v3" {print $2; exit}' "$upstream_mod")"
  [[ -n "$etcd_version" ]] || { echo "build-kube.sh: etcd server version not found" >&2; exit 1; }
  echo "regenerating $ETCD_MOD/go.mod for go.etcd.io/etcd/server/v3 $etcd_version"
  cat >"$ETCD_MOD/go.mod" <<EOF
// Builds etcd (the version k8s.io/kubernetes $KUBE_VERSION requires) for the test control plane.
// A separate module so its dependency versions never clash with Kubernetes'.
module rlhf-operator/hack/kube/etcd

go 1.24

tool go.etcd.io/etcd/server/v3

require go.etcd.io/etcd/server/v3 $etcd_version
EOF
  rm -f "$ETCD_MOD/go.sum"
  (cd "$ETCD_MOD" && go mod tidy)
}

(( regen )) && regen_modules

export CGO_ENABLED=0
mkdir -p "$OUT"
tmp="$(mktemp -d "$OUT/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

# Version stamping, as Kubernetes' hack/lib/version.sh does: without it the
# binaries report v0.0.0-master. The build date is the release's publication
# time from the module proxy, so the build stays reproducible.
build_date="$(cd "$K8S_MOD" && go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" |
  python3 -c 'import json,sys; print(json.load(open(json.load(sys.stdin)["Info"])).get("Time") or "1970-01-01T00:00:00Z")')"
minor="${KUBE_VERSION#v1.}"; minor="${minor%%.*}"
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$KUBE_VERSION"
  ldflags+=" -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
  ldflags+=" -X $pkg.gitCommit=module-$KUBE_VERSION"
done

kube_packages=()
for b in "${wanted[@]}"; do
  if [[ "$b" == etcd ]]; then
    echo "building etcd ($(cd "$ETCD_MOD" && go list -m -f '{{.Version}}' go.etcd.io/etcd/server/v3)) ..."
    (cd "$ETCD_MOD" && go build -mod=readonly -trimpath -ldflags='-s -w' -o "$tmp/etcd" go.etcd.io/etcd/server/v3)
    echo "  done at $(elapsed)"
  else
    kube_packages+=("k8s.io/kubernetes/cmd/$b")
  fi
done

if (( ${#kube_packages[@]} > 0 )); then
  # One `go build` for all of them: the packages they share compile once.
  echo "building ${kube_packages[*]##*/} $KUBE_VERSION (long on a cold cache) ..."
  (cd "$K8S_MOD" && go build -mod=readonly -trimpath -ldflags="$ldflags" -o "$tmp/" "${kube_packages[@]}")
  echo "  done at $(elapsed)"
fi

for b in "${wanted[@]}"; do
  "$tmp/$b" --version >/dev/null 2>&1 || { echo "build-kube.sh: $tmp/$b --version failed" >&2; exit 1; }
  mv -f "$tmp/$b" "$OUT/$b"
  binary_ok "$b" || { echo "build-kube.sh: $OUT/$b does not report $KUBE_VERSION: $("$OUT/$b" --version 2>&1)" >&2; exit 1; }
done

"$OUT/etcd" --version | sed -n 1p
for b in "${KUBE_BINARIES[@]}"; do echo "$b: $("$OUT/$b" --version)"; done
echo "built ${wanted[*]} ($KUBE_VERSION) in $OUT in $(elapsed)"
