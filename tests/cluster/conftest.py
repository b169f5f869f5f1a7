"""Fixtures for tests against the real apiserver."""

from __future__ import annotations

import time
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


@pytest.fixture
def pipeline(crds_installed, namespace, tmp_path):  # type: ignore[no-untyped-def]
    """The operator (admin credentials) and the test executor, scoped to one namespace."""
    from harness.executor import PodExecutor
    from harness.pipeline import OperatorProcess, Pipeline, free_port

    trainer_port = free_port()
    executor = PodExecutor(
        crds_installed,
        tmp_path / "volumes",
        namespace=namespace,
        label_selector="app.kubernetes.io/managed-by=rlhf-operator",
        max_parallel=1,
        expose_paths=[ROOT],  # the code, as an image would hold it
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
