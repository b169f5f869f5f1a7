"""Fixtures for tests against the real apiserver."""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CRD_NAMES = (
    "sftjobs.rlhf.dev",
    "rewardmodeljobs.rlhf.dev",
    "ppojobs.rlhf.dev",
    "dpojobs.rlhf.dev",
)


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
def operator(crds_installed, namespace, tmp_path):  # type: ignore[no-untyped-def]
    """`rlhf operator` (admin credentials) on one namespace of the apiserver-only cluster."""
    from harness.pipeline import OperatorProcess

    process = OperatorProcess(
        crds_installed.admin_kubeconfig, namespace, tmp_path / "operator.log"
    ).start()
    try:
        yield process
    finally:
        process.stop()
