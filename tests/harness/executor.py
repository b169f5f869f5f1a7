"""A small test "kubelet": real pod lifecycles on the test control plane.

:class:`PodExecutor` watches Pods, binds them to a Node it registers (like a
scheduler), runs each pod's single container as a local process (like a kubelet)
and writes the pod status through the ``status`` subresource. The real Job
controller then does the rest: it counts successes and failures, applies the
``podFailurePolicy``, backs off and creates replacement pods.

Usage (``kube_cluster`` is a :class:`harness.kube.KubeCluster`)::

    with PodExecutor(kube_cluster, tmp_path, namespace=ns) as executor:
        kube_cluster.kubectl("apply", "-f", "job.yaml")
        pod = executor.wait_for_pod_phase(ns, "job-name=my-job", "Succeeded")
        print(executor.logs(ns, pod["metadata"]["name"]))

How a container runs: ``unshare -m -u --propagation private <python> -c <launcher>``.
The launcher, inside the new mount and UTS namespaces, sets the hostname, bind-mounts
every volume at its ``mountPath`` (read-only where asked), the termination-message
file and an ``/etc/hosts``, remounts everything else read-only for
``readOnlyRootFilesystem``, drops to ``runAsUser``/``runAsGroup``/``fsGroup`` and
``execvpe``-s the container's command + args (never through a shell). The process
runs in its own session, so signals go to its whole process group.

Volumes: ``configMap``, ``secret``, ``projected`` (configMap, secret, downwardAPI,
serviceAccountToken sources), ``downwardAPI``, ``emptyDir`` (``medium: Memory`` is a
tmpfs), ``persistentVolumeClaim`` (the host folder ``volumes_root/<ns>/<claimName>``;
the PVC object must exist) and ``hostPath``. Mount points missing on the host are
created there (``mkdir -p`` / an empty file), because a mount needs one.

Needs root (for the mount namespace) and the ``unshare`` command; standard library
plus the ``kubernetes`` client.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import json
import logging
import os
import pwd
import queue
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes

log = logging.getLogger(__name__)

POD_IP = "127.0.0.1"
HOST_IP = "127.0.0.1"
DEFAULT_TERMINATION_MESSAGE_PATH = "/dev/termination-log"
MAX_TERMINATION_MESSAGE_BYTES = 4096  # kubelet: per container
FALLBACK_LOG_LINES = 80  # kubelet: FallbackToLogsOnError takes the last 80 lines...
FALLBACK_LOG_BYTES = 2048  # ...of at most 2 KiB
START_ERROR_EXIT_CODE = 128  # the launcher failed before exec (kubelet reason StartError)
BLOCKED_RETRY_SECONDS = 0.5  # a pod waiting for a PVC, ConfigMap, Secret: retry period
CLUSTER_DOMAIN = "cluster.local"

_PENDING, _QUEUED, _RUNNING, _TERMINATING, _DONE = (
    "Pending",
    "Queued",
    "Running",
    "Terminating",
    "Done",
)


class ExecutorError(RuntimeError):
    """The executor cannot work here (not root, no ``unshare``, API unreachable...)."""


class _Blocked(Exception):
    """The pod cannot start yet (a kubelet would report a waiting reason and retry)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


class _Unsupported(Exception):
    """The pod uses something this executor does not implement: it is failed, clearly."""


def expand(text: str, mapping: Mapping[str, str]) -> str:
    """``$(VAR)`` expansion exactly like the kubelet (k8s third_party/forked/golang/expansion).

    ``$(VAR)`` becomes ``mapping[VAR]`` when VAR is defined and stays as written when
    not; ``$$`` is an escaped ``$`` (so ``$$(VAR)`` gives ``$(VAR)``); any other ``$``
    is kept.
    """
    out: list[str] = []
    checkpoint = 0
    cursor = 0
    n = len(text)
    while cursor < n:
        if text[cursor] == "$" and cursor + 1 < n:
            out.append(text[checkpoint:cursor])
            nxt = text[cursor + 1]
            advance = 1
            if nxt == "$":
                out.append("$")
            elif nxt == "(":
                close = text.find(")", cursor + 2)
                if close == -1:
                    out.append("$(")
                else:
                    name = text[cursor + 2 : close]
                    out.append(mapping.get(name, f"$({name})"))
                    advance = close - cursor
            else:
                out.append("$" + nxt)
            cursor += advance
            checkpoint = cursor + 1
        cursor += 1
    return "".join(out) + text[checkpoint:]


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# --------------------------------------------------------------------------- launcher

# Runs as root in the new mount + UTS namespaces (`python -I -S -c _LAUNCHER spec.json`),
# standard library only. Any failure before exec is written to the error pipe and
# ends the process with START_ERROR_EXIT_CODE.
_LAUNCHER = r"""
import ctypes, json, os, sys

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_REC = 32, 1024, 2048, 4096, 16384
MS_RELATIME = 1 << 21
ST_TO_MS = {1: MS_RDONLY, 2: MS_NOSUID, 4: MS_NODEV, 8: MS_NOEXEC, 1024: MS_NOATIME,
            2048: MS_NODIRATIME, 4096: MS_RELATIME}
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38
libc = ctypes.CDLL(None, use_errno=True)
libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                       ctypes.c_char_p]
libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                       ctypes.c_ulong]


def enc(s):
    return None if s is None else os.fsencode(s)


def mount(src, dst, fstype, flags, data=None):
    if libc.mount(enc(src), enc(dst), enc(fstype), flags, enc(data)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, "mount %s on %s: %s" % (src, dst, os.strerror(err)))


def remount_ro(path):
    st = os.statvfs(path).f_flag
    flags = MS_REMOUNT | MS_BIND | MS_RDONLY
    for bit, ms in ST_TO_MS.items():
        if st & bit:
            flags |= ms
    mount(None, path, None, flags)


def ensure_target(path, is_file):
    if is_file:
        if not os.path.lexists(path):
            os.makedirs(os.path.dirname(path) or "/", exist_ok=True)
            open(path, "a").close()
    else:
        os.makedirs(path, exist_ok=True)


def unescape(field):
    out, i = "", 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field):
            out += chr(int(field[i + 1:i + 4], 8))
            i += 4
        else:
            out += field[i]
            i += 1
    return out


def main(spec, errfd):
    if libc.prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
    if os.getppid() != spec["parent_pid"]:
        raise RuntimeError("the executor is gone")
    os.umask(0o022)
    name = spec["hostname"].encode()
    if libc.sethostname(name, len(name)) != 0:
        raise OSError(ctypes.get_errno(), "sethostname")
    # The "image" (the interpreter, the venv, the code) stays visible even where a volume
    # is mounted over one of its parents (a venv under /tmp, and an emptyDir at /tmp).
    image_fds = [(p, os.open(p, os.O_PATH | os.O_CLOEXEC)) for p in spec["image"]]
    for stage in spec["tmpfs"]:
        mount("tmpfs", stage["path"], "tmpfs", MS_NOSUID | MS_NODEV, stage["options"])
    # Open every source first: an exposed folder (below) may hide where it lives.
    fds = {}
    for m in spec["mounts"]:
        if m["source"] not in fds:
            fds[m["source"]] = os.open(m["source"], os.O_PATH | os.O_CLOEXEC)
    for shim in spec["expose"]:
        shim_fds = [(p, os.open(p, os.O_PATH | os.O_CLOEXEC)) for p in shim["paths"]]
        mount("tmpfs", shim["dir"], "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=64k")
        for p, fd in shim_fds:
            os.makedirs(p, exist_ok=True)
            mount("/proc/self/fd/%d" % fd, p, None, MS_BIND | MS_REC)
            remount_ro(p)
            os.close(fd)
        remount_ro(shim["dir"])
    writable = set()
    for m in spec["mounts"]:  # sorted by depth: parents first
        ensure_target(m["target"], m["file"])
        mount("/proc/self/fd/%d" % fds[m["source"]], m["target"], None, MS_BIND)
        if m["readonly"]:
            remount_ro(m["target"])
        else:
            writable.add(os.path.realpath(m["target"]))
    for fd in fds.values():
        os.close(fd)
    for p, fd in image_fds:
        os.makedirs(p, exist_ok=True)
        mount("/proc/self/fd/%d" % fd, p, None, MS_BIND | MS_REC)
        remount_ro(p)
        os.close(fd)
    cwd = spec["cwd"]
    os.makedirs(cwd, exist_ok=True)
    if spec["read_only_root"]:
        keep = ("/proc", "/sys", "/dev")
        seen = set()
        with open("/proc/self/mountinfo") as f:
            points = [unescape(line.split()[4]) for line in f]
        for mp in points:
            if mp in seen or mp in writable:
                continue
            seen.add(mp)
            if any(mp == k or mp.startswith(k + "/") for k in keep):
                continue
            try:
                remount_ro(mp)
            except OSError:
                if mp == "/":
                    raise
    if spec["no_new_privs"] and libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    if spec["groups"] is not None:
        os.setgroups(spec["groups"])
    if spec["gid"] is not None:
        os.setgid(spec["gid"])
    if spec["uid"] is not None:
        os.setuid(spec["uid"])
    libc.prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0)  # credential changes clear it
    if os.getppid() != spec["parent_pid"]:
        raise RuntimeError("the executor is gone")
    os.chdir(cwd)
    argv = spec["argv"]
    os.execvpe(argv[0], argv, spec["env"])


errfd = -1
try:
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    os.unlink(sys.argv[1])
    errfd = spec["error_fd"]
    os.set_inheritable(errfd, False)
    main(spec, errfd)
except BaseException as e:
    msg = "%s: %s" % (type(e).__name__, e)
    try:
        sys.stderr.write("pod executor: container start failed: %s\n" % msg)
        sys.stderr.flush()
        if errfd >= 0:
            os.write(errfd, msg.encode("utf-8", "replace")[:4096] or b"?")
    finally:
        os._exit(128)
"""


# --------------------------------------------------------------------------- API access


class _Api:
    """Raw JSON requests through the kubernetes client (its auth, TLS and pooling)."""

    def __init__(self, kubeconfig: Path) -> None:
        self.client = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
        self.host: str = self.client.configuration.host

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Iterable[tuple[str, Any]] = (),
        body: Any = None,
        content_type: str = "application/json",
        timeout: Any = 15.0,
    ) -> tuple[int, Any]:
        """(HTTP status, decoded JSON body or None)."""
        resp = self._send(
            method, path, query=query, body=body, content_type=content_type, timeout=timeout
        )
        data = resp.read()
        try:
            return resp.status, json.loads(data) if data else None
        except ValueError:
            return resp.status, None

    def stream(self, path: str, query: Iterable[tuple[str, Any]], timeout: Any) -> Any:
        """The urllib3 response of a watch (``.stream()`` it; ``.shutdown()`` ends it)."""
        return self._send(
            "GET", path, query=query, body=None, content_type=None, timeout=timeout
        ).response

    def _send(
        self,
        method: str,
        path: str,
        *,
        query: Iterable[tuple[str, Any]],
        body: Any,
        content_type: str | None,
        timeout: Any,
    ) -> Any:
        headers = {"Accept": "application/json"}
        if body is not None and content_type:
            headers["Content-Type"] = content_type
        _, url, headers, body, _ = self.client.param_serialize(
            method,
            path,
            query_params=list(query),
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        return self.client.call_api(
            method, url, header_params=headers, body=body, _request_timeout=timeout
        )

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()


def _pod_path(namespace: str, name: str, sub: str = "") -> str:
    return f"/api/v1/namespaces/{namespace}/pods/{name}" + (f"/{sub}" if sub else "")


# --------------------------------------------------------------------------- pod records


@dataclass
class _Run:
    """What the executor knows about one pod (by uid)."""

    uid: str
    namespace: str
    name: str
    pod: dict[str, Any]
    seq: int
    state: str = _QUEUED
    dir: Path | None = None
    log_path: Path | None = None
    termination_file: Path | None = None
    fallback_to_logs: bool = False
    proc: subprocess.Popen[bytes] | None = None
    error_fd: int = -1
    started_at: str | None = None
    kill_at: float | None = None  # SIGKILL deadline while terminating
    deleted: bool = False  # the object is gone (DELETED seen)
    next_try: float = 0.0
    waiting: tuple[str, str] | None = None  # last waiting reason/message written
    exit_code: int | None = None
    container: str = ""
    image: str = ""
    done: threading.Event = field(default_factory=threading.Event)


@dataclass
class _Volume:
    path: Path  # host folder or file to bind from
    force_ro: bool = False  # configMap/secret/projected/downwardAPI, PVC readOnly
    tmpfs: str | None = None  # emptyDir medium Memory: tmpfs mount options


_LIVE: set[PodExecutor] = set()


class PodExecutor:
    """Runs the pods of a test cluster as local processes; see the module docstring.

    ``cluster_or_kubeconfig``: a :class:`harness.kube.KubeCluster` (its admin
    kubeconfig is used) or the path of a kubeconfig with rights on pods, pods/status,
    pods/binding, pods/eviction, nodes, PVCs, ConfigMaps, Secrets and token requests.

    ``volumes_root``: where PersistentVolumeClaims live (``<ns>/<claimName>/``).
    ``namespace`` / ``label_selector``: which pods to run (None: every namespace / pod).
    ``max_parallel``: pods running at once; the others stay Pending, first come first run.
    ``path_prepend``: put before the host ``PATH`` (default: this interpreter's folder,
    so ``python`` and ``torchrun`` resolve to the test venv).
    ``extra_env``: set in every container before the pod's own env (which overrides it).
    ``expose_paths``: host folders a non-root container must be able to read although
    one of their parents is private (the interpreter's prefixes are always added).
    ``max_grace_seconds``: cap on terminationGracePeriodSeconds when a pod is deleted.
    """

    def __init__(
        self,
        cluster_or_kubeconfig: Any,
        volumes_root: Path | str,
        *,
        label_selector: str | None = None,
        namespace: str | None = None,
        max_parallel: int = 1,
        path_prepend: list[str] | None = None,
        node_name: str = "executor-node",
        extra_env: Mapping[str, str] | None = None,
        expose_paths: Iterable[Path | str] = (),
        max_grace_seconds: float = 30.0,
    ) -> None:
        kubeconfig = getattr(cluster_or_kubeconfig, "admin_kubeconfig", cluster_or_kubeconfig)
        self.kubeconfig = Path(kubeconfig)
        self.volumes_root = Path(volumes_root)
        self.label_selector = label_selector
        self.namespace = namespace
        if max_parallel < 1:
            raise ValueError("max_parallel must be at least 1")
        self.max_parallel = max_parallel
        if path_prepend is None:
            path_prepend = [os.path.dirname(sys.executable)]
        self.path_prepend = [str(p) for p in path_prepend]
        self.node_name = node_name
        self.extra_env = dict(extra_env or {})
        self.expose_paths = [str(p) for p in expose_paths]
        self.max_grace_seconds = max_grace_seconds

        self._api: _Api | None = None
        self._watch_api: _Api | None = None
        self._state_dir: Path | None = None
        self._lock = threading.RLock()
        self._runs: dict[str, _Run] = {}
        self._queue: list[str] = []  # uids waiting for a slot, FIFO
        self._events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None
        self._reconciler: threading.Thread | None = None
        self._watch_resp: Any = None
        self._seq = 0
        self._unshare = shutil.which("unshare") or "unshare"
        self._service_env: dict[str, str] = {}
        self.errors: list[str] = []  # unexpected exceptions in the background threads

    # ----------------------------------------------------------------- public API

    def __enter__(self) -> PodExecutor:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> PodExecutor:
        """Register the node and start watching; returns once the first list is done."""
        if self._reconciler is not None:
            raise RuntimeError("PodExecutor already started")
        self._check_host()
        self._api = _Api(self.kubeconfig)
        self._watch_api = _Api(self.kubeconfig)
        host = self._api.host.split("://", 1)[-1].rstrip("/")
        api_host, _, api_port = host.rpartition(":")
        self._service_env = {
            "KUBERNETES_SERVICE_HOST": api_host.strip("[]"),
            "KUBERNETES_SERVICE_PORT": api_port,
        }
        self._state_dir = Path(tempfile.mkdtemp(prefix="pod-executor-"))
        self._state_dir.chmod(0o711)  # non-root containers traverse to their HOME
        self._register_node()
        self._stopping.clear()
        listed = threading.Event()
        self._watcher = threading.Thread(
            target=self._watch_loop, args=(listed,), name="pod-executor-watch", daemon=True
        )
        self._reconciler = threading.Thread(
            target=self._reconcile_loop, name="pod-executor", daemon=True
        )
        _LIVE.add(self)
        self._reconciler.start()
        self._watcher.start()
        listed.wait(timeout=30)
        return self

    def stop(self) -> None:
        """Kill every container process, stop the threads, remove the scratch folders."""
        self._stopping.set()
        with self._lock:
            resp = self._watch_resp
        if resp is not None:
            with contextlib.suppress(Exception):
                resp.shutdown()
        for thread in (self._watcher, self._reconciler):
            if thread is not None:
                thread.join(timeout=60)
        # The reconciler kills its processes on the way out; this is the backstop.
        self._kill_all(final=True)
        self._watcher = self._reconciler = None
        for api in (self._api, self._watch_api):
            if api is not None:
                api.close()
        self._api = self._watch_api = None
        if self._state_dir is not None:
            shutil.rmtree(self._state_dir, ignore_errors=True)
            self._state_dir = None
        _LIVE.discard(self)

    def running(self) -> list[tuple[str, str]]:
        """(namespace, pod name) of every pod whose process is running now."""
        with self._lock:
            return [
                (r.namespace, r.name)
                for r in sorted(self._runs.values(), key=lambda r: r.seq)
                if r.state in (_RUNNING, _TERMINATING)
            ]

    def logs(self, namespace: str, pod: str) -> str:
        """stdout + stderr of the (latest) container of pod ``namespace/pod``."""
        run = self._find(namespace, pod)
        if run.log_path is None or not run.log_path.exists():
            return ""
        return run.log_path.read_text(errors="replace")

    def claim_path(self, namespace: str, claim: str) -> Path:
        """The host folder behind PersistentVolumeClaim ``namespace/claim``."""
        return self.volumes_root / namespace / claim

    def kill(self, namespace: str, pod: str, sig: int = signal.SIGKILL) -> None:
        """Signal the process group of a running pod (a crash for SIGKILL: exit 128+sig)."""
        with self._lock:
            run = self._find(namespace, pod)
            if run.proc is None or not _alive(run.proc):
                raise RuntimeError(f"pod {namespace}/{pod} is not running")
            os.killpg(run.proc.pid, sig)

    def evict(self, namespace: str, pod: str, *, wait: bool = True, timeout: float = 60) -> None:
        """Evict through the Eviction API, as a node drain would.

        The apiserver adds the ``DisruptionTarget`` condition (reason
        ``EvictionByEvictionAPI``) and deletes the pod gracefully; the executor then
        SIGTERMs the process and, once it exited, marks the pod Failed (the condition
        kept) and finishes the deletion. With ``wait``, return once the process ended.
        """
        api = self._require_api()
        body = {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": pod, "namespace": namespace},
        }
        status, resp = api.request("POST", _pod_path(namespace, pod, "eviction"), body=body)
        if status not in (200, 201):
            raise RuntimeError(f"eviction of {namespace}/{pod} refused ({status}): {resp}")
        if wait:
            deadline = time.monotonic() + timeout
            while True:
                with self._lock:
                    runs = [
                        r for r in self._runs.values() if (r.namespace, r.name) == (namespace, pod)
                    ]
                if runs and all(r.state == _DONE for r in runs):
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"evicted pod {namespace}/{pod} still running")
                time.sleep(0.05)

    def wait_for_pod_phase(
        self,
        namespace: str,
        name_prefix_or_label: str,
        phase: str,
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        """Wait for a pod in ``phase`` and return it (a dict).

        ``name_prefix_or_label`` is a label selector when it contains ``=``, else a
        prefix of the pod name.
        """
        api = self._require_api()
        query: list[tuple[str, Any]] = []
        if "=" in name_prefix_or_label:
            query.append(("labelSelector", name_prefix_or_label))
        deadline = time.monotonic() + timeout
        seen: list[str] = []
        while True:
            status, body = api.request("GET", f"/api/v1/namespaces/{namespace}/pods", query=query)
            if status == 200:
                seen = []
                for pod in body["items"]:
                    name = pod["metadata"]["name"]
                    if "=" not in name_prefix_or_label and not name.startswith(
                        name_prefix_or_label
                    ):
                        continue
                    pod_phase = pod.get("status", {}).get("phase")
                    seen.append(f"{name}={pod_phase}")
                    if pod_phase == phase:
                        return pod
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"no pod {name_prefix_or_label!r} in {namespace} reached {phase} within "
                    f"{timeout}s (pods: {', '.join(seen) or 'none'}; executor errors: "
                    f"{self.errors or 'none'})"
                )
            time.sleep(0.1)

    # ----------------------------------------------------------------- setup

    def _check_host(self) -> None:
        if os.geteuid() != 0:
            raise ExecutorError("PodExecutor needs root (mount namespaces, bind mounts)")
        if shutil.which("unshare") is None:
            raise ExecutorError("PodExecutor needs the `unshare` command (util-linux)")
        res = subprocess.run(
            [self._unshare, "-m", "-u", "--propagation", "private", "true"],
            capture_output=True,
            text=True,
        )
        if res.returncode != 0:
            raise ExecutorError(f"`unshare -m -u` does not work here: {res.stderr.strip()}")

    def _require_api(self) -> _Api:
        if self._api is None:
            raise RuntimeError("PodExecutor is not started")
        return self._api

    def _register_node(self) -> None:
        api = self._require_api()
        path = f"/api/v1/nodes/{self.node_name}"
        status, body = api.request("GET", path)
        if status == 404:
            node = {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": self.node_name,
                    "labels": {
                        "kubernetes.io/hostname": self.node_name,
                        "kubernetes.io/os": "linux",
                        "kubernetes.io/arch": "amd64",
                        "rlhf.dev/pod-executor": "true",
                    },
                },
            }
            status, body = api.request("POST", "/api/v1/nodes", body=node)
            if status not in (201, 409):
                raise ExecutorError(f"cannot create node {self.node_name} ({status}): {body}")
        elif status != 200:
            raise ExecutorError(f"cannot read node {self.node_name} ({status}): {body}")
        now = _now()
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        resources = {"cpu": str(os.cpu_count() or 1), "memory": str(memory), "pods": "110"}
        patch = {
            "status": {
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "KubeletReady",
                        "message": "PodExecutor is posting ready status",
                        "lastHeartbeatTime": now,
                        "lastTransitionTime": now,
                    }
                ],
                "addresses": [
                    {"type": "InternalIP", "address": HOST_IP},
                    {"type": "Hostname", "address": self.node_name},
                ],
                "capacity": resources,
                "allocatable": resources,
                "nodeInfo": {
                    "operatingSystem": "linux",
                    "architecture": "amd64",
                    "kubeletVersion": "pod-executor",
                    "containerRuntimeVersion": "executor://1",
                    "kernelVersion": os.uname().release,
                    "osImage": "host",
                    "machineID": "",
                    "systemUUID": "",
                    "bootID": "",
                    "kubeProxyVersion": "",
                },
            }
        }
        status, body = api.request(
            "PATCH", path + "/status", body=patch, content_type="application/merge-patch+json"
        )
        if status != 200:
            raise ExecutorError(f"cannot mark node {self.node_name} Ready ({status}): {body}")

    # ----------------------------------------------------------------- watch thread

    def _watch_loop(self, listed: threading.Event) -> None:
        api = self._watch_api
        assert api is not None
        path = f"/api/v1/namespaces/{self.namespace}/pods" if self.namespace else "/api/v1/pods"
        selector = [("labelSelector", self.label_selector)] if self.label_selector else []
        rv: str | None = None
        while not self._stopping.is_set():
            try:
                if rv is None:
                    status, body = api.request("GET", path, query=selector)
                    if status != 200:
                        raise RuntimeError(f"list pods: {status} {body}")
                    self._events.put(("LIST", body["items"]))
                    rv = body["metadata"]["resourceVersion"]
                    listed.set()
                query = [
                    *selector,
                    ("watch", "true"),
                    ("resourceVersion", rv),
                    ("allowWatchBookmarks", "true"),
                    ("timeoutSeconds", 300),
                ]
                resp = api.stream(path, query, timeout=(10, 330))
                with self._lock:
                    self._watch_resp = resp
                if self._stopping.is_set():
                    break
                if resp.status != 200:
                    raise RuntimeError(f"watch pods: HTTP {resp.status}")
                for line in kubernetes.watch.watch.iter_resp_lines(resp):
                    if not line:
                        continue
                    event = json.loads(line)
                    kind, obj = event.get("type"), event.get("object") or {}
                    if kind == "ERROR":
                        rv = None  # 410 Gone (or worse): list again
                        break
                    new_rv = obj.get("metadata", {}).get("resourceVersion")
                    if new_rv:
                        rv = new_rv
                    if kind in ("ADDED", "MODIFIED", "DELETED"):
                        self._events.put((kind, obj))
            except Exception as e:
                if self._stopping.is_set():
                    break
                log.debug("pod watch failed, listing again: %s", e)
                rv = None
                self._stopping.wait(0.2)
            finally:
                with self._lock:
                    resp, self._watch_resp = self._watch_resp, None
                if resp is not None:
                    with contextlib.suppress(Exception):
                        resp.release_conn()
        listed.set()

    # ----------------------------------------------------------------- reconcile thread

    def _reconcile_loop(self) -> None:
        try:
            while not self._stopping.is_set():
                try:
                    kind, obj = self._events.get(timeout=0.05)
                except queue.Empty:
                    pass
                else:
                    self._guard(self._on_event, kind, obj)
                    while True:
                        try:
                            kind, obj = self._events.get_nowait()
                        except queue.Empty:
                            break
                        self._guard(self._on_event, kind, obj)
                self._guard(self._check_processes)
                self._guard(self._start_queued)
        finally:
            self._kill_all(final=True)

    def _guard(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except Exception as e:  # never let one pod take the executor down
            log.exception("pod executor: %s failed", getattr(fn, "__name__", fn))
            self.errors.append(f"{getattr(fn, '__name__', fn)}: {type(e).__name__}: {e}")

    def _on_event(self, kind: str, obj: Any) -> None:
        if kind == "LIST":
            present = {p["metadata"]["uid"] for p in obj}
            with self._lock:
                gone = [r for r in self._runs.values() if r.uid not in present and r.state != _DONE]
            for run in gone:
                self._on_pod("DELETED", run.pod)
            for pod in obj:
                self._on_pod("ADDED", pod)
        else:
            self._on_pod(kind, obj)

    def _on_pod(self, kind: str, pod: dict[str, Any]) -> None:
        meta, spec = pod["metadata"], pod.get("spec", {})
        uid = meta["uid"]
        phase = pod.get("status", {}).get("phase", "Pending")
        with self._lock:
            run = self._runs.get(uid)
        if kind == "DELETED":
            if run is not None and run.state != _DONE:
                run.deleted = True
                run.pod = pod
                self._on_deleting(run)
            return
        node = spec.get("nodeName")
        if not node:
            if (
                phase == "Pending"
                and not meta.get("deletionTimestamp")
                and not spec.get("schedulingGates")
            ):
                self._bind(pod)
            return
        if node != self.node_name:
            return
        if run is None:
            if phase in ("Succeeded", "Failed"):
                return
            with self._lock:
                self._seq += 1
                run = _Run(
                    uid=uid, namespace=meta["namespace"], name=meta["name"], pod=pod, seq=self._seq
                )
                self._runs[uid] = run
                if phase == "Pending":
                    self._queue.append(uid)
                else:
                    run.state = _PENDING  # Running on our node, but not by us: an orphan
            if run.state == _PENDING:
                self._finish_orphan(run)
                return
        run.pod = pod
        if run.state == _QUEUED and phase in ("Succeeded", "Failed"):
            self._dequeue(run)  # made terminal by someone else before it started
            with self._lock:
                run.state = _DONE
            run.done.set()
        elif meta.get("deletionTimestamp"):
            self._on_deleting(run)

    def _bind(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        body = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"]},
            "target": {"apiVersion": "v1", "kind": "Node", "name": self.node_name},
        }
        status, resp = self._require_api().request(
            "POST", _pod_path(meta["namespace"], meta["name"], "binding"), body=body
        )
        if status not in (200, 201, 404, 409):
            log.warning(
                "binding %s/%s failed (%s): %s", meta["namespace"], meta["name"], status, resp
            )

    def _on_deleting(self, run: _Run) -> None:
        """The pod is being deleted (or is gone): stop its process, like a kubelet."""
        if run.state in (_QUEUED, _PENDING):
            with self._lock:
                if run.uid in self._queue:
                    self._queue.remove(run.uid)
            self._finish_orphan(
                run, message="The container was never started: the pod was deleted first"
            )
        elif run.state == _RUNNING:
            meta = run.pod["metadata"]
            grace = meta.get("deletionGracePeriodSeconds")
            if grace is None:
                grace = run.pod.get("spec", {}).get("terminationGracePeriodSeconds", 30)
            grace = min(float(grace), self.max_grace_seconds)
            with self._lock:
                run.state = _TERMINATING
                run.kill_at = time.monotonic() + grace
                self._signal(run, signal.SIGTERM if grace > 0 else signal.SIGKILL)

    def _finish_orphan(self, run: _Run, message: str | None = None) -> None:
        """A pod bound to this node that has no process (never started, or started by an
        executor that is gone): mark it Failed like a kubelet that lost the container,
        and finish its deletion if one is pending."""
        c = (run.pod.get("spec", {}).get("containers") or [{}])[0]
        terminated = {
            "exitCode": 137,
            "reason": "ContainerStatusUnknown",
            "message": message or "The container could not be located when the pod was terminated",
            "startedAt": None,
            "finishedAt": _now(),
        }
        run.container, run.image = c.get("name", ""), c.get("image", "")
        with self._lock:
            run.state = _DONE
        if not run.deleted:
            self._write_terminal(run, "Failed", terminated)
            self._finish_deletion(run)
        run.done.set()

    # ----------------------------------------------------------------- processes

    def _signal(self, run: _Run, sig: int) -> None:
        proc = run.proc
        if proc is not None and _alive(proc):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)

    def _check_processes(self) -> None:
        with self._lock:
            active = [r for r in self._runs.values() if r.state in (_RUNNING, _TERMINATING)]
        for run in active:
            assert run.proc is not None
            with self._lock:
                if _alive(run.proc):
                    if run.kill_at is not None and time.monotonic() >= run.kill_at:
                        self._signal(run, signal.SIGKILL)
                        run.kill_at = None
                    continue
                # Exited but not reaped yet: its pid still names the process group, so
                # whatever it left behind can be killed without hitting a reused pid.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(run.proc.pid, signal.SIGKILL)
                rc = run.proc.wait()
            self._finish(run, rc)

    def _finish(self, run: _Run, rc: int) -> None:
        """The process exited: write the terminal status (as a kubelet would)."""
        error = b""
        if run.error_fd >= 0:
            with contextlib.suppress(OSError):
                error = os.read(run.error_fd, 65536)
            os.close(run.error_fd)
            run.error_fd = -1
        finished = _now()
        if rc == START_ERROR_EXIT_CODE and error:
            exit_code, reason = START_ERROR_EXIT_CODE, "StartError"
            message = error.decode("utf-8", "replace")
        else:
            exit_code = rc if rc >= 0 else 128 - rc
            reason = "Completed" if exit_code == 0 else "Error"
            message = self._termination_message(run, exit_code)
        run.exit_code = exit_code
        terminated: dict[str, Any] = {
            "exitCode": exit_code,
            "reason": reason,
            "startedAt": run.started_at,
            "finishedAt": finished,
            "containerID": f"executor://{run.uid}",
        }
        if message:
            terminated["message"] = message
        with self._lock:
            run.state = _DONE
        if not run.deleted:
            self._write_terminal(run, "Succeeded" if exit_code == 0 else "Failed", terminated)
            if run.pod["metadata"].get("deletionTimestamp"):
                self._finish_deletion(run)
        run.done.set()

    def _termination_message(self, run: _Run, exit_code: int) -> str:
        message = b""
        if run.termination_file is not None:
            with contextlib.suppress(OSError), open(run.termination_file, "rb") as f:
                message = f.read(MAX_TERMINATION_MESSAGE_BYTES)
        if not message.strip() and run.fallback_to_logs and exit_code != 0 and run.log_path:
            with contextlib.suppress(OSError):
                lines = run.log_path.read_bytes().splitlines(keepends=True)
                message = b"".join(lines[-FALLBACK_LOG_LINES:])[-FALLBACK_LOG_BYTES:]
        return message.decode("utf-8", "replace")

    def _kill_all(self, *, final: bool) -> None:
        with self._lock:
            active = [r for r in self._runs.values() if r.state in (_RUNNING, _TERMINATING)]
            for run in active:
                self._signal(run, signal.SIGKILL)
        for run in active:
            assert run.proc is not None
            deadline = time.monotonic() + 10
            while _alive(run.proc) and time.monotonic() < deadline:
                time.sleep(0.01)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(run.proc.pid, signal.SIGKILL)  # leftovers, before reaping
            with contextlib.suppress(subprocess.TimeoutExpired):
                run.proc.wait(timeout=10)
            if run.state == _DONE:
                continue
            # The node goes away: a kubelet shutting down marks its pods like this.
            if final and self._api is not None:
                run.pod.setdefault("status", {})
                with contextlib.suppress(Exception):
                    self._add_condition_on_stop(run)
            with contextlib.suppress(Exception):
                self._finish(
                    run, run.proc.returncode if run.proc.returncode is not None else -signal.SIGKILL
                )

    def _add_condition_on_stop(self, run: _Run) -> None:
        def mutate(status: dict[str, Any]) -> None:
            _set_condition(
                status, "DisruptionTarget", "True", "TerminationByKubelet", "PodExecutor stopped"
            )

        self._update_status(run, mutate)

    # ----------------------------------------------------------------- starting pods

    def _start_queued(self) -> None:
        now = time.monotonic()
        with self._lock:
            queued = [self._runs[uid] for uid in self._queue]
            slots = self.max_parallel - sum(
                1 for r in self._runs.values() if r.state in (_RUNNING, _TERMINATING)
            )
        for run in queued:
            if slots <= 0 or self._stopping.is_set():
                return
            if run.next_try > now or run.state != _QUEUED:
                continue
            try:
                self._launch(run)
            except _Blocked as b:
                run.next_try = time.monotonic() + BLOCKED_RETRY_SECONDS
                if run.waiting != (b.reason, b.message):
                    run.waiting = (b.reason, b.message)
                    self._write_waiting(run, b.reason, b.message)
                continue
            except _Unsupported as e:
                self._dequeue(run)
                self._fail_unsupported(run, str(e))
                continue
            except Exception as e:
                self._dequeue(run)
                log.exception("pod executor: starting %s/%s failed", run.namespace, run.name)
                self._fail_start(run, f"{type(e).__name__}: {e}")
                continue
            self._dequeue(run)
            slots -= 1

    def _dequeue(self, run: _Run) -> None:
        with self._lock:
            if run.uid in self._queue:
                self._queue.remove(run.uid)

    def _fail_unsupported(self, run: _Run, message: str) -> None:
        log.error("pod executor: %s/%s: %s", run.namespace, run.name, message)
        self.errors.append(f"{run.namespace}/{run.name}: {message}")
        with self._lock:
            run.state = _DONE

        def mutate(status: dict[str, Any]) -> None:
            status["phase"] = "Failed"
            status["reason"] = "UnsupportedByPodExecutor"
            status["message"] = message

        self._update_status(run, mutate)
        run.done.set()

    def _fail_start(self, run: _Run, message: str) -> None:
        self.errors.append(f"{run.namespace}/{run.name}: {message}")
        with self._lock:
            run.state = _DONE
        now = _now()
        self._write_terminal(
            run,
            "Failed",
            {
                "exitCode": START_ERROR_EXIT_CODE,
                "reason": "StartError",
                "message": message,
                "startedAt": now,
                "finishedAt": now,
            },
        )
        run.done.set()

    def _launch(self, run: _Run) -> None:
        """Resolve volumes, env and security context; start the process (or raise)."""
        pod = run.pod
        spec = pod.get("spec", {})
        containers = spec.get("containers") or []
        if spec.get("initContainers"):
            raise _Unsupported("PodExecutor does not run initContainers")
        if len(containers) != 1:
            raise _Unsupported(f"PodExecutor runs exactly one container, not {len(containers)}")
        if spec.get("restartPolicy", "Always") != "Never":
            raise _Unsupported(
                f"PodExecutor runs restartPolicy Never pods only, not {spec.get('restartPolicy')}"
            )
        if spec.get("ephemeralContainers"):
            raise _Unsupported("PodExecutor does not run ephemeralContainers")
        c = containers[0]
        run.container, run.image = c["name"], c.get("image", "")

        psc = spec.get("securityContext") or {}
        csc = c.get("securityContext") or {}
        uid = csc.get("runAsUser", psc.get("runAsUser"))
        gid = csc.get("runAsGroup", psc.get("runAsGroup"))
        fs_group = psc.get("fsGroup")
        if csc.get("runAsNonRoot", psc.get("runAsNonRoot")) and not uid:
            raise _Blocked(
                "CreateContainerConfigError",
                f"container has runAsNonRoot and image will run as root (pod: "
                f'"{run.name}_{run.namespace}({run.uid})", container: {c["name"]})',
            )
        if uid is not None and gid is None:
            try:
                gid = pwd.getpwuid(uid).pw_gid
            except KeyError:
                gid = 0
        groups: list[int] | None = None
        if uid is not None or fs_group is not None or psc.get("supplementalGroups"):
            groups = sorted(
                {*psc.get("supplementalGroups", []), *([fs_group] if fs_group is not None else [])}
            )
        owner = uid if uid is not None else 0
        owner_gid = gid if gid is not None else 0

        env_map, env_order = self._environment(pod, c)

        # ---- per-pod scratch folder (fresh each try)
        assert self._state_dir is not None
        pod_dir = self._state_dir / "pods" / f"{run.namespace}_{run.name}_{run.uid[:8]}"
        if pod_dir.exists():
            shutil.rmtree(pod_dir)
        (pod_dir / "volumes").mkdir(parents=True)
        for d in (self._state_dir / "pods", pod_dir, pod_dir / "volumes"):
            d.chmod(0o711)
        volumes = {
            v["name"]: self._volume(run, pod_dir / "volumes" / v["name"], v, fs_group)
            for v in spec.get("volumes") or []
        }

        mounts: list[dict[str, Any]] = []
        for vm in c.get("volumeMounts") or []:
            vol = volumes.get(vm["name"])
            if vol is None:
                raise _Unsupported(f"volumeMount {vm['name']!r} names no volume")
            source = vol.path
            sub = vm.get("subPath") or ""
            if vm.get("subPathExpr"):
                sub = expand(vm["subPathExpr"], env_map)
            if sub:
                if sub.startswith("/") or ".." in Path(sub).parts:
                    raise _Blocked("CreateContainerConfigError", f"invalid subPath {sub!r}")
                if vol.tmpfs is not None:
                    raise _Unsupported("subPath into a medium: Memory emptyDir")
                source = vol.path / sub
                if not source.exists():  # the kubelet creates it, with the root's mode
                    source.mkdir(parents=True)
                    source.chmod(stat.S_IMODE(vol.path.stat().st_mode))
            mounts.append(
                {
                    "source": str(source),
                    "target": os.path.normpath(vm["mountPath"]),
                    "readonly": bool(vm.get("readOnly")) or vol.force_ro,
                    "file": source.is_file(),
                }
            )

        # termination message file (0666, like the kubelet's)
        term_path = c.get("terminationMessagePath") or DEFAULT_TERMINATION_MESSAGE_PATH
        term_file = pod_dir / "termination-log"
        term_file.touch()
        term_file.chmod(0o666)
        if all(m["target"] != term_path for m in mounts):
            mounts.append(
                {"source": str(term_file), "target": term_path, "readonly": False, "file": True}
            )
        hosts = pod_dir / "hosts"
        hosts.write_text(self._hosts_file(pod))
        hosts.chmod(0o644)
        mounts.append(
            {"source": str(hosts), "target": "/etc/hosts", "readonly": True, "file": True}
        )
        mounts.sort(key=lambda m: len(Path(m["target"]).parts))

        home = pod_dir / "home"
        home.mkdir()
        os.chown(home, owner, owner_gid)
        home.chmod(0o700)

        env = {
            "PATH": os.pathsep.join([*self.path_prepend, os.environ.get("PATH", "")]),
            "HOME": str(home),
            "HOSTNAME": self._hostname(pod),
            **self.extra_env,
            **self._service_env,
        }
        for name in env_order:
            env[name] = env_map[name]

        command = [expand(a, env_map) for a in c.get("command") or []]
        args = [expand(a, env_map) for a in c.get("args") or []]
        argv = command + args
        if not argv:
            raise _Unsupported("the container has neither command nor args (no image here)")

        tmpfs = [
            {"path": str(v.path), "options": v.tmpfs}
            for v in volumes.values()
            if v.tmpfs is not None
        ]
        launch = {
            "argv": argv,
            "env": env,
            "cwd": c.get("workingDir") or "/",
            "hostname": self._hostname(pod),
            "tmpfs": tmpfs,
            "expose": self._exposures(uid, groups or [], gid),
            "image": self._hidden_image_paths(mounts),
            "mounts": mounts,
            "read_only_root": bool(csc.get("readOnlyRootFilesystem")),
            "no_new_privs": csc.get("allowPrivilegeEscalation") is False,
            "uid": uid,
            "gid": gid,
            "groups": groups,
            "parent_pid": os.getpid(),
        }

        log_path = pod_dir / "log"
        run.dir, run.log_path, run.termination_file = pod_dir, log_path, term_file
        run.fallback_to_logs = c.get("terminationMessagePolicy") == "FallbackToLogsOnError"
        read_fd, write_fd = os.pipe()
        launch["error_fd"] = write_fd
        spec_file = pod_dir / "launch.json"
        fd = os.open(spec_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(launch, f)
        started = _now()
        with open(log_path, "ab") as logf:
            try:
                proc = subprocess.Popen(
                    [
                        self._unshare,
                        "-m",
                        "-u",
                        "--propagation",
                        "private",
                        sys.executable,
                        "-I",
                        "-S",
                        "-c",
                        _LAUNCHER,
                        str(spec_file),
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=logf,
                    stderr=subprocess.STDOUT,
                    env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8"},
                    cwd="/",
                    pass_fds=(write_fd,),
                    start_new_session=True,
                )
            finally:
                os.close(write_fd)
        with self._lock:
            run.proc, run.error_fd, run.started_at = proc, read_fd, started
            run.state = _RUNNING
        self._write_running(run)

    # ----------------------------------------------------------------- env

    def _environment(
        self, pod: dict[str, Any], c: dict[str, Any]
    ) -> tuple[dict[str, str], list[str]]:
        """The container's env as the kubelet computes it: (mapping for $(VAR), names in
        order of the container's own variables)."""
        ns = pod["metadata"]["namespace"]
        mapping: dict[str, str] = dict(self._service_env)
        own: dict[str, str] = {}

        def put(name: str, value: str) -> None:
            mapping[name] = own[name] = value

        for source in c.get("envFrom") or []:
            prefix = source.get("prefix", "")
            for key, ref in (("configMapRef", "configmaps"), ("secretRef", "secrets")):
                if key in source:
                    data = self._api_data(
                        ns, ref, source[key]["name"], source[key].get("optional", False)
                    )
                    for k, v in (data or {}).items():
                        put(prefix + k, v)
        for var in c.get("env") or []:
            name = var["name"]
            vf = var.get("valueFrom")
            if not vf:
                put(name, expand(var.get("value", ""), mapping))
            elif "fieldRef" in vf:
                put(name, self._field(pod, vf["fieldRef"]["fieldPath"]))
            elif "resourceFieldRef" in vf:
                res = vf["resourceFieldRef"]["resource"]
                kind, _, rname = res.partition(".")
                put(name, str((c.get("resources", {}).get(kind) or {}).get(rname, "0")))
            else:
                for key, ref in (("configMapKeyRef", "configmaps"), ("secretKeyRef", "secrets")):
                    if key in vf:
                        sel = vf[key]
                        data = self._api_data(ns, ref, sel["name"], sel.get("optional", False))
                        if data is None:
                            break
                        if sel["key"] not in data:
                            if sel.get("optional"):
                                break
                            raise _Blocked(
                                "CreateContainerConfigError",
                                f"couldn't find key {sel['key']} in {ref[:-1]} {ns}/{sel['name']}",
                            )
                        put(name, data[sel["key"]])
                        break
                else:
                    raise _Unsupported(f"env {name}: unsupported valueFrom {sorted(vf)}")
        return mapping, list(own)

    def _api_data(self, ns: str, kind: str, name: str, optional: bool) -> dict[str, str] | None:
        """A ConfigMap's or Secret's data as text (None when optional and missing)."""
        raw = self._get_object(ns, kind, name, optional)
        if raw is None:
            return None
        return {k: v.decode("utf-8", "replace") for k, v in raw.items()}

    def _get_object(self, ns: str, kind: str, name: str, optional: bool) -> dict[str, bytes] | None:
        status, body = self._require_api().request("GET", f"/api/v1/namespaces/{ns}/{kind}/{name}")
        if status == 404:
            if optional:
                return None
            raise _Blocked("CreateContainerConfigError", f'{kind[:-1]} "{name}" not found')
        if status != 200:
            raise _Blocked("CreateContainerConfigError", f"reading {kind[:-1]} {name}: {status}")
        out: dict[str, bytes] = {}
        if kind == "secrets":
            for k, v in (body.get("data") or {}).items():
                out[k] = base64.b64decode(v)
        else:
            for k, v in (body.get("data") or {}).items():
                out[k] = v.encode()
            for k, v in (body.get("binaryData") or {}).items():
                out[k] = base64.b64decode(v)
        return out

    def _field(self, pod: dict[str, Any], path: str) -> str:
        meta, spec = pod["metadata"], pod.get("spec", {})
        simple = {
            "metadata.name": meta["name"],
            "metadata.namespace": meta["namespace"],
            "metadata.uid": meta["uid"],
            "spec.nodeName": self.node_name,
            "spec.serviceAccountName": spec.get("serviceAccountName", ""),
            "status.hostIP": HOST_IP,
            "status.hostIPs": HOST_IP,
            "status.podIP": POD_IP,
            "status.podIPs": POD_IP,
        }
        if path in simple:
            return simple[path]
        for kind in ("labels", "annotations"):
            values = meta.get(kind) or {}
            if path == f"metadata.{kind}":
                return "\n".join(f'{k}="{v}"' for k, v in sorted(values.items()))
            prefix = f"metadata.{kind}["
            if path.startswith(prefix) and path.endswith("]"):
                key = path[len(prefix) : -1].strip("'\"")
                return str(values.get(key, ""))
        raise _Unsupported(f"fieldRef {path!r}")

    # ----------------------------------------------------------------- volumes

    def _volume(self, run: _Run, path: Path, v: dict[str, Any], fs_group: int | None) -> _Volume:
        ns = run.namespace
        if "emptyDir" in v:
            path.mkdir()
            path.chmod(0o777)  # the kubelet's emptyDir mode
            if v["emptyDir"].get("medium") == "Memory":
                opts = "mode=0777" + (f",gid={fs_group}" if fs_group is not None else "")
                return _Volume(path, tmpfs=opts)
            _apply_fs_group(path, fs_group, readonly=False)
            return _Volume(path)
        if "persistentVolumeClaim" in v:
            src = v["persistentVolumeClaim"]
            claim = src["claimName"]
            status, body = self._require_api().request(
                "GET", f"/api/v1/namespaces/{ns}/persistentvolumeclaims/{claim}"
            )
            if status == 404:
                raise _Blocked("ContainerCreating", f'persistentvolumeclaim "{claim}" not found')
            if status != 200:
                raise _Blocked("ContainerCreating", f"reading PVC {claim}: HTTP {status}")
            if body["metadata"].get("deletionTimestamp"):
                raise _Blocked(
                    "ContainerCreating", f'persistentvolumeclaim "{claim}" is being deleted'
                )
            host = self.claim_path(ns, claim)
            if not host.exists():
                host.mkdir(parents=True)
                host.chmod(0o777)  # like a hostPath/local-path provisioner's folder
            _apply_fs_group(host, fs_group, readonly=False)
            return _Volume(host, force_ro=bool(src.get("readOnly")))
        if "hostPath" in v:
            src = v["hostPath"]
            host = Path(src["path"])
            if not host.exists():
                if src.get("type") == "DirectoryOrCreate":
                    host.mkdir(parents=True, mode=0o755)
                elif src.get("type") == "FileOrCreate":
                    host.parent.mkdir(parents=True, exist_ok=True)
                    host.touch(mode=0o644)
                else:
                    raise _Blocked("ContainerCreating", f"hostPath {host} does not exist")
            return _Volume(host)
        files: dict[str, tuple[bytes, int]] = {}
        if "configMap" in v or "secret" in v:
            kind = "configMap" if "configMap" in v else "secret"
            src = v[kind]
            default = src.get("defaultMode", 0o644)
            name = src.get("name") if kind == "configMap" else src.get("secretName")
            files = self._key_files(ns, kind, name, src, default)
        elif "downwardAPI" in v:
            src = v["downwardAPI"]
            files = self._downward_files(run, src.get("items") or [], src.get("defaultMode", 0o644))
        elif "projected" in v:
            src = v["projected"]
            default = src.get("defaultMode", 0o644)
            for source in src.get("sources") or []:
                if "configMap" in source:
                    files.update(
                        self._key_files(
                            ns,
                            "configMap",
                            source["configMap"]["name"],
                            source["configMap"],
                            default,
                        )
                    )
                elif "secret" in source:
                    files.update(
                        self._key_files(
                            ns, "secret", source["secret"]["name"], source["secret"], default
                        )
                    )
                elif "downwardAPI" in source:
                    files.update(
                        self._downward_files(run, source["downwardAPI"].get("items") or [], default)
                    )
                elif "serviceAccountToken" in source:
                    tok = source["serviceAccountToken"]
                    files[tok["path"]] = (self._token(run, tok), default)
                else:
                    raise _Unsupported(f"projected volume source {sorted(source)}")
        else:
            kinds = sorted(k for k in v if k != "name")
            raise _Unsupported(f"volume {v['name']!r}: unsupported type {kinds}")
        path.mkdir()
        path.chmod(0o755)
        for rel, (data, mode) in files.items():
            target = path / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            target.chmod(mode)
        _apply_fs_group(path, fs_group, readonly=True)
        return _Volume(path, force_ro=True)  # API-data volumes are always read-only

    def _key_files(
        self, ns: str, kind: str, name: str | None, src: dict[str, Any], default: int
    ) -> dict[str, tuple[bytes, int]]:
        optional = bool(src.get("optional"))
        data = self._get_object(
            ns, "configmaps" if kind == "configMap" else "secrets", name or "", optional
        )
        if data is None:
            return {}
        items = src.get("items")
        if not items:
            return {k: (v, default) for k, v in data.items()}
        out = {}
        for item in items:
            if item["key"] not in data:
                if optional:
                    continue
                raise _Blocked(
                    "ContainerCreating", f"configmap/secret {name}: no key {item['key']!r}"
                )
            out[item["path"]] = (data[item["key"]], item.get("mode", default))
        return out

    def _downward_files(
        self, run: _Run, items: list[dict[str, Any]], default: int
    ) -> dict[str, tuple[bytes, int]]:
        out = {}
        for item in items:
            if "fieldRef" not in item:
                raise _Unsupported("downwardAPI resourceFieldRef items")
            value = self._field(run.pod, item["fieldRef"]["fieldPath"])
            out[item["path"]] = (value.encode(), item.get("mode", default))
        return out

    def _token(self, run: _Run, src: dict[str, Any]) -> bytes:
        sa = run.pod.get("spec", {}).get("serviceAccountName") or "default"
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "audiences": [src["audience"]] if src.get("audience") else [],
                "expirationSeconds": max(600, int(src.get("expirationSeconds", 3600))),
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": run.name,
                    "uid": run.uid,
                },
            },
        }
        status, resp = self._require_api().request(
            "POST", f"/api/v1/namespaces/{run.namespace}/serviceaccounts/{sa}/token", body=body
        )
        if status != 201:
            raise _Blocked("ContainerCreating", f"token for serviceaccount {sa}: {status}")
        return str(resp["status"]["token"]).encode()

    # ----------------------------------------------------------------- identity

    def _hostname(self, pod: dict[str, Any]) -> str:
        return str(pod.get("spec", {}).get("hostname") or pod["metadata"]["name"])[:63]

    def _hosts_file(self, pod: dict[str, Any]) -> str:
        """The host's /etc/hosts plus the pod's names (and, for an Indexed Job with a
        subdomain, its sibling pods' names: they all live on 127.0.0.1 here)."""
        try:
            base = Path("/etc/hosts").read_text()
        except OSError:
            base = "127.0.0.1\tlocalhost\n"
        meta, spec = pod["metadata"], pod.get("spec", {})
        ns = meta["namespace"]
        hostname = self._hostname(pod)
        sub = spec.get("subdomain")
        lines = ["", "# Kubernetes-managed hosts file (PodExecutor)."]
        if not sub:
            lines.append(f"{POD_IP}\t{hostname}")
            return base.rstrip("\n") + "\n" + "\n".join(lines) + "\n"
        names = [hostname]
        job = (meta.get("labels") or {}).get("batch.kubernetes.io/job-name")
        if job and "batch.kubernetes.io/job-completion-index" in (meta.get("annotations") or {}):
            status, body = self._require_api().request(
                "GET", f"/apis/batch/v1/namespaces/{ns}/jobs/{job}"
            )
            completions = (
                int((body or {}).get("spec", {}).get("completions") or 1) if status == 200 else 1
            )
            names += [f"{job}-{i}" for i in range(completions) if f"{job}-{i}" != hostname]
        for name in names:
            fqdn = f"{name}.{sub}.{ns}.svc.{CLUSTER_DOMAIN}"
            short = f"{name}.{sub}"
            lines.append(f"{POD_IP}\t{fqdn}\t{short}" + (f"\t{name}" if name == hostname else ""))
        return base.rstrip("\n") + "\n" + "\n".join(lines) + "\n"

    def _image_paths(self) -> set[str]:
        """Host folders that stand in for the container image: the interpreter, the venv,
        PATH additions and ``expose_paths`` (e.g. the source tree of an editable install)."""
        return {
            os.path.realpath(p)
            for p in [
                sys.prefix,
                sys.base_prefix,
                os.path.dirname(os.path.realpath(sys.executable)),
                *self.path_prepend,
                *self.expose_paths,
            ]
            if p and os.path.isdir(p)
        }

    def _hidden_image_paths(self, mounts: list[dict[str, Any]]) -> list[str]:
        """Image folders a volume would hide (mounted on one of their parents): these are
        bound back on top of the volume, outermost only."""
        targets = [os.path.realpath(m["target"]) for m in mounts]
        hidden = sorted(
            p
            for p in self._image_paths()
            if any(p.startswith(t.rstrip("/") + "/") for t in targets)
        )
        return [p for p in hidden if not any(p != q and p.startswith(q + "/") for q in hidden)]

    def _exposures(
        self, uid: int | None, groups: list[int], gid: int | None
    ) -> list[dict[str, Any]]:
        """Folders a non-root container needs (the interpreter, the venv...) whose parents
        it may not traverse (e.g. /root is 0700): each blocking parent gets a tmpfs in
        the container with just those folders bound in, read-only."""
        if not uid:
            return []
        all_groups = {*groups, *([gid] if gid is not None else [])}
        wanted = self._image_paths()
        shims: dict[str, set[str]] = {}
        for p in sorted(wanted):
            blocker = _first_blocked_parent(p, uid, all_groups)
            if blocker is not None:
                shims.setdefault(blocker, set()).add(p)
        out = []
        for d, paths in sorted(shims.items()):
            kept = [
                p for p in sorted(paths) if not any(p != q and p.startswith(q + "/") for q in paths)
            ]
            out.append({"dir": d, "paths": kept})
        # an exposed folder below another shim's folder would be hidden: keep outermost
        dirs = [s["dir"] for s in out]
        return [s for s in out if not any(s["dir"].startswith(d + "/") for d in dirs)]

    # ----------------------------------------------------------------- status writes

    def _update_status(self, run: _Run, mutate: Callable[[dict[str, Any]], None]) -> bool:
        """Read-modify-write of pods/status (retried on conflicts); False if pod is gone."""
        api = self._require_api()
        path = _pod_path(run.namespace, run.name)
        for _ in range(10):
            status, pod = api.request("GET", path)
            if status == 404:
                return False
            if status != 200:
                raise RuntimeError(f"GET pod {run.namespace}/{run.name}: {status} {pod}")
            if pod["metadata"]["uid"] != run.uid:
                return False
            pod.setdefault("status", {})
            mutate(pod["status"])
            if "generation" in pod["metadata"]:
                pod["status"]["observedGeneration"] = pod["metadata"]["generation"]
            status, body = api.request("PUT", path + "/status", body=pod)
            if status == 200:
                run.pod = body
                return True
            if status == 404:
                return False
            if status != 409:
                raise RuntimeError(f"PUT pod status {run.namespace}/{run.name}: {status} {body}")
        raise RuntimeError(f"PUT pod status {run.namespace}/{run.name}: conflicts")

    def _base_status(self, status: dict[str, Any]) -> None:
        status["hostIP"] = HOST_IP
        status["hostIPs"] = [{"ip": HOST_IP}]
        status.setdefault("startTime", _now())

    def _container_status(self, run: _Run, state: dict[str, Any], ready: bool) -> dict[str, Any]:
        return {
            "name": run.container,
            "image": run.image,
            "imageID": "",
            "containerID": f"executor://{run.uid}",
            "ready": ready,
            "started": "running" in state,
            "restartCount": 0,
            "state": state,
            "lastState": {},
        }

    def _write_waiting(self, run: _Run, reason: str, message: str) -> None:
        def mutate(status: dict[str, Any]) -> None:
            self._base_status(status)
            status["phase"] = "Pending"
            _set_condition(status, "PodReadyToStartContainers", "False")
            _set_condition(status, "Initialized", "True")
            not_ready = f"containers with unready status: [{run.container}]"
            _set_condition(status, "Ready", "False", "ContainersNotReady", not_ready)
            _set_condition(status, "ContainersReady", "False", "ContainersNotReady", not_ready)
            status["containerStatuses"] = [
                self._container_status(
                    run, {"waiting": {"reason": reason, "message": message}}, False
                )
            ]

        self._update_status(run, mutate)

    def _write_running(self, run: _Run) -> None:
        def mutate(status: dict[str, Any]) -> None:
            self._base_status(status)
            status["phase"] = "Running"
            status["podIP"] = POD_IP
            status["podIPs"] = [{"ip": POD_IP}]
            for ctype in (
                "PodReadyToStartContainers",
                "Initialized",
                "ContainersReady",
                "Ready",
                "PodScheduled",
            ):
                _set_condition(status, ctype, "True")
            status["containerStatuses"] = [
                self._container_status(run, {"running": {"startedAt": run.started_at}}, True)
            ]

        self._update_status(run, mutate)

    def _write_terminal(self, run: _Run, phase: str, terminated: dict[str, Any]) -> None:
        def mutate(status: dict[str, Any]) -> None:
            self._base_status(status)
            status["phase"] = phase
            if run.started_at:
                status["podIP"] = POD_IP
                status["podIPs"] = [{"ip": POD_IP}]
            _set_condition(status, "PodReadyToStartContainers", "False")
            _set_condition(status, "Initialized", "True")
            _set_condition(status, "Ready", "False", "PodCompleted")
            _set_condition(status, "ContainersReady", "False", "PodCompleted")
            term = {k: v for k, v in terminated.items() if v is not None}
            status["containerStatuses"] = [self._container_status(run, {"terminated": term}, False)]

        self._update_status(run, mutate)

    def _finish_deletion(self, run: _Run) -> None:
        """The kubelet's last word on a deleted pod: delete it with grace period 0."""
        status, pod = self._require_api().request("GET", _pod_path(run.namespace, run.name))
        if status != 200 or pod["metadata"]["uid"] != run.uid:
            return
        if not pod["metadata"].get("deletionTimestamp"):
            return
        body = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "gracePeriodSeconds": 0,
            "preconditions": {"uid": run.uid},
        }
        self._require_api().request("DELETE", _pod_path(run.namespace, run.name), body=body)

    # ----------------------------------------------------------------- lookups

    def _find(self, namespace: str, pod: str) -> _Run:
        with self._lock:
            runs = [r for r in self._runs.values() if (r.namespace, r.name) == (namespace, pod)]
        if not runs:
            raise KeyError(f"PodExecutor has not seen pod {namespace}/{pod}")
        return max(runs, key=lambda r: r.seq)


# --------------------------------------------------------------------------- helpers


def _set_condition(
    status: dict[str, Any],
    ctype: str,
    value: str,
    reason: str | None = None,
    message: str | None = None,
) -> None:
    conditions = status.setdefault("conditions", [])
    for cond in conditions:
        if cond.get("type") == ctype:
            break
    else:
        cond = {"type": ctype}
        conditions.append(cond)
    if cond.get("status") != value:
        cond["lastTransitionTime"] = _now()
    cond["status"] = value
    cond["lastProbeTime"] = None
    for key, val in (("reason", reason), ("message", message)):
        if val is None:
            cond.pop(key, None)
        else:
            cond[key] = val


def _can_search(path: str, uid: int, groups: set[int]) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    if st.st_uid == uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid in groups:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def _first_blocked_parent(path: str, uid: int, groups: set[int]) -> str | None:
    """The highest parent folder of ``path`` that ``uid`` may not traverse."""
    parts = Path(path).parts
    current = "/"
    for part in parts[1:]:
        if not _can_search(current, uid, groups):
            return current
        current = os.path.join(current, part)
    return None


def _alive(proc: subprocess.Popen[bytes]) -> bool:
    """Whether ``proc`` still runs; unlike poll(), does not reap it (WNOWAIT)."""
    if proc.returncode is not None:
        return False
    try:
        info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return proc.poll() is None
    return info is None


def _apply_fs_group(root: Path, fs_group: int | None, *, readonly: bool) -> None:
    """The kubelet's SetVolumeOwnership: group ``fs_group``, group rw (r when readonly),
    setgid folders, recursively (skipped when the root already matches)."""
    if fs_group is None:
        return
    st = root.stat()
    if st.st_gid == fs_group and st.st_mode & stat.S_ISGID and not readonly:
        return  # OnRootMismatch: a PVC's tree is only walked the first time
    mask = 0o440 if readonly else 0o660
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames, None]:
            p = dirpath if name is None else os.path.join(dirpath, name)
            lst = os.lstat(p)
            if stat.S_ISLNK(lst.st_mode):
                continue
            os.chown(p, -1, fs_group)
            mode = stat.S_IMODE(lst.st_mode) | mask
            if stat.S_ISDIR(lst.st_mode):
                mode |= stat.S_ISGID | 0o110
            os.chmod(p, mode)


@atexit.register
def _stop_all() -> None:
    for executor in list(_LIVE):
        with contextlib.suppress(Exception):
            executor.stop()
