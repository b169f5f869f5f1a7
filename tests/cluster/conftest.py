"""Fixtures for tests against the real apiserver."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CRD_NAMES = ("sftjobs.rlhf.dev", "rewardmodeljobs.rlhf.dev", "ppojobs.rlhf.dev")


@pytest.fixture(scope="session")
def crds_installed(kube_cluster):  # type: ignore[no-untyped-def]
    """The generated CRDs applied for real and Established."""
    kube_cluster.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
    kube_cluster.kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        *[f"crd/{name}" for name in CRD_NAMES],
    )
    return kube_cluster
