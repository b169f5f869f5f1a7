"""Fixtures for tests against the real apiserver."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CRD_NAMES = ("sftjobs.rlhf.dev", "rewardmodeljobs.rlhf.dev", "ppojobs.rlhf.dev")


@pytest.fixture(scope="session")
def crds_installed(kube_cluster):  # type: ignore[no-untyped-def]
    """The generated CRDs applied for real and Established."""
    kube_cluster.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
    wait_established(kube_cluster, CRD_NAMES)
    return kube_cluster


def wait_established(cluster, names: Iterable[str]) -> None:  # type: ignore[no-untyped-def]
    """kubectl wait, retried: right after creation a CRD may have no conditions yet."""
    result = None
    for _ in range(40):
        result = cluster.kubectl(
            "wait",
            "--for=condition=Established",
            "--timeout=30s",
            *[f"crd/{name}" for name in names],
            check=False,
        )
        if result.returncode == 0:
            return
        time.sleep(0.25)
    raise AssertionError(f"CRDs not established: {result.stderr if result else ''}")


class OperatorProcess:
    """`rlhf operator` as a real subprocess against the test apiserver."""

    def __init__(self, kubeconfig: Path, namespace: str, log: Path, trainer_port: int) -> None:
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.log = log
        self.trainer_port = trainer_port
        self.metrics_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> OperatorProcess:
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "RLHF_RECHECK_SECONDS": "1",
            "RLHF_TRAINER_METRICS_PORT": str(self.trainer_port),
            "RLHF_TRAINER_IMAGE": "rlhf-trainer:test",
        }
        command = [
            sys.executable,
            "-m",
            "rlhf_operator.cli",
            "operator",
            "--standalone",
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

    def metrics(self) -> str:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5
        ) as reply:
            return reply.read().decode()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def pipeline(crds_installed, namespace, tmp_path):  # type: ignore[no-untyped-def]
    """The operator (admin credentials) and the test executor, scoped to one namespace."""
    from harness.executor import PodExecutor

    trainer_port = free_port()
    executor = PodExecutor(
        crds_installed,
        tmp_path / "volumes",
        namespace=namespace,
        label_selector="app.kubernetes.io/managed-by=rlhf-operator",
        max_parallel=1,
    )
    executor.start()
    operator = OperatorProcess(
        crds_installed.admin_kubeconfig, namespace, tmp_path / "operator.log", trainer_port
    ).start()
    try:
        yield Pipeline(crds_installed, namespace, executor, operator, tmp_path)
    finally:
        operator.stop()
        executor.stop()


class Pipeline:
    """What a pipeline test drives: kubectl, the executor, the operator."""

    def __init__(self, cluster, namespace, executor, operator, folder) -> None:  # type: ignore[no-untyped-def]
        self.cluster = cluster
        self.namespace = namespace
        self.executor = executor
        self.operator = operator
        self.folder = folder

    def kubectl(self, *args: str, **kwargs):  # type: ignore[no-untyped-def]
        return self.cluster.kubectl(*args, "-n", self.namespace, **kwargs)

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
        log = self.operator.log.read_text()[-3000:] if self.operator.log.exists() else ""
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

    def claim_folder(self, claim: str) -> Path:
        return self.executor.claim_path(self.namespace, claim)
