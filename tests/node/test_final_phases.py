"""Succeeded is final on a real node (issue 14, item 2): the Job a real trainer finished is
removed by ttlSecondsAfterFinished, then a runPolicy edit and a restart of the operator
create no Job again and leave the trained model alone. (tests/cluster/test_ownership.py
checks the same with a Job finished by hand; this one with the real kubelet and trainer.)
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]


def test_a_succeeded_job_is_not_trained_again_after_the_ttl_removed_its_job(pipeline) -> None:
    job = yaml.safe_load((ROOT / "examples" / "smoke" / "sftjob.yaml").read_text())
    job["metadata"]["name"] = "final"
    job["spec"]["training"]["maxSteps"] = 5
    job["spec"]["generation"] = {"samples": 0}
    job["spec"]["runPolicy"] = {"checkpointInterval": 5, "ttlSecondsAfterFinished": 0}
    pipeline.apply(job)
    running = pipeline.wait_for("job.batch", "final-sft", lambda body: True, 30, "the Job")
    # The TTL is not on the Job until the operator has recorded its outcome.
    assert "ttlSecondsAfterFinished" not in running["spec"]
    done = pipeline.wait_for_phase("sftjob", "final", "Succeeded", 120)
    pipeline.wait_for(
        "sftjob",
        "final",
        lambda _: pipeline.get("job.batch", "final-sft") is None,
        30,
        "the TTL controller to remove the Job",
    )
    model = pipeline.claim_folder("final-sft-output") / "final-sft" / "model"
    written = {p.name: p.stat().st_mtime_ns for p in model.iterdir()}

    pipeline.kubectl(
        "patch",
        "sftjob",
        "final",
        "--type=merge",
        "-p",
        json.dumps({"spec": {"runPolicy": {"backoffLimit": 5}}}),
    )
    generation = pipeline.get("sftjob", "final")["metadata"]["generation"]
    pipeline.wait_for(
        "sftjob",
        "final",
        lambda body: body["status"].get("observedGeneration") == generation,
        20,
        "the edit to be observed",
    )
    pipeline.operator.stop()
    pipeline.operator.start()
    time.sleep(5)
    assert pipeline.get("job.batch", "final-sft") is None
    assert pipeline.pods() == []
    status = pipeline.get("sftjob", "final")["status"]
    assert status["phase"] == "Succeeded"
    assert status["completionTime"] == done["status"]["completionTime"]
    assert {p.name: p.stat().st_mtime_ns for p in model.iterdir()} == written
