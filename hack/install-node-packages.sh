#!/usr/bin/env bash
# Install the Debian packages the test node needs, when any is missing:
#   containerd                   CRI runtime the kubelet talks to (1.6.x on Debian 12)
#   runc                         OCI runtime under containerd (crun refuses the hybrid cgroup layout)
#   containernetworking-plugins  CNI bridge, host-local, loopback, portmap (in /usr/lib/cni)
#   iptables conntrack           kube-proxy (iptables mode) and CNI bridge masquerading
#   iproute2 util-linux          the harness's network namespace (ip, unshare, nsenter)
#   buildah                      builds the images from our Dockerfiles
#   mmdebstrap                   builds the CPU base image from Debian packages
#   uidmap fuse-overlayfs        buildah's user namespaces and overlay storage
#   skopeo umoci                 copy/unpack OCI images between buildah and containerd
# The kubelet, scheduler, kube-proxy, CoreDNS and local-path-provisioner are static
# Go binaries (hack/build-kube.sh, hack/build-node.sh) and need no packages.
#
# Usage:
#   bash hack/install-node-packages.sh   install what is missing (as root), print versions
#
# Idempotent: when every package is installed it only prints their versions (well
# under a second). `apt-get update` runs only when something must be installed.
# Not root and something missing: prints the apt-get command to run and exits 1.
set -euo pipefail

PACKAGES=(
  containerd runc containernetworking-plugins iptables conntrack iproute2 util-linux
  buildah mmdebstrap uidmap fuse-overlayfs skopeo umoci
)

command -v dpkg-query >/dev/null || {
  echo "install-node-packages.sh: needs a Debian-based machine (dpkg, apt-get); install the" \
    "equivalents of: ${PACKAGES[*]}" >&2
  exit 1
}

installed() {  # installed PACKAGE: dpkg has it fully installed
  [[ "$(dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null)" == ii* ]]
}

missing=()
for p in "${PACKAGES[@]}"; do
  installed "$p" || missing+=("$p")
done

if (( ${#missing[@]} > 0 )); then
  if (( EUID != 0 )); then
    echo "install-node-packages.sh: missing Debian packages: ${missing[*]}" >&2
    echo "install them as root:  apt-get update && apt-get install -y --no-install-recommends ${missing[*]}" >&2
    exit 1
  fi
  echo "installing ${missing[*]} ..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
  for p in "${missing[@]}"; do
    installed "$p" || { echo "install-node-packages.sh: $p is still not installed" >&2; exit 1; }
  done
fi

dpkg-query -W -f='${Package} ${Version}\n' "${PACKAGES[@]}"
