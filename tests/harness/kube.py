"""A real Kubernetes control plane for tests, on 127.0.0.1 only (or in a network namespace).

etcd + kube-apiserver + kube-controller-manager, built from source by
``hack/build-kube.sh``, plus the real ``kubectl`` and ``helm`` fetched by
``hack/fetch-kube-tools.sh``. On its own it has no kubelet and no scheduler: Pods that a
controller creates (for example for a Job) stay Pending, which is what the apiserver-only
tests need. ``tests/harness/node.py`` starts it inside a network namespace of the test's
own (``network=``) and adds a real node: scheduler, kubelet, containerd, CNI, DNS, storage.

Usage::

    with KubeCluster() as cluster:
        cluster.kubectl("get", "namespaces")
        sa_kubeconfig = cluster.kubeconfig_for_service_account("default", "default")

Standard library only, plus the ``openssl`` command (to make the
service-account signing key).
"""

from __future__ import annotations

import atexit
import base64
import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from .netns import NetworkNamespace

KUBE_VERSION = "v1.35.4"

_T = TypeVar("_T")

CONTROL_PLANE_BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager")
TOOLS = ("kubectl", "helm")

# Controllers for a node-less test cluster: workloads create their pods (which stay
# Pending), owner references are garbage collected, namespaces are created with a
# `default` ServiceAccount and are cleaned up on deletion, finished Jobs expire,
# and aggregated ClusterRoles (admin/edit/view) get their rules.
CONTROLLERS = (
    "job-controller",
    "cronjob-controller",
    "ttl-after-finished-controller",
    "garbage-collector-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
    "clusterrole-aggregation-controller",
    "replicaset-controller",
    "deployment-controller",
    "statefulset-controller",
    "daemonset-controller",
    "endpoints-controller",
    "endpointslice-controller",
    "disruption-controller",
    "resourcequota-controller",
    "pod-garbage-collector-controller",
    "persistentvolume-binder-controller",
    "persistentvolumeclaim-protection-controller",
    "persistentvolume-protection-controller",
)

SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"  # kube-proxy serves it on the real node (node.py)
# With a real node, the node-lifecycle controller removes the kubelet's not-ready taint.
NODE_CONTROLLERS = ("node-lifecycle-controller",)
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"

_STOP_GRACE_SECONDS = 5.0


def cache_dir() -> Path:
    """The project's download/build cache (``$RLHF_CACHE`` or ``~/.cache/rlhf-operator``)."""
    env = os.environ.get("RLHF_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "rlhf-operator"


def binaries_dir() -> Path:
    """Where hack/build-kube.sh puts etcd, kube-apiserver and kube-controller-manager."""
    return cache_dir() / "kube" / KUBE_VERSION


def tools_dir() -> Path:
    """Where hack/fetch-kube-tools.sh puts kubectl and helm."""
    return cache_dir() / "bin"


def missing_binaries(binaries: Path | None = None, tools: Path | None = None) -> list[str]:
    """Paths of the control-plane binaries and client tools that are not installed."""
    binaries = binaries or binaries_dir()
    tools = tools or tools_dir()
    paths = [binaries / b for b in CONTROL_PLANE_BINARIES] + [tools / t for t in TOOLS]
    missing = [str(p) for p in paths if not (p.is_file() and os.access(p, os.X_OK))]
    if shutil.which("openssl") is None:
        missing.append("openssl (command)")
    return missing


INSTALL_HINT = "build them with: bash hack/fetch-kube-tools.sh && bash hack/build-kube.sh"


class KubeClusterError(RuntimeError):
    """The control plane failed to start (the message ends with the processes' log tails)."""


class CommandError(subprocess.CalledProcessError):
    """A kubectl/helm command failed; unlike CalledProcessError, str() shows its output."""

    def __str__(self) -> str:
        text = super().__str__()
        for label, stream in (("stdout", self.stdout), ("stderr", self.stderr)):
            if stream:
                text += f"\n--- {label} ---\n{stream.rstrip()}"
        return text


def _free_ports(count: int) -> list[int]:
    """Distinct free TCP ports on 127.0.0.1 (held open together so none repeats)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _die_with_parent() -> None:  # pragma: no cover - runs in the child after fork
    """preexec_fn: SIGKILL this child when the (forking thread of the) parent dies.

    Backstop for a test process that is itself SIGKILLed and so never runs stop().
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _tail(path: Path, lines: int = 40) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            data = f.read().decode("utf-8", "replace")
    except OSError as e:
        return f"<unreadable: {e}>"
    return "\n".join(data.splitlines()[-lines:])


def write_kubeconfig(
    path: Path | str,
    *,
    server: str,
    ca_data: bytes,
    token: str,
    user: str,
    namespace: str | None = None,
    cluster_name: str = "rlhf-test",
) -> Path:
    """Write a token kubeconfig (JSON, which is valid YAML) and return its path."""
    path = Path(path)
    context: dict[str, Any] = {"cluster": cluster_name, "user": user}
    if namespace:
        context["namespace"] = namespace
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": cluster_name,
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(ca_data).decode(),
                },
            }
        ],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": cluster_name, "context": context}],
        "current-context": cluster_name,
        "preferences": {},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(config, f, indent=2)
    return path


class KubeCluster:
    """etcd + kube-apiserver + kube-controller-manager on 127.0.0.1.

    ``start()`` returns when ``/readyz`` is ok and the ``default`` ServiceAccount
    exists in namespace ``default``. ``stop()`` ends every process and removes the
    temporary directory (set ``keep_dir=True`` or ``RLHF_KEEP_KUBE_DIR=1`` to keep it,
    with the logs, for debugging). Both are safe to call more than once, and a
    failed ``start()`` cleans up after itself.
    """

    def __init__(
        self,
        *,
        binaries: Path | str | None = None,
        tools: Path | str | None = None,
        start_timeout: float = 120.0,
        keep_dir: bool | None = None,
        extra_apiserver_args: Sequence[str] = (),
        die_with_parent: bool = True,
        network: NetworkNamespace | None = None,
        users: Mapping[str, str] = {},
    ) -> None:
        """``network``: run inside this network namespace, serving on its inside address
        (a real node joins it: tests/harness/node.py). ``users``: extra token users,
        name -> comma-separated groups (the node's components), for ``kubeconfig_for_user``.
        """
        self.binaries = Path(binaries) if binaries else binaries_dir()
        self.tools = Path(tools) if tools else tools_dir()
        self.start_timeout = start_timeout
        if keep_dir is None:
            keep_dir = os.environ.get("RLHF_KEEP_KUBE_DIR", "") not in ("", "0", "false")
        self.keep_dir = keep_dir
        self.extra_apiserver_args = list(extra_apiserver_args)
        # PR_SET_PDEATHSIG fires when the *thread* that started the process exits:
        # turn it off when starting a cluster from a short-lived thread.
        self.die_with_parent = die_with_parent
        self._pdeathsig = die_with_parent and sys.platform == "linux"
        self.network = network
        self._user_tokens = {
            user: (secrets.token_hex(24), groups) for user, groups in users.items()
        }

        self.dir: Path | None = None
        self.log_dir: Path | None = None
        self.startup_seconds: float | None = None
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: dict[str, IO[bytes]] = {}
        self._lock = threading.Lock()
        self._server: str | None = None
        self._etcd_url: str | None = None
        self._admin_token: str | None = None
        self._admin_kubeconfig: Path | None = None
        self._ca_file: Path | None = None
        self._ssl: ssl.SSLContext | None = None
        # Never route 127.0.0.1 through an HTTP(S)_PROXY from the environment.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    # ------------------------------------------------------------------ public API

    def __enter__(self) -> KubeCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def server(self) -> str:
        """The apiserver's https URL."""
        return self._require(self._server, "server")

    @property
    def etcd_url(self) -> str:
        return self._require(self._etcd_url, "etcd_url")

    @property
    def admin_token(self) -> str:
        """Bearer token of user ``admin`` in group ``system:masters``."""
        return self._require(self._admin_token, "admin_token")

    @property
    def admin_kubeconfig(self) -> Path:
        """Kubeconfig of a cluster admin (``system:masters``), trusting the apiserver's CA."""
        return self._require(self._admin_kubeconfig, "admin_kubeconfig")

    @property
    def ca_file(self) -> Path:
        """The apiserver's self-generated serving certificate bundle (serving cert + its CA)."""
        return self._require(self._ca_file, "ca_file")

    def start(self) -> KubeCluster:
        with self._lock:
            if self.dir is not None:
                raise RuntimeError("KubeCluster already started")
            missing = missing_binaries(self.binaries, self.tools)
            if missing:
                raise FileNotFoundError(f"missing: {', '.join(missing)}; {INSTALL_HINT}")
            self.dir = Path(tempfile.mkdtemp(prefix="rlhf-kube-"))
            _LIVE.add(self)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """End every process (SIGTERM, then SIGKILL) and remove the temporary directory."""
        with self._lock:
            # One at a time, in reverse start order: an apiserver whose etcd is already
            # gone spends its whole grace period retrying storage calls.
            for _, proc in reversed(list(self._procs.items())):
                _signal_group(proc, signal.SIGTERM)
                try:
                    proc.wait(timeout=_STOP_GRACE_SECONDS)
                except subprocess.TimeoutExpired:
                    _signal_group(proc, signal.SIGKILL)
                    try:
                        proc.wait(timeout=10)
                    except subprocess.TimeoutExpired:  # pragma: no cover - unkillable
                        pass
            self._procs.clear()
            for f in self._logs.values():
                f.close()
            self._logs.clear()
            if self.dir is not None:
                if self.keep_dir:
                    print(f"KubeCluster: kept {self.dir}", file=sys.stderr)
                else:
                    shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
            self._server = self._etcd_url = self._admin_token = None
            self._admin_kubeconfig = self._ca_file = None
            self._ssl = None
            _LIVE.discard(self)

    def kubectl(
        self,
        *args: Any,
        kubeconfig: Path | str | None = None,
        check: bool = True,
        input: str | None = None,
        timeout: float = 120.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run the real kubectl (text mode, output captured) as admin or as ``kubeconfig``."""
        cmd = [str(self.tools / "kubectl"), f"--kubeconfig={kubeconfig or self.admin_kubeconfig}"]
        return self._run(cmd + [str(a) for a in args], check=check, input=input, timeout=timeout)

    def helm(
        self,
        *args: Any,
        kubeconfig: Path | str | None = None,
        check: bool = True,
        input: str | None = None,
        timeout: float = 300.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run the real helm against this cluster, with its own cache/config/data homes."""
        cmd = [str(self.tools / "helm"), f"--kubeconfig={kubeconfig or self.admin_kubeconfig}"]
        return self._run(cmd + [str(a) for a in args], check=check, input=input, timeout=timeout)

    def kubeconfig_for_user(self, user: str) -> Path:
        """A token kubeconfig for one of the ``users`` given to the constructor."""
        token, _ = self._user_tokens[user]
        folder = self._require(self.dir, "dir") / "kubeconfigs"
        path = folder / f"{user.replace(':', '-')}.kubeconfig"
        return write_kubeconfig(
            path, server=self.server, ca_data=self.ca_file.read_bytes(), token=token, user=user
        )

    def check_alive(self) -> None:
        """Raise KubeClusterError when a process of the cluster has exited."""
        self._check_alive()

    def kubeconfig_for_service_account(
        self,
        namespace: str,
        name: str,
        path: Path | str | None = None,
        *,
        duration: str = "1h",
    ) -> Path:
        """A kubeconfig acting as ServiceAccount ``namespace/name`` (token from TokenRequest)."""
        token = self.kubectl(
            "create", "token", name, "--namespace", namespace, f"--duration={duration}"
        ).stdout.strip()
        if path is None:
            path = (
                self._require(self.dir, "dir") / "kubeconfigs" / f"sa-{namespace}-{name}.kubeconfig"
            )
        return write_kubeconfig(
            path,
            server=self.server,
            ca_data=self.ca_file.read_bytes(),
            token=token,
            user=f"system:serviceaccount:{namespace}:{name}",
            namespace=namespace,
        )

    def wait_for_service_account(
        self, namespace: str, name: str = "default", timeout: float = 30.0
    ) -> None:
        """Wait until the ServiceAccount exists (Pods can't be created in a namespace before
        the serviceaccount controller made its ``default`` one)."""
        deadline = time.monotonic() + timeout
        path = f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}"
        while True:
            status, _ = self.api_get(path)
            if status == 200:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"ServiceAccount {namespace}/{name} not there after {timeout}s")
            self._check_alive()
            time.sleep(0.1)

    def api_get(self, path: str, *, timeout: float = 10.0) -> tuple[int, str]:
        """GET ``path`` as admin: (HTTP status, body), status 0 if unreachable."""
        req = urllib.request.Request(
            self.server + path, headers={"Authorization": f"Bearer {self.admin_token}"}
        )
        return self._http(req, timeout=timeout)

    def api_request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = None,
        content_type: str = "application/json",
        timeout: float = 10.0,
    ) -> tuple[int, str]:
        """One API request with ``body`` as JSON, as admin or as ``token``'s holder:
        (HTTP status, body)."""
        req = urllib.request.Request(
            self.server + path,
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={
                "Authorization": f"Bearer {token or self.admin_token}",
                "Content-Type": content_type,
            },
        )
        return self._http(req, timeout=timeout)

    def api_post(self, path: str, body: Any, *, timeout: float = 10.0) -> tuple[int, str]:
        """POST ``body`` (JSON) to ``path`` as admin: (HTTP status, body)."""
        return self.api_request("POST", path, body, timeout=timeout)

    def logs(self, lines: int = 40, *, first: str | None = None) -> str:
        """The last lines of each process's log (``first``'s first), for error messages."""
        if self.log_dir is None:
            return ""
        parts = []
        names = ["kube-controller-manager", "kube-apiserver", "etcd"]
        if first in names:
            names.remove(first)
            names.insert(0, first)
        for name in names:
            log = self.log_dir / f"{name}.log"
            if log.exists():
                parts.append(f"--- {log} (last {lines} lines) ---\n{_tail(log, lines)}")
        return "\n".join(parts)

    # ------------------------------------------------------------------ internals

    def _start(self) -> None:
        t0 = time.monotonic()
        deadline = t0 + self.start_timeout
        d = self._require(self.dir, "dir")
        self.log_dir = d / "logs"
        self.log_dir.mkdir()
        if self.network is None:
            etcd_client, etcd_peer, api_port, kcm_port = _free_ports(4)
            host = bind = "127.0.0.1"
        else:  # a namespace of our own: every port is free
            etcd_client, etcd_peer, api_port, kcm_port = 2379, 2380, 6443, 10257
            host, bind = self.network.inside_address, "0.0.0.0"

        # -- etcd
        self._etcd_url = f"http://{host}:{etcd_client}"
        peer_url = f"http://127.0.0.1:{etcd_peer}"
        self._spawn(
            "etcd",
            [
                str(self.binaries / "etcd"),
                "--name=rlhf-test",
                f"--data-dir={d / 'etcd'}",
                f"--listen-client-urls={self._etcd_url}",
                f"--advertise-client-urls={self._etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=rlhf-test={peer_url}",
                "--initial-cluster-state=new",
                "--unsafe-no-fsync=true",  # throwaway data: don't pay for fsync
                "--log-level=warn",
            ],
        )

        # -- credentials (while etcd starts)
        sa_key = d / "service-account.key"
        self._openssl("genrsa", "-out", str(sa_key), "2048")
        self._admin_token = secrets.token_hex(24)
        kcm_token = secrets.token_hex(24)
        token_file = d / "tokens.csv"
        token_file.write_text(
            f'{self._admin_token},admin,admin-uid,"system:masters"\n'
            f'{kcm_token},system:kube-controller-manager,kcm-uid,"system:masters"\n'
            + "".join(
                f'{token},{user},{user}-uid,"{groups}"\n'
                for user, (token, groups) in self._user_tokens.items()
            )
        )
        token_file.chmod(0o600)

        self._wait(
            "etcd /health",
            lambda: self._http_ok(urllib.request.Request(self._etcd_url + "/health"), "true"),
            deadline,
        )

        # -- kube-apiserver
        cert_dir = d / "apiserver-certs"
        self._server = f"https://{host}:{api_port}"
        self._spawn(
            "kube-apiserver",
            [
                str(self.binaries / "kube-apiserver"),
                f"--etcd-servers={self._etcd_url}",
                f"--bind-address={bind}",
                f"--advertise-address={host}",
                f"--secure-port={api_port}",
                f"--cert-dir={cert_dir}",
                f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                f"--service-account-key-file={sa_key}",
                f"--service-account-signing-key-file={sa_key}",
                f"--token-auth-file={token_file}",
                "--authorization-mode=Node,RBAC",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                "--allow-privileged=true",
                # Without a node, the default (lease) reconciler would publish 127.0.0.1 as
                # the endpoint of Service default/kubernetes, which validation rejects
                # (loopback) every 10s. With one, pods reach the apiserver through it.
                *(["--endpoint-reconciler-type=none"] if self.network is None else []),
                # Reach kubelets (logs, exec) at their node IP: node names don't resolve here.
                "--kubelet-preferred-address-types=InternalIP,Hostname",
                "--profiling=false",
                *self.extra_apiserver_args,
            ],
        )
        # --cert-dir: with no --tls-cert-file the apiserver makes a CA and a serving
        # cert for the advertised address and writes apiserver.crt (serving cert + CA), then .key.
        crt, key = cert_dir / "apiserver.crt", cert_dir / "apiserver.key"
        self._wait("apiserver serving certificate", lambda: crt.exists() and key.exists(), deadline)
        self._ca_file = crt
        ctx = ssl.create_default_context(cafile=str(crt))
        ctx.verify_flags &= ~getattr(ssl, "VERIFY_X509_STRICT", 0)
        self._ssl = ctx
        self._wait(
            "kube-apiserver /readyz",
            lambda: self._http_ok(
                urllib.request.Request(
                    self._server + "/readyz",
                    headers={"Authorization": f"Bearer {self._admin_token}"},
                ),
                "ok",
            ),
            deadline,
        )
        ca_data = crt.read_bytes()
        self._admin_kubeconfig = write_kubeconfig(
            d / "admin.kubeconfig",
            server=self._server,
            ca_data=ca_data,
            token=self._admin_token,
            user="admin",
        )
        kcm_kubeconfig = write_kubeconfig(
            d / "kube-controller-manager.kubeconfig",
            server=self._server,
            ca_data=ca_data,
            token=kcm_token,
            user="system:kube-controller-manager",
        )

        # -- kube-controller-manager (started only now: it gives up if the apiserver
        # is not healthy within ~10s of its start)
        self._spawn(
            "kube-controller-manager",
            [
                str(self.binaries / "kube-controller-manager"),
                f"--kubeconfig={kcm_kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={kcm_port}",
                f"--cert-dir={d / 'kcm-certs'}",
                "--leader-elect=false",
                "--use-service-account-credentials=false",
                f"--controllers={','.join(self._controllers())}",
                f"--service-account-private-key-file={sa_key}",
                f"--root-ca-file={crt}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                "--profiling=false",
            ],
        )
        self.wait_for_service_account(
            "default", "default", timeout=max(1.0, deadline - time.monotonic())
        )
        self.startup_seconds = time.monotonic() - t0

    def _controllers(self) -> tuple[str, ...]:
        return CONTROLLERS + (NODE_CONTROLLERS if self.network is not None else ())

    def _preexec(self) -> None:  # pragma: no cover - runs in the child after fork
        if self.network is not None:
            self.network.enter()
        if self._pdeathsig:
            _die_with_parent()

    def _spawn(self, name: str, cmd: list[str]) -> None:
        assert self.log_dir is not None
        log = open(self.log_dir / f"{name}.log", "ab")
        self._logs[name] = log
        log.write(("$ " + " ".join(cmd) + "\n").encode())
        log.flush()
        env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "ETCDCTL_API")}
        self._procs[name] = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.dir,
            env=env,
            start_new_session=True,  # own process group: stop() signals the whole group
            preexec_fn=self._preexec if (self._pdeathsig or self.network) else None,
        )

    def _check_alive(self) -> None:
        for name, proc in self._procs.items():
            if proc.poll() is not None:
                raise KubeClusterError(
                    f"{name} exited with code {proc.returncode} (logs in {self.log_dir})\n"
                    + self.logs(first=name)
                )

    def _wait(self, what: str, ready: Any, deadline: float) -> None:
        while True:
            self._check_alive()
            if ready():
                return
            if time.monotonic() > deadline:
                raise KubeClusterError(
                    f"timed out after {self.start_timeout}s waiting for {what} "
                    f"(logs in {self.log_dir})\n{self.logs()}"
                )
            time.sleep(0.1)

    def _http(self, req: urllib.request.Request, timeout: float = 5.0) -> tuple[int, str]:
        if req.full_url.startswith("https:"):
            handlers = [
                urllib.request.ProxyHandler({}),
                urllib.request.HTTPSHandler(context=self._ssl),
            ]
            opener = urllib.request.build_opener(*handlers)
        else:
            opener = self._opener
        try:
            with opener.open(req, timeout=timeout) as resp:
                return resp.status, resp.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode("utf-8", "replace")
        except (urllib.error.URLError, OSError):
            return 0, ""

    def _http_ok(self, req: urllib.request.Request, expect: str) -> bool:
        status, body = self._http(req, timeout=2.0)
        return status == 200 and expect in body

    def _openssl(self, *args: str) -> None:
        res = subprocess.run(["openssl", *args], capture_output=True, text=True)
        if res.returncode != 0:
            raise KubeClusterError(f"openssl {' '.join(args)} failed:\n{res.stderr}")

    def _tool_env(self) -> dict[str, str]:
        d = self._require(self.dir, "dir")
        env = {
            k: v for k, v in os.environ.items() if k != "KUBECONFIG" and not k.startswith("HELM_")
        }
        env["KUBECACHEDIR"] = str(d / "kube-cache")
        for kind in ("CACHE", "CONFIG", "DATA"):
            env[f"HELM_{kind}_HOME"] = str(d / "helm" / kind.lower())
        return env

    def _run(
        self, cmd: list[str], *, check: bool, input: str | None, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(
            cmd,
            input=input,
            capture_output=True,
            text=True,
            env=self._tool_env(),
            timeout=timeout,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
        if check and res.returncode != 0:
            raise CommandError(res.returncode, cmd, res.stdout, res.stderr)
        return res

    @staticmethod
    def _require(value: _T | None, what: str) -> _T:
        if value is None:
            raise RuntimeError(f"KubeCluster.{what}: the cluster is not started")
        return value


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    """Signal the process group of `proc` (start_new_session: pgid == pid).

    Only while `proc` is unreaped: until then its pid (and so the group id) can't
    have been reused by an unrelated process.
    """
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


# Clusters still running at interpreter exit (a test run interrupted before its
# fixtures' teardown) are stopped here.
_LIVE: set[KubeCluster] = set()


@atexit.register
def _stop_all() -> None:
    for cluster in list(_LIVE):
        try:
            cluster.stop()
        except Exception:
            pass
