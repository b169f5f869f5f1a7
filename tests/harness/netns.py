"""A network namespace of the test run's own, joined to this host by one veth pair.

The real node (tests/harness/node.py) runs the whole test cluster inside such a namespace:
the apiserver, etcd, containerd (and so the CNI bridge and every pod), the kubelet, kube-proxy,
CoreDNS and Prometheus. Every address they use is then ours: loopback and the CNI bridge live
inside the namespace, and the only address the test process talks to from outside is the
namespace's end of the veth pair (``inside_address``). Traffic never leaves the machine: the
host has no route to anything else in the namespace but the pod network, through that veth.

Processes join the namespace with ``setns(2)`` right after fork (``enter`` is a
``preexec_fn``), not with ``ip netns exec``: that one also gives the process a private mount
namespace, and the kubelet's volume mounts must be seen by containerd.
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import subprocess
from pathlib import Path

CLONE_NEWNET = 0x40000000
NETNS_DIR = Path("/run/netns")
_LINK_SUBNET = ipaddress.ip_network("10.98.0.0/16")


class NetworkNamespaceError(RuntimeError):
    """Creating or joining the namespace failed (the message has the command's output)."""


def _ip(*args: str) -> str:
    result = subprocess.run(["ip", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise NetworkNamespaceError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def _used_subnets() -> set[ipaddress.IPv4Network]:
    used = set()
    for line in _ip("-4", "-o", "addr", "show").splitlines():
        parts = line.split()
        if "inet" in parts:
            used.add(ipaddress.ip_interface(parts[parts.index("inet") + 1]).network)
    return used


def _free_link_subnet() -> ipaddress.IPv4Network:
    """A /24 of 10.98.0.0/16 that no interface of this host uses."""
    used = _used_subnets()
    for subnet in _LINK_SUBNET.subnets(new_prefix=24):
        if subnet.network_address.packed[2] == 0:
            continue
        if not any(subnet.overlaps(u) for u in used):
            return subnet
    raise NetworkNamespaceError("no free /24 in 10.98.0.0/16 for the test network namespace")


class NetworkNamespace:
    """``ip netns add`` + a veth pair; ``delete()`` removes both (and every pod interface)."""

    def __init__(self, name: str | None = None) -> None:
        self.name = name or f"rlhf-{os.getpid()}"
        self.path = NETNS_DIR / self.name
        self.host_interface = f"rlhf{os.getpid() % 100000}"
        self.subnet: ipaddress.IPv4Network | None = None
        self.outside_address = ""
        self.inside_address = ""

    def create(self) -> NetworkNamespace:
        if self.path.exists():  # a run killed before its teardown, with our pid
            self.delete()
        _ip("netns", "add", self.name)
        try:
            self.subnet = _free_link_subnet()
            hosts = list(self.subnet.hosts())
            self.outside_address, self.inside_address = str(hosts[0]), str(hosts[1])
            prefix = self.subnet.prefixlen
            _ip("-n", self.name, "link", "set", "lo", "up")
            _ip(
                "link", "add", self.host_interface, "type", "veth",
                "peer", "name", "eth0", "netns", self.name,
            )  # fmt: skip
            _ip("addr", "add", f"{self.outside_address}/{prefix}", "dev", self.host_interface)
            _ip("link", "set", self.host_interface, "up")
            _ip("-n", self.name, "addr", "add", f"{self.inside_address}/{prefix}", "dev", "eth0")
            _ip("-n", self.name, "link", "set", "eth0", "up")
            # Only what the namespace is for reaches the host: no default route out of it.
            self.sysctl("net.ipv4.ip_forward", "1")
            self.sysctl("net.bridge.bridge-nf-call-iptables", "1", optional=True)
        except BaseException:
            self.delete()
            raise
        return self

    def route_to(self, network: str) -> None:
        """Reach ``network`` (the pod network) from this host through the namespace."""
        _ip("route", "replace", network, "via", self.inside_address, "dev", self.host_interface)

    def sysctl(self, key: str, value: str, *, optional: bool = False) -> None:
        """Set a per-namespace sysctl from inside the namespace."""
        path = "/proc/sys/" + key.replace(".", "/")
        result = subprocess.run(
            ["nsenter", f"--net={self.path}", "sh", "-c", f"echo {value} > {path}"],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0 and not optional:
            raise NetworkNamespaceError(f"sysctl {key}={value}: {result.stderr.strip()}")

    def run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a command inside the namespace (network only; same mounts)."""
        return subprocess.run(
            ["nsenter", f"--net={self.path}", *cmd], capture_output=True, text=True, check=check
        )

    def enter(self) -> None:  # pragma: no cover - runs in the child after fork
        """preexec_fn: join this namespace (network only)."""
        fd = os.open(self.path, os.O_RDONLY)
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns({self.path})")
        finally:
            os.close(fd)

    def delete(self) -> None:
        subprocess.run(["ip", "link", "delete", self.host_interface], capture_output=True)
        subprocess.run(["ip", "netns", "delete", self.name], capture_output=True)
