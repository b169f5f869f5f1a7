#!/usr/bin/env bash
# Install `prometheus` and `promtool` (Debian's `prometheus` package) for the tests:
#   - tests/unit/test_chart_static.py runs `promtool check rules` / `promtool test rules`
#     on helm/rlhf-operator/prometheus/rules.yaml;
#   - the end-to-end tests start their own Prometheus on 127.0.0.1 and run every
#     dashboard query against it.
#
# Idempotent: does nothing (but print versions) when both commands are on PATH.
# The package's own daemon is never left running: on a machine with systemd the
# package enables and starts prometheus.service, which we stop and disable; without
# systemd (containers) a policy-rc.d usually stops the init script from starting it,
# and if an init script did start it, we stop it.
#
# Usage: bash hack/install-prometheus.sh
set -euo pipefail

have_tools() {
  command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1
}

as_root() {
  if [[ "$(id -u)" -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    echo "install-prometheus.sh: need root (or sudo) to run: $*" >&2
    exit 1
  fi
}

# The daemon the package may have started (systemd unit or sysvinit script): stop it
# and keep it from starting at boot. Only services of the Debian package are touched.
stop_package_daemon() {
  local service
  for service in prometheus prometheus-node-exporter; do
    if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null 2>&1; then
      if systemctl list-unit-files "${service}.service" >/dev/null 2>&1; then
        as_root systemctl disable --now "${service}.service" >/dev/null 2>&1 || true
      fi
    elif [[ -x "/etc/init.d/${service}" ]]; then
      as_root "/etc/init.d/${service}" stop >/dev/null 2>&1 || true
      if command -v update-rc.d >/dev/null 2>&1; then
        as_root update-rc.d "${service}" disable >/dev/null 2>&1 || true
      fi
    fi
  done
}

if have_tools; then
  echo "prometheus and promtool already installed"
else
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-prometheus.sh: no apt-get; install Prometheus 2.x (prometheus + promtool)" \
      "and put both on PATH" >&2
    exit 1
  fi
  # Keep maintainer scripts from starting services during the install when nothing
  # else (a container's policy-rc.d) already does; removed again afterwards.
  policy=/usr/sbin/policy-rc.d
  added_policy=""
  if [[ ! -e "$policy" ]]; then
    printf '#!/bin/sh\n# added by rlhf-operator hack/install-prometheus.sh\nexit 101\n' \
      | as_root tee "$policy" >/dev/null
    as_root chmod 0755 "$policy"
    added_policy=1
  fi
  cleanup() {
    if [[ -n "$added_policy" ]]; then
      as_root rm -f "$policy"
    fi
  }
  trap cleanup EXIT
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update
  as_root apt-get install -y --no-install-recommends prometheus
  cleanup
  added_policy=""
  trap - EXIT
  # systemd ignores policy-rc.d for `deb-systemd-invoke` on some releases: stop it anyway.
  stop_package_daemon
fi

if ! have_tools; then
  echo "install-prometheus.sh: prometheus/promtool still not on PATH" >&2
  exit 1
fi
prometheus --version 2>&1 | head -n 1
promtool --version 2>&1 | head -n 1
