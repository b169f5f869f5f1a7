"""Two operator replicas against the real apiserver: one leads through Kopf's peering, the
other takes over when it stops."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "examples" / "smoke"


def _smoke(name: str) -> dict:
    return yaml.safe_load((SMOKE / f"{name}.yaml").read_text())


def test_two_replicas_elect_one_and_the_other_takes_over(
    crds_installed, namespace, tmp_path
) -> None:
    from harness.pipeline import OperatorProcess, free_port

    from tests.cluster.conftest import wait_established

    peerings = ROOT / "helm" / "rlhf-operator" / "crds" / "kopf.dev_peerings.yaml"
    crds_installed.kubectl("apply", "--server-side", "-f", str(peerings))
    wait_established(crds_installed, ["kopfpeerings.kopf.dev", "clusterkopfpeerings.kopf.dev"])
    crds_installed.kubectl(
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        input=json.dumps(
            {
                "apiVersion": "kopf.dev/v1",
                "kind": "KopfPeering",
                "metadata": {"name": "rlhf-operator"},
            }
        ),
    )
    port = free_port()
    kubeconfig = crds_installed.admin_kubeconfig
    leader = OperatorProcess(kubeconfig, namespace, tmp_path / "leader.log", port)
    follower = OperatorProcess(kubeconfig, namespace, tmp_path / "follower.log", port)
    leader.start(standalone=False, priority=2)
    try:
        # An operator starts paused and resumes once it has seen its peers.
        deadline = time.monotonic() + 60
        while "Resuming operations" not in leader.log_text():
            assert time.monotonic() < deadline, leader.log_text()[-2000:]
            time.sleep(0.3)
        follower.start(standalone=False, priority=1)
        time.sleep(3)  # the follower sees the higher-priority peer and stays paused
        first = _smoke("sftjob")
        crds_installed.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(first))
        deadline = time.monotonic() + 60
        while "created Job" not in leader.log_text():
            assert time.monotonic() < deadline, leader.log_text()[-2000:]
            time.sleep(0.3)
        time.sleep(3)
        assert "created Job" not in follower.log.read_text()
        assert "Resuming operations" not in follower.log.read_text()  # it never acted

        leader.stop()  # the follower resumes once the leader's keep-alive expires
        second = _smoke("sftjob")
        second["metadata"]["name"] = "second"
        crds_installed.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(second))
        deadline = time.monotonic() + 90
        while "created Job" not in follower.log.read_text():
            assert time.monotonic() < deadline, follower.log.read_text()[-2000:]
            time.sleep(0.5)
        jobs = crds_installed.kubectl("get", "jobs", "-n", namespace, "-o", "name").stdout.split()
        assert sorted(jobs) == ["job.batch/second-sft", "job.batch/smoke-sft-sft"]
    finally:
        leader.stop()
        follower.stop()
