"""Storage on a real node (issue 14, items 6 and 10): two jobs writing into one existing
claim, each in its own folder; a re-created job with another spec not resuming the
checkpoints it finds there; a pod writing more than its scratch disk evicted by the real
kubelet and the job failed with the field to raise."""

from __future__ import annotations

import json
import time

import pytest

from tests.node.test_operator_on_a_node import _long_sft, _smoke

pytestmark = pytest.mark.cluster


def test_jobs_sharing_an_existing_claim_write_in_their_own_folders(pipeline) -> None:
    claim = pipeline.shared_claim("team-storage")
    jobs = []
    for name in ("first", "second"):
        job = _smoke("sftjob")
        job["metadata"]["name"] = name
        job["spec"]["output"] = {"existingClaim": "team-storage"}
        jobs.append(job)
    pipeline.apply(*jobs)
    for name in ("first", "second"):  # one after the other on a 2-CPU node: 1 CPU each
        done = pipeline.wait_for_phase("sftjob", name, "Succeeded", 400)
        assert done["status"]["output"] == {
            "claimName": "team-storage",
            "path": f"{name}-sft/model",
        }
        assert (claim / f"{name}-sft" / "model" / "COMPLETE").exists()
        recorded = json.loads((claim / f"{name}-sft" / "checkpoints" / "spec.json").read_text())
        assert recorded["kind"] == "SFTJob"
    assert sorted(path.name for path in claim.iterdir()) == ["first-sft", "second-sft"]

    # Re-created with another learning rate: the checkpoints of the first run are not resumed.
    pipeline.kubectl("delete", "sftjob", "first", "--wait=true")
    changed = json.loads(json.dumps(jobs[0]))
    changed["spec"]["training"]["learningRate"] = 1e-4
    pipeline.apply(changed)
    pipeline.wait_for_phase("sftjob", "first", "Succeeded", 300)
    pod = max(
        pipeline.pods("batch.kubernetes.io/job-name=first-sft"),
        key=lambda p: p["metadata"]["creationTimestamp"],
    )
    log = pipeline.logs(pod["metadata"]["name"])
    assert "not resuming the checkpoints in /output/first-sft/checkpoints" in log, log[-3000:]
    assert "resuming from" not in log
    # The other job's folder was not touched.
    assert (claim / "second-sft" / "model" / "COMPLETE").exists()


def test_a_pod_over_its_scratch_disk_fails_the_job_naming_the_field(pipeline) -> None:
    job = _long_sft("hoarder", steps=100000)
    job["spec"]["resources"]["scratchDisk"] = "256Mi"
    pipeline.apply(job)
    deadline = time.monotonic() + 240
    while not pipeline.running():
        assert time.monotonic() < deadline, pipeline.pod_logs()
        time.sleep(0.5)
    [pod] = pipeline.running()
    # A download larger than the scratch disk, as the trainer's Hub download would write it.
    pipeline.kubectl(
        "exec", pod, "--", "python", "-c",
        "open('/tmp/download', 'wb').write(b'0' * (320 << 20))",
    )  # fmt: skip
    # The kubelet measures the emptyDirs every minute or so, then evicts.
    failed = pipeline.wait_for_phase("sftjob", "hoarder", "Failed", 300)
    condition = next(c for c in failed["status"]["conditions"] if c["type"] == "Failed")
    assert condition["reason"] == "ScratchDiskExceeded", condition
    assert "spec.resources.scratchDisk" in condition["message"]
    evicted = pipeline.get("pod", pod)
    assert evicted["status"]["reason"] == "Evicted", evicted["status"]
    # Its Job is stopped rather than retried into the same disk.
    pipeline.wait_for(
        "job.batch",
        "hoarder-sft",
        lambda b: any(
            c["type"] == "Failed" and c["status"] == "True"
            for c in b["status"].get("conditions", [])
        ),
        60,
        "the Job to fail",
    )
