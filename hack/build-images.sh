#!/usr/bin/env bash
# Build the container images the test node runs, from our own Dockerfiles, with buildah:
#   localhost/rlhf-operator/debian-rootfs:bookworm-HASH   Debian bookworm (mmdebstrap)
#   localhost/rlhf-operator/cpu-base:python3.11-bookworm  + Python venv at /opt/venv
#   localhost/rlhf-operator/cpu-base:torch2.15.0-bookworm + PyPI's torch, CPU only
#       (hack/images/cpu-base.Containerfile; stand-ins for python:3.11-slim and the CUDA
#       PyTorch image, since no container registry is reachable)
#   ghcr.io/rlhf-operator/operator:APPVERSION   Dockerfile on the python base
#   ghcr.io/rlhf-operator/trainer:APPVERSION    trainer_image/Dockerfile on the torch base
#   registry.k8s.io/pause:3.6                   containerd 1.6's default sandbox image,
#                                               from hack/images/pause.c (gcc -static)
# (APPVERSION: helm/rlhf-operator/Chart.yaml, so the chart's default image names resolve
# to these with imagePullPolicy IfNotPresent or Never.)
#
# Each of the last three is exported for `ctr -n k8s.io images import` as
#   ${RLHF_CACHE:-$HOME/.cache/rlhf-operator}/images/NAME.tar   (docker-archive, one image)
#   ${RLHF_CACHE:-$HOME/.cache/rlhf-operator}/images/NAME.id    (its image id, sha256:...)
#   ${RLHF_CACHE:-$HOME/.cache/rlhf-operator}/images/NAME.ref   (its name, as above)
# with NAME = operator, trainer, pause; tests/harness/images.py loads them into containerd.
#
# Everything is cached: buildah's storage lives in $RLHF_CACHE/containers (overlay driver),
# its layer cache (--layers) rebuilds only what changed, the host's pip cache is mounted
# into the base build, and an archive is exported again only when its image id changed.
# Measured on 2 cores: cold about 4 minutes (mostly pip and writing the 4 GB trainer
# image), warm 2 seconds. Disk: ~4.3 GB of buildah storage + ~4.4 GB of archives.
#
# Usage:
#   bash hack/build-images.sh           build what changed, export what changed
#   bash hack/build-images.sh --force   rebuild the Debian root filesystem and the pause
#                                       image too (other layers follow from it)
#
# Needs root, buildah (>= 1.28), mmdebstrap, gcc with a static libc (libc6-dev), and
# network access to Debian's mirrors and PyPI. Environment:
#   RLHF_CACHE                 cache root (default $HOME/.cache/rlhf-operator)
#   RLHF_DEBIAN_MIRROR         a Debian mirror URI for mmdebstrap (default: its own, plus
#                              the suite's -updates and -security)
#   PIP_CACHE_DIR              the host's pip cache, mounted into the base build
#                              (default $HOME/.cache/pip; pip keeps downloads only where
#                              the index's answers are cacheable, which a TLS-inspecting
#                              proxy may prevent)
#   RLHF_BUILDAH_DRIVER        containers/storage driver (default overlay; vfs works
#                              anywhere but copies every layer)
#   RLHF_BUILD_CA_BUNDLE       CA bundle mounted over the image's during RUN steps, so pip
#                              trusts what the host trusts, e.g. a TLS-inspecting proxy
#                              (default /etc/ssl/certs/ca-certificates.crt if present;
#                              the images keep Debian's own bundle)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${RLHF_CACHE:-$HOME/.cache/rlhf-operator}"
STORE="$CACHE/containers"
OUT="$CACHE/images"
PIP_CACHE="${PIP_CACHE_DIR:-$HOME/.cache/pip}"
DRIVER="${RLHF_BUILDAH_DRIVER:-overlay}"
CA_BUNDLE="${RLHF_BUILD_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"

# Debian bookworm = Python 3.11, the version the project supports and tests.
DEBIAN_SUITE="bookworm"
DEBIAN_MIRROR="${RLHF_DEBIAN_MIRROR:-}"
DEBIAN_PACKAGES="python3,python3-venv,ca-certificates"
TORCH_VERSION="2.15.0"

APP_VERSION="$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$ROOT/helm/rlhf-operator/Chart.yaml")"
OPERATOR_IMAGE="ghcr.io/rlhf-operator/operator:$APP_VERSION"
TRAINER_IMAGE="ghcr.io/rlhf-operator/trainer:$APP_VERSION"
# containerd 1.6's default sandbox_image; a node config may name it explicitly.
PAUSE_IMAGE="registry.k8s.io/pause:3.6"
PYTHON_BASE="localhost/rlhf-operator/cpu-base:python3.11-$DEBIAN_SUITE"
TORCH_BASE="localhost/rlhf-operator/cpu-base:torch$TORCH_VERSION-$DEBIAN_SUITE"

force=0
for arg in "$@"; do
  case "$arg" in
    --force) force=1 ;;
    -h|--help) sed -n '2,46p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "build-images.sh: unknown argument: $arg (see --help)" >&2; exit 2 ;;
  esac
done

for tool in buildah mmdebstrap gcc sha256sum flock; do
  command -v "$tool" >/dev/null || {
    echo "build-images.sh: $tool is required (Debian: apt-get install buildah mmdebstrap gcc libc6-dev)" >&2
    exit 1
  }
done
[[ -n "$APP_VERSION" ]] || { echo "build-images.sh: no appVersion in helm/rlhf-operator/Chart.yaml" >&2; exit 1; }
(( EUID == 0 )) || { echo "build-images.sh: run as root (buildah's storage and mmdebstrap need it)" >&2; exit 1; }

mkdir -p "$STORE" "$OUT" "$PIP_CACHE"
# One build at a time per cache (parallel test workers may all ask for the images).
exec 9>"$STORE/build.lock"
flock 9

buildah_() {
  buildah --root "$STORE/storage" --runroot "$STORE/run" --storage-driver "$DRIVER" "$@"
}

# Working containers left by an interrupted run (the lock says none is running now).
buildah_ rm --all >/dev/null

have_image() { buildah_ inspect --type image "$1" >/dev/null 2>&1; }

image_id() { echo "sha256:$(buildah_ inspect --type image --format '{{.FromImageID}}' "$1")"; }

# Chroot isolation: RUN steps share the host's network namespace (no CNI network of
# buildah's own on a machine whose test node runs a CNI bridge) and need no runtime.
ca_mount=()
[[ -f "$CA_BUNDLE" ]] && ca_mount=(--volume "$CA_BUNDLE:/etc/ssl/certs/ca-certificates.crt:ro")
mkdir -p "$OUT/logs"
bud() {
  local log="$OUT/logs/$1.log"
  shift
  if ! buildah_ bud --layers --isolation chroot "${ca_mount[@]}" "$@" >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "build-images.sh: the build above failed; its full log: $log" >&2
    exit 1
  fi
}

step_started=0
step() { step_started=$SECONDS; echo "build-images.sh: $*"; }
done_step() { echo "build-images.sh:   $* ($((SECONDS - step_started)) s)"; }

# -- Debian root filesystem. mmdebstrap's output is not byte-reproducible, so the image
# is made once per set of inputs (its tag carries their hash) and kept.
rootfs_inputs="$DEBIAN_SUITE ${DEBIAN_MIRROR:-default-mirrors} $DEBIAN_PACKAGES minbase nodocs"
ROOTFS_IMAGE="localhost/rlhf-operator/debian-rootfs:$DEBIAN_SUITE-$(echo "$rootfs_inputs" | sha256sum | cut -c1-12)"
if (( force )) || ! have_image "$ROOTFS_IMAGE"; then
  step "mmdebstrap $DEBIAN_SUITE ($DEBIAN_PACKAGES) -> $ROOTFS_IMAGE"
  tarball="$OUT/rootfs.partial.tar"
  rm -f "$tarball"
  mmdebstrap --quiet --format=tar --variant=minbase --include="$DEBIAN_PACKAGES" \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    "$DEBIAN_SUITE" "$tarball" ${DEBIAN_MIRROR:+"$DEBIAN_MIRROR"}
  container="$(buildah_ from scratch)"
  buildah_ add --quiet "$container" "$tarball" / >/dev/null
  buildah_ config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --cmd /bin/bash --label "org.rlhf-operator.mmdebstrap=$rootfs_inputs" "$container"
  buildah_ commit --quiet --rm "$container" "$ROOTFS_IMAGE" >/dev/null
  rm -f "$tarball"
  done_step "$(du -sh --apparent-size "$STORE/storage" | cut -f1) in storage"
fi

# -- CPU bases and our two images; buildah's layer cache makes unchanged steps instant.
for target in python torch; do
  tag="$PYTHON_BASE"; [[ $target == torch ]] && tag="$TORCH_BASE"
  step "$tag (hack/images/cpu-base.Containerfile, --target $target)"
  bud "cpu-base-$target" --target "$target" --build-arg "ROOTFS_IMAGE=$ROOTFS_IMAGE" \
    --build-arg "TORCH_VERSION=$TORCH_VERSION" \
    --volume "$PIP_CACHE:/root/.cache/pip" \
    --file "$ROOT/hack/images/cpu-base.Containerfile" --tag "$tag" "$ROOT/hack/images"
  done_step done
done

step "$OPERATOR_IMAGE (Dockerfile)"
bud operator --build-arg "BASE_IMAGE=$PYTHON_BASE" --file "$ROOT/Dockerfile" --tag "$OPERATOR_IMAGE" "$ROOT"
done_step done

step "$TRAINER_IMAGE (trainer_image/Dockerfile)"
bud trainer --build-arg "BASE_IMAGE=$TORCH_BASE" --file "$ROOT/trainer_image/Dockerfile" \
  --tag "$TRAINER_IMAGE" "$ROOT"
done_step done

# -- The pause image: one static binary, rebuilt when its source changes.
pause_source_hash="$(sha256sum "$ROOT/hack/images/pause.c" | cut -c1-64)"
pause_label="org.rlhf-operator.pause-source-sha256"
if (( force )) || ! have_image "$PAUSE_IMAGE" \
  || [[ "$(buildah_ inspect --type image --format "{{index .ImageAnnotations \"$pause_label\"}}" "$PAUSE_IMAGE" 2>/dev/null)" != "$pause_source_hash" ]]; then
  step "$PAUSE_IMAGE (hack/images/pause.c)"
  workdir="$(mktemp -d)"
  trap 'rm -rf "$workdir"' EXIT
  gcc -static -Os -Wall -Wextra -Werror -o "$workdir/pause" "$ROOT/hack/images/pause.c"
  strip "$workdir/pause"
  container="$(buildah_ from scratch)"
  buildah_ copy --quiet --chmod 0755 "$container" "$workdir/pause" /pause >/dev/null
  buildah_ config --entrypoint '["/pause"]' --user 65535:65535 \
    --annotation "$pause_label=$pause_source_hash" "$container"
  buildah_ commit --quiet --rm "$container" "$PAUSE_IMAGE" >/dev/null
  done_step done
fi

# -- Archives for `ctr images import`, written again only when the image changed.
export_image() {
  local name="$1" image="$2" id archive="$OUT/$1.tar"
  id="$(image_id "$image")"
  if [[ -f "$archive" && "$(cat "$OUT/$name.id" 2>/dev/null)" == "$id" \
        && "$(cat "$OUT/$name.ref" 2>/dev/null)" == "$image" ]]; then
    return
  fi
  step "export $image -> $archive"
  rm -f "$archive" "$archive.partial" "$OUT/$name.id" "$OUT/$name.ref"
  buildah_ push --quiet "$image" "docker-archive:$archive.partial:$image" >/dev/null
  mv "$archive.partial" "$archive"
  echo "$image" >"$OUT/$name.ref"
  echo "$id" >"$OUT/$name.id"
  done_step "$(du -h --apparent-size "$archive" | cut -f1)"
}
export_image operator "$OPERATOR_IMAGE"
export_image trainer "$TRAINER_IMAGE"
export_image pause "$PAUSE_IMAGE"
echo "build-images.sh: images in $OUT: $(cd "$OUT" && ls ./*.tar | tr '\n' ' ')"
