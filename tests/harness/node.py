"""A real node for the cluster tests: the control plane of ``kube.py`` plus a kubelet that runs
pods in real containers.

Everything runs inside a network namespace of the test's own (``netns.py``):

- etcd, kube-apiserver, kube-controller-manager (with the node-lifecycle controller, which
  lifts the kubelet's ``not-ready`` taint), built by ``hack/build-kube.sh``;
- kube-scheduler, kubelet and kube-proxy v1.35.4, built from the same module;
- containerd + runc (Debian's packages) as the CRI runtime, with CNI ``bridge`` +
  ``host-local`` (Debian's containernetworking-plugins) for pod IPs on ``POD_NETWORK``;
- CoreDNS serving ``cluster.local`` on the node's address, the kubelet's ``clusterDNS``, so
  ``<pod>.<service>`` (an Indexed Job's pods behind a headless Service) resolves;
- kube-proxy (iptables) so pods reach the apiserver through Service ``default/kubernetes``;
- local-path-provisioner as the default StorageClass (``local-path``, ReadWriteOnce, a
  dynamic provisioner) and ``shared-hostpath``: statically provisioned hostPath volumes
  offering ReadWriteMany on this one machine.

The trainer and operator images are built from our Dockerfiles by ``hack/build-images.sh``
and imported into containerd (``images.py``); containerd's root lives under the project's
cache, so a second run finds them there.

Each component runs as the identity it has in a real cluster (``system:node:<name>`` under
the Node authorizer, ``system:kube-scheduler``, ``system:kube-proxy``); CoreDNS and the
provisioner, which a cluster runs as pods with RBAC of their own, act as cluster admins here.
The kubelet serves its API to anyone who reaches it (anonymous, AlwaysAllow): only the
apiserver in the namespace can.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import images
from .kube import (
    KubeCluster,
    KubeClusterError,
    _die_with_parent,
    _signal_group,
    _tail,
    binaries_dir,
    cache_dir,
)
from .netns import NetworkNamespace

NODE_NAME = "node-1"
POD_NETWORK = "10.244.0.0/16"
POD_SUBNET = "10.244.0.0/24"
CLUSTER_DOMAIN = "cluster.local"
CNI_PLUGINS = Path("/usr/lib/cni")
NODE_BINARIES = ("kubelet", "kube-scheduler", "kube-proxy")
DEBIAN_COMMANDS = ("containerd", "containerd-shim-runc-v2", "runc", "ctr", "iptables", "nsenter")
SHARED_STORAGE_CLASS = "shared-hostpath"
LOCAL_PATH_STORAGE_CLASS = "local-path"
INSTALL_HINT = (
    "set up the real node with: make setup (hack/install-node-packages.sh, hack/build-kube.sh, "
    "hack/build-images.sh)"
)


def node_tools_dir() -> Path:
    """Where the node's add-ons (CoreDNS, local-path-provisioner) are built."""
    return cache_dir() / "node"


def missing_node_parts() -> list[str]:
    """What a real node needs and this machine lacks (empty when it can start one)."""
    missing = [str(binaries_dir() / b) for b in NODE_BINARIES]
    missing += [str(node_tools_dir() / b) for b in ("coredns", "local-path-provisioner")]
    missing = [p for p in missing if not os.access(p, os.X_OK)]
    missing += [f"{c} (command)" for c in DEBIAN_COMMANDS if shutil.which(c) is None]
    missing += [
        str(CNI_PLUGINS / p)
        for p in ("bridge", "host-local", "loopback")
        if not (CNI_PLUGINS / p).exists()
    ]
    if os.geteuid() != 0:
        missing.append("root (a node mounts, makes cgroups and network namespaces)")
    return missing


@dataclass
class _Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path


@dataclass
class RealCluster:
    """The control plane and one real node, in a network namespace; ``start``/``stop``.

    ``cluster`` is the ``KubeCluster`` (kubectl, helm, kubeconfigs); ``shared_volumes``
    statically provisioned ReadWriteMany volumes are made at start, and
    ``recycle_shared_volumes`` makes the ones whose claims were deleted bindable again.
    """

    shared_volumes: int = 8
    start_timeout: float = 240.0
    keep_dir: bool = False
    cluster: KubeCluster | None = None
    network: NetworkNamespace | None = None
    dir: Path | None = None
    startup_seconds: dict[str, float] = field(default_factory=dict)
    _processes: list[_Process] = field(default_factory=list)

    # ------------------------------------------------------------------ public API

    def __enter__(self) -> RealCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def kube(self) -> KubeCluster:
        if self.cluster is None:
            raise RuntimeError("RealCluster is not started")
        return self.cluster

    @property
    def node_address(self) -> str:
        assert self.network is not None
        return self.network.inside_address

    @property
    def containerd_socket(self) -> Path:
        assert self.dir is not None
        return self.dir / "containerd" / "containerd.sock"

    @property
    def cgroup_root(self) -> str:
        assert self.network is not None
        return f"/{self.network.name}"

    def start(self) -> RealCluster:
        missing = missing_node_parts()
        if missing:
            raise FileNotFoundError(f"missing: {', '.join(missing)}; {INSTALL_HINT}")
        t0 = time.monotonic()
        try:
            self.network = NetworkNamespace().create()
            self.network.route_to(POD_NETWORK)
            self.cluster = KubeCluster(
                network=self.network,
                keep_dir=self.keep_dir,
                users={
                    f"system:node:{NODE_NAME}": "system:nodes",
                    "system:kube-scheduler": "",
                    "system:kube-proxy": "",
                    "rlhf-test:coredns": "system:masters",
                    "rlhf-test:local-path-provisioner": "system:masters",
                },
            )
            self.cluster.start()
            self.dir = self.cluster.dir
            self._lap("control plane", t0)
            self._start_containerd()
            images.load_images(str(self.containerd_socket))
            self._lap("containerd and images", t0)
            self._start_scheduler()
            self._start_kubelet()
            self._start_kube_proxy()
            self._start_coredns()
            self._wait_node_ready(t0 + self.start_timeout)
            self._lap("node ready", t0)
            self._start_local_path_provisioner()
            self._make_shared_volumes()
            self._lap("storage", t0)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the node's processes, kill what runs in its containers, unmount, stop the
        control plane and delete the namespace. Safe to call twice."""
        for process in reversed(self._processes):
            if process.name == "containerd":
                self._remove_containers()
            _signal_group(process.popen, signal.SIGTERM)
            try:
                process.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                _signal_group(process.popen, signal.SIGKILL)
                process.popen.wait(timeout=10)
        self._processes.clear()
        if self.network is not None:
            self._kill_cgroup_processes()
            self._kill_shims()
        if self.dir is not None:
            _unmount_under(self.dir)
        if self.cluster is not None:
            self.cluster.stop()
            self.cluster = None
        if self.network is not None:
            self._remove_cgroups()
            self.network.delete()
            self.network = None
        self.dir = None

    def logs(self, name: str, lines: int = 60) -> str:
        assert self.dir is not None
        return _tail(self.dir / "logs" / f"{name}.log", lines)

    def ctr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ctr", f"--address={self.containerd_socket}", "--namespace=k8s.io", *args],
            capture_output=True,
            text=True,
            check=check,
        )

    def container_pid(self, namespace: str, pod: str, container: str | None = None) -> int:
        """The host pid of a running container's first process (the trainer)."""
        labels = {"io.kubernetes.pod.namespace": namespace, "io.kubernetes.pod.name": pod}
        if container:
            labels["io.kubernetes.container.name"] = container
        filters = ",".join(f'labels."{k}"=={v}' for k, v in labels.items())
        ids = self.ctr("containers", "ls", "-q", filters).stdout.split()
        tasks = {}
        for line in self.ctr("tasks", "ls").stdout.splitlines()[1:]:
            task, pid, status = line.split()[:3]
            tasks[task] = (int(pid), status)
        sandboxes = set(
            self.ctr(
                "containers", "ls", "-q", 'labels."io.cri-containerd.kind"==sandbox'
            ).stdout.split()
        )
        running = [
            tasks[i][0] for i in ids if i not in sandboxes and tasks.get(i, (0, ""))[1] == "RUNNING"
        ]
        if len(running) != 1:
            raise LookupError(f"pod {namespace}/{pod}: {len(running)} running containers")
        return running[0]

    def recycle_shared_volumes(self) -> list[str]:
        """Wipe and free the shared volumes whose claims are gone (Released, with policy
        Retain, never bind again on their own): a session's tests use more claims of the
        shared class than the pool holds. Returns the names of the volumes freed."""
        found = json.loads(self.kube.kubectl("get", "pv", "-o", "json").stdout)["items"]
        freed = []
        for volume in found:
            if volume["spec"].get("storageClassName") != SHARED_STORAGE_CLASS:
                continue
            if volume.get("status", {}).get("phase") != "Released":
                continue
            folder = Path(volume["spec"]["hostPath"]["path"])
            for entry in folder.iterdir():
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
            folder.chmod(0o777)
            name = volume["metadata"]["name"]
            self.kube.kubectl(
                "patch", "pv", name, "--type=json",
                "-p", '[{"op": "remove", "path": "/spec/claimRef"}]',
            )  # fmt: skip
            freed.append(name)
        return freed

    def claim_folder(self, namespace: str, claim: str) -> Path:
        """The host folder behind a bound claim (a hostPath or local volume on this node)."""
        found = self.kube.kubectl("get", "pvc", claim, "-n", namespace, "-o", "json", check=False)
        if found.returncode != 0:
            raise LookupError(f"claim {namespace}/{claim}: {found.stderr.strip()}")
        pvc = json.loads(found.stdout)
        volume = pvc["spec"].get("volumeName")
        if not volume:
            raise LookupError(f"claim {namespace}/{claim} is not bound yet")
        pv = json.loads(self.kube.kubectl("get", "pv", volume, "-o", "json").stdout)["spec"]
        source = pv.get("hostPath") or pv.get("local")
        if not source:
            raise LookupError(f"volume {volume} is neither hostPath nor local: {pv}")
        return Path(source["path"])

    # ------------------------------------------------------------------ processes

    def _spawn(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> None:
        assert self.dir is not None and self.network is not None
        log = self.dir / "logs" / f"{name}.log"
        network = self.network
        with open(log, "ab") as out:
            out.write(("$ " + " ".join(cmd) + "\n").encode())
            out.flush()

            def preexec() -> None:  # pragma: no cover - runs in the child after fork
                network.enter()
                _die_with_parent()

            popen = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                env={**_clean_environment(), **(env or {})},
                start_new_session=True,
                preexec_fn=preexec,
            )
        self._processes.append(_Process(name, popen, log))

    def _check_alive(self) -> None:
        self.kube.check_alive()
        for process in self._processes:
            if process.popen.poll() is not None:
                raise KubeClusterError(
                    f"{process.name} exited with code {process.popen.returncode}\n"
                    + _tail(process.log, 40)
                )

    def _wait(self, what: str, ready: Any, deadline: float) -> None:
        while True:
            self._check_alive()
            if ready():
                return
            if time.monotonic() > deadline:
                raise KubeClusterError(
                    f"timed out waiting for {what}\n"
                    + "\n".join(f"--- {p.name}\n{_tail(p.log, 25)}" for p in self._processes)
                )
            time.sleep(0.25)

    def _lap(self, what: str, t0: float) -> None:
        self.startup_seconds[what] = round(time.monotonic() - t0, 1)

    # ------------------------------------------------------------------ containerd

    def _start_containerd(self) -> None:
        assert self.dir is not None
        state = self.dir / "containerd"
        state.mkdir()
        cni_config = self.dir / "cni"
        cni_config.mkdir()
        (cni_config / "10-rlhf-pods.conflist").write_text(
            json.dumps(
                {
                    "cniVersion": "0.4.0",
                    "name": "rlhf-pods",
                    "plugins": [
                        {
                            "type": "bridge",
                            "bridge": "cni0",
                            "isGateway": True,
                            "ipMasq": False,
                            "hairpinMode": True,
                            "ipam": {
                                "type": "host-local",
                                "ranges": [[{"subnet": POD_SUBNET}]],
                                "routes": [{"dst": "0.0.0.0/0"}],
                                "dataDir": str(self.dir / "cni-ipam"),
                            },
                        }
                    ],
                },
                indent=2,
            )
        )
        root = containerd_root()
        root.mkdir(parents=True, exist_ok=True)
        config = state / "config.toml"
        config.write_text(
            containerd_config(
                root=root,
                state=state,
                socket=self.containerd_socket,
                cni_config=cni_config,
                sandbox_image=images.reference("pause"),
            )
        )
        self._spawn("containerd", ["containerd", f"--config={config}"])
        self._wait(
            "containerd",
            lambda: self.ctr("version", check=False).returncode == 0,
            time.monotonic() + 60,
        )

    def _remove_containers(self) -> None:
        """Kill every task and remove every container of this run from containerd's (cached)
        store, so the next run's kubelet starts from nothing."""
        tasks = self.ctr("tasks", "ls", "-q", check=False).stdout.split()
        for task in tasks:
            self.ctr("tasks", "kill", "--signal=SIGKILL", "--all", task, check=False)
        for task in tasks:
            self.ctr("tasks", "delete", "--force", task, check=False)
        containers = self.ctr("containers", "ls", "-q", check=False).stdout.split()
        if containers:
            self.ctr("containers", "delete", *containers, check=False)

    def _kill_shims(self) -> None:
        """containerd's shims outlive it by design; ours carry our socket in their argv."""
        socket = str(self.containerd_socket) if self.dir else None
        if socket is None:
            return
        for pid in _pids():
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if socket.encode() in argv:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    # ------------------------------------------------------------------ cgroups

    def _cgroup_folders(self) -> list[Path]:
        base = Path("/sys/fs/cgroup")
        folders = [p / self.cgroup_root.lstrip("/") for p in base.iterdir() if p.is_dir()]
        return [f for f in folders if (f.parent / "cgroup.procs").exists()]

    def _make_cgroups(self) -> None:
        for folder in self._cgroup_folders():
            folder.mkdir(exist_ok=True)

    def _kill_cgroup_processes(self) -> None:
        for _ in range(50):
            pids = set()
            for folder in self._cgroup_folders():
                for procs in folder.rglob("cgroup.procs") if folder.exists() else ():
                    pids.update(int(p) for p in procs.read_text().split())
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)

    def _remove_cgroups(self) -> None:
        for folder in self._cgroup_folders():
            if not folder.exists():
                continue
            for sub in sorted(
                (p for p in folder.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)
            ):
                _rmdir(sub)
            _rmdir(folder)

    # ------------------------------------------------------------------ kubelet & co

    def _start_kubelet(self) -> None:
        assert self.dir is not None
        self._make_cgroups()
        kubelet_dir = self.dir / "kubelet"
        kubelet_dir.mkdir()
        resolv = self.dir / "resolv.conf"
        resolv.write_text("# the test node has no upstream DNS\n")
        config = kubelet_dir / "config.json"
        config.write_text(
            json.dumps(
                kubelet_config(
                    socket=self.containerd_socket,
                    cluster_dns=self.node_address,
                    resolv_conf=resolv,
                    cgroup_root=self.cgroup_root,
                    pod_logs=self.dir / "pod-logs",
                ),
                indent=2,
            )
        )
        self._spawn(
            "kubelet",
            [
                str(binaries_dir() / "kubelet"),
                f"--config={config}",
                f"--kubeconfig={self.kube.kubeconfig_for_user(f'system:node:{NODE_NAME}')}",
                f"--root-dir={kubelet_dir / 'root'}",
                f"--cert-dir={kubelet_dir / 'pki'}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={self.node_address}",
                "--v=1",
            ],
        )

    def _start_scheduler(self) -> None:
        kubeconfig = self.kube.kubeconfig_for_user("system:kube-scheduler")
        assert self.dir is not None
        self._spawn(
            "kube-scheduler",
            [
                str(binaries_dir() / "kube-scheduler"),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--cert-dir={self.dir / 'scheduler-certs'}",
                "--leader-elect=false",
            ],
        )

    def _start_kube_proxy(self) -> None:
        self._spawn(
            "kube-proxy",
            [
                str(binaries_dir() / "kube-proxy"),
                f"--kubeconfig={self.kube.kubeconfig_for_user('system:kube-proxy')}",
                f"--hostname-override={NODE_NAME}",
                f"--cluster-cidr={POD_NETWORK}",
                "--proxy-mode=iptables",
                # Leave the machine's conntrack settings alone.
                "--conntrack-max-per-core=0",
                "--conntrack-tcp-timeout-established=0",
                "--conntrack-tcp-timeout-close-wait=0",
                "--metrics-bind-address=127.0.0.1:10249",
                "--healthz-bind-address=127.0.0.1:10256",
            ],
        )

    def _start_coredns(self) -> None:
        assert self.dir is not None
        kubeconfig = self.kube.kubeconfig_for_user("rlhf-test:coredns")
        corefile = self.dir / "Corefile"
        corefile.write_text(coredns_corefile(self.node_address, kubeconfig))
        self._spawn(
            "coredns", [str(node_tools_dir() / "coredns"), "-conf", str(corefile), "-dns.port=53"]
        )
        ready = f"http://{self.node_address}:{COREDNS_READY_PORT}/ready"
        self._wait("CoreDNS ready", lambda: _http_ok(ready), time.monotonic() + 60)

    def _wait_node_ready(self, deadline: float) -> None:
        def ready() -> bool:
            status, body = self.kube.api_get(f"/api/v1/nodes/{NODE_NAME}")
            if status != 200:
                return False
            node = json.loads(body)
            conditions = {c["type"]: c["status"] for c in node["status"].get("conditions", [])}
            taints = [t["key"] for t in node["spec"].get("taints", [])]
            return conditions.get("Ready") == "True" and not taints

        self._wait(f"node {NODE_NAME} Ready without taints", ready, deadline)

    # ------------------------------------------------------------------ storage

    def _start_local_path_provisioner(self) -> None:
        assert self.dir is not None
        namespace = "local-path-storage"
        storage = self.dir / "local-path"
        storage.mkdir()
        self.kube.kubectl(
            "apply", "-f", "-", input=json.dumps(local_path_objects(namespace, storage))
        )
        config = self.dir / "local-path-config.json"  # the provisioner wants .json
        config.write_text(json.dumps(_local_path_config(storage)))
        helper_pod = self.dir / "local-path-helper-pod.json"
        helper_pod.write_text(json.dumps(local_path_helper_pod(images.reference("operator"))))
        self._spawn(
            "local-path-provisioner",
            [
                str(node_tools_dir() / "local-path-provisioner"),
                "start",
                f"--kubeconfig={self.kube.kubeconfig_for_user('rlhf-test:local-path-provisioner')}",
                f"--config={config}",
                f"--namespace={namespace}",
                "--configmap-name=local-path-config",
                f"--helper-pod-file={helper_pod}",
                "--service-account-name=default",
                "--provisioner-name=rancher.io/local-path",
            ],
            env={"POD_NAMESPACE": namespace},
        )

    def _make_shared_volumes(self) -> None:
        assert self.dir is not None
        folder = self.dir / "shared-volumes"
        objects: list[dict[str, Any]] = [
            {
                "apiVersion": "storage.k8s.io/v1",
                "kind": "StorageClass",
                "metadata": {"name": SHARED_STORAGE_CLASS},
                "provisioner": "kubernetes.io/no-provisioner",
                "volumeBindingMode": "Immediate",
                "reclaimPolicy": "Retain",
            }
        ]
        for index in range(self.shared_volumes):
            path = folder / f"volume-{index}"
            path.mkdir(parents=True)
            path.chmod(0o777)  # as an NFS export for many users would be
            objects.append(shared_volume(f"shared-{index}", path))
        self.kube.kubectl(
            "apply",
            "-f",
            "-",
            input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}),
        )


# ---------------------------------------------------------------------- pure configuration


def containerd_root() -> Path:
    """containerd's content and snapshots: under the cache, so imported images persist."""
    return cache_dir() / "containerd"


def containerd_config(
    *, root: Path, state: Path, socket: Path, cni_config: Path, sandbox_image: str
) -> str:
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""version = 2
root = "{root}"
state = "{state / "state"}"
[grpc]
  address = "{socket}"
[ttrpc]
  address = "{socket}.ttrpc"
[{cri}]
  sandbox_image = "{sandbox_image}"
  # This VM refuses a negative oom_score_adj: without this every sandbox fails in runc.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_selinux = false
[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"
[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false
[{cri}.cni]
  bin_dir = "{CNI_PLUGINS}"
  conf_dir = "{cni_config}"
[plugins."io.containerd.internal.v1.opt"]
  path = "{state / "opt"}"
"""


def kubelet_config(
    *, socket: Path, cluster_dns: str, resolv_conf: Path, cgroup_root: str, pod_logs: Path
) -> dict[str, Any]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "containerRuntimeEndpoint": f"unix://{socket}",
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": cgroup_root,
        # This VM: cgroup v1 controllers and swap.
        "failCgroupV1": False,
        "failSwapOn": False,
        "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
        "authorization": {"mode": "AlwaysAllow"},
        "clusterDNS": [cluster_dns],
        "clusterDomain": CLUSTER_DOMAIN,
        "resolvConf": str(resolv_conf),
        "podLogsDir": str(pod_logs),
        "staticPodPath": "",
        "serializeImagePulls": False,
        # Images are imported, never pulled: never collect them, and don't evict pods for
        # the shared disk of a test machine.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1Gi",
            "imagefs.available": "1Gi",
            "nodefs.inodesFree": "1%",
            "imagefs.inodesFree": "1%",
        },
        "nodeStatusUpdateFrequency": "2s",
        "syncFrequency": "5s",
        "fileCheckFrequency": "5s",
        "maxPods": 60,
        "registerNode": True,
    }


COREDNS_READY_PORT = 8181


def coredns_corefile(address: str, kubeconfig: Path) -> str:
    """The cluster zone from the apiserver; every other name NXDOMAIN at once (there is no
    upstream to forward to, and SERVFAIL reads as a temporary failure to resolvers)."""
    return f"""{CLUSTER_DOMAIN}:53 in-addr.arpa:53 ip6.arpa:53 {{
    bind {address}
    errors
    ready {address}:{COREDNS_READY_PORT}
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig} rlhf-test
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 1
    }}
    cache 1
    loop
}}
.:53 {{
    bind {address}
    errors
    template ANY ANY {{
        rcode NXDOMAIN
    }}
}}
"""


def _local_path_config(storage: Path) -> dict[str, Any]:
    return {
        "nodePathMap": [
            {"node": "DEFAULT_PATH_FOR_NON_LISTED_NODES", "paths": [str(storage)]},
        ]
    }


def local_path_helper_pod(image: str) -> dict[str, Any]:
    """The pod local-path-provisioner runs to make and remove a volume's folder (v0.0.30 takes
    its image from here, not from --helper-image): any image with /bin/sh, as root."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "helper-pod"},
        "spec": {
            "priorityClassName": "system-node-critical",
            "tolerations": [{"key": "node.kubernetes.io/disk-pressure", "operator": "Exists"}],
            "securityContext": {"runAsUser": 0, "runAsGroup": 0},
            "containers": [{"name": "helper-pod", "image": image, "imagePullPolicy": "Never"}],
        },
    }


def local_path_objects(namespace: str, storage: Path) -> dict[str, Any]:
    """The namespace, ConfigMap (setup/teardown scripts) and default StorageClass of
    local-path-provisioner, as its deploy/local-path-storage.yaml has them, with ``local``
    volumes (the kubelet applies a pod's fsGroup to those, never to hostPath ones) whose
    folders only root may write until the kubelet hands them to the pod's fsGroup."""
    return {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "local-path-config", "namespace": namespace},
                "data": {
                    "config.json": json.dumps(_local_path_config(storage)),
                    "setup": '#!/bin/sh\nset -eu\nmkdir -m 0755 -p "$VOL_DIR"\n',
                    "teardown": '#!/bin/sh\nset -eu\nrm -rf "$VOL_DIR"\n',
                },
            },
            {
                "apiVersion": "storage.k8s.io/v1",
                "kind": "StorageClass",
                "metadata": {
                    "name": LOCAL_PATH_STORAGE_CLASS,
                    "annotations": {
                        "storageclass.kubernetes.io/is-default-class": "true",
                        "defaultVolumeType": "local",
                    },
                },
                "provisioner": "rancher.io/local-path",
                "volumeBindingMode": "WaitForFirstConsumer",
                "reclaimPolicy": "Delete",
            },
        ],
    }


def shared_volume(name: str, path: Path) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name},
        "spec": {
            "capacity": {"storage": "20Gi"},
            "accessModes": ["ReadWriteMany", "ReadOnlyMany", "ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": SHARED_STORAGE_CLASS,
            "hostPath": {"path": str(path), "type": "Directory"},
        },
    }


# ---------------------------------------------------------------------- host helpers


def _clean_environment() -> dict[str, str]:
    drop = ("KUBECONFIG", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")
    return {k: v for k, v in os.environ.items() if k not in drop}


def _http_ok(url: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=2) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _rmdir(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass


def _unmount_under(folder: Path) -> None:
    """Lazily unmount every mount below ``folder`` (deepest first): pod volumes, container
    root filesystems, sandbox /dev/shm and network namespaces."""
    prefix = str(folder.resolve()) + "/"
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].encode().decode("unicode_escape")
        if point.startswith(prefix):
            mounts.append(point)
    for point in sorted(set(mounts), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)
