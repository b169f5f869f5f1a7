"""Driving the operator in tests: a real `rlhf operator` subprocess, kubectl, and the pods it
makes, which a real kubelet runs in real containers (tests/harness/node.py)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


class OperatorProcess:
    """`rlhf operator` as a real subprocess against the test apiserver."""

    def __init__(
        self,
        kubeconfig: Path,
        namespace: str,
        log: Path,
        trainer_port: int = 9090,
        trainer_image: str = "rlhf-trainer:test",
    ) -> None:
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.log = log
        self.trainer_port = trainer_port
        self.trainer_image = trainer_image
        self.metrics_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, standalone: bool = True, priority: int | None = None) -> OperatorProcess:
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "RLHF_RECHECK_SECONDS": "1",
            "RLHF_TRAINER_METRICS_PORT": str(self.trainer_port),
            "RLHF_TRAINER_IMAGE": self.trainer_image,
            "RLHF_PEERING_LIFETIME_SECONDS": "4",
            "RLHF_TRAINER_METRICS_LINGER_SECONDS": os.environ.get(
                "RLHF_TRAINER_METRICS_LINGER_SECONDS", "0"
            ),
        }
        command = [
            sys.executable,
            "-m",
            "rlhf_operator.cli",
            "operator",
            *(["--standalone"] if standalone else []),
            *(["--priority", str(priority)] if priority is not None else []),
            "--namespace",
            self.namespace,
            "--metrics-address",
            "127.0.0.1",
            "--metrics-port",
            str(self.metrics_port),
            "--health-port",
            str(free_port()),
        ]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def log_text(self) -> str:
        """What the operator printed so far."""
        return self.log.read_text() if self.log.exists() else ""

    def metrics(self) -> str:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5
        ) as reply:
            return reply.read().decode()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Pipeline:
    """What a pipeline test drives: kubectl, the operator, and the real node's pods.

    ``operator`` is anything with ``log_text()``: an OperatorProcess on the host, or the
    chart's operator pod (whose log is ``kubectl logs``)."""

    def __init__(self, node, namespace, operator, folder) -> None:  # type: ignore[no-untyped-def]
        self.node = node
        self.cluster = node.kube
        self.namespace = namespace
        self.operator = operator
        self.folder = folder

    def kubectl(self, *args: str, **kwargs):  # type: ignore[no-untyped-def]
        # The namespace goes first: after a `--` (kubectl exec) it would reach the command.
        return self.cluster.kubectl("-n", self.namespace, *args, **kwargs)

    def apply(self, *documents: dict | Path) -> None:
        for document in documents:
            if isinstance(document, Path):
                self.kubectl("apply", "-f", str(document))
            else:
                self.kubectl("apply", "-f", "-", input=json.dumps(document))

    def get(self, resource: str, name: str) -> dict | None:
        result = self.kubectl("get", resource, name, "-o", "json", check=False)
        return json.loads(result.stdout) if result.returncode == 0 else None

    def wait_for(self, resource: str, name: str, predicate, timeout: float = 240, what: str = ""):  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        body = None
        while time.monotonic() < deadline:
            body = self.get(resource, name)
            if body is not None and predicate(body):
                return body
            time.sleep(0.3)
        log = self.operator.log_text()[-3000:] + "\n" + self.pod_logs()
        raise AssertionError(
            f"{resource}/{name}: timed out waiting for {what}; last: "
            f"{json.dumps((body or {}).get('status'), indent=1)[:2000]}\noperator log:\n{log}"
        )

    def wait_for_phase(self, resource: str, name: str, phase: str, timeout: float = 240):  # type: ignore[no-untyped-def]
        return self.wait_for(
            resource,
            name,
            lambda body: (body.get("status") or {}).get("phase") == phase,
            timeout,
            f"phase {phase}",
        )

    def pods(self, selector: str = "") -> list[dict]:
        args = ["get", "pods", "-o", "json"] + (["-l", selector] if selector else [])
        return json.loads(self.kubectl(*args).stdout)["items"]

    def running(self) -> list[str]:
        """Names of the pods whose containers run now (in creation order)."""
        pods = sorted(self.pods(), key=lambda p: p["metadata"]["creationTimestamp"])
        return [
            p["metadata"]["name"]
            for p in pods
            if any(
                "running" in (c.get("state") or {})
                for c in p["status"].get("containerStatuses", [])
            )
        ]

    def logs(self, pod: str, previous: bool = False) -> str:
        """The container's output, as ``kubectl logs`` reads it from the kubelet."""
        args = ["logs", pod] + (["--previous"] if previous else [])
        return self.kubectl(*args, check=False).stdout

    def pod_logs(self, lines: int = 40) -> str:
        """The tail of every pod's output, to explain a failed wait."""
        parts = []
        for pod in self.pods():
            name = pod["metadata"]["name"]
            text = self.logs(name)
            parts.append(
                f"--- pod {name} ({pod['status'].get('phase')}):\n"
                + "\n".join(text.splitlines()[-lines:])
            )
        return "\n".join(parts)

    def kill(self, pod: str, sig: int = signal.SIGKILL) -> None:
        """Signal the pod's trainer process from the host (a crash for SIGKILL)."""
        os.kill(self.node.container_pid(self.namespace, pod), sig)

    def evict(self, pod: str) -> None:
        """Evict through the Eviction API, as a node drain would."""
        body = {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": pod, "namespace": self.namespace},
        }
        status, text = self.cluster.api_post(
            f"/api/v1/namespaces/{self.namespace}/pods/{pod}/eviction", body
        )
        assert status == 201, (status, text)

    def shared_claim(self, name: str, access_mode: str = "ReadWriteOnce") -> Path:
        """A claim on the node's statically provisioned shared class (bound at once, where
        local-path waits for a pod), for a test to fill; returns its host folder."""
        self.apply(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": name},
                "spec": {
                    "accessModes": [access_mode],
                    "storageClassName": "shared-hostpath",
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            }
        )
        self.wait_for("pvc", name, lambda b: b["status"].get("phase") == "Bound", 30, "bound")
        return self.claim_folder(name)

    def write_dataset(
        self, claim: str, file: str, rows: list[dict], access_mode: str = "ReadWriteOnce"
    ) -> None:
        """JSON lines into a new shared claim, readable by the trainer's non-root user."""
        folder = self.shared_claim(claim, access_mode)
        (folder / file).write_text("".join(json.dumps(row) + "\n" for row in rows))
        folder.chmod(0o755)
        (folder / file).chmod(0o644)

    def claim_folder(self, claim: str) -> Path:
        """The host folder behind a bound PersistentVolumeClaim (local-path or shared-hostpath)."""
        return self.node.claim_folder(self.namespace, claim)
