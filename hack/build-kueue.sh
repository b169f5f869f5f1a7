#!/usr/bin/env bash
# Build Kueue's controller manager from its Go module (the Go module proxy is the only
# source every machine of this project reaches) and copy its CRDs, into
#   ${RLHF_CACHE:-$HOME/.cache/rlhf-operator}/kueue/
#     kueue      the manager (sigs.k8s.io/kueue/cmd/kueue), as the release image runs it
#     crds/      config/components/crd/bases/*.yaml of the same module version
# for tests/harness/kueue.py, which runs it against the tests' apiserver.
#
# hack/kueue/ is a module of our own that requires sigs.k8s.io/kueue at the pinned
# version, with checked-in go.mod and go.sum (upstream's go.mod has no replace
# directives, so this resolves the dependency versions upstream builds with). To move
# to another version: edit the require line in hack/kueue/go.mod, run `go mod tidy`
# there, commit both files.
#
# Usage:
#   bash hack/build-kueue.sh           build when missing, another version, or built from
#                                      other hack/kueue/ files
#   bash hack/build-kueue.sh --force   rebuild
#
# Static (CGO_ENABLED=0), version-stamped like upstream's Makefile (-X .../pkg/version).
# Built at the lowest priority and one package at a time (other work shares the cores).
# Measured on the 2-core machine, after the control plane's build (its k8s.io modules are
# shared): cold (module download ~10 s, then compile) 21 min of wall time with the cores
# busy with other tests (load ~10), 6 min 10 s of CPU; with a warm Go build cache
# (`--force`) 42 s, mostly linking; nothing to do: under a second.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MOD="$ROOT/hack/kueue"
CACHE="${RLHF_CACHE:-$HOME/.cache/rlhf-operator}"
OUT="$CACHE/kueue"
UPSTREAM=sigs.k8s.io/kueue

force=0
for arg in "$@"; do
  case "$arg" in
    --force) force=1 ;;
    -h|--help) sed -n '2,25p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "build-kueue.sh: unknown argument: $arg" >&2; exit 2 ;;
  esac
done

command -v go >/dev/null || { echo "build-kueue.sh: go is required (>= 1.25)" >&2; exit 1; }

version="$(cd "$MOD" && go list -mod=readonly -m -f '{{.Version}}' "$UPSTREAM")"
[[ -n "$version" ]] || { echo "build-kueue.sh: hack/kueue/go.mod must require $UPSTREAM" >&2; exit 1; }
sources_hash="$(cd "$MOD" && sha256sum -- go.mod go.sum | sha256sum | cut -d' ' -f1)"
stamp="$OUT/.sources"  # the sources hash of the build that made $OUT

built_ok() {  # the binary embeds $UPSTREAM at $version, the CRDs are there, same sources
  [[ -x "$OUT/kueue" && -s "$OUT/crds/kueue.x-k8s.io_workloads.yaml" ]] || return 1
  go version -m "$OUT/kueue" 2>/dev/null | grep -qE "^[[:space:]]+(mod|dep)[[:space:]]+$UPSTREAM[[:space:]]+$version([[:space:]]|$)" || return 1
  [[ "$(cat "$stamp" 2>/dev/null)" == "$sources_hash" ]]
}

if (( ! force )) && built_ok; then
  echo "kueue $version already in $OUT"
  exit 0
fi

start=$(date +%s)
mkdir -p "$OUT"
tmp="$(mktemp -d "$OUT/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

# The module's sources (downloaded by the build anyway): the CRDs and the build date.
json="$(cd "$MOD" && go mod download -json "$UPSTREAM@$version")"
src="$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["Dir"])' "$json")"
build_date="$(python3 -c 'import json,sys; print(json.load(open(json.loads(sys.argv[1])["Info"])).get("Time") or "1970-01-01T00:00:00Z")' "$json")"

echo "building kueue $version from $UPSTREAM/cmd/kueue (long on a cold cache) ..."
pkg=sigs.k8s.io/kueue/pkg/version
(cd "$MOD" && CGO_ENABLED=0 nice -n 19 go build -p 1 -mod=readonly -trimpath \
  -ldflags="-s -w -X $pkg.GitVersion=$version -X $pkg.GitCommit=module-$version -X $pkg.BuildDate=$build_date" \
  -o "$tmp/kueue" "$UPSTREAM/cmd/kueue")

mkdir -p "$tmp/crds"
cp "$src"/config/components/crd/bases/*.yaml "$tmp/crds/"
chmod u+w "$tmp"/crds/*.yaml

rm -rf "$OUT/crds"
mv "$tmp/crds" "$OUT/crds"
mv -f "$tmp/kueue" "$OUT/kueue"
echo "$sources_hash" >"$stamp"
built_ok || { echo "build-kueue.sh: $OUT/kueue does not embed $UPSTREAM $version" >&2; exit 1; }
echo "built kueue $version and its $(ls "$OUT/crds" | wc -l) CRDs in $OUT in $(( $(date +%s) - start ))s"
