"""The real Kueue controller manager against a test cluster (``kube.py`` or ``node.py``).

``hack/build-kueue.sh`` builds ``sigs.k8s.io/kueue/cmd/kueue`` (the version pinned in
``hack/kueue/go.mod``) and copies that module's CRDs next to it. ``Kueue(cluster).start()``
installs the CRDs, writes a manager configuration and runs the manager until ``stop()``:
its scheduler admits workloads into ClusterQueues, and its Job integration (``batch/job``)
makes a Workload for every Job labelled ``kueue.x-k8s.io/queue-name`` and suspends and
unsuspends that Job as the Workload is admitted or evicted. With no kubelet the pods of an
admitted Job stay Pending, which is all admission needs: Kueue counts the Job's requests.

Configuration (``manager_configuration``) as a cluster administrator sets it for the
operator: only ``batch/job``; ``manageJobsWithoutQueueName: false`` (Jobs without a queue
label are not Kueue's); no leader election (one manager).

Webhooks. Kueue's release runs with ``internalCertManagement`` on: the manager makes a CA
and serving certificate, keeps them in a Secret (which its Deployment mounts as its
certificate folder), and injects the CA into its webhook configurations and into the
conversion webhook of five CRDs (the CRDs as released carry ``conversion.strategy:
Webhook``). The same is done here: the release's conversion patch is applied to the CRDs,
the namespace and Secret are made, and the harness copies the Secret's certificates into
the manager's folder as the kubelet would. The alternative, certificates of our own, cannot
be had: with internal certificates off, the manager reads its metrics certificate from the
fixed path ``/etc/kueue/metrics/certs`` and exits without one. The
manager then serves its webhooks, but the cluster never calls them: no
``Mutating/ValidatingWebhookConfiguration`` is installed, and the apiserver could not reach
the manager through a Service anyway (the apiserver-only cluster has no Service network).
None is needed: the mutating webhook only suspends a new Job that has a queue label, and
the operator creates every queued Job suspended itself; the validating one refuses bad
queue labels and edits, which the operator never makes. Conversion is never called either:
every client (the operator, kubectl, Kueue) uses the storage version ``v1beta2``.

Standard library, and PyYAML to read the CRDs.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from .kube import KubeCluster, KubeClusterError, _die_with_parent, _free_ports, _tail, cache_dir

if TYPE_CHECKING:
    from .netns import NetworkNamespace

NAMESPACE = "kueue-system"
WEBHOOK_SERVICE = "kueue-webhook-service"
WEBHOOK_SECRET = "kueue-webhook-server-cert"
API = "kueue.x-k8s.io/v1beta2"
CONVERTED_CRDS = ("clusterqueues", "cohorts", "localqueues", "multikueueclusters", "workloads")
"""The CRDs the release gives a conversion webhook (config/components/crd/kustomization.yaml)."""
INSTALL_HINT = "build it with: bash hack/build-kueue.sh"


def kueue_dir() -> Path:
    """Where hack/build-kueue.sh puts the manager (``kueue``) and the CRDs (``crds/``)."""
    return cache_dir() / "kueue"


def missing_kueue() -> list[str]:
    folder = kueue_dir()
    missing = [] if os.access(folder / "kueue", os.X_OK) else [str(folder / "kueue")]
    if not (folder / "crds" / "kueue.x-k8s.io_workloads.yaml").is_file():
        missing.append(str(folder / "crds"))
    return missing


def manager_configuration(
    *, health_address: str, metrics_address: str, webhook_host: str, webhook_port: int, certs: Path
) -> dict[str, Any]:
    """Kueue's config.kueue.x-k8s.io/v1beta2 Configuration for the tests."""
    return {
        "apiVersion": "config.kueue.x-k8s.io/v1beta2",
        "kind": "Configuration",
        "namespace": NAMESPACE,
        "manageJobsWithoutQueueName": False,
        "health": {"healthProbeBindAddress": health_address},
        "metrics": {"bindAddress": metrics_address},
        "webhook": {"host": webhook_host, "port": webhook_port, "certDir": str(certs)},
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {
            "enable": True,
            "webhookServiceName": WEBHOOK_SERVICE,
            "webhookSecretName": WEBHOOK_SECRET,
        },
        "integrations": {"frameworks": ["batch/job"]},
    }


def queue_objects(
    namespace: str, local_queue: str, cluster_queue: str, quota: dict[str, str]
) -> list[dict[str, Any]]:
    """A ResourceFlavor (named like the ClusterQueue), a ClusterQueue for every namespace
    with ``quota`` (resource -> nominal quota) in that flavor, and a LocalQueue on it."""
    return [
        {"apiVersion": API, "kind": "ResourceFlavor", "metadata": {"name": cluster_queue}},
        {
            "apiVersion": API,
            "kind": "ClusterQueue",
            "metadata": {"name": cluster_queue},
            "spec": {
                "namespaceSelector": {},
                "resourceGroups": [
                    {
                        "coveredResources": sorted(quota),
                        "flavors": [
                            {
                                "name": cluster_queue,
                                "resources": [
                                    {"name": name, "nominalQuota": amount}
                                    for name, amount in sorted(quota.items())
                                ],
                            }
                        ],
                    }
                ],
            },
        },
        {
            "apiVersion": API,
            "kind": "LocalQueue",
            "metadata": {"name": local_queue, "namespace": namespace},
            "spec": {"clusterQueue": cluster_queue},
        },
    ]


def with_conversion_webhook(crd: dict[str, Any]) -> dict[str, Any]:
    """The CRD as the release installs it (config/components/crd/patches/webhook_in_*.yaml)."""
    return {
        **crd,
        "spec": {
            **crd["spec"],
            "conversion": {
                "strategy": "Webhook",
                "webhook": {
                    "clientConfig": {
                        "service": {
                            "namespace": NAMESPACE,
                            "name": WEBHOOK_SERVICE,
                            "path": "/convert",
                        }
                    },
                    "conversionReviewVersions": ["v1"],
                },
            },
        },
    }


class Kueue:
    """Kueue's controller manager on ``cluster`` (as its admin); ``start``/``stop``.

    ``network``: the cluster's network namespace (a ``RealCluster``): the manager joins it
    like every control-plane process. Its log is ``<cluster.dir>/logs/kueue.log``.
    """

    def __init__(
        self,
        cluster: KubeCluster,
        *,
        network: NetworkNamespace | None = None,
        start_timeout: float = 90.0,
    ) -> None:
        self.cluster = cluster
        self.network = network
        self.start_timeout = start_timeout
        self.folder = kueue_dir()
        self.startup_seconds: float | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.log_path: Path | None = None

    def __enter__(self) -> Kueue:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Kueue:
        missing = missing_kueue()
        if missing:
            raise FileNotFoundError(f"missing: {', '.join(missing)}; {INSTALL_HINT}")
        t0 = time.monotonic()
        try:
            self._install()
            self._spawn()
            self._wait_ready(t0 + self.start_timeout)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - t0
        return self

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None

    def logs(self, lines: int = 40) -> str:
        return _tail(self.log_path, lines) if self.log_path else ""

    def check_alive(self) -> None:
        if self._process is not None and self._process.poll() is not None:
            raise KubeClusterError(
                f"kueue exited with code {self._process.returncode}\n{self.logs()}"
            )

    # ------------------------------------------------------------------ internals

    def _install(self) -> None:
        """The CRDs (server-side: the Workload CRD is too big for client-side apply's
        annotation), the namespace and the (empty) Secret the certificates go in."""
        crds = []
        for path in sorted((self.folder / "crds").glob("*.yaml")):
            crd = _yaml_document(path)
            plural = crd["spec"]["names"]["plural"]
            crds.append(with_conversion_webhook(crd) if plural in CONVERTED_CRDS else crd)
        objects: list[dict[str, Any]] = [
            *crds,
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        ]
        listing = {"apiVersion": "v1", "kind": "List", "items": objects}
        self.cluster.kubectl(
            "apply", "--server-side", "--force-conflicts", "-f", "-", input=json.dumps(listing)
        )
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": WEBHOOK_SECRET, "namespace": NAMESPACE},
        }
        self.cluster.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(secret))
        names = [f"crd/{crd['metadata']['name']}" for crd in crds]
        self.cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", *names)

    def _spawn(self) -> None:
        base = self.cluster.dir
        assert base is not None
        run_dir = base / "kueue"
        run_dir.mkdir(exist_ok=True)
        self._certs = run_dir / "certs"
        if self.network is None:
            health_port, webhook_port = _free_ports(2)
            host = "127.0.0.1"
        else:  # the namespace is ours: fixed ports
            health_port, webhook_port = 8081, 9443
            host = self.network.inside_address
        self._health = f"http://{host}:{health_port}"
        configuration = manager_configuration(
            health_address=f"{host}:{health_port}",
            metrics_address="0",  # no metrics server: nothing scrapes it here
            webhook_host=host,
            webhook_port=webhook_port,
            certs=self._certs,
        )
        config_file = run_dir / "configuration.json"
        config_file.write_text(json.dumps(configuration, indent=2))
        self.log_path = base / "logs" / "kueue.log"
        self.log_path.parent.mkdir(exist_ok=True)
        self._log = open(self.log_path, "ab")
        visibility_port = _free_ports(1)[0] if self.network is None else 8082
        cmd = [
            str(self.folder / "kueue"),
            f"--config={config_file}",
            f"--kubeconfig={self.cluster.admin_kubeconfig}",
            f"--visibility-server-port={visibility_port}",
            "--zap-log-level=2",
        ]
        self._log.write(("$ " + " ".join(cmd) + "\n").encode())
        self._log.flush()
        network = self.network

        def preexec() -> None:  # pragma: no cover - runs in the child after fork
            if network is not None:
                network.enter()
            _die_with_parent()

        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        self._process = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=run_dir,
            env=env,
            start_new_session=True,
            preexec_fn=preexec,
        )

    def _wait_ready(self, deadline: float) -> None:
        """/readyz answers ok once the certificates are in place and the manager started."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        while True:
            self.check_alive()
            self._mount_certificates()
            try:
                with opener.open(self._health + "/readyz", timeout=2) as reply:
                    if reply.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise KubeClusterError(
                    f"kueue not ready after {self.start_timeout}s\n{self.logs()}"
                )
            time.sleep(0.25)

    def _mount_certificates(self) -> None:
        """Copy the certificates the manager put in its Secret into its certificate folder,
        as the kubelet does for the release's Deployment, which mounts that Secret there
        (the manager waits for the files before it starts)."""
        certs = self._certs
        if (certs / "tls.crt").exists():
            return
        status, body = self.cluster.api_get(
            f"/api/v1/namespaces/{NAMESPACE}/secrets/{WEBHOOK_SECRET}"
        )
        data = json.loads(body).get("data") or {} if status == 200 else {}
        if not all(data.get(name) for name in ("tls.crt", "tls.key")):
            return
        certs.mkdir(parents=True, exist_ok=True)
        for name, value in sorted(data.items(), key=lambda item: item[0] == "tls.crt"):
            target = certs / name  # tls.crt last: the manager looks for it
            target.write_bytes(base64.b64decode(value))
            target.chmod(0o600)


def _yaml_document(path: Path) -> dict[str, Any]:
    """One YAML document (PyYAML comes with the operator's dependencies)."""
    import yaml

    document = yaml.safe_load(path.read_text())
    assert isinstance(document, dict), path
    return document
