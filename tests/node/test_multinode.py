"""Multi-node training for real: an Indexed Job's two pods, torchrun in each, finding rank 0
through the headless Service's DNS name (CoreDNS answering ``<pod>.<service>``), training with
the gloo backend in separate containers and network namespaces."""

from __future__ import annotations

import json

import pytest

from tests.node.test_operator_on_a_node import _smoke

pytestmark = pytest.mark.cluster


def _two_nodes(job: dict) -> dict:
    # Two pods must fit on this 2-CPU node at once: torchrun's rendezvous waits for both.
    job["spec"]["resources"].update({"nodes": 2, "cpu": "900m", "memory": "3Gi"})
    # Every rank writes checkpoints: a ReadWriteMany output (the API insists).
    job["spec"]["output"].update(
        {"accessModes": ["ReadWriteMany"], "storageClassName": "shared-hostpath"}
    )
    return job


def test_sft_then_ppo_on_two_nodes_rendezvous_through_dns_and_succeed(pipeline) -> None:
    sft = _two_nodes(_smoke("sftjob"))
    sft["spec"]["training"]["maxSteps"] = 40
    ppo = _two_nodes(_smoke("ppojob"))
    ppo["spec"]["rewardModel"] = {"preset": "tiny"}
    ppo["spec"]["ppo"]["totalEpisodes"] = 64
    pipeline.apply(sft, ppo)
    done = pipeline.wait_for_phase("sftjob", "smoke-sft", "Succeeded", 400)
    assert done["status"]["attempts"] == 1
    pods = pipeline.pods("batch.kubernetes.io/job-name=smoke-sft-sft")
    assert sorted(p["spec"]["hostname"] for p in pods) == ["smoke-sft-sft-0", "smoke-sft-sft-1"]
    assert len({p["status"]["podIP"] for p in pods}) == 2  # two network namespaces
    for pod in pods:
        log = pipeline.logs(pod["metadata"]["name"])
        # Both ranks joined one gloo group of two (torchrun's env reaches the trainer).
        assert " of world size 2 on cpu" in log, log[-3000:]
    model = pipeline.claim_folder("smoke-sft-sft-output") / "smoke-sft-sft" / "model"
    assert (model / "COMPLETE").exists() and (model / "config.json").exists()

    ppo_done = pipeline.wait_for_phase("ppojob", "smoke-ppo", "Succeeded", 600)
    assert ppo_done["status"]["attempts"] == 1
    metrics = json.loads(
        (
            pipeline.claim_folder("smoke-ppo-ppo-output") / "smoke-ppo-ppo" / "metrics.json"
        ).read_text()
    )
    assert metrics["phase"] == "Succeeded"
