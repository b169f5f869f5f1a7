"""Shared pytest fixtures.

`kube_cluster` is a real control plane (etcd + kube-apiserver +
kube-controller-manager, see tests/harness/kube.py), one per test session.
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import pytest

_TESTS_DIR = str(Path(__file__).resolve().parent)
if _TESTS_DIR not in sys.path:  # `harness` imports under any pytest import mode
    sys.path.insert(0, _TESTS_DIR)

from harness import kube  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "cluster: needs the real Kubernetes control plane (kube_cluster fixture; "
        "binaries from hack/fetch-kube-tools.sh and hack/build-kube.sh)",
    )


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="session")
def kube_cluster():
    """A running KubeCluster, shared by the whole session."""
    missing = kube.missing_binaries()
    if missing:
        msg = f"Kubernetes test binaries missing: {', '.join(missing)}; {kube.INSTALL_HINT}"
        if _in_ci():
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    cluster = kube.KubeCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def namespace(kube_cluster: kube.KubeCluster):
    """A fresh namespace (with its `default` ServiceAccount), deleted afterwards."""
    name = f"test-{uuid.uuid4().hex[:10]}"
    kube_cluster.kubectl("create", "namespace", name)
    kube_cluster.wait_for_service_account(name)
    yield name
    kube_cluster.kubectl(
        "delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False
    )
