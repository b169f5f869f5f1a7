"""Fixtures for the tests on a real node: the control plane, a kubelet running containers from
the images our Dockerfiles build, scheduler, CNI, DNS and storage (tests/harness/node.py)."""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

import pytest

from tests.cluster.conftest import CRD_NAMES, wait_established

ROOT = Path(__file__).resolve().parents[2]


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="session")
def real_cluster():  # type: ignore[no-untyped-def]
    """One RealCluster for the session, with the CRDs installed."""
    from harness import images, kube, node

    missing = kube.missing_binaries() + node.missing_node_parts() + images.missing_images()
    if missing:
        message = f"a real node needs: {', '.join(missing)}; {node.INSTALL_HINT}"
        if _in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    images.build_images()  # seconds when nothing changed; the code in them is this checkout's
    cluster = node.RealCluster()
    try:
        cluster.start()
        print(f"\nreal node up: {cluster.startup_seconds}")
        cluster.kube.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
        wait_established(cluster.kube, CRD_NAMES)
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def node_namespace(real_cluster):  # type: ignore[no-untyped-def]
    """A fresh namespace; afterwards deleted, and its pods waited for, so that the next test
    finds the node's CPU and memory free again."""
    kube = real_cluster.kube
    real_cluster.recycle_shared_volumes()  # those of the tests before, their claims deleted
    name = f"test-{uuid.uuid4().hex[:10]}"
    kube.kubectl("create", "namespace", name)
    kube.wait_for_service_account(name)
    yield name
    kube.kubectl("delete", "namespace", name, "--wait=false", check=False)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        pods = json.loads(
            kube.kubectl("get", "pods", "-n", name, "-o", "json", check=False).stdout or "{}"
        ).get("items", [])
        if not pods:
            return
        time.sleep(0.5)
    kube.kubectl("delete", "pods", "--all", "-n", name, "--force", "--grace-period=0", check=False)


@pytest.fixture
def pipeline(real_cluster, node_namespace, tmp_path):  # type: ignore[no-untyped-def]
    """The operator (a host process with admin credentials) on one namespace of the node."""
    from harness import images
    from harness.pipeline import OperatorProcess, Pipeline

    operator = OperatorProcess(
        real_cluster.kube.admin_kubeconfig,
        node_namespace,
        tmp_path / "operator.log",
        trainer_image=images.reference("trainer"),
    ).start()
    try:
        yield Pipeline(real_cluster, node_namespace, operator, tmp_path)
    finally:
        operator.stop()
