"""A real Prometheus (Debian's package) on 127.0.0.1 for tests, and pod discovery for it."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml


class Prometheus:
    """Starts prometheus with a given config; queries its HTTP API."""

    def __init__(self, folder: Path, config: dict[str, Any], binary: str | None = None) -> None:
        self.folder = folder
        self.config = config
        self.binary = binary or shutil.which("prometheus") or "prometheus"
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        self.process: subprocess.Popen[bytes] | None = None
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def start(self) -> Prometheus:
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "prometheus.yml").write_text(yaml.safe_dump(self.config))
        self.process = subprocess.Popen(
            [
                self.binary,
                f"--config.file={self.folder / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=(self.folder / "prometheus.log").open("wb"),
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                with self._opener.open(f"http://127.0.0.1:{self.port}/-/ready", timeout=2):
                    return self
            except OSError:
                assert self.process.poll() is None, self.log()
                assert time.monotonic() < deadline, "Prometheus did not become ready"
                time.sleep(0.2)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        path = self.folder / "prometheus.log"
        return path.read_text()[-3000:] if path.exists() else ""

    def _get(self, path: str, parameters: dict[str, Any]) -> Any:
        url = f"http://127.0.0.1:{self.port}{path}?" + urllib.parse.urlencode(parameters)
        with self._opener.open(url, timeout=20) as reply:
            answer = json.loads(reply.read())
        assert answer["status"] == "success", answer
        return answer["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return list(self._get("/api/v1/query", {"query": expr})["result"])

    def query_range(
        self, expr: str, start: float, end: float, step: float = 1.0
    ) -> list[dict[str, Any]]:
        data = self._get(
            "/api/v1/query_range", {"query": expr, "start": start, "end": end, "step": step}
        )
        return list(data["result"])


# The common annotation-based pod scrape job (Prometheus' kubernetes example, the
# prometheus-community chart): keep pods annotated prometheus.io/scrape, take path and port
# from the annotations, copy pod labels, add namespace and pod. No honor_labels: a scraped
# label named like a target label (job, namespace, pod, ...) is renamed exported_<name>.
ANNOTATION_POD_RELABELING: list[dict[str, Any]] = [
    {
        "source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"],
        "action": "keep",
        "regex": "true",
    },
    {
        "source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_path"],
        "regex": "(.+)",
        "target_label": "__metrics_path__",
    },
    {
        "source_labels": ["__address__", "__meta_kubernetes_pod_annotation_prometheus_io_port"],
        "regex": r"([^:]+)(?::\d+)?;(\d+)",
        "replacement": "$1:$2",
        "target_label": "__address__",
    },
    {"action": "labelmap", "regex": "__meta_kubernetes_pod_label_(.+)"},
    {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
    {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
]


def annotated_pod(
    address: str, namespace: str, pod: str, labels: dict[str, str], port: int
) -> dict[str, Any]:
    """A static target carrying the __meta_kubernetes_* labels kubernetes_sd_configs gives a
    pod annotated as the operator annotates training pods (prometheus.io/scrape, port, path)."""
    meta = {
        "__meta_kubernetes_namespace": namespace,
        "__meta_kubernetes_pod_name": pod,
        "__meta_kubernetes_pod_annotation_prometheus_io_scrape": "true",
        "__meta_kubernetes_pod_annotation_prometheus_io_port": str(port),
        "__meta_kubernetes_pod_annotation_prometheus_io_path": "/metrics",
    }
    for name, value in labels.items():
        meta["__meta_kubernetes_pod_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", name)] = value
    return {"targets": [address], "labels": meta}


def annotation_scrape_job(pods: list[dict[str, Any]], name: str = "kubernetes-pods") -> dict:
    """The annotation-based scrape job (without honor_labels) over annotated_pod targets."""
    return {
        "job_name": name,
        "static_configs": pods,
        "relabel_configs": ANNOTATION_POD_RELABELING,
    }


def _meta_name(name: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def pod_targets(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """file_sd targets for pods, with the labels Prometheus' ``kubernetes_sd_configs`` (role
    pod) gives them: one target per declared container port at ``podIP:port``, the pod's
    namespace, name, phase, labels and annotations as ``__meta_kubernetes_*``."""
    targets = []
    for pod in pods:
        ip = (pod.get("status") or {}).get("podIP")
        if not ip:
            continue
        meta = {
            "__meta_kubernetes_namespace": pod["metadata"]["namespace"],
            "__meta_kubernetes_pod_name": pod["metadata"]["name"],
            "__meta_kubernetes_pod_ip": ip,
            "__meta_kubernetes_pod_phase": pod["status"].get("phase", ""),
        }
        for name, value in (pod["metadata"].get("labels") or {}).items():
            meta["__meta_kubernetes_pod_label_" + _meta_name(name)] = value
        for name, value in (pod["metadata"].get("annotations") or {}).items():
            meta["__meta_kubernetes_pod_annotation_" + _meta_name(name)] = value
        ports = [
            port["containerPort"]
            for container in pod["spec"]["containers"]
            for port in container.get("ports", [])
        ]
        for port in ports or [80]:
            targets.append({"targets": [f"{ip}:{port}"], "labels": dict(meta)})
    return targets


class PodDiscovery:
    """Pod discovery through the apiserver for Prometheus, written to a file_sd file.

    Debian's Prometheus is built without ``kubernetes_sd_configs``; this lists the pods every
    half second with the same credentials a Prometheus in the cluster would use and writes
    them as ``pod_targets`` does. The scraping itself is Prometheus', by pod IP."""

    def __init__(self, list_pods: Any, path: Path, interval: float = 0.5) -> None:
        self.list_pods = list_pods
        self.path = path
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def scrape_job(self, name: str = "kubernetes-pods") -> dict[str, Any]:
        """The annotation-based scrape job over the discovered pods."""
        return {
            "job_name": name,
            "file_sd_configs": [{"files": [str(self.path)], "refresh_interval": "1s"}],
            "relabel_configs": ANNOTATION_POD_RELABELING,
        }

    def start(self) -> PodDiscovery:
        self._write()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _write(self) -> None:
        try:
            targets = pod_targets(self.list_pods())
        except Exception:  # the apiserver busy: keep the last targets
            return
        partial = self.path.with_suffix(".partial")
        partial.write_text(json.dumps(targets))
        partial.replace(self.path)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._write()
